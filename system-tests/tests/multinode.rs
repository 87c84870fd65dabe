//! Multi-node steps on the eight-node cluster (`egret-multi`): node-local stores (one per node,
//! `%n` in the configuration; the first node imports and hands the squashfs to the others with
//! sbcast) and one store shared by the nodes on a real network filesystem (GlusterFS over
//! FUSE). Every test sets the store mode it needs and starts from empty stores.

use egret_test_support as common;

use std::fs::{self, File};
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

/// Every blob of `repo` the registry sent since `mark` was sent in full exactly once.
fn assert_each_blob_once(repo: &str, mark: u64) -> u64 {
    let downloads = multi::full_blob_downloads(repo, mark);
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

/// The stores of the first `nodes` nodes in `mode` (one in shared mode).
fn stores(mode: StoreMode, nodes: usize) -> Vec<std::path::PathBuf> {
    match mode {
        StoreMode::Shared => vec![multi::store_dir(mode, "m1")],
        StoreMode::NodeLocal => multi::MULTI_NODES[..nodes]
            .iter()
            .map(|n| multi::store_dir(mode, n))
            .collect(),
    }
}

/// After an import on `nodes` nodes: one image in each store, no work directory left.
fn assert_stored(mode: StoreMode, nodes: usize) {
    for store in stores(mode, nodes) {
        assert_eq!(squashfs_files(&store).len(), 1, "{}", store.display());
        assert!(
            common::sandbox::names_in(&store.join("tmp")).is_empty(),
            "an import left its work directory in {}/tmp",
            store.display()
        );
    }
}

fn first_step_downloads_each_blob_once(mode: StoreMode, name: &str) {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(mode, json!({}));
    let repo = multi::private_copy("multilayer", name);
    let mark = multi::registry_log_mark();
    let out = step_on(4, &repo);
    let stderr = assert_ran(&out, 4, "egret-multilayer");
    assert_each_blob_once(&repo, mark);
    assert_eq!(
        imports(&stderr),
        1,
        "one node imports, the others reuse its work:\n{stderr}"
    );
    // Node-local stores get the first node's squashfs by broadcast; a shared store needs none.
    let handed = stderr
        .matches("handing the image to the step's other nodes")
        .count();
    assert_eq!(
        handed,
        usize::from(mode == StoreMode::NodeLocal),
        "{stderr}"
    );
    assert!(
        !stderr.contains("importing here"),
        "a node fell back to importing:\n{stderr}"
    );
    assert_stored(mode, 4);
    // A second step on the same nodes downloads nothing and broadcasts nothing.
    let mark = multi::registry_log_mark();
    let out = step_on(4, &repo);
    let stderr = assert_ran(&out, 4, "egret-multilayer");
    assert_eq!(imports(&stderr), 0, "{stderr}");
    assert!(!stderr.contains("handing the image"), "{stderr}");
    assert!(
        multi::blob_requests(&repo, mark).is_empty(),
        "the second step downloaded blobs"
    );
}

#[test]
fn node_local_first_step_on_four_nodes_downloads_each_blob_once() {
    first_step_downloads_each_blob_once(StoreMode::NodeLocal, "local-first");
}

#[test]
fn shared_store_first_step_on_four_nodes_downloads_each_blob_once() {
    first_step_downloads_each_blob_once(StoreMode::Shared, "shared-first");
}

#[test]
fn node_local_stores_are_one_per_node() {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(StoreMode::NodeLocal, json!({}));
    let repo = multi::private_copy("busybox", "local");
    let out = step_on(2, &repo);
    assert_ran(&out, 2, "egret-busybox");
    assert_stored(StoreMode::NodeLocal, 2);
    let m3 = multi::store_dir(StoreMode::NodeLocal, "m3");
    assert!(
        squashfs_files(&m3).is_empty(),
        "m3 ran nothing, yet its store {} has an image",
        m3.display()
    );
}

fn import_killed_midway(mode: StoreMode, name: &str) {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(mode, json!({}));
    let repo = multi::private_copy("debian", name);
    let store = multi::store_dir(mode, "m1");
    // Node m1 imports with the CLI (as its launcher would) and dies while downloading: its
    // whole process group (egret and the skopeo it runs) is killed, as in a node crash.
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
        squashfs_files(&store).is_empty(),
        "a killed import left a visible image in {}",
        store.display()
    );
    // The next step takes over: one import, every blob once, nothing of the dead one left.
    // (The dead import may have had its blobs already: their log lines can land after the kill.)
    let mark = multi::registry_log_settled_mark();
    let out = step_on(4, &repo);
    let stderr = assert_ran(&out, 4, "debian");
    assert_eq!(imports(&stderr), 1, "{stderr}");
    assert_each_blob_once(&repo, mark);
    assert_stored(mode, 4);
}

#[test]
fn node_local_import_killed_midway_is_invisible_and_the_next_step_takes_over() {
    import_killed_midway(StoreMode::NodeLocal, "local-kill");
}

#[test]
fn shared_store_import_killed_midway_is_invisible_and_the_next_node_takes_over() {
    import_killed_midway(StoreMode::Shared, "shared-kill");
}

fn readers_do_not_wait_for_a_writer(mode: StoreMode, name: &str) {
    common::require_root();
    multi::require_multi_cluster();
    // Waiting for a lock gives up after 3 s: a reader that queued would fail the step.
    multi::set_store_mode(
        mode,
        json!({"repositoryMetadataLockTimings": {"timeoutMs": 3000, "warningMs": 1000}}),
    );
    let repo = multi::private_copy("busybox", name);
    assert_ran(&step_on(4, &repo), 4, "egret-busybox");
    // Something records an image in root's index on m1: it holds the index lock meanwhile.
    let lock_path = multi::store_dir(mode, "m1").join("users/0/metadata.lock");
    let lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    lock.lock().expect("flock");
    let out = step_on(4, &repo);
    drop(lock);
    let stderr = assert_ran(&out, 4, "egret-busybox");
    let waited: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("egret") && l.contains("waiting for"))
        .collect();
    assert!(waited.is_empty(), "a reader waited for a lock:\n{stderr}");
}

#[test]
fn node_local_readers_do_not_wait_for_a_writer_once_the_image_exists() {
    readers_do_not_wait_for_a_writer(StoreMode::NodeLocal, "local-readers");
}

#[test]
fn shared_store_readers_do_not_wait_for_a_writer_once_the_image_exists() {
    readers_do_not_wait_for_a_writer(StoreMode::Shared, "shared-readers");
}

/// The user plants a notice and a squashfs of their own where the next steps' broadcasts
/// land, encoded by their own munge credential: the other node must not take it, and runs the
/// image the first node imported.
#[test]
fn hostile_a_notice_the_user_signed_is_not_believed() {
    common::require_root();
    multi::require_multi_cluster();
    multi::set_store_mode(StoreMode::NodeLocal, json!({}));
    let repo = multi::private_copy("busybox", "hostile");
    let digest = {
        let name = repo.rsplit('/').next().unwrap();
        common::registry_digest(name, "latest")
    };
    let hex = digest.trim_start_matches("sha256:");
    let dir = common::scratch_dir(Some(common::TEST_USER));
    let fake = common::users_squashfs(&dir, "fake", "forged");
    let fake_bytes = fs::read(&fake).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&fake_bytes))
    };
    let next = multi::next_job_id();
    for job in next..next + 3 {
        let payload = json!({"job": job, "step": 0, "uid": common::TEST_USER.uid,
            "digest": digest, "outcome": {"ready": {"sha256": sha, "size": fake_bytes.len(),
            "meta": {"Env": ["FORGED=1"]}}}});
        let stem = format!("/var/tmp/egret-bcast-{job}.0-{hex}");
        let mut munge = std::process::Command::new("runuser");
        munge.args(["-u", common::TEST_USER.name, "--", "munge"]);
        let credential = common::run_with_stdin(&mut munge, payload.to_string().as_bytes());
        let credential = common::assert_success(&credential, "munge as the user");
        fs::write(format!("{stem}.notice"), credential).unwrap();
        fs::write(format!("{stem}.sqsh"), &fake_bytes).unwrap();
        for ext in ["notice", "sqsh"] {
            common::run(std::process::Command::new("chown").args([
                &format!("{}:{}", common::TEST_USER.uid, common::TEST_USER.gid),
                &format!("{stem}.{ext}"),
            ]));
        }
    }
    let list = multi::MULTI_NODES[..2].join(",");
    let opt = format!("--container-image={repo}");
    let out = common::run(&mut common::user_command(
        common::TEST_USER.name,
        &dir,
        &[("SLURM_CONF", multi::MULTI_SLURM_CONF)],
        &[
            "srun",
            "-w",
            &list,
            "-N2",
            "-n2",
            &opt,
            "sh",
            "-c",
            "grep ^ID= /etc/os-release; env",
        ],
    ));
    let stderr = assert_ran(&out, 2, "egret-busybox");
    assert_eq!(
        imports(&stderr),
        1,
        "the other node did not take the broadcast: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("FORGED"),
        "a node ran the forged image's metadata: {stdout}"
    );
    assert_stored(StoreMode::NodeLocal, 2);
    let m2 = multi::store_dir(StoreMode::NodeLocal, "m2");
    let stored = fs::read(m2.join("images").join(&squashfs_files(&m2)[0])).unwrap();
    assert_ne!(stored, fake_bytes, "m2 installed the user's squashfs");
}
