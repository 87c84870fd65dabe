//! Multi-node steps on the eight-node cluster (`egret-multi`): node-local stores (one per node,
//! `%n` in the configuration) and one store shared by the nodes on a real network filesystem
//! (GlusterFS over FUSE). Every test sets the store mode it needs and starts from empty stores.

use egret_test_support as common;

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::multi::{self, StoreMode};
use serde_json::json;

/// `-w m1,...,mN -N N -n N --container-image=IMAGE grep ^ID= /etc/os-release`.
fn step_on(nodes: usize, image: &str) -> Output {
    let list = multi::MULTI_NODES[..nodes].join(",");
    let n = nodes.to_string();
    let opt = format!("--container-image={image}");
    multi::srun_multi(&[
        "-w",
        &list,
        "-N",
        &n,
        "-n",
        &n,
        &opt,
        "grep",
        "^ID=",
        "/etc/os-release",
    ])
}

/// Asserts that every one of `nodes` tasks saw the image's os-release `ID=`; returns stderr.
fn assert_ran(out: &Output, nodes: usize, id: &str) -> String {
    let stdout = common::assert_success(out, "the multi-node step");
    let want = format!("ID={id}");
    let seen = stdout.lines().filter(|l| l.trim() == want).count();
    assert_eq!(seen, nodes, "{}", common::describe(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many nodes of the step imported the image (each prints one `downloading` line).
fn imports(stderr: &str) -> usize {
    stderr.matches("egret: downloading").count()
}

/// The `.squashfs` files of a store.
fn squashfs_files(store: &Path) -> Vec<String> {
    common::sandbox::names_in(&store.join("images"))
        .into_iter()
        .filter(|n| n.ends_with(".squashfs"))
        .collect()
}

/// Every blob of `repo` the registry sent since `mark` was sent exactly once.
fn assert_each_blob_once(repo: &str, mark: u64) -> u64 {
    let downloads = multi::blob_downloads(repo, mark);
    assert!(
        !downloads.is_empty(),
        "the registry log shows no download of {repo}'s blobs"
    );
    for (blob, count, _) in &downloads {
        assert_eq!(
            *count, 1,
            "{repo}: blob {blob} was downloaded {count} times: {downloads:?}"
        );
    }
    downloads.iter().map(|d| d.2).sum()
}

#[test]
fn node_local_stores_are_one_per_node() {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(StoreMode::NodeLocal, json!({}));
    let repo = multi::private_copy("busybox", "local");
    let out = step_on(2, &repo);
    assert_ran(&out, 2, "egret-busybox");
    for node in ["m1", "m2"] {
        let store = multi::store_dir(StoreMode::NodeLocal, node);
        assert_eq!(
            squashfs_files(&store).len(),
            1,
            "{node}'s store {}",
            store.display()
        );
    }
    let m3 = multi::store_dir(StoreMode::NodeLocal, "m3");
    assert!(
        squashfs_files(&m3).is_empty(),
        "m3 ran nothing, yet its store {} has an image",
        m3.display()
    );
}

#[test]
fn shared_store_first_step_on_four_nodes_downloads_each_blob_once() {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(StoreMode::Shared, json!({}));
    let repo = multi::private_copy("multilayer", "shared-first");
    let mark = multi::registry_log_mark();
    let out = step_on(4, &repo);
    let stderr = assert_ran(&out, 4, "egret-multilayer");
    assert_each_blob_once(&repo, mark);
    assert_eq!(
        imports(&stderr),
        1,
        "one node imports, the others wait and reuse:\n{stderr}"
    );
    let store = Path::new(multi::SHARED_STORE);
    assert_eq!(squashfs_files(store).len(), 1, "{}", store.display());
    assert!(
        common::sandbox::names_in(&store.join("tmp")).is_empty(),
        "an import left its work directory in {}/tmp",
        store.display()
    );
    // A second step on all eight nodes reuses it: nothing more is downloaded.
    let mark = multi::registry_log_mark();
    let out = step_on(8, &repo);
    let stderr = assert_ran(&out, 8, "egret-multilayer");
    assert_eq!(imports(&stderr), 0, "{stderr}");
    assert!(
        multi::blob_downloads(&repo, mark).is_empty(),
        "the second step downloaded blobs"
    );
}

#[test]
fn shared_store_import_killed_midway_is_invisible_and_the_next_node_takes_over() {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(StoreMode::Shared, json!({}));
    let repo = multi::private_copy("debian", "shared-kill");
    let store = Path::new(multi::SHARED_STORE);
    // "Node m1" imports with the CLI (as a node's launcher would) and dies while downloading:
    // its whole process group (egret and the skopeo it runs) is killed, as with a node crash.
    let mut importer = common::egret()
        .process_group(0)
        .env("SLURMD_NODENAME", "m1")
        .args(["--config", multi::MULTI_EGRET_CONFIG, "pull", &repo])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("egret pull");
    let work = store.join("tmp");
    let started = common::wait_for(Duration::from_secs(60), || {
        !common::sandbox::names_in(&work).is_empty()
    });
    assert!(
        started,
        "the import never created its work directory in {}",
        work.display()
    );
    std::thread::sleep(Duration::from_millis(200));
    let group = format!("-{}", importer.id());
    common::run(std::process::Command::new("kill").args(["-KILL", "--", &group]));
    let status = importer.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the import finished before it could be killed ({status}): the test needs a larger image"
    );
    assert!(
        squashfs_files(store).is_empty(),
        "a killed import left a visible image in {}",
        store.display()
    );
    // The next step takes over: one import, every blob once, nothing of the dead one left.
    let mark = multi::registry_log_mark();
    let out = step_on(4, &repo);
    let stderr = assert_ran(&out, 4, "debian");
    assert_eq!(imports(&stderr), 1, "{stderr}");
    assert_each_blob_once(&repo, mark);
    assert_eq!(squashfs_files(store).len(), 1);
    assert!(
        common::sandbox::names_in(&work).is_empty(),
        "the killed import's work directory is still in {}",
        work.display()
    );
}

#[test]
fn shared_store_readers_do_not_wait_for_a_writer_once_the_image_exists() {
    common::require_root();
    multi::require_multi_cluster();
    // Waiting for a lock gives up after 3 s: a reader that queued would fail the step.
    multi::set_store_mode(
        StoreMode::Shared,
        json!({"repositoryMetadataLockTimings": {"timeoutMs": 3000, "warningMs": 1000}}),
    );
    let repo = multi::private_copy("busybox", "shared-readers");
    assert_ran(&step_on(1, &repo), 1, "egret-busybox");
    // Another node records an image in root's index: it holds the index lock meanwhile.
    let lock_path = Path::new(multi::SHARED_STORE).join("users/0/metadata.lock");
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock().expect("flock on the shared volume");
    let out = step_on(4, &repo);
    drop(lock);
    let stderr = assert_ran(&out, 4, "egret-busybox");
    let waited: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("egret") && l.contains("waiting for"))
        .collect();
    assert!(waited.is_empty(), "a reader waited for a lock:\n{stderr}");
}
