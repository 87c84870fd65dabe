//! pyxis 0.24's errors and semantics through real srun, where a job script may depend on them:
//! empty or escaping mount destinations, missing mount sources, unknown namespaces, relative
//! and missing working directories, `dockerd://`/`podman://` images, and the shipped deny
//! lists letting ordinary data paths through.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

fn busybox() -> String {
    format!("--container-image={}", common::registry_image("busybox"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// egret's lines of the output (srun adds its own).
fn ours(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.contains("egret:"))
        .map(str::to_string)
        .collect()
}

/// srun as the ordinary test user.
fn srun_user(args: &[&str]) -> Output {
    common::srun_as(common::TEST_USER.name, args)
}

/// Fails with exactly one line of egret's that holds every needle, and queues no job.
fn refused_before_queueing(args: &[&str], needles: &[&str]) {
    let before = common::next_job_id();
    let o = srun_user(args);
    let lines = ours(&o);
    assert!(
        !o.status.success() && lines.len() == 1 && needles.iter().all(|n| lines[0].contains(n)),
        "{args:?}: {}",
        stderr(&o)
    );
    assert_eq!(common::next_job_id(), before, "{args:?}: a job was queued");
}

/// Fails in the step with exactly one line of egret's that holds every needle.
fn fails_in_one_line(args: &[&str], needles: &[&str]) {
    let o = srun_user(args);
    let lines = ours(&o);
    assert!(
        !o.status.success() && lines.len() == 1 && needles.iter().all(|n| lines[0].contains(n)),
        "{args:?}: {}",
        stderr(&o)
    );
}

#[test]
fn empty_relative_and_escaping_destinations_fail_before_queueing() {
    common::require_root();
    for (value, needle) in [
        ("/tmp:", "'/tmp:': invalid format: empty destination"),
        ("/tmp::ro", "invalid format: empty destination"),
        ("/tmp:/../etc", "leaves the container's root"),
        ("/tmp:/a/../../x:ro", "leaves the container's root"),
        ("tmpfs:/t/../../x", "leaves the container's root"),
        ("/tmp:./rel", "destination './rel' must be an absolute path"),
    ] {
        let opt = format!("--container-mounts={value}");
        refused_before_queueing(&[&busybox(), &opt, "true"], &["--container-mounts", needle]);
    }
}

#[test]
fn a_missing_mount_source_is_named_with_pyxis_words() {
    common::require_root();
    let dir = common::scratch_dir(Some(common::TEST_USER));
    fs::write(dir.join("file"), "x").unwrap();
    let missing = dir.join("missing");
    let below_file = dir.join("file/sub");
    for source in [&missing, &below_file] {
        let opt = format!("--container-mounts={}:/in", source.display());
        let want = format!(
            "--container-mounts: source path does not exist: {}",
            source.display()
        );
        fails_in_one_line(&[&busybox(), &opt, "true"], &[&want]);
    }
    assert!(!missing.exists(), "the missing source was created");
}

#[test]
fn an_unknown_namespace_is_pyxis_words_before_queueing() {
    common::require_root();
    refused_before_queueing(
        &[&busybox(), "--container-unshare=pid", "true"],
        &["--container-unshare=pid: unknown namespace 'pid'"],
    );
    refused_before_queueing(
        &[&busybox(), "--container-unshare=net,,ipc", "true"],
        &["empty namespace argument"],
    );
}

#[test]
fn a_relative_workdir_starts_at_the_containers_root() {
    common::require_root();
    for (value, want) in [
        ("data", "/data"),
        ("./data/", "/data"),
        ("../../data", "/data"),
    ] {
        let opt = format!("--container-workdir={value}");
        let o = srun_user(&[&busybox(), &opt, "pwd"]);
        assert_eq!(
            common::assert_success(&o, value).trim(),
            want,
            "{value}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_missing_workdir_fails_instead_of_being_created() {
    common::require_root();
    fails_in_one_line(
        &[&busybox(), "--container-workdir=/no/such/dir", "pwd"],
        &["couldn't chdir to /no/such/dir: No such file or directory"],
    );
    // A file is not a directory; a relative value is named as typed and as resolved.
    fails_in_one_line(
        &[&busybox(), "--container-workdir=data/hello.txt", "pwd"],
        &[
            "--container-workdir=data/hello.txt",
            "couldn't chdir to /data/hello.txt: Not a directory",
        ],
    );
    let dir = common::scratch_dir(Some(common::TEST_USER));
    fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::chown(dir.join("sub"), Some(common::TEST_USER.uid), None).unwrap();
    let mounts = format!("--container-mounts={}:/in,tmpfs:/scratch", dir.display());
    // Existing directories of a user mount and a tmpfs's own mount point are fine.
    for (workdir, want) in [("/in/sub", "/in/sub"), ("/scratch", "/scratch")] {
        let opt = format!("--container-workdir={workdir}");
        let o = srun_user(&[&busybox(), &mounts, &opt, "pwd"]);
        assert_eq!(
            common::assert_success(&o, workdir).trim(),
            want,
            "{}",
            stderr(&o)
        );
    }
    // Missing below the user's mount: refused, and nothing made in the host directory.
    fails_in_one_line(
        &[&busybox(), &mounts, "--container-workdir=/in/new", "pwd"],
        &["couldn't chdir to /in/new"],
    );
    assert!(
        !dir.join("new").exists(),
        "the workdir was created in the user's mount"
    );
}

#[test]
fn dockerd_and_podman_images_are_refused_before_queueing() {
    common::require_root();
    for image in ["dockerd://busybox", "podman://localhost/app:1"] {
        let opt = format!("--container-image={image}");
        refused_before_queueing(
            &[&opt, "true"],
            &[
                &format!("--container-image={image}"),
                "does not import images from a local Docker or podman daemon",
                "registry",
                "egret import",
                ".sqsh",
            ],
        );
    }
}

/// A host directory under `/var/lib`, removed at the end.
struct VarLibDir(PathBuf);

impl Drop for VarLibDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn data_under_var_lib_mounts_at_its_own_path_and_roots_paths_stay_denied() {
    common::require_root();
    let dir = VarLibDir(PathBuf::from(format!(
        "/var/lib/egret-test-data-{}",
        std::process::id()
    )));
    fs::create_dir_all(&dir.0).unwrap();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.0.join("input.txt"), "data under var lib\n").unwrap();
    let d = dir.0.display();
    let opt = format!("--container-mounts={d},{d}:/var/tmp/in:ro");
    let cat = format!("cat {d}/input.txt /var/tmp/in/input.txt");
    let o = srun_user(&[&busybox(), &opt, "sh", "-c", &cat]);
    assert_eq!(
        common::assert_success(&o, "a /var/lib source"),
        "data under var lib\ndata under var lib\n"
    );
    // Where egret, its hooks or runc write or mount as root: one line, before any container.
    for dst in ["/var", "/var/spool/slurmd/x", "/run", "/etc/x", "/opt"] {
        let opt = format!("--container-mounts={d}:{dst}");
        fails_in_one_line(
            &[&busybox(), &opt, "true"],
            &[dst, "not allowed by the site's policy"],
        );
    }
}

#[test]
fn a_workdir_is_looked_up_with_the_users_rights_only() {
    common::require_root();
    // Root's directory, bound by the user, with a part the user may not enter.
    let dir = common::scratch_dir(None);
    fs::create_dir_all(dir.join("secret/inner")).unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    let mounts = format!("--container-mounts={}:/in:ro", dir.display());
    // Present or not, the user learns only what they could see themselves.
    for workdir in ["/in/secret/inner", "/in/secret/missing"] {
        let opt = format!("--container-workdir={workdir}");
        fails_in_one_line(
            &[&busybox(), &mounts, &opt, "pwd"],
            &[&format!("couldn't chdir to {workdir}: Permission denied")],
        );
    }
    assert!(!dir.join("secret/missing").exists());
}
