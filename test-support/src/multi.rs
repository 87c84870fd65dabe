//! The eight-node cluster `egret-multi` (`scripts/cluster-up.sh multi`): nodes m1..m8 on this
//! one host, each with its own store, run and bundle directories (`%n` in
//! /etc/egret/multi/egret.json), and the GlusterFS volume its nodes can share a store on
//! (`scripts/shared-fs-up.sh`). The multi-node tests and benchmarks switch its store between
//! node-local and shared with [`set_store_mode`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cluster::{
    assert_success, registry_image, require_installed_build, run, EGRET_CONFIG, REGISTRY,
    SLURM_TIMEOUT_S,
};

/// What srun, sbatch and sinfo are pointed at with `SLURM_CONF`.
pub const MULTI_SLURM_CONF: &str = "/etc/slurm-multi/slurm.conf";
/// The multi cluster's egret configuration (plugstack `config=`).
pub const MULTI_EGRET_CONFIG: &str = "/etc/egret/multi/egret.json";
/// Its nodes.
pub const MULTI_NODES: [&str; 8] = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"];
/// The GlusterFS mount (FUSE) of the shared-store mode.
pub const SHARED_MOUNT: &str = "/mnt/egret-shared";
/// The shared-store mode's store.
pub const SHARED_STORE: &str = "/mnt/egret-shared/store";
/// The registry's access log (one line per request: `"GET /v2/... HTTP/1.1" 200 BYTES`).
pub const REGISTRY_LOG: &str = "/var/log/egret-registry.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// Each node imports into its own store (the default of a real cluster).
    NodeLocal,
    /// Every node uses one store on the network filesystem.
    Shared,
}

/// Panics unless the multi cluster answers with all its nodes usable.
pub fn require_multi_cluster() {
    require_installed_build();
    let out = run(Command::new("sinfo")
        .env("SLURM_CONF", MULTI_SLURM_CONF)
        .args(["-h", "-N", "-o", "%N %t"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let ready = MULTI_NODES
        .iter()
        .filter(|n| {
            text.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some(**n) && matches!(f.next(), Some("idle" | "mix" | "alloc" | "comp"))
            })
        })
        .count();
    assert_eq!(
        ready,
        MULTI_NODES.len(),
        "the multi cluster is not up (sinfo: {text:?}): run `make up`"
    );
}

/// The store directory of `node` in `mode`.
pub fn store_dir(mode: StoreMode, node: &str) -> PathBuf {
    match mode {
        StoreMode::NodeLocal => PathBuf::from(format!("/var/lib/egret/nodes/{node}/store")),
        StoreMode::Shared => PathBuf::from(SHARED_STORE),
    }
}

/// Writes the multi cluster's configuration for `mode` (the installed egret.json with the
/// node-local directories and the store of `mode`), with `extra` keys on top, and empties the
/// stores of that mode: every test starts from an empty store.
pub fn set_store_mode(mode: StoreMode, extra: serde_json::Value) {
    if mode == StoreMode::Shared {
        let fstype = run(Command::new("findmnt").args(["-n", "-o", "FSTYPE", SHARED_MOUNT]));
        let fstype = String::from_utf8_lossy(&fstype.stdout).trim().to_string();
        assert_eq!(
            fstype, "fuse.glusterfs",
            "{SHARED_MOUNT} is not the GlusterFS volume: run `make up`"
        );
    }
    let base = fs::read_to_string(EGRET_CONFIG).unwrap_or_else(|e| panic!("{EGRET_CONFIG}: {e}"));
    let mut cfg: serde_json::Value = serde_json::from_str(&base).expect("egret.json is JSON");
    let obj = cfg.as_object_mut().expect("egret.json is an object");
    for (k, v) in [
        ("OCIBundleDir", "/var/lib/egret/nodes/%n/bundle"),
        ("containersDir", "/var/lib/egret/nodes/%n/containers"),
        ("runDir", "/run/egret/nodes/%n"),
        ("runcRoot", "/run/egret/nodes/%n/runc"),
    ] {
        obj.insert(k.into(), v.into());
    }
    let store = match mode {
        StoreMode::NodeLocal => "/var/lib/egret/nodes/%n/store",
        StoreMode::Shared => SHARED_STORE,
    };
    obj.insert("localRepositoryBaseDir".into(), store.into());
    obj.insert(
        "localRepositoryShared".into(),
        (mode == StoreMode::Shared).into(),
    );
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    let dir = Path::new(MULTI_EGRET_CONFIG).parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(".egret.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, MULTI_EGRET_CONFIG).unwrap();
    for node in MULTI_NODES {
        let _ = fs::remove_dir_all(store_dir(mode, node));
    }
}

/// `timeout 120 srun ARGS` as root on the multi cluster.
pub fn srun_multi(args: &[&str]) -> Output {
    require_installed_build();
    run(&mut multi_srun_command(args))
}

/// The `Command` of [`srun_multi`], to spawn.
pub fn multi_srun_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.env("SLURM_CONF", MULTI_SLURM_CONF)
        .args(["--kill-after=10", &SLURM_TIMEOUT_S.to_string(), "srun"])
        .args(args);
    cmd
}

/// A repository of the registry no other test uses, holding a copy of test image `image`:
/// `127.0.0.1:5000/egret/multi-NAME-PID`. Its requests in the registry log are this test's.
pub fn private_copy(image: &str, name: &str) -> String {
    let repo = format!("{REGISTRY}/egret/multi-{name}-{}", std::process::id());
    let o = run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", registry_image(image)),
        &format!("docker://{repo}"),
    ]));
    assert_success(&o, &format!("skopeo copy {image} to {repo}"));
    repo
}

/// Where the registry log ends once it has been still for 300 ms: after a client was killed,
/// the registry may still be finishing (and then logging) the requests that client made.
pub fn registry_log_settled_mark() -> u64 {
    let mut last = registry_log_mark();
    let mut still = 0;
    while still < 3 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = registry_log_mark();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// Where the registry log ends now: count requests after it with [`blob_downloads`].
pub fn registry_log_mark() -> u64 {
    fs::metadata(REGISTRY_LOG)
        .unwrap_or_else(|e| panic!("{REGISTRY_LOG}: {e}: run `make up`"))
        .len()
}

/// Per blob of `repo` (`127.0.0.1:5000/egret/...`), how many times it was downloaded in full
/// (GET answered 200 with all its bytes; a download cut short by a killed client is logged
/// when the registry notices, and does not count) since `mark`, and the bytes sent for it.
pub fn full_blob_downloads(repo: &str, mark: u64) -> Vec<(String, usize, u64)> {
    let manifest = repo_manifest(repo);
    let size_of = |blob: &str| -> Option<u64> {
        std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
            .find(|d| d["digest"] == blob)
            .and_then(|d| d["size"].as_u64())
    };
    let mut out: Vec<(String, usize, u64)> = Vec::new();
    for (blob, bytes) in blob_requests(repo, mark) {
        if size_of(&blob) != Some(bytes) {
            continue;
        }
        match out.iter_mut().find(|(b, _, _)| *b == blob) {
            Some(e) => {
                e.1 += 1;
                e.2 += bytes;
            }
            None => out.push((blob, 1, bytes)),
        }
    }
    out
}

/// The manifest of `repo:latest` as the registry serves it.
fn repo_manifest(repo: &str) -> serde_json::Value {
    let path = repo.strip_prefix(REGISTRY).unwrap_or(repo);
    let o = run(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{REGISTRY}/v2{path}/manifests/latest"),
    ]));
    let body = assert_success(&o, &format!("the manifest of {repo}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("the manifest of {repo}: {e}"))
}

/// Every blob GET of `repo` answered 200 since `mark`: (blob, bytes sent).
pub fn blob_requests(repo: &str, mark: u64) -> Vec<(String, u64)> {
    let text = fs::read(REGISTRY_LOG).unwrap_or_else(|e| panic!("{REGISTRY_LOG}: {e}"));
    let text = String::from_utf8_lossy(&text[mark.min(text.len() as u64) as usize..]).into_owned();
    let path = repo.strip_prefix(REGISTRY).unwrap_or(repo);
    let needle = format!("\"GET /v2{path}/blobs/");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find(&needle) else {
            continue;
        };
        let rest = &line[at + needle.len()..];
        let blob = rest
            .split([' ', '"'])
            .next()
            .unwrap_or_default()
            .to_string();
        // `... HTTP/1.1" STATUS BYTES ...`
        let mut after = rest
            .split('"')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace();
        let (Some("200"), Some(bytes)) = (after.next(), after.next()) else {
            continue;
        };
        out.push((blob, bytes.parse().unwrap_or(0)));
    }
    out
}

/// The id the multi cluster's next job will get.
pub fn next_job_id() -> usize {
    let mut scontrol = Command::new("scontrol");
    scontrol.env("SLURM_CONF", MULTI_SLURM_CONF);
    crate::cluster::next_job_id_of(scontrol)
}
