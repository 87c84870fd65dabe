//! `egret import` and `egret export`: enroot-style squashfs files that `srun
//! --container-image=./FILE.sqsh` runs. Real registry, real Slurm.

use egret_test_support as common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_user_imports_a_file_that_srun_runs() {
    common::require_root();
    let user = common::TEST_USER;
    let dir = common::scratch_dir(Some(user));
    let image = common::registry_image("busybox");
    let in_dir = |args: &[&str]| {
        let mut cmd = vec![common::EGRET_BIN];
        cmd.extend_from_slice(args);
        common::run(
            std::process::Command::new("runuser")
                .args(["-u", user.name, "--"])
                .args(&cmd)
                .current_dir(&dir),
        )
    };
    let o = in_dir(&["import", &image]);
    common::assert_success(&o, "egret import as the user");
    let file = dir.join("egret+busybox+latest.sqsh");
    let meta = std::fs::metadata(&file).expect("the default file name, enroot style");
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // Never overwritten unless asked.
    let o = in_dir(&["import", &image]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("exists; remove it or add --force"),
        "{err}"
    );
    common::assert_success(
        &in_dir(&["import", "--force", "-o", "again.sqsh", &image]),
        "-o",
    );
    // srun runs it, as the user.
    let opt = format!("--container-image={}", file.display());
    let out = common::srun_as(user.name, &[&opt, "grep", "^ID=", "/etc/os-release"]);
    assert_eq!(
        common::assert_success(&out, "srun the imported file").trim(),
        "ID=egret-busybox"
    );
}

#[test]
fn import_errors_are_one_line_and_leave_nothing() {
    common::require_root();
    let dir = common::scratch_dir(None);
    for (reference, needle) in [
        ("UPPER/Case::x", "import: "),
        (&*common::registry_image("does-not-exist"), "does-not-exist"),
    ] {
        let o = common::run(
            common::egret()
                .args(["import", "-o"])
                .arg(dir.join("x.sqsh"))
                .arg(reference)
                .current_dir(&dir),
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let ours: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("egret: import"))
            .collect();
        assert!(!o.status.success(), "{err}");
        assert_eq!(ours.len(), 1, "{err}");
        assert!(
            ours[0].contains(needle) && ours[0].contains("egret import --help"),
            "{err}"
        );
        assert!(!dir.join("x.sqsh").exists());
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    }
    let o = common::run(
        common::egret()
            .args(["import", "-o"])
            .arg(&dir)
            .arg("busybox"),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}

#[test]
fn export_writes_a_stored_image() {
    common::require_root();
    let image = common::registry_image("busybox");
    common::assert_success(&common::run(common::egret().args(["pull", &image])), "pull");
    let dir = common::scratch_dir(None);
    let file = dir.join("exported.sqsh");
    common::assert_success(
        &common::run(common::egret().args(["export", &image]).arg(&file)),
        "export",
    );
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
    let opt = format!("--container-image={}", file.display());
    let o = common::srun(&[&opt, "grep", "^ID=", "/etc/os-release"]);
    assert_eq!(
        common::assert_success(&o, "srun the exported file").trim(),
        "ID=egret-busybox"
    );
    let o = common::run(
        common::egret()
            .args(["export", "127.0.0.1:5000/egret/never-pulled"])
            .arg(dir.join("n.sqsh")),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("no such image of yours"),
        "{err}"
    );
}
