//! pyxis's whole `--container-mounts` grammar through real srun: flags, tmpfs, umount, x-create,
//! recursive or not, paths with spaces, relative sources, refused filesystem types.

use egret_test_support as common;

use std::path::Path;
use std::process::Command;

fn busybox() -> String {
    format!("--container-image={}", common::registry_image("busybox"))
}

/// A host directory with a space in its name, a file, a program and a tmpfs mounted below it.
struct Tree {
    dir: std::path::PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = common::scratch_dir(None).join("with space");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("file"), "hello\n").unwrap();
        std::fs::copy("/bin/true", dir.join("prog")).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.join("sub"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount the test tmpfs");
        std::fs::write(dir.join("sub/inner"), "below\n").unwrap();
        Tree { dir }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.join("sub")).status();
    }
}

#[test]
fn flags_tmpfs_and_creation() {
    common::require_root();
    let tree = Tree::new();
    let d = tree.dir.display();
    let mounts = format!(
        "--container-mounts=tmpfs:/scratch:size=8m+mode=1777,\
         {d}:/ro:ro+noexec+rprivate,\
         {d}:/flat:bind,\
         {d}:/deep:rbind,\
         {d}/file:/new/dir/file,\
         {d}:/made:x-create=dir"
    );
    let out = common::srun_ok(&[
        &busybox(),
        &mounts,
        "sh",
        "-c",
        "df -k /scratch | tail -1 | awk '{print \"scratch\", $2}'; \
         grep ' /scratch ' /proc/self/mountinfo | grep -q nosuid,nodev && echo scratch-nosuid-nodev; \
         grep ' /ro ' /proc/self/mountinfo | grep -q ro,nosuid,nodev,noexec && echo ro-noexec; \
         /ro/prog 2>/dev/null && echo ran || echo not-executable; \
         touch /ro/x 2>/dev/null && echo wrote || echo read-only; \
         cat /deep/sub/inner; test -e /flat/sub/inner && echo flat-sees-submount || echo flat-without-submount; \
         cat /new/dir/file; cat /made/file",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "scratch 8192",
            "scratch-nosuid-nodev",
            "ro-noexec",
            "not-executable",
            "read-only",
            "below",
            "flat-without-submount",
            "hello",
            "hello"
        ],
        "{out}"
    );
}

#[test]
fn relative_sources_start_in_the_submit_directory() {
    common::require_root();
    let tree = Tree::new();
    let parent = tree.dir.parent().unwrap();
    let o = common::run(
        Command::new("timeout")
            .args(["120", "srun"])
            .arg(busybox())
            .arg("--container-mounts=./with space/file:/rel")
            .args(["cat", "/rel"])
            .current_dir(parent),
    );
    assert_eq!(
        common::assert_success(&o, "relative source").trim(),
        "hello"
    );
}

#[test]
fn refused_entries_fail_before_queueing() {
    common::require_root();
    for (value, needle) in [
        ("devpts:/dev/pts", "other filesystem types are not allowed"),
        ("proc:/p", "other filesystem types"),
        ("tmpfs:/t:size=lots", "bad tmpfs flag 'size=lots'"),
        ("/tmp:/t:rfoo", "unknown mount flag 'rfoo'"),
        ("tmpfs", "needs a destination"),
        ("umount:/x:ro", "umount takes no flags"),
    ] {
        let before = common::next_job_id();
        let opt = format!("--container-mounts={value}");
        let o = common::srun(&[&busybox(), &opt, "true"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && err.contains(needle),
            "{value}: {err}"
        );
        assert_eq!(common::next_job_id(), before, "{value}: a job was queued");
    }
    // umount of something the site does not mount, and a tmpfs on a denied path: one line.
    for (value, needle) in [
        ("umount:/nothing", "the site mounts nothing there"),
        ("tmpfs:/etc/x", "not allowed by the site's policy"),
    ] {
        let opt = format!("--container-mounts={value}");
        let o = common::srun(&[&busybox(), &opt, "true"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret:")).collect();
        assert!(
            !o.status.success() && ours.len() == 1 && ours[0].contains(needle),
            "{value}: {err}"
        );
    }
    assert!(!Path::new("/etc/x").exists());
}

#[test]
fn the_unbindable_flag_makes_the_mount_unbindable() {
    let dir = common::scratch_dir(Some(common::TEST_USER));
    let mounts = format!(
        "--container-mounts={d}:/mnt/u:unbindable,{d}:/mnt/p:ro",
        d = dir.display()
    );
    let image = format!("--container-image={}", common::registry_image("debian"));
    let out = common::assert_success(
        &common::srun_as(
            common::TEST_USER.name,
            &[
                &image,
                &mounts,
                "findmnt",
                "-n",
                "-o",
                "TARGET,PROPAGATION",
                "--list",
            ],
        ),
        "srun",
    );
    // The top mount at a target is what a bind would copy.
    let top = |target: &str| {
        out.lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(target))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{target} not mounted:\n{out}"))
    };
    assert!(top("/mnt/u").split(',').any(|p| p == "unbindable"), "{out}");
    assert!(!top("/mnt/p").contains("unbindable"), "{out}");
}
