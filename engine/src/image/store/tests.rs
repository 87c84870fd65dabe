use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

fn timings(timeout_ms: u64) -> LockTimings {
    LockTimings {
        timeout_ms,
        warning_ms: 50,
    }
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// Puts a fake image for `d` into the store, as an import would.
fn install(store: &Store, d: &str) -> StoredImage {
    let work = store.work_dir().unwrap();
    let sqfs = work.path().join("image.squashfs");
    std::fs::write(&sqfs, b"hsqs fake").unwrap();
    let meta = ImageMeta {
        cmd: Some(vec!["sh".into()]),
        image_id: Some("ab".repeat(32)),
        ..Default::default()
    };
    let lock = store
        .lock_digest(d, LockMode::Exclusive, "test", &timings(1000))
        .unwrap();
    store.install(&lock, d, &sqfs, &meta).unwrap()
}

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

#[test]
fn layout_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root, 1234, 5678, &timings(1000)).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o755);
    assert_eq!(mode("images"), 0o711);
    assert_eq!(mode("tmp"), 0o700);
    assert_eq!(mode("users/1234"), 0o750);
    assert_eq!(
        std::fs::metadata(root.join("users/1234")).unwrap().gid(),
        5678
    );
    let img = install(&store, &digest('a'));
    store.record(&r("alpine"), &img).unwrap();
    let idx = root.join("users/1234/metadata.json");
    assert_eq!(
        std::fs::metadata(&idx).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::metadata(&img.squashfs)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "images are root's alone"
    );
    let central = Store::open_centralized(&dir.path().join("central"), &timings(1000)).unwrap();
    central.record(&r("alpine"), &img).unwrap();
    let cidx = dir.path().join("central/users/0/metadata.json");
    assert_eq!(
        std::fs::metadata(cidx).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn record_lookup_list_by_tag_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let (da, db) = (digest('a'), digest('b'));
    let a = install(&store, &da);
    assert_eq!(store.lookup(&r("alpine")).unwrap(), None);
    store.record(&r("alpine:3"), &a).unwrap();
    let got = store.lookup(&r("alpine:3")).unwrap().unwrap();
    assert_eq!(got.digest, da);
    assert_eq!(got.meta.cmd, Some(vec!["sh".to_string()]));
    assert!(got.size > 0);
    assert_eq!(
        store
            .lookup(&r(&format!("alpine@{da}")))
            .unwrap()
            .unwrap()
            .digest,
        da
    );
    assert_eq!(store.lookup(&r("alpine:4")).unwrap(), None);
    // Re-recording a tag moves it to the new digest, without duplicating the entry.
    let b = install(&store, &db);
    store.record(&r("alpine:3"), &b).unwrap();
    assert_eq!(store.lookup(&r("alpine:3")).unwrap().unwrap().digest, db);
    store.record(&r(&format!("alpine@{da}")), &a).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].tag, "3");
    assert_eq!(list[1].tag, "");
    assert_eq!(list[1].unique_key, format!("docker.io/library/alpine@{da}"));
    assert_eq!(list[0].id, "ab".repeat(32));
    assert_eq!(store.lookup_digest(&digest('c')).unwrap(), None);
    // Other users do not see this user's index.
    let other = Store::open(dir.path(), 2000, 2000, &timings(1000)).unwrap();
    assert!(other.list().unwrap().is_empty());
    assert_eq!(other.lookup(&r("alpine:3")).unwrap(), None);
}

#[test]
fn remove_deletes_files_only_when_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let bob = Store::open(dir.path(), 2000, 2000, &timings(1000)).unwrap();
    let d = digest('a');
    let img = install(&alice, &d);
    alice.record(&r("alpine"), &img).unwrap();
    bob.record(&r("alpine"), &img).unwrap();
    alice.record(&r("alpine:also"), &img).unwrap();
    assert_eq!(alice.remove(&r("alpine")).unwrap().len(), 1);
    assert!(
        img.squashfs.exists(),
        "still referenced by alpine:also and by bob"
    );
    alice.remove(&r("alpine:also")).unwrap();
    assert!(img.squashfs.exists(), "still referenced by bob");
    let e = alice.remove(&r("alpine")).unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }) && e.to_string().contains("alpine"),
        "{e}"
    );
    bob.remove(&r(&format!("alpine@{d}"))).unwrap();
    assert!(!img.squashfs.exists());
    assert!(!alice.image_paths(&d).unwrap().1.exists());
    assert!(!dir
        .path()
        .join("locks/sha256-".to_string() + &"a".repeat(64) + ".lock")
        .exists());
    // The digest can be imported again afterwards.
    let again = install(&alice, &d);
    assert!(again.squashfs.exists());
}

#[test]
fn corrupt_index_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    std::fs::write(dir.path().join("users/1000/metadata.json"), "{not json").unwrap();
    let e = store.list().unwrap_err().to_string();
    assert!(e.contains("metadata.json") && e.contains("corrupt"), "{e}");
}

#[test]
fn bad_digest_never_becomes_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    assert!(matches!(
        store.lookup_digest("sha256:../../etc"),
        Err(StoreError::BadDigest { .. })
    ));
}

#[test]
fn exclusive_digest_lock_makes_others_wait_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let m2 = messages.clone();
    let store = Arc::new(
        Store::open(dir.path(), 1000, 1000, &timings(1000))
            .unwrap()
            .with_notifier(move |m| m2.lock().unwrap().push(m.to_string())),
    );
    let d = digest('a');
    let held = store
        .lock_digest(&d, LockMode::Exclusive, "x", &timings(5000))
        .unwrap();
    let s2 = store.clone();
    let d2 = d.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let _l = s2
            .lock_digest(
                &d2,
                LockMode::Shared,
                "another import of alpine",
                &timings(5000),
            )
            .unwrap();
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let waited = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    let msgs = messages.lock().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m == "waiting for another import of alpine"),
        "{msgs:?}"
    );
}

#[test]
fn lock_wait_times_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000))
        .unwrap()
        .with_notifier(|_| {});
    let d = digest('a');
    let _held = store
        .lock_digest(&d, LockMode::Exclusive, "x", &timings(1000))
        .unwrap();
    // flock is per open file description: a second open in this process conflicts too.
    let e = store
        .lock_digest(&d, LockMode::Exclusive, "another import", &timings(300))
        .unwrap_err();
    assert!(
        e.to_string().contains("gave up") && e.to_string().contains("another import"),
        "{e}"
    );
}

#[test]
fn shared_locks_coexist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let d = digest('a');
    let _a = store
        .lock_digest(&d, LockMode::Shared, "x", &timings(300))
        .unwrap();
    let _b = store
        .lock_digest(&d, LockMode::Shared, "x", &timings(300))
        .unwrap();
}

#[test]
fn stale_work_dirs_are_cleaned_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let live = store.work_dir().unwrap();
    std::fs::write(live.path().join("blob"), b"x").unwrap();
    // An abandoned one: created by hand, as a killed import leaves it (no lock held).
    let dead = dir.path().join("tmp").join(format!("{WORK_PREFIX}dead"));
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("blob"), b"x").unwrap();
    assert_eq!(store.clean_stale(), 1);
    assert!(!dead.exists());
    assert!(live.path().join("blob").exists());
    let p = live.path().to_path_buf();
    drop(live);
    assert!(!p.exists(), "a work dir is removed when dropped");
}

#[test]
fn work_dirs_survive_a_concurrent_cleanup() {
    // A new work dir is unlocked between its mkdir and its lock; a cleanup running then may
    // remove it. Creating one must retry, never fail, however the two interleave.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let cleaner = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store.clean_stale();
            }
        });
        let creators: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..3000 {
                        let w = store.work_dir().unwrap();
                        assert!(w.path().is_dir(), "a returned work dir exists");
                    }
                })
            })
            .collect();
        let failed = creators.into_iter().filter_map(|c| c.join().err()).count();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        cleaner.join().unwrap();
        assert_eq!(
            failed, 0,
            "creating a work dir failed under a concurrent cleanup"
        );
    });
}

#[test]
fn readonly_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("none");
    let store = Store::open_readonly(&root, 1000, 1000, &timings(1000));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.lookup(&r("alpine")).unwrap(), None);
    assert!(!root.exists());
}

/// Sets the last use of `d` to `secs` after the epoch.
fn used_at(store: &Store, d: &str, secs: i64) {
    let (_, meta) = store.image_paths(d).unwrap();
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        None,
        &meta,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn the_size_bound_deletes_least_recently_used_images_but_never_kept_or_pinned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let ds: Vec<String> = "abcd".chars().map(digest).collect();
    for (i, d) in ds.iter().enumerate() {
        install(&store, d);
        used_at(&store, d, 1000 + i as i64);
    }
    let usage = store.usage().unwrap();
    assert_eq!(
        usage.iter().map(|u| u.digest.clone()).collect::<Vec<_>>(),
        ds,
        "least recently used first"
    );
    let one = usage[0].bytes;
    // Room for three: `a` is kept (in use), `b` is pinned, so `c` goes, and then `d` need not.
    let (a_file, _) = store.image_paths(&ds[0]).unwrap();
    let (b_file, _) = store.image_paths(&ds[1]).unwrap();
    let gone = store
        .evict_to(3 * one, &|p| p == a_file || p == b_file)
        .unwrap();
    assert_eq!(gone, vec![ds[2].clone()]);
    assert!(store.lookup_digest(&ds[2]).unwrap().is_none());
    for kept in [&ds[0], &ds[1], &ds[3]] {
        assert!(store.lookup_digest(kept).unwrap().is_some(), "{kept}");
    }
    // A lookup is a use (as root): `a` is no longer the least recently used.
    if nix::unistd::geteuid().is_root() {
        let a = store
            .usage()
            .unwrap()
            .into_iter()
            .find(|u| u.digest == ds[0]);
        assert!(a.unwrap().last_use > std::time::UNIX_EPOCH + Duration::from_secs(5000));
    }
    assert!(store.evict_to(u64::MAX, &|_| false).unwrap().is_empty());
    // Over the bound with only kept and pinned images left: nothing more goes.
    assert!(store.evict_to(0, &|_| true).unwrap().is_empty());
}

#[test]
fn a_users_file_has_one_copy_record_and_its_previous_one_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1000, 1000, &timings(1000)).unwrap();
    let f = Path::new("/home/u/x.sqsh");
    assert_eq!(store.replace_user_file_copy(f, &digest('a')), None);
    assert_eq!(
        store.replace_user_file_copy(f, &digest('a')),
        None,
        "same copy"
    );
    assert_eq!(
        store.replace_user_file_copy(f, &digest('b')),
        Some(digest('a'))
    );
    assert_eq!(
        store.replace_user_file_copy(Path::new("/home/u/y.sqsh"), &digest('c')),
        None,
        "another file"
    );
}
