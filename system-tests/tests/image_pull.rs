//! Image import against the real registry, skopeo and mksquashfs.
//!
//! Needs root and the test registry (scripts/registry-up.sh, images from
//! scripts/build-test-images.py). Missing either is a failure, never a skip.
//! `EGRET_TEST_REGISTRY` overrides the registry address (default 127.0.0.1:5000).
//!
//! Concurrency and crash tests re-run this test binary as a child process (see `child_pull`),
//! so they exercise separate processes exactly like two `egret pull` commands would.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egret_engine::config::{Config, LockTimings};
use egret_engine::image::import::oci::Layout;
use egret_engine::image::import::{self, PullOptions, PullStatus};
use egret_engine::image::progress::LineProgress;
use egret_engine::image::reference::ImageRef;
use egret_engine::image::registry::Skopeo;
use egret_engine::image::store::Store;
use sha2::{Digest, Sha256};

const CHILD_ENV: &str = "EGRET_TEST_CHILD_PULL";

fn registry() -> String {
    std::env::var("EGRET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// Panics (never skips) when the environment cannot run these tests.
fn require_env() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "image_pull tests need root (they write root-owned stores and extract images as root)"
    );
    let reg = registry();
    assert!(
        TcpStream::connect_timeout(
            &reg.parse().expect("registry is host:port"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "test registry {reg} unreachable: start it with scripts/registry-up.sh and push the test \
         images with scripts/build-test-images.py (or set EGRET_TEST_REGISTRY)"
    );
}

fn image(name: &str) -> String {
    format!("{}/egret/{name}", registry())
}

struct Env {
    dir: tempfile::TempDir,
    cfg: Config,
    lines: Arc<Mutex<Vec<String>>>,
}

fn env() -> Env {
    require_env();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.temp_dir).unwrap();
    Env {
        dir,
        cfg,
        lines: Arc::new(Mutex::new(Vec::new())),
    }
}

fn config(base: &Path) -> Config {
    Config {
        local_repository_base_dir: base.join("store"),
        temp_dir: base.join("tmp"),
        centralized_repository_dir: Some(base.join("central")),
        repository_metadata_lock_timings: LockTimings {
            timeout_ms: 60_000,
            warning_ms: 1000,
        },
        ..Config::default()
    }
}

impl Env {
    fn store(&self, uid: u32) -> Store {
        let lines = self.lines.clone();
        Store::open(
            &self.cfg.local_repository_base_dir,
            uid,
            uid,
            &self.cfg.repository_metadata_lock_timings,
        )
        .unwrap()
        .with_notifier(move |m| lines.lock().unwrap().push(m.to_string()))
    }

    fn opts(&self) -> PullOptions {
        let lines = self.lines.clone();
        PullOptions {
            progress: Arc::new(LineProgress::new(move |s: &str| {
                lines.lock().unwrap().push(s.to_string())
            })),
            ..PullOptions::default()
        }
    }

    fn pull(&self, store: &Store, r: &str) -> Result<import::Pulled, import::ImportError> {
        let r = ImageRef::parse(r).unwrap();
        import::pull_image(&self.cfg, store, &Skopeo::new(&self.cfg), &r, &self.opts())
    }

    fn root(&self) -> PathBuf {
        self.cfg.local_repository_base_dir.clone()
    }

    /// Names under `<store>/tmp` and the temp dir: in-progress or abandoned work.
    fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in [self.root().join("tmp"), self.cfg.temp_dir.clone()] {
            if let Ok(rd) = std::fs::read_dir(&d) {
                v.extend(rd.flatten().map(|e| e.path().display().to_string()));
            }
        }
        v
    }

    fn image_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("images")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Every index entry has a complete image, and every image file pair is complete.
    fn assert_consistent(&self, uid: u32) {
        let store = self.store(uid);
        for e in store.list().unwrap() {
            let img = store.lookup_digest(&e.registry_digest).unwrap();
            assert!(
                img.is_some(),
                "index entry {} has no complete image",
                e.unique_key
            );
        }
        for f in self.image_files() {
            if let Some(stem) = f.strip_suffix(".squashfs") {
                let sqfs = self.root().join("images").join(&f);
                assert!(
                    self.root()
                        .join("images")
                        .join(format!("{stem}.meta"))
                        .exists(),
                    "{f} has no .meta"
                );
                let ok = Command::new("unsquashfs")
                    .arg("-s")
                    .arg(&sqfs)
                    .output()
                    .unwrap();
                assert!(ok.status.success(), "{f} is not a valid squashfs");
            }
        }
    }
}

fn listing(img: &Path) -> String {
    let o = Command::new("unsquashfs")
        .arg("-lls")
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "unsquashfs -lls {}", img.display());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pull_busybox_then_repull_downloads_nothing() {
    let e = env();
    let store = e.store(1000);
    let t = Instant::now();
    let p = e.pull(&store, &image("busybox")).unwrap();
    let first = t.elapsed();
    assert_eq!(p.status, PullStatus::Downloaded);
    let l = listing(&p.image.squashfs);
    assert!(l.contains("squashfs-root/bin/busybox"), "{l}");
    assert!(
        l.lines()
            .next()
            .unwrap()
            .starts_with("drwxr-xr-x root/root"),
        "root dir: {l}"
    );
    let t = Instant::now();
    let again = e.pull(&store, &image("busybox")).unwrap();
    let second = t.elapsed();
    assert_eq!(again.status, PullStatus::UpToDate);
    assert_eq!(again.image, p.image);
    eprintln!("busybox: first pull {first:?}, re-pull {second:?}");
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    // The enroot form names the same image.
    let enroot = format!("{}#egret/busybox", registry());
    assert_eq!(
        e.pull(&store, &enroot).unwrap().status,
        PullStatus::UpToDate
    );
    // Another user reuses the stored image without a download, and gets their own entry.
    let other = e.store(2000);
    assert_eq!(
        e.pull(&other, &image("busybox")).unwrap().status,
        PullStatus::UpToDate
    );
    assert_eq!(other.list().unwrap().len(), 1);
    e.assert_consistent(1000);
}

#[test]
fn pull_by_digest_and_remove() {
    let e = env();
    let store = e.store(1000);
    let p = e.pull(&store, &image("busybox")).unwrap();
    let by_digest = format!("{}@{}", image("busybox"), p.image.digest);
    assert_eq!(
        e.pull(&store, &by_digest).unwrap().status,
        PullStatus::UpToDate
    );
    assert_eq!(store.list().unwrap().len(), 2);
    store
        .remove(&ImageRef::parse(&image("busybox")).unwrap())
        .unwrap();
    assert!(p.image.squashfs.exists(), "still referenced by digest");
    store
        .remove(
            &ImageRef::parse(&format!("{}:latest@{}", image("busybox"), p.image.digest)).unwrap(),
        )
        .unwrap();
    assert!(!p.image.squashfs.exists());
    assert!(store.list().unwrap().is_empty());
    assert!(e.image_files().is_empty(), "{:?}", e.image_files());
}

#[test]
fn centralized_repository_is_readable_by_all() {
    use std::os::unix::fs::PermissionsExt;
    let e = env();
    let central = e.cfg.centralized_repository_dir.clone().unwrap();
    let store = Store::open_centralized(&central, &e.cfg.repository_metadata_lock_timings).unwrap();
    let p = e.pull(&store, &image("busybox")).unwrap();
    assert!(p.image.squashfs.starts_with(&central));
    let idx = central.join("users/0/metadata.json");
    assert_eq!(
        std::fs::metadata(idx).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn errors_are_one_line_and_leave_nothing() {
    let e = env();
    let store = e.store(1000);
    let bad = ImageRef::parse("127.0.0.1:5000/Egret/busybox")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("lowercase") && !bad.contains('\n'), "{bad}");
    let cases = [
        (image("does-not-exist"), "not found"),
        (
            "127.0.0.1:1/egret/busybox".to_string(),
            "unreachable (connection refused)",
        ),
        (
            format!("{}@sha256:{}", image("busybox"), "0".repeat(64)),
            "not found",
        ),
    ];
    for (r, want) in cases {
        let err = e.pull(&store, &r).unwrap_err().to_string();
        assert!(err.contains(want), "{r}: {err}");
        assert!(!err.contains('\n'), "{r}: multi-line error: {err:?}");
    }
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    assert!(e.image_files().is_empty(), "{:?}", e.image_files());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn unreachable_registry_uses_the_stored_image() {
    let e = env();
    let store = e.store(1000);
    let p = e.pull(&store, &image("busybox")).unwrap();
    // Record the same image under an unreachable registry's name, as if pulled from there.
    let offline = ImageRef::parse("127.0.0.1:1/egret/busybox").unwrap();
    store.record(&offline, &p.image).unwrap();
    let again = e.pull(&store, "127.0.0.1:1/egret/busybox").unwrap();
    assert_eq!(again.status, PullStatus::Offline);
    let text = e.lines.lock().unwrap().join("\n");
    assert!(
        text.contains("warning: registry 127.0.0.1:1 unreachable"),
        "{text}"
    );
}

/// Not a test on its own: the body of a child process started by the tests below.
#[test]
fn child_pull() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (base, r) = spec.split_once('|').unwrap();
    let cfg = config(Path::new(base));
    let store = Store::open(
        &cfg.local_repository_base_dir,
        1000,
        1000,
        &cfg.repository_metadata_lock_timings,
    )
    .unwrap();
    let opts = PullOptions {
        progress: Arc::new(LineProgress::new(|s: &str| eprintln!("{s}"))),
        ..PullOptions::default()
    };
    let r = ImageRef::parse(r).unwrap();
    let p = import::pull_image(&cfg, &store, &Skopeo::new(&cfg), &r, &opts).unwrap();
    println!("STATUS={:?}", p.status);
}

fn spawn_child(base: &Path, r: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pull", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{r}", base.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a test can kill it with everything it started.
        .process_group(0)
        .spawn()
        .unwrap()
}

fn child_output(c: std::process::Child) -> (String, String) {
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "child failed: {out}\n{err}");
    (out, err)
}

#[test]
fn concurrent_pulls_from_two_processes_download_once() {
    let e = env();
    std::fs::create_dir_all(e.root()).unwrap();
    let a = spawn_child(e.dir.path(), &image("multilayer"));
    let b = spawn_child(e.dir.path(), &image("multilayer"));
    let (oa, ea) = child_output(a);
    let (ob, eb) = child_output(b);
    let downloads = [&oa, &ob]
        .iter()
        .filter(|o| o.contains("STATUS=Downloaded"))
        .count();
    assert_eq!(downloads, 1, "exactly one download:\n{oa}{ea}\n{ob}{eb}");
    // Depending on timing the second one waited for the import or found it already stored.
    let other = if oa.contains("STATUS=Downloaded") {
        (&ob, &eb)
    } else {
        (&oa, &ea)
    };
    assert!(
        other.0.contains("STATUS=ImportedByOther") || other.0.contains("STATUS=UpToDate"),
        "{}{}",
        other.0,
        other.1
    );
    if other.0.contains("ImportedByOther") {
        assert!(
            other.1.contains("waiting for another import of"),
            "{}",
            other.1
        );
    }
    assert_eq!(e.store(1000).list().unwrap().len(), 1);
    e.assert_consistent(1000);
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
}

#[test]
fn killed_import_leaves_the_store_consistent() {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let e = env();
    std::fs::create_dir_all(e.root()).unwrap();
    let r = image("multilayer");
    // Measure a whole import, then kill children at points spread over it.
    let t = Instant::now();
    child_output(spawn_child(e.dir.path(), &r));
    let full = t.elapsed();
    e.store(1000).remove(&ImageRef::parse(&r).unwrap()).unwrap();
    assert!(e.image_files().is_empty());
    for (i, frac) in [0.05, 0.2, 0.4, 0.6, 0.8, 0.95].iter().enumerate() {
        let child = spawn_child(e.dir.path(), &r);
        let pgid = Pid::from_raw(child.id() as i32);
        std::thread::sleep(full.mul_f64(*frac));
        if i % 2 == 0 {
            // The whole job is killed (scancel): egret, skopeo and mksquashfs at once.
            let _ = killpg(pgid, Signal::SIGKILL);
        } else {
            // Only egret is killed: its helpers finish or fail on their own.
            let _ = nix::sys::signal::kill(pgid, Signal::SIGKILL);
        }
        let _ = child.wait_with_output();
        // Let orphaned helpers (same process group) go away before judging the store.
        let deadline = Instant::now() + Duration::from_secs(30);
        while killpg(pgid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        e.assert_consistent(1000);
        let store = e.store(1000);
        let p = e
            .pull(&store, &r)
            .unwrap_or_else(|err| panic!("import after kill {i}: {err}"));
        assert!(listing(&p.image.squashfs).contains("bin/busybox") || !p.image.squashfs.exists());
        assert!(
            e.leftovers().is_empty(),
            "after kill {i}: {:?}",
            e.leftovers()
        );
        e.assert_consistent(1000);
        store.remove(&ImageRef::parse(&r).unwrap()).unwrap();
    }
}

// ---- The multilayer image against an independent model of layer semantics ----

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    File { sha: String },
    Dir,
    Symlink(String),
    Dev(char, u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    xattrs: BTreeMap<String, String>,
    /// Paths sharing an inode share a group.
    group: Option<usize>,
}

fn norm(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Applies the layers bottom-up, the way a layer-by-layer extractor does (the flattener reads
/// them top-down instead: two independent implementations of the same semantics).
fn model(layout: &Layout) -> BTreeMap<String, Node> {
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    let mut groups = 0;
    let remove_tree = |tree: &mut BTreeMap<String, Node>, p: &str| {
        let prefix = format!("{p}/");
        tree.retain(|k, _| k != p && !k.starts_with(&prefix));
    };
    for l in &layout.layers {
        let mut raw = Vec::new();
        layout.open_layer(l).unwrap().read_to_end(&mut raw).unwrap();
        let decoded: Box<dyn Read> = match raw.as_slice() {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(&raw[..])),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                Box::new(zstd::stream::read::Decoder::new(&raw[..]).unwrap())
            }
            _ => Box::new(&raw[..]),
        };
        let mut ar = tar::Archive::new(decoded);
        let mut adds = Vec::new();
        for entry in ar.entries().unwrap() {
            let mut en = entry.unwrap();
            let path = norm(&en.path_bytes());
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
            let join = |n: &str| {
                if dir.is_empty() {
                    n.to_string()
                } else {
                    format!("{dir}/{n}")
                }
            };
            if base == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                tree.retain(|k, _| dir.is_empty() || !k.starts_with(&prefix));
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                if !name.starts_with(".wh.") {
                    remove_tree(&mut tree, &join(name));
                }
                continue;
            }
            if path.is_empty() {
                continue;
            }
            let h = en.header().clone();
            let mut xattrs = BTreeMap::new();
            let (mut uid, mut gid) = (h.uid().unwrap(), h.gid().unwrap());
            if let Some(pax) = en.pax_extensions().unwrap() {
                for r in pax {
                    let r = r.unwrap();
                    let k = r.key().unwrap();
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(x.to_string(), hex::encode(r.value_bytes()));
                    }
                    match k {
                        "uid" => uid = r.value().unwrap().parse().unwrap(),
                        "gid" => gid = r.value().unwrap().parse().unwrap(),
                        _ => {}
                    }
                }
            }
            let link = en
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let t = h.entry_type();
            let kind = if t.is_dir() {
                Kind::Dir
            } else if t.is_symlink() {
                Kind::Symlink(link.clone().unwrap())
            } else if t.is_hard_link() {
                adds.push((path, None, norm(link.unwrap().as_bytes())));
                continue;
            } else if t.is_character_special() || t.is_block_special() {
                let c = if t.is_character_special() { 'c' } else { 'b' };
                Kind::Dev(
                    c,
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            } else if t.is_fifo() {
                Kind::Fifo
            } else {
                let mut data = Vec::new();
                en.read_to_end(&mut data).unwrap();
                Kind::File {
                    sha: hex::encode(Sha256::digest(&data)),
                }
            };
            let node = Node {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid,
                gid,
                xattrs,
                group: None,
            };
            adds.push((path, Some(node), String::new()));
        }
        // Hardlinks last: a layer may link to a file that comes later in it (the flattener
        // accepts that too, since it defers every hardlink).
        adds.sort_by_key(|(_, node, _)| node.is_none());
        for (path, node, target) in adds {
            let node = match node {
                Some(n) => n,
                None => {
                    let t = tree
                        .get_mut(&target)
                        .unwrap_or_else(|| panic!("hardlink target {target}"));
                    if t.group.is_none() {
                        groups += 1;
                        t.group = Some(groups);
                    }
                    t.clone()
                }
            };
            // Parents exist as directories (implicitly created ones: root-owned 0755).
            let mut parent = String::new();
            for comp in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                parent = if parent.is_empty() {
                    comp.to_string()
                } else {
                    format!("{parent}/{comp}")
                };
                tree.entry(parent.clone()).or_insert(Node {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    xattrs: BTreeMap::new(),
                    group: None,
                });
            }
            match tree.get(&path) {
                Some(old) if old.kind == Kind::Dir && node.kind == Kind::Dir => {}
                Some(_) => remove_tree(&mut tree, &path),
                None => {}
            }
            tree.insert(path, node);
        }
    }
    tree
}

/// The extracted image, described by Python (which reads xattrs without unsafe code).
fn describe(root: &Path) -> BTreeMap<String, serde_json::Value> {
    let script = r#"
import os, sys, json, hashlib, stat
root = sys.argv[1]; out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); st = os.lstat(p); rel = os.path.relpath(p, root)
        x = {k: os.getxattr(p, k, follow_symlinks=False).hex() for k in os.listxattr(p, follow_symlinks=False)}
        e = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino, "xattrs": x}
        if stat.S_ISDIR(st.st_mode): e["kind"] = "dir"
        elif stat.S_ISLNK(st.st_mode): e["kind"] = "symlink"; e["target"] = os.readlink(p)
        elif stat.S_ISREG(st.st_mode): e["kind"] = "file"; e["sha"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
        elif stat.S_ISFIFO(st.st_mode): e["kind"] = "fifo"
        else: e["kind"] = "dev"; e["dev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        out[rel] = e
json.dump(out, sys.stdout)
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn multilayer_matches_a_layer_by_layer_model() {
    let e = env();
    let store = e.store(1000);
    let p = e.pull(&store, &image("multilayer")).unwrap();
    // The same image's layers, fetched independently.
    let oci = e.dir.path().join("model-oci");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg("-q")
        .arg(format!(
            "docker://{}@{}",
            image("multilayer"),
            p.image.digest
        ))
        .arg(format!("oci:{}:egret", oci.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let want = model(&Layout::read(&oci).unwrap());
    let extracted = e.dir.path().join("extracted");
    let st = Command::new("unsquashfs")
        .arg("-q")
        .arg("-d")
        .arg(&extracted)
        .arg(&p.image.squashfs)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let got = describe(&extracted);
    let want_paths: Vec<&String> = want.keys().collect();
    let got_paths: Vec<&String> = got.keys().collect();
    assert_eq!(got_paths, want_paths, "merged tree paths differ");
    let mut inode_of_group: HashMap<usize, u64> = HashMap::new();
    let mut facts = (0, 0, 0, 0);
    for (path, w) in &want {
        let g = &got[path];
        if !matches!(w.kind, Kind::Symlink(_)) {
            // Symlink modes are always 0777 on Linux, whatever the tar header said.
            assert_eq!(g["mode"], w.mode, "{path}: mode");
        }
        assert_eq!(g["uid"], w.uid, "{path}: uid");
        assert_eq!(g["gid"], w.gid, "{path}: gid");
        match &w.kind {
            Kind::Dir => assert_eq!(g["kind"], "dir", "{path}"),
            Kind::Symlink(t) => assert_eq!(g["target"], *t, "{path}"),
            Kind::File { sha } => assert_eq!(g["sha"], *sha, "{path}: content"),
            Kind::Fifo => assert_eq!(g["kind"], "fifo", "{path}"),
            Kind::Dev(_, ma, mi) => assert_eq!(g["dev"], serde_json::json!([ma, mi]), "{path}"),
        }
        for (k, v) in &w.xattrs {
            if k.starts_with("user.") || k.starts_with("security.") {
                assert_eq!(g["xattrs"][k], *v, "{path}: xattr {k}");
                facts.0 += 1;
            }
        }
        if let Some(grp) = w.group {
            let ino = g["ino"].as_u64().unwrap();
            assert_eq!(
                *inode_of_group.entry(grp).or_insert(ino),
                ino,
                "{path}: hardlink inode"
            );
            facts.1 += 1;
        }
        if w.mode & 0o4000 != 0 {
            facts.2 += 1;
        }
        if w.kind == Kind::Dir {
            facts.3 += 1;
        }
    }
    eprintln!(
        "multilayer: {} paths, {} xattrs, {} hardlinked paths, {} setuid files",
        want.len(),
        facts.0,
        facts.1,
        facts.2
    );
    check_expected_json(&got, &format!("{}:latest", image("multilayer")));
    // The test image is meant to exercise these; an image without them proves little.
    assert!(p.image.meta.platform.is_some());
    assert!(
        facts.1 >= 2,
        "the multilayer test image should contain hardlinks"
    );
    assert!(
        facts.2 >= 1,
        "the multilayer test image should contain a setuid file"
    );
    assert!(
        facts.0 >= 1,
        "the multilayer test image should contain an xattr"
    );
}

// ---- load ----

fn archive_of(e: &Env, name: &str, transport: &str) -> PathBuf {
    let path = e.dir.path().join(format!("{name}.{transport}.tar"));
    let dest = match transport {
        "docker-archive" => format!("docker-archive:{}:egret/{name}:v1", path.display()),
        _ => format!("oci-archive:{}:v1", path.display()),
    };
    let st = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("docker://{}", image(name)))
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy to {transport}");
    path
}

#[test]
fn load_docker_and_oci_archives() {
    let e = env();
    let store = e.store(1000);
    let fetcher = Skopeo::new(&e.cfg);
    for transport in ["docker-archive", "oci-archive"] {
        let archive = archive_of(&e, "multilayer", transport);
        let name = ImageRef::parse(&format!("load/library/ml-{transport}:v1")).unwrap();
        let p = import::load(&e.cfg, &store, &fetcher, &archive, &name, &e.opts()).unwrap();
        assert_eq!(p.status, PullStatus::Downloaded, "{transport}");
        assert!(listing(&p.image.squashfs).contains("bin/busybox"));
        let again = import::load(&e.cfg, &store, &fetcher, &archive, &name, &e.opts()).unwrap();
        assert_eq!(again.status, PullStatus::UpToDate, "{transport}: re-load");
        assert!(store.lookup(&name).unwrap().is_some());
    }
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    let bogus = e.dir.path().join("bogus.tar");
    std::fs::write(&bogus, b"not a tar").unwrap();
    let name = ImageRef::parse("load/library/bogus").unwrap();
    let err = import::load(&e.cfg, &store, &fetcher, &bogus, &name, &e.opts()).unwrap_err();
    assert!(err.to_string().contains("bogus.tar"), "{err}");
}

// ---- a user reading their own index ----

const LIST_ENV: &str = "EGRET_TEST_CHILD_LIST";

/// Child body: lists the index of the (non-root) user it runs as.
#[test]
fn child_list() {
    let Ok(base) = std::env::var(LIST_ENV) else {
        return;
    };
    let cfg = config(Path::new(&base));
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let own = Store::open_readonly(
        &cfg.local_repository_base_dir,
        uid,
        gid,
        &cfg.repository_metadata_lock_timings,
    );
    println!("OWN={}", own.list().map(|l| l.len()).unwrap_or(usize::MAX));
    let other = Store::open_readonly(
        &cfg.local_repository_base_dir,
        1000,
        1000,
        &cfg.repository_metadata_lock_timings,
    );
    println!(
        "OTHER={}",
        if other.list().is_ok() {
            "readable"
        } else {
            "denied"
        }
    );
}

#[test]
fn users_read_only_their_own_index() {
    use std::os::unix::fs::PermissionsExt;
    let e = env();
    let nobody = 65534;
    let p = e.pull(&e.store(1000), &image("busybox")).unwrap();
    e.store(nobody)
        .record(&ImageRef::parse(&image("busybox")).unwrap(), &p.image)
        .unwrap();
    // The test's temp dir must be traversable for the child.
    std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_list", "--nocapture"])
        .env(LIST_ENV, e.dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("OWN=1"), "{out}");
    assert!(out.contains("OTHER=denied"), "{out}");
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct TmpfsMount(PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_reported_clearly() {
    let e = env();
    let root = e.root();
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300k", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "mount a small tmpfs on {}", root.display());
    let _mount = TmpfsMount(root.clone());
    let store = e.store(1000);
    let err = e.pull(&store, &image("busybox")).unwrap_err().to_string();
    assert!(err.contains("no space left"), "{err}");
    assert!(!err.contains('\n'), "{err:?}");
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    assert!(e.image_files().is_empty(), "{:?}", e.image_files());
    assert!(store.list().unwrap().is_empty());
}

/// tests/common/multilayer-expected.json (written by scripts/build-test-images.py) describes the
/// merged tree of the registry's multilayer image; when it is there and describes the image
/// under test, the extracted image must match it exactly.
fn check_expected_json(got: &BTreeMap<String, serde_json::Value>, image_name: &str) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-support/data/multilayer-expected.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "{} not found: checked against the layer model only",
            path.display()
        );
        return;
    };
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    if want["image"] != image_name {
        eprintln!(
            "{} describes {}, not {image_name}",
            path.display(),
            want["image"]
        );
        return;
    }
    let entries = want["entries"].as_object().unwrap();
    let got_abs: BTreeMap<String, &serde_json::Value> =
        got.iter().map(|(k, v)| (format!("/{k}"), v)).collect();
    for p in want["absent"].as_array().unwrap() {
        let p = p.as_str().unwrap();
        assert!(!got_abs.contains_key(p), "{p} must be absent");
    }
    let want_paths: Vec<&String> = entries.keys().collect();
    let got_paths: Vec<&String> = got_abs.keys().collect();
    assert_eq!(
        got_paths,
        want_paths,
        "paths differ from {}",
        path.display()
    );
    let mut group_inode: HashMap<String, u64> = HashMap::new();
    for (p, w) in entries {
        let g = got_abs[p];
        let kind = w["type"].as_str().unwrap();
        assert_eq!(g["kind"], kind, "{p}: type");
        assert_eq!(g["uid"], w["uid"], "{p}: uid");
        assert_eq!(g["gid"], w["gid"], "{p}: gid");
        if let Some(m) = w.get("mode") {
            assert_eq!(&g["mode"], m, "{p}: mode");
        }
        if let Some(t) = w.get("target") {
            assert_eq!(&g["target"], t, "{p}: symlink target");
        }
        if let Some(sha) = w.get("sha256") {
            assert_eq!(&g["sha"], sha, "{p}: content");
        }
        if let Some(x) = w.get("xattrs").and_then(|x| x.as_object()) {
            for (k, v) in x {
                let hexed = hex::encode(v.as_str().unwrap().as_bytes());
                assert_eq!(g["xattrs"][k], hexed, "{p}: xattr {k}");
            }
        }
        if let Some(grp) = w.get("hardlink_group").and_then(|g| g.as_str()) {
            let ino = g["ino"].as_u64().unwrap();
            assert_eq!(
                *group_inode.entry(grp.to_string()).or_insert(ino),
                ino,
                "{p}: hardlink"
            );
        }
    }
    eprintln!("matches {} ({} entries)", path.display(), entries.len());
}

/// A registry that dies in the middle of a layer: a proxy in front of the test registry that
/// sends half of every blob and hangs up.
struct DroppingProxy {
    child: std::process::Child,
    conf: std::path::PathBuf,
}

impl DroppingProxy {
    const PORT: u16 = 5099;
    const SCRIPT: &'static str = r#"
import http.server, socketserver, sys, urllib.request
UP = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do(self, body):
        headers = {"Accept": ", ".join(self.headers.get_all("Accept") or [])}
        if self.headers.get("Authorization"):
            headers["Authorization"] = self.headers["Authorization"]
        req = urllib.request.Request(UP + self.path, method=self.command, headers=headers)
        try:
            r = urllib.request.urlopen(req)
            status, headers, data = r.status, r.getheaders(), (r.read() if body else b"")
        except urllib.error.HTTPError as e:
            status, headers, data = e.code, e.headers.items(), (e.read() if body else b"")
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("connection", "transfer-encoding"):
                self.send_header(k, v)
        self.end_headers()
        if "/blobs/" in self.path and body and len(data) > 64:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)
    def do_GET(self): self.do(True)
    def do_HEAD(self): self.do(False)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"#;

    fn start() -> DroppingProxy {
        let conf = std::path::PathBuf::from(format!(
            "/etc/containers/registries.conf.d/egret-test-{}.conf",
            Self::PORT
        ));
        std::fs::write(
            &conf,
            format!(
                "[[registry]]\nlocation = \"127.0.0.1:{}\"\ninsecure = true\n",
                Self::PORT
            ),
        )
        .unwrap();
        let child = std::process::Command::new("python3")
            .args(["-c", Self::SCRIPT, &format!("http://{}", registry())])
            .arg(Self::PORT.to_string())
            .spawn()
            .expect("python3");
        let addr = format!("127.0.0.1:{}", Self::PORT).parse().unwrap();
        let start = std::time::Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        DroppingProxy { child, conf }
    }
}

impl Drop for DroppingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.conf);
    }
}

#[test]
fn a_registry_dying_mid_pull_is_one_line_and_leaves_nothing() {
    let e = env();
    let store = e.store(1000);
    let _proxy = DroppingProxy::start();
    let r = format!("127.0.0.1:{}/egret/multilayer", DroppingProxy::PORT);
    let err = e.pull(&store, &r).unwrap_err().to_string();
    assert!(!err.contains('\n'), "multi-line error: {err:?}");
    assert!(err.contains("127.0.0.1:5099"), "{err}");
    // The manifest came through: the failure is the layer that stopped half-way.
    assert!(!err.contains("not found"), "{err}");
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    assert!(e.image_files().is_empty(), "{:?}", e.image_files());
    assert!(store.list().unwrap().is_empty());
}
