//! Reliability under Slurm: concurrent steps importing one new image.

use egret_test_support as common;

use std::process::{Command, Stdio};

#[test]
fn eight_concurrent_steps_importing_a_new_image_download_it_once() {
    common::require_root();
    let image = common::registry_image("reported");
    // Make the image new to the store: root is the only user of this test image.
    let _ = common::run(common::egret().args(["rmi", &image]));
    let o = common::run(common::egret().arg("images"));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("egret/reported"),
        "the image is still stored"
    );
    let before = common::leak_snapshot();
    let opt = format!("--container-image={image}");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new("timeout")
                .args([
                    "180",
                    "srun",
                    "-n1",
                    &opt,
                    "grep",
                    "^ID=",
                    "/etc/os-release",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("srun")
        })
        .collect();
    let mut downloads = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), "ID=egret-busybox", "{stderr}");
        if stderr.contains("egret: downloading") {
            downloads += 1;
        }
    }
    assert_eq!(downloads, 1, "the image was downloaded {downloads} times");
    common::assert_no_leaks(&before);
}

/// Pids of the slurmstepd of step `job.0`.
fn stepd_pids(job: &str) -> Vec<i32> {
    let o = Command::new("pgrep")
        .args(["-f", &format!("slurmstepd: \\[{job}\\.0\\]")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn killing_slurmstepd_mid_step_leaves_nothing_mounted() {
    common::require_root();
    let before = common::leak_snapshot();
    let image = format!("--container-image={}", common::registry_image("busybox"));
    let name = format!("egret-stepd-{}", std::process::id());
    let mut srun = Command::new("timeout")
        .args([
            "120", "srun", "-w", "n1", "-J", &name, &image, "sleep", "300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = || {
        let o = Command::new("squeue")
            .args(["-h", "-n", &name, "-o", "%i"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert!(
        common::wait_for(std::time::Duration::from_secs(60), || {
            let j = job();
            !j.is_empty()
                && common::runc_state_entries()
                    .iter()
                    .any(|e| e.starts_with(&format!("egret-{j}.0.")))
        }),
        "the container never started"
    );
    let j = job();
    let pids = stepd_pids(&j);
    assert!(!pids.is_empty(), "no slurmstepd for {j}.0");
    for p in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The launcher notices and stops the step's containers: nothing stays mounted or running.
    let clean = common::wait_for(std::time::Duration::from_secs(30), || {
        common::runc_state_entries()
            .iter()
            .all(|e| !e.starts_with(&format!("egret-{j}.")))
            && common::processes_named(&["egret-launcher"]).is_empty()
    });
    let _ = Command::new("scancel").arg(&j).status();
    let _ = srun.kill();
    let _ = srun.wait();
    // A node Slurm drained over the lost step must not take the next tests with it.
    let _ = Command::new("scontrol")
        .args(["update", "nodename=n1", "state=resume"])
        .stderr(Stdio::null())
        .status();
    assert!(clean, "containers or the launcher outlived slurmstepd");
    assert!(
        common::wait_for(
            std::time::Duration::from_secs(30),
            || common::leak_snapshot() == before
        ),
        "mounts or loop devices left"
    );
}
