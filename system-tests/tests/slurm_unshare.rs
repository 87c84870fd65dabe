//! `--container-unshare=net,ipc,uts`: namespaces of the step's own, shared by its tasks on a
//! node, through real srun on the two-node cluster.

use egret_test_support as common;

use std::collections::BTreeMap;

fn ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn tasks_of_a_node_share_new_namespaces() {
    common::require_root();
    let before = common::leak_snapshot();
    let image = format!("--container-image={}", common::registry_image("busybox"));
    let out = common::srun_ok(&[
        "-N2",
        "-n4",
        "-l",
        "--container-unshare=net,ipc,uts",
        &image,
        "sh",
        "-c",
        "echo ns $SLURM_NODEID $(readlink /proc/self/ns/net) $(readlink /proc/self/ns/ipc) $(readlink /proc/self/ns/uts) $(hostname); \
         echo links $(ip -o link | cut -d: -f2 | tr -d ' ') $(ip -o link show lo | grep -c UP); \
         touch /dev/shm/egret-unshare-$SLURM_PROCID; sleep 1; echo shm $SLURM_NODEID $(ls /dev/shm | tr '\\n' ' ')",
    ]);
    let host = (ns("net"), ns("ipc"), ns("uts"));
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        match words.first() {
            Some(&"ns") => {
                let (net, ipc, uts) = (words[2], words[3], words[4]);
                assert!(
                    net != host.0 && ipc != host.1 && uts != host.2,
                    "{line} vs host {host:?}"
                );
                assert_eq!(words[5], host_name.trim(), "the node's hostname is kept");
                per_node
                    .entry(words[1].to_string())
                    .or_default()
                    .push(format!("{net} {ipc} {uts}"));
            }
            // Only the loopback interface, and it is up.
            Some(&"links") => assert_eq!(&words[1..], ["lo", "1"], "{line}"),
            Some(&"shm") => {
                // Each node's tasks see their own files only: not the other node's.
                let names: Vec<&str> = words[2..].to_vec();
                assert!(!names.is_empty(), "{line}");
                assert!(
                    names.iter().all(|n| n.starts_with("egret-unshare-")),
                    "{line}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(per_node.len(), 2, "{out}");
    let firsts: Vec<&String> = per_node.values().map(|v| &v[0]).collect();
    for tasks in per_node.values() {
        assert!(tasks.iter().all(|t| t == &tasks[0]), "{out}");
    }
    assert_ne!(firsts[0], firsts[1], "nodes must not share: {out}");
    assert!(
        !std::path::Path::new("/dev/shm/egret-unshare-0").exists(),
        "the host's /dev/shm was used"
    );
    common::assert_no_leaks(&before);
    assert!(
        common::wait_for(std::time::Duration::from_secs(10), || {
            common::processes_named(&["sleep"])
                .iter()
                .all(|(_, cmd)| !cmd.contains("infinity"))
        }),
        "a namespace holder outlived the step"
    );
}

#[test]
fn unknown_namespaces_are_refused_before_queueing() {
    common::require_root();
    let image = format!("--container-image={}", common::registry_image("busybox"));
    for value in ["pid", "net,net", "net,user"] {
        let before = common::next_job_id();
        let opt = format!("--container-unshare={value}");
        let o = common::srun(&[&image, &opt, "true"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && err.contains("--container-unshare"),
            "{err}"
        );
        assert_eq!(common::next_job_id(), before, "{value}: a job was queued");
    }
}
