//! The installed setuid `egret` as an ordinary user works from the command line: pull, images,
//! run, ps, kill and rmi in the user's own index of the shared store, as Sarus's CLI does; root
//! is used only for those verbs, and nothing the user sets (environment, `--config`,
//! `--temp-dir`) reaches what runs as root.
//!
//! Run with `make test` or `cargo test --release --test cli_user` as root, after `make up`.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::TEST_USER;

/// `egret ARGS` as the test user, in `/`, with `env` added to runuser's environment.
fn egret_as_user(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut argv = vec![common::EGRET_BIN];
    argv.extend_from_slice(args);
    common::run(&mut common::user_command(
        TEST_USER.name,
        Path::new("/"),
        env,
        &argv,
    ))
}

fn ok_as_user(args: &[&str]) -> String {
    let o = egret_as_user(&[], args);
    common::assert_success(
        &o,
        &format!("egret {} as {}", args.join(" "), TEST_USER.name),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tag only this test uses, so its index entry is its own: the user's index starts without it.
fn listed(images: &str, repository: &str) -> bool {
    images
        .lines()
        .any(|l| l.split_whitespace().next() == Some(repository))
}

#[test]
fn the_installed_egret_is_setuid_root_and_root_owned() {
    common::require_root();
    let m = fs::metadata(common::EGRET_BIN).unwrap();
    assert_eq!(m.uid(), 0, "{} must be root's", common::EGRET_BIN);
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o4755,
        "{} must be installed setuid root, writable by root alone",
        common::EGRET_BIN
    );
}

#[test]
fn a_user_pulls_lists_runs_and_removes_an_image_in_their_own_index() {
    common::require_root();
    let reference = common::registry_image("busybox");
    let repository = "127.0.0.1:5000/egret/busybox";
    // Start from an index without it (a repeated run of the test, or another test's pull).
    let _ = egret_as_user(&[], &["rmi", &reference]);

    let o = egret_as_user(&[], &["pull", &reference]);
    common::assert_success(&o, "pull as the user");
    let images = ok_as_user(&["images"]);
    assert!(listed(&images, repository), "{images}");

    // The container runs as the caller, with the caller's groups and nothing of root's.
    let out = ok_as_user(&["run", &reference, "id"]);
    assert!(
        out.contains(&format!("uid={}", TEST_USER.uid)) && !out.contains("(root)"),
        "{out}"
    );
    assert!(
        !out.split("groups=").nth(1).unwrap_or("").contains("0("),
        "no extra group 0 in the container: {out}"
    );

    // ps shows the user's container, kill stops it; both as the user.
    let name = format!("user-test-{}", std::process::id());
    let mut running = Command::new("runuser")
        .args([
            "-u",
            TEST_USER.name,
            "--",
            common::EGRET_BIN,
            "run",
            "--name",
        ])
        .args([&name, &reference, "sleep", "60"])
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_for(Duration::from_secs(30), || ok_as_user(&["ps"])
            .contains(&name)),
        "the user's container is not in their egret ps"
    );
    // Root's view has it too; another user's would not (the owner annotation is the caller's).
    let root_ps = common::assert_success(&common::egret().arg("ps").output().unwrap(), "ps");
    assert!(root_ps.contains(&name), "{root_ps}");
    ok_as_user(&["kill", &name]);
    let status = running.wait().unwrap();
    assert!(
        !status.success(),
        "the killed container's run reports it: {status:?}"
    );
    assert!(!ok_as_user(&["ps"]).contains(&name));

    ok_as_user(&["rmi", &reference]);
    let images = ok_as_user(&["images"]);
    assert!(!listed(&images, repository), "{images}");
}

#[test]
fn a_users_containers_are_theirs_alone_to_see_and_stop() {
    common::require_root();
    let reference = common::registry_image("busybox");
    common::stored_for_root("busybox");
    let name = format!("root-test-{}", std::process::id());
    let mut running = common::egret()
        .args(["run", "--name", &name, &reference, "sleep", "60"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_for(Duration::from_secs(30), || {
            let o = common::egret().arg("ps").output().unwrap();
            String::from_utf8_lossy(&o.stdout).contains(&name)
        }),
        "root's container did not start"
    );
    let ps = ok_as_user(&["ps"]);
    assert!(!ps.contains(&name), "a user sees root's container: {ps}");
    let o = egret_as_user(&[], &["kill", &name]);
    assert!(!o.status.success(), "a user stopped root's container");
    assert!(
        stderr(&o).contains("no such running container"),
        "{}",
        common::describe(&o)
    );
    let o = common::egret().args(["kill", &name]).output().unwrap();
    common::assert_success(&o, "root kills its container");
    let _ = running.wait();
}

#[test]
fn nothing_the_user_sets_reaches_what_runs_as_root() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let marker = dir.join("ran");
    // Programs root starts, shadowed in the user's PATH: none may run.
    let shadowed = [
        "skopeo",
        "mksquashfs",
        "unsquashfs",
        "sqfs2tar",
        "runc",
        "mount",
        "umount",
        "losetup",
    ];
    for name in shadowed {
        let p = dir.join(name);
        fs::write(
            &p,
            format!("#!/bin/sh\necho {name} $(id -u) >> {}\n", marker.display()),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A config the user wrote, through the environment root honours for itself.
    let evil = dir.join("egret.json");
    fs::write(
        &evil,
        r#"{"securityChecks": false, "runcPath": "/bin/false"}"#,
    )
    .unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", dir.display());
    let env = [
        ("PATH", path.as_str()),
        ("EGRET_CONFIG", evil.to_str().unwrap()),
        ("TMPDIR", dir.to_str().unwrap()),
    ];
    let reference = common::registry_image("busybox");
    let o = egret_as_user(&env, &["pull", &reference]);
    common::assert_success(&o, "pull with a hostile environment");
    let o = egret_as_user(&env, &["run", &reference, "/bin/echo", "inside"]);
    common::assert_success(&o, "run with a hostile environment");
    assert!(String::from_utf8_lossy(&o.stdout).contains("inside"));
    let ran = fs::read_to_string(&marker).unwrap_or_default();
    assert!(ran.is_empty(), "root ran the user's programs: {ran}");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        shadowed.len() + 1,
        "nothing was written into the user's TMPDIR"
    );

    // What the user may not choose is refused in one line, before anything runs.
    let o = egret_as_user(&[], &["--config", evil.to_str().unwrap(), "images"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("only root may choose the config file"),
        "{}",
        stderr(&o)
    );
    let o = egret_as_user(
        &[],
        &["pull", "--temp-dir", dir.to_str().unwrap(), &reference],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("only root may choose where imports run"),
        "{}",
        stderr(&o)
    );
    let o = egret_as_user(&[], &["pull", "--centralized-repository", &reference]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("read-only for users")
            || stderr(&o).contains("centralizedRepositoryDir"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verbs_without_privilege_run_as_the_user() {
    common::require_root();
    // ssh-keygen writes into the user's home: as the user, never as root.
    let home = Path::new(TEST_USER.home);
    let keys = home.join(".oci-hooks");
    let _ = fs::remove_dir_all(&keys);
    let o = egret_as_user(&[], &["ssh-keygen"]);
    common::assert_success(&o, "ssh-keygen as the user");
    let mut owners = Vec::new();
    let mut stack = vec![keys.clone()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        owners.push((p.clone(), m.uid()));
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    let _ = fs::remove_dir_all(&keys);
    assert!(owners.len() > 2, "{owners:?}");
    for (p, uid) in owners {
        assert_eq!(uid, TEST_USER.uid, "{} is not the user's", p.display());
    }
    let version = ok_as_user(&["version"]);
    assert!(version.starts_with("egret "), "{version}");
    let hooks = ok_as_user(&["hooks"]);
    assert!(hooks.contains("NAME") || hooks.contains("mpi"), "{hooks}");
}

#[test]
fn srun_egret_run_stays_in_the_tasks_cgroup_and_gets_the_pmi_descriptor() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    // Sarus's way: srun starts egret run as the task; PMI-2 hands it PMI_FD.
    let host = common::srun_as(TEST_USER.name, &["-n1", "cat", "/proc/self/cgroup"]);
    let host = common::assert_success(&host, "plain srun");
    let script = "echo fd=$PMI_FD rank=$PMI_RANK size=$PMI_SIZE; \
                  readlink /proc/self/fd/$PMI_FD; cat /proc/self/cgroup";
    let o = common::srun_as(
        TEST_USER.name,
        &[
            "-n1",
            "--mpi=pmi2",
            common::EGRET_BIN,
            "run",
            &reference,
            "sh",
            "-c",
            script,
        ],
    );
    let inner = common::assert_success(&o, "srun egret run");
    let first = inner.lines().next().unwrap_or("");
    assert_eq!(first, "fd=3 rank=0 size=1", "{inner}");
    assert!(
        inner.lines().nth(1).unwrap_or("").starts_with("socket:"),
        "PMI_FD names the PMI socket inside: {inner}"
    );
    // The two steps are two jobs: compare the paths with the job numbers left out.
    let unjobbed = |p: String| {
        p.split('/')
            .map(|c| match c.strip_prefix("job_") {
                Some(_) => "job_N",
                None => c,
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for ctrl in ["memory", "pids"] {
        let h = unjobbed(common::cgroup_path(&host, ctrl));
        let c = unjobbed(common::cgroup_path(&inner, ctrl));
        let parent = h.trim_end_matches('/');
        assert!(
            c.starts_with(&format!("{parent}/")) && c.len() > parent.len() + 1,
            "{ctrl}: container in {c}, a plain task in {h}"
        );
    }
}

#[test]
fn a_container_runs_under_umask_000_and_777_alike_and_keeps_it() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    for mask in ["0000", "0777", "0027"] {
        let script = format!(
            "umask {mask}; exec {} run {reference} sh -c umask",
            common::EGRET_BIN
        );
        let o = common::run_as_user(TEST_USER.name, &["sh", "-c", &script]);
        let out = common::assert_success(&o, &format!("egret run under umask {mask}"));
        assert_eq!(out.trim(), mask, "the container's umask is the caller's");
    }
}

#[test]
fn a_user_loads_an_archive_they_can_read_and_never_one_they_cannot() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let archive = dir.join("busybox.tar");
    let dest = format!("docker-archive:{}:busybox:latest", archive.display());
    let src = format!("docker://{}", common::registry_image("busybox"));
    let o =
        common::run(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &src, &dest]));
    common::assert_success(&o, "skopeo copy to a docker-archive");
    let name = format!("userload{}", std::process::id());

    // Root's file, which the user may not read: the setuid egret reads it as the user, so no.
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o600)).unwrap();
    let o = egret_as_user(&[], &["load", archive.to_str().unwrap(), &name]);
    assert!(!o.status.success(), "a user loaded root's unreadable file");
    let images = ok_as_user(&["images"]);
    assert!(!images.contains(&name), "{images}");

    // The user's own file loads, under Sarus's load/library/ name, listed with its digest.
    std::os::unix::fs::chown(&archive, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
    ok_as_user(&["load", archive.to_str().unwrap(), &name]);
    let images = ok_as_user(&["images", "--digests"]);
    let row = images
        .lines()
        .find(|l| l.starts_with(&format!("load/library/{name} ")))
        .unwrap_or_else(|| panic!("no loaded image in {images}"));
    assert!(row.contains("sha256:") && row.ends_with("load"), "{row}");
    let out = ok_as_user(&[
        "run",
        &format!("load/library/{name}"),
        "cat",
        "/data/hello.txt",
    ]);
    assert_eq!(out, "hello from busybox image\n");
    ok_as_user(&["rmi", &format!("load/library/{name}")]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_user_exports_their_image_to_a_file_of_their_own_and_nowhere_else() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    let dir = common::scratch_dir(Some(TEST_USER));
    let out = dir.join("busybox.sqsh");
    ok_as_user(&["export", &reference, out.to_str().unwrap()]);
    let m = fs::metadata(&out).unwrap();
    assert_eq!(m.uid(), TEST_USER.uid, "the exported file is the user's");
    assert!(m.len() > 0);
    // Root's directory: the file is written as the user, so it cannot land there.
    let o = egret_as_user(&[], &["export", &reference, "/root/egret-export-test.sqsh"]);
    assert!(!o.status.success(), "{}", common::describe(&o));
    assert!(!Path::new("/root/egret-export-test.sqsh").exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_centralized_repository_is_filled_by_root_and_read_by_users() {
    common::require_root();
    let reference = common::registry_image("busybox");
    let o = common::egret()
        .args(["pull", "--centralized-repository", &reference])
        .output()
        .unwrap();
    common::assert_success(&o, "root pulls into the centralized repository");
    let images = ok_as_user(&["images", "--centralized-repository"]);
    assert!(listed(&images, "127.0.0.1:5000/egret/busybox"), "{images}");
    let out = ok_as_user(&[
        "run",
        "--centralized-repository",
        &reference,
        "cat",
        "/data/hello.txt",
    ]);
    assert_eq!(out, "hello from busybox image\n");
    let o = egret_as_user(&[], &["rmi", "--centralized-repository", &reference]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("read-only for users"), "{}", stderr(&o));
}

#[test]
fn a_user_mounts_and_devices_only_what_they_can_open() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    // Below a directory only root may enter: the source is resolved as the user, so refused,
    // in one line. (A directory the user may reach but not read mounts, and stays unreadable
    // to them inside: the container runs as the user.)
    let private = common::scratch_dir(None);
    fs::create_dir(private.join("inner")).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let src = private.join("inner");
    let spec = format!("type=bind,src={},dst=/mnt", src.display());
    let o = egret_as_user(&[], &["run", "--mount", &spec, &reference, "ls", "/mnt"]);
    assert!(!o.status.success(), "{}", common::describe(&o));
    let err = stderr(&o);
    assert!(
        err.lines().count() == 1 && err.contains(&src.display().to_string()),
        "{err}"
    );
    let _ = fs::remove_dir_all(&private);
    // Their own directory mounts; a device node they may open works with --device.
    let dir = common::scratch_dir(Some(TEST_USER));
    fs::write(dir.join("mine.txt"), "mine\n").unwrap();
    let out = ok_as_user(&[
        "run",
        "--mount",
        &format!("type=bind,src={},dst=/mnt", dir.display()),
        "--device",
        "/dev/null:/dev/mynull:rw",
        &reference,
        "sh",
        "-c",
        "cat /mnt/mine.txt; echo x > /dev/mynull && echo wrote",
    ]);
    assert_eq!(out, "mine\nwrote\n");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_user_never_reaches_a_root_only_device_through_dev_mounts_or_device() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    // /dev/mem (root:kmem 0640): as a --device, as a file mounted into /dev, as a link to it
    // in the user's own directory mounted there, and as the whole of the host's /dev mounted
    // below the container's. The container runs as the user: the node's own permissions
    // refuse every open, whatever the device cgroup allows.
    let dir = common::scratch_dir(Some(TEST_USER));
    std::os::unix::fs::symlink("/dev/mem", dir.join("mem")).unwrap();
    let probe = "head -c1 /dev/x >/dev/null 2>&1 && echo READ || echo refused";
    let attempts: Vec<Vec<String>> = vec![
        vec!["--device".into(), "/dev/mem:/dev/x:rw".into()],
        vec!["--mount".into(), "type=bind,src=/dev/mem,dst=/dev/x".into()],
        vec![
            "--mount".into(),
            format!("type=bind,src={},dst=/dev/x", dir.join("mem").display()),
        ],
        vec!["--mount".into(), "type=bind,src=/dev,dst=/dev/host".into()],
    ];
    for extra in attempts {
        let mut argv: Vec<&str> = vec!["run"];
        argv.extend(extra.iter().map(String::as_str));
        let script = if extra[1].contains("/dev/host") {
            probe.replace("/dev/x", "/dev/host/mem")
        } else {
            probe.to_string()
        };
        argv.extend([reference.as_str(), "sh", "-c", script.as_str()]);
        let o = egret_as_user(&[], &argv);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        // Refused before the container (one line), or the container cannot read it.
        assert!(
            !out.contains("READ"),
            "{extra:?} let the user read /dev/mem: {}",
            common::describe(&o)
        );
        if o.status.success() {
            assert_eq!(out.trim(), "refused", "{extra:?}: {}", common::describe(&o));
        } else {
            assert_eq!(
                stderr(&o).lines().count(),
                1,
                "{extra:?}: {}",
                common::describe(&o)
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_user_signals_their_own_egret_run_by_its_pid() {
    common::require_root();
    let reference = common::registry_image("busybox");
    ok_as_user(&["pull", &reference]);
    // What a job script's `kill`, `timeout` or `trap` does: SIGTERM to egret's own pid, which
    // passes it on to the container (tini, pid 1 there, to sleep).
    let script = format!(
        "{egret} run --init {reference} sleep 60 & p=$!; sleep 3; \
         kill -TERM $p && echo signalled; wait $p; echo code=$?",
        egret = common::EGRET_BIN
    );
    let started = std::time::Instant::now();
    let o = common::run(&mut common::user_command(
        TEST_USER.name,
        Path::new("/"),
        &[],
        &["sh", "-c", &script],
    ));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("signalled"), "{}", common::describe(&o));
    assert!(out.contains("code=143"), "{}", common::describe(&o));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the container did not stop on the forwarded SIGTERM"
    );
    // Another user's signal still cannot reach it (root's own egret run here).
    let name = format!("sig-test-{}", std::process::id());
    let mut running = common::egret()
        .args(["run", "--name", &name, &reference, "sleep", "60"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = running.id().to_string();
    let o = common::run(&mut common::user_command(
        TEST_USER.name,
        Path::new("/"),
        &[],
        &["kill", "-TERM", &pid],
    ));
    assert!(!o.status.success(), "a user signalled root's egret run");
    let _ = common::egret().args(["kill", &name]).output();
    let _ = running.wait();
}

#[test]
fn names_are_per_user_and_kill_reaches_only_the_callers_container() {
    common::require_root();
    let reference = common::registry_image("busybox");
    common::stored_for_root("busybox");
    ok_as_user(&["pull", &reference]);
    let name = format!("same-{}", std::process::id());
    let mut roots = common::egret()
        .args(["run", "--name", &name, &reference, "sleep", "60"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut users = common::user_command(
        TEST_USER.name,
        Path::new("/"),
        &[],
        &[
            common::EGRET_BIN,
            "run",
            "--name",
            &name,
            &reference,
            "sleep",
            "60",
        ],
    )
    .stdin(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let running = |ps: &str| ps.lines().filter(|l| l.starts_with(&name)).count();
    assert!(
        common::wait_for(Duration::from_secs(30), || {
            let o = common::egret().arg("ps").output().unwrap();
            running(&String::from_utf8_lossy(&o.stdout)) == 2
        }),
        "root's and the user's containers of one name did not both start"
    );
    assert_eq!(
        running(&ok_as_user(&["ps"])),
        1,
        "the user sees their own only"
    );
    ok_as_user(&["kill", &name]);
    let _ = users.wait();
    let o = common::egret().arg("ps").output().unwrap();
    assert_eq!(
        running(&String::from_utf8_lossy(&o.stdout)),
        1,
        "the user's kill reached root's container"
    );
    common::assert_success(
        &common::run(common::egret().args(["kill", &name])),
        "root kills its own",
    );
    let _ = roots.wait();
}
