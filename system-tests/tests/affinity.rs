//! CPU binding survives the container: runc's new cpuset cgroup would otherwise reset the
//! affinity Slurm (`--cpu-bind`) gave the task. The launcher pins the container to the task's
//! CPUs through the same engine call the CLI uses, tested here with `taskset` on the CLI.

use egret_test_support as common;

use std::process::Command;

#[test]
fn container_keeps_the_callers_cpu_affinity() {
    common::require_root();
    let image = common::registry_image("busybox");
    assert!(common::egret()
        .args(["pull", &image])
        .output()
        .unwrap()
        .status
        .success());
    let run = |cpus: Option<&str>| {
        let mut cmd = match cpus {
            Some(c) => {
                let mut c2 = Command::new("taskset");
                c2.args(["-c", c, common::EGRET_BIN]);
                c2
            }
            None => common::egret(),
        };
        let o = cmd
            .args([
                "run",
                &image,
                "grep",
                "Cpus_allowed_list",
                "/proc/self/status",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::describe(&o));
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(run(Some("1")), "1");
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(run(None), online.trim());
}
