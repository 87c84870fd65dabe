//! The test infrastructure itself: Slurm nodes, the registry and its test images, the test
//! user. When these fail, every other integration test would fail for the same reason.

use egret_test_support as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn http_get(path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(REGISTRY).unwrap_or_else(|e| {
        panic!("registry {REGISTRY} does not accept connections: {e} (run `make cluster`)")
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {REGISTRY}\r\nAccept: application/json\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn registry_answers_and_lists_the_test_images() {
    require_root();
    let (status, _) = http_get("/v2/");
    assert_eq!(status, 200, "GET /v2/ on {REGISTRY}");
    let (status, body) = http_get("/v2/_catalog");
    assert_eq!(status, 200, "GET /v2/_catalog: {body}");
    let catalog: serde_json::Value = serde_json::from_str(&body).expect("catalog JSON");
    let repos: Vec<&str> = catalog["repositories"]
        .as_array()
        .expect("repositories array")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for image in TEST_IMAGES {
        let repo = format!("egret/{image}");
        assert!(
            repos.contains(&repo.as_str()),
            "{repo} is not in the registry ({repos:?}): run `make images`"
        );
    }
}

#[test]
fn skopeo_reads_every_test_image() {
    require_root();
    for image in TEST_IMAGES {
        let manifest: serde_json::Value =
            serde_json::from_slice(&registry_manifest(image, "latest")).expect("manifest JSON");
        assert_eq!(
            manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "{image}"
        );
        assert!(
            !manifest["layers"].as_array().expect("layers").is_empty(),
            "{image} has no layers"
        );
    }
    let v2s2: serde_json::Value =
        serde_json::from_slice(&registry_manifest("busybox", "v2s2")).expect("manifest JSON");
    assert_eq!(
        v2s2["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&registry_manifest("busybox", "multiarch")).expect("index JSON");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
}

#[test]
fn multilayer_expectation_matches_the_pushed_image() {
    require_root();
    let expected = multilayer_expected();
    assert_eq!(
        expected["manifest_digest"]
            .as_str()
            .expect("manifest_digest"),
        registry_digest("multilayer", "latest"),
        "tests/common/multilayer-expected.json is not the tree of the pushed image: \
         run `make images` (scripts/build-test-images.py rewrites both)"
    );
    let entries = expected["entries"].as_object().expect("entries");
    assert_eq!(entries["/usr/bin/suid-busybox"]["mode"], 0o4755);
    assert_eq!(entries["/data/owned.txt"]["uid"], 1234);
    assert_eq!(entries["/data/xattr.txt"]["xattrs"]["user.egret"], "test");
    assert!(!entries.contains_key("/data/to-delete.txt"));
}

#[test]
fn sinfo_shows_both_nodes_up() {
    require_root();
    let out = run(std::process::Command::new("sinfo").args(["-h", "-N", "-o", "%N %t %P"]));
    let text = assert_success(&out, "sinfo");
    for node in NODES {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(node))
            .unwrap_or_else(|| panic!("sinfo does not list {node}:\n{text}"));
        let state = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            ["idle", "mix", "alloc"].contains(&state),
            "node {node} is {state}:\n{text}"
        );
        assert!(
            line.contains("debug"),
            "{node} not in partition debug: {line}"
        );
    }
}

#[test]
fn srun_runs_on_both_nodes() {
    require_root();
    let text = srun_ok(&["-N2", "-n2", "-l", "bash", "-c", "echo $SLURMD_NODENAME"]);
    let mut nodes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    nodes.sort();
    assert_eq!(nodes, NODES, "srun -N2 -n2 output:\n{text}");
    let hosts = srun_ok(&["-N2", "-n2", "hostname"]);
    assert_eq!(hosts.lines().count(), 2, "srun -N2 -n2 hostname:\n{hosts}");
}

#[test]
fn test_user_can_run_jobs() {
    require_root();
    let out = run(std::process::Command::new("id").args(["-u", TEST_USER.name]));
    assert_eq!(assert_success(&out, "id").trim(), TEST_USER.uid.to_string());
    let out = srun_as(TEST_USER.name, &["-n1", "id", "-u"]);
    assert_eq!(
        assert_success(&out, "srun as the test user").trim(),
        TEST_USER.uid.to_string()
    );
    let (code, text) = sbatch_wait_as(
        TEST_USER,
        "#!/bin/sh\necho \"batch $(id -un) on $SLURM_JOB_NUM_NODES nodes\"\nsrun -N2 -n2 true\n",
        &["-N2"],
    );
    assert_eq!(code, 0, "batch job output:\n{text}");
    assert!(
        text.contains("batch egretuser on 2 nodes"),
        "batch job output:\n{text}"
    );
}

#[test]
fn sbatch_wait_reports_the_exit_code() {
    require_root();
    let (code, text) = sbatch_wait("#!/bin/sh\necho failing on purpose\nexit 3\n");
    assert_eq!(code, 3, "output:\n{text}");
    assert!(text.contains("failing on purpose"), "output:\n{text}");
}
