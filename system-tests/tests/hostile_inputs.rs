//! Hostile inputs that no other suite covers (docs/security.md lists the whole set): image
//! labels that name hook annotations, control bytes in option values, an image removed while
//! a container runs from it. Real srun, real egret, real registry.

use egret_test_support as common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn image_labels_never_enable_hooks() {
    common::require_root();
    // The image's labels ask for the MPI, glibc, SSH, sync, timestamp and mount hooks. Any of
    // them running would fail this busybox container (no MPI, no keys, no libc): it must not.
    let image = format!("--container-image={}", common::registry_image("hooklabels"));
    let out = common::srun_ok(&[&image, "sh", "-c", "echo ran"]);
    assert_eq!(out.trim(), "ran");
    // The same annotation given by the user does select the MPI hook (and fails on busybox).
    let o = common::srun(&[&image, "--mpi-hook", "true"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("egret mpi"), "{err}");
}

#[test]
fn control_bytes_in_option_values_are_refused_before_queueing() {
    common::require_root();
    let image = format!("--container-image={}", common::registry_image("busybox"));
    for opt in [
        "--container-workdir=/a\u{1}b",
        "--container-mounts=/tmp:/x\u{7f}",
        "--container-env=A\u{1b}B",
        "--container-name=a\tb",
        "--container-save=/tmp/a\u{0}b",
    ] {
        if opt.contains('\0') {
            // A NUL cannot even reach srun's argv: the OS refuses it first.
            assert!(Command::new("srun").arg(opt).output().is_err());
            continue;
        }
        let before = common::next_job_id();
        let o = common::srun(&[&image, opt, "true"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let name = opt.split('=').next().unwrap();
        assert!(!o.status.success() && err.contains(name), "{opt:?}: {err}");
        assert_eq!(common::next_job_id(), before, "{opt:?}: a job was queued");
    }
}

#[test]
fn removing_an_image_does_not_disturb_a_running_container() {
    common::require_root();
    let image = common::registry_image("reported");
    common::assert_success(&common::run(common::egret().args(["pull", &image])), "pull");
    let child = common::egret()
        .args([
            "run",
            &image,
            "sh",
            "-c",
            "sleep 2; grep ^ID= /etc/os-release",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    common::assert_success(&common::run(common::egret().args(["rmi", &image])), "rmi");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ID=egret-busybox"
    );
    let o = common::run(common::egret().arg("images"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("egret/reported"));
}
