//! Reliability under Slurm: concurrent steps importing one new image.

mod common;

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
