//! The installed `egret run` and `egret hooks`, end to end: real runc, loop-mounted squashfs,
//! overlay, the local registry's test images.
//!
//! `egret run` needs root and runs the container as its caller (the real uid), so these tests
//! run containers as root; the setuid bit of the multilayer image is checked through the mount
//! options instead (`nosuid`) and `NoNewPrivs`.
//!
//! Every test works in a store of its own: a copy of /etc/egret/egret.json whose store, temp,
//! bundle and runc directories (and hooks directory) point into a scratch directory, passed with
//! `egret --config` (root only). The shared store of the machine is never touched. Tests run one
//! at a time, and after each container nothing may be left: no mount, no loop device, no runc
//! state, no bundle directory.
//!
//! Run with `make test` or `cargo test --release --test cli_run` as root, after `make up`.

use egret_test_support as common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One test at a time: leak checks count machine-wide resources.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

use common::sandbox::{names_in, stderr, Sandbox};

/// A failed command with exactly one line on stderr, starting with `egret: `; returns it.
fn assert_one_error_line(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail\n{}",
        common::describe(out)
    );
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("egret: "),
        "{what}: expected one line 'egret: ...' on stderr\n{}",
        common::describe(out)
    );
    lines[0].to_string()
}

#[test]
fn run_prints_the_image_files() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    let out = sb.run_ok(&[&image, "ls", "/data"]);
    assert_eq!(out, "hello.txt\nnumbers.txt\nreadonly.txt\n");
    let out = sb.run_ok(&[&image, "cat", "/etc/os-release"]);
    assert!(out.contains("ID=egret-busybox"), "{out}");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn multilayer_image_shows_the_merged_tree() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("multilayer");
    let expected = common::multilayer_expected();
    let before = common::leak_snapshot();

    // Whiteouts: every path the expected tree lists as absent is absent.
    let absent: Vec<&str> = expected["absent"]
        .as_array()
        .expect("absent list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(absent.contains(&"/data/to-delete.txt"));
    let mut script = String::new();
    for p in &absent {
        script.push_str(&format!("test -e '{p}' && echo present:{p}; "));
    }
    script.push_str("true");
    let out = sb.run_ok(&[&image, "sh", "-c", &script]);
    assert!(out.is_empty(), "whited-out paths are visible:\n{out}");

    // The opaque directory holds only the upper layer's entries.
    let out = sb.run_ok(&[&image, "ls", "-A", "/opaque"]);
    assert_eq!(out, "new-before.txt\nnew.txt\n");
    // Later layers win; a whited-out file re-created above is the new one.
    let out = sb.run_ok(&[&image, "cat", "/data/overwrite.txt", "/data/reborn.txt"]);
    assert_eq!(
        out,
        "version 2 (layer 2)\nlayer 3 version: re-created after a whiteout\n"
    );
    let out = sb.run_ok(&[&image, "cat", "/etc/os-release"]);
    assert!(out.contains("ID=egret-multilayer"), "{out}");

    // Hardlinks share an inode (also when the link came before its target in the layer).
    let out = sb.run_ok(&[
        &image,
        "stat",
        "-c",
        "%i %h %n",
        "/data/hl/target.txt",
        "/data/hl/link-after.txt",
        "/data/hl/early-link.txt",
        "/data/hl/late-target.txt",
    ]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(rows[0][0], rows[1][0], "target and link-after: {out}");
    assert_eq!(rows[2][0], rows[3][0], "early-link and late-target: {out}");
    assert_ne!(rows[0][0], rows[2][0], "two distinct files: {out}");
    assert!(rows.iter().all(|r| r[1] == "2"), "link count 2: {out}");

    // The setuid bit is kept in the image but never effective: / is mounted nosuid and the
    // process has no_new_privs.
    let out = sb.run_ok(&[&image, "ls", "-l", "/usr/bin/suid-busybox"]);
    assert!(out.starts_with("-rwsr-xr-x"), "{out}");
    let out = sb.run_ok(&[&image, "cat", "/proc/mounts"]);
    let root = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no / in /proc/mounts:\n{out}"));
    let opts: Vec<&str> = root.split_whitespace().nth(3).unwrap().split(',').collect();
    assert!(
        root.starts_with("overlay ") && opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{root}"
    );
    let out = sb.run_ok(&[&image, "grep", "NoNewPrivs", "/proc/self/status"]);
    assert!(out.split_whitespace().eq(["NoNewPrivs:", "1"]), "{out}");

    // Ownership and modes come from the image.
    let out = sb.run_ok(&[&image, "stat", "-c", "%u:%g %a", "/data/owned.txt"]);
    assert_eq!(out, "1234:1234 640\n");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn entrypoint_image_defaults_and_overrides() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("entrypoint");
    let before = common::leak_snapshot();
    // Sarus/Docker semantics: ENTRYPOINT + CMD, or ENTRYPOINT + the given command.
    assert_eq!(sb.run_ok(&[&image]), "entry: default-cmd\n");
    assert_eq!(sb.run_ok(&[&image, "a", "b"]), "entry: a b\n");
    // --entrypoint "" drops the ENTRYPOINT (and the CMD): the command runs as given, in the
    // image's WorkingDir.
    assert_eq!(sb.run_ok(&["--entrypoint", "", &image, "pwd"]), "/work\n");
    assert_eq!(
        sb.run_ok(&["--entrypoint", "/bin/echo X", &image, "y"]),
        "X y\n"
    );
    // Nothing left to run: one line.
    let o = sb.run(&["--entrypoint", "", &image]);
    let line = assert_one_error_line(&o, "--entrypoint '' without a command");
    assert!(line.contains("no command"), "{line}");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn workdir_and_environment() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("entrypoint");
    let before = common::leak_snapshot();
    let no_ep = ["--entrypoint", ""];

    let mut args = no_ep.to_vec();
    args.extend(["--workdir", "/tmp/made/here", image.as_str(), "pwd"]);
    assert_eq!(sb.run_ok(&args), "/tmp/made/here\n", "created if missing");
    let mut args = no_ep.to_vec();
    args.extend(["-w", "/data", image.as_str(), "ls"]);
    assert_eq!(sb.run_ok(&args), "hello.txt\nnumbers.txt\nreadonly.txt\n");
    let o = sb.run(&["--workdir", "relative", &image, "pwd"]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o),
        "The working directory 'relative' is invalid, it needs to be an absolute path.\n\
         See 'egret help run'\n",
        "Sarus's text"
    );

    // Precedence: host < image < --env.
    let show = "echo FOO=$FOO HOSTONLY=$HOSTONLY NEW=$NEW";
    let run_env = |extra: &[&str]| {
        let mut args = vec!["run", "--entrypoint", ""];
        args.extend_from_slice(extra);
        args.extend([image.as_str(), "sh", "-c", show]);
        let out = common::run(
            sb.cmd(&args)
                .env("FOO", "from-host")
                .env("HOSTONLY", "h")
                .env_remove("NEW"),
        );
        common::assert_success(&out, "egret run with an environment")
    };
    assert_eq!(run_env(&[]), "FOO=bar HOSTONLY=h NEW=\n");
    assert_eq!(
        run_env(&["-e", "FOO=mine", "--env", "NEW=1"]),
        "FOO=mine HOSTONLY=h NEW=1\n"
    );
    assert_eq!(run_env(&["-e", "FOO"]), "FOO=from-host HOSTONLY=h NEW=\n");
    // Sarus's line (the --device/--env texts are in denied_or_bad_mounts_are_one_line).
    let o = sb.run(&["-e", "=x", &image, "true"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.lines().count() == 1
            && err.starts_with("Error parsing environment variable requested from CLI '=x'"),
        "{err}"
    );
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn bind_mounts_readonly_and_writable() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let host = sb.path("shared");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("in.txt"), "from the host\n").unwrap();
    let before = common::leak_snapshot();

    let ro = format!("type=bind,src={},dst=/mnt/in,readonly", host.display());
    let out = sb.run(&[
        "--mount",
        &ro,
        &image,
        "sh",
        "-c",
        "cat /mnt/in/in.txt; touch /mnt/in/new",
    ]);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host\n");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(!host.join("new").exists());

    let rw = format!("type=bind,source={},destination=/mnt/in", host.display());
    sb.run_ok(&[
        "--mount",
        &rw,
        &image,
        "sh",
        "-c",
        "echo written > /mnt/in/new",
    ]);
    assert_eq!(fs::read_to_string(host.join("new")).unwrap(), "written\n");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn denied_or_bad_mounts_are_one_line() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let host = sb.path("shared");
    fs::create_dir(&host).unwrap();
    let before = common::leak_snapshot();
    let src = host.display().to_string();
    for (spec, needle) in [
        (format!("type=bind,src={src},dst=/etc/x"), "/etc/x"),
        (format!("type=bind,src={src},dst=/opt"), "/opt"),
        (format!("type=bind,src={src},dst=/proc/x"), "reserved"),
        (format!("type=bind,src={src}/missing,dst=/mnt"), "missing"),
    ] {
        let o = sb.run(&["--mount", &spec, &image, "true"]);
        let line = assert_one_error_line(&o, &spec);
        assert!(line.contains(needle), "{spec}: {line}");
    }
    // What does not parse: Sarus's one line.
    for (spec, reason) in [
        (format!("src={src},dst=/mnt"), "'type' must be specified"),
        (format!("type=volume,src={src},dst=/mnt"), "only bind"),
    ] {
        let o = sb.run(&["--mount", &spec, &image, "true"]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.lines().count() == 1
                && err.starts_with(&format!("Invalid mount request '{spec}': "))
                && err.contains(reason),
            "{spec}: {err}"
        );
    }
    // --device and --env that do not parse: Sarus's lines too.
    for (args, want) in [
        (
            vec!["--device", "/dev/null:/dev/x:rwz"],
            "Invalid device request '/dev/null:/dev/x:rwz': ",
        ),
        (
            vec!["--env", ""],
            "Invalid environment variable requested from CLI: empty option value",
        ),
        (
            vec!["--env", "=x"],
            "Error parsing environment variable requested from CLI '=x': ",
        ),
    ] {
        let mut argv = args.clone();
        argv.extend([image.as_str(), "true"]);
        let o = sb.run(&argv);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.lines().count() == 1 && err.starts_with(want),
            "{args:?}: {err}"
        );
    }
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn mounts_into_dev_work_and_a_mounted_device_node_is_allowed() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let host = sb.path("ib");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("uverbs0"), "a file under /dev\n").unwrap();
    // Device numbers no driver serves: opening one fails with ENXIO when the device cgroup
    // lets it through, EPERM when it refuses.
    let rw = common::driverless_char_device(&sb.dir, 0);
    let ro = common::driverless_char_device(&sb.dir, 1);
    let before = common::leak_snapshot();
    // As in Sarus: a directory mounted below /dev, and device nodes mounted there, which get
    // their device-cgroup rule (read-write; read-only for a readonly mount).
    let o = sb.run(&[
        "--mount",
        &format!("type=bind,src={},dst=/dev/infiniband", host.display()),
        "--mount",
        &format!("type=bind,src={},dst=/dev/dev_rw", rw.display()),
        "--mount",
        &format!("type=bind,src={},dst=/dev/dev_r,readonly", ro.display()),
        &image,
        "sh",
        "-c",
        "cat /dev/infiniband/uverbs0; echo x > /dev/dev_rw; echo x > /dev/dev_r; cat /dev/dev_r",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, "a file under /dev\n", "{}", common::describe(&o));
    let errs: Vec<String> = stderr(&o).lines().map(String::from).collect();
    assert!(
        errs.len() == 3
            && errs[0].contains("/dev/dev_rw")
            && errs[0].contains("No such device or address")
            && errs[1].contains("/dev/dev_r")
            && errs[1].contains("Operation not permitted")
            && errs[2].contains("/dev/dev_r")
            && errs[2].contains("No such device or address"),
        "rw allowed, read-only refuses writes: {errs:?}"
    );
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn exit_codes_and_signals_propagate() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    for (script, code) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
    ] {
        let o = sb.run(&[&image, "sh", "-c", script]);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{script}\n{}",
            common::describe(&o)
        );
    }

    // A signal sent to egret reaches the container.
    let mut child = sb
        .cmd(&[
            "run",
            &image,
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start egret run");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill has no memory-safety preconditions.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the egret CLI");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.contains("got-term"), "{rest}");
    assert_eq!(status.code(), Some(42));
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn killed_egret_takes_its_container_with_it() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    let mut child = sb
        .cmd(&["run", &image, "sleep", "424242"])
        .spawn()
        .expect("start egret run");
    assert!(
        common::wait_for(Duration::from_secs(30), || !names_in(&sb.path("runc"))
            .is_empty()),
        "the container never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let sleeping = || {
        common::processes_named(&["sleep"]).iter().any(|(pid, _)| {
            fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("424242"))
        })
    };
    assert!(
        common::wait_for(Duration::from_secs(15), || !sleeping()
            && names_in(&sb.path("runc")).is_empty()
            && names_in(&sb.path("bundle")).is_empty()),
        "container left after egret was killed: runc {:?}, bundle {:?}, sleeping {}",
        names_in(&sb.path("runc")),
        names_in(&sb.path("bundle")),
        sleeping()
    );
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn writes_stay_in_the_container_and_vanish_with_it() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    let out = sb.run_ok(&[
        &image,
        "sh",
        "-c",
        "echo changed > /data/hello.txt && echo new > /new.txt && cat /data/hello.txt /new.txt",
    ]);
    assert_eq!(out, "changed\nnew\n");
    let out = sb.run(&[
        &image,
        "sh",
        "-c",
        "cat /data/hello.txt; test ! -e /new.txt",
    ]);
    assert_eq!(
        common::assert_success(&out, "second run"),
        "hello from busybox image\n"
    );
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn pid_namespace_and_init() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    // Default: the host's PID namespace (Sarus); private on request.
    let out = sb.run_ok(&[&image, "sh", "-c", "echo $$"]);
    assert_ne!(out.trim(), "1", "{out}");
    let out = sb.run_ok(&["--pid", "private", &image, "sh", "-c", "echo $$"]);
    assert_eq!(out.trim(), "1");
    let out = sb.run_ok(&[
        "--pid",
        "private",
        "--init",
        &image,
        "sh",
        "-c",
        "echo $PPID $TINI_SUBREAPER; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    // The command is tini's child; tini is PID 1.
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1 1"), "{out}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("/dev/init --")),
        "{out}"
    );
    let o = sb.run(&["--pid", "shared", &image, "true"]);
    assert_one_error_line(&o, "--pid shared");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

fn write_hook(dir: &Path, name: &str, body: serde_json::Value) {
    fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&body).unwrap(),
    )
    .unwrap();
}

#[test]
fn hooks_are_listed_and_run_when_they_apply() {
    let _s = serial();
    let sb = Sandbox::with(|_, cfg| cfg["defaultMPIType"] = "mpich".into());
    let hooks = sb.path("hooks.d");
    let log = sb.path("hooks.log");
    let log_s = log.display().to_string();
    // Hooks read the container state runc writes on their stdin: one that exits without
    // reading it makes runc's write fail with SIGPIPE, which runc forwards to the container.
    write_hook(
        &hooks,
        "10-mpich",
        serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": "/bin/sh", "args": ["sh", "-c", format!("cat >/dev/null; echo mpich >> {log_s}")]},
            "when": {"annotations": {
                "^com.hooks.mpi.enabled$": "^true$",
                "^com.hooks.mpi.type$": "^mpich$"}},
            "stages": ["prestart"]
        }),
    );
    write_hook(
        &hooks,
        "20-openmpi",
        serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": "/bin/true"},
            "when": {"annotations": {
                "^com.hooks.mpi.enabled$": "^true$",
                "^com.hooks.mpi.type$": "^openmpi$"}},
            "stages": ["prestart"]
        }),
    );
    write_hook(
        &hooks,
        "30-always",
        serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": "/bin/sh", "args": ["sh", "-c", format!("cat >/dev/null; echo always >> {log_s}")],
                     "timeout": 10},
            "when": {"always": true},
            "stages": ["createRuntime", "poststop"]
        }),
    );
    fs::write(hooks.join("README"), "not a hook: ignored\n").unwrap();

    let (out, _) = sb.ok(&["hooks"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["NAME", "PATH", "STAGES"],
            vec!["10-mpich", "/bin/sh", "prestart"],
            vec!["20-openmpi", "/bin/true", "prestart"],
            vec!["30-always", "/bin/sh", "createRuntime,poststop"],
        ],
        "{out}"
    );
    let (out, _) = sb.ok(&["hooks", "--mpi"]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("NAME") && rows[0].contains("MPI TYPE"),
        "{out}"
    );
    assert!(
        rows[1].starts_with("10-mpich") && rows[1].ends_with(" ^mpich$ (default)"),
        "{out}"
    );
    assert!(
        rows[2].starts_with("20-openmpi") && rows[2].ends_with(" ^openmpi$"),
        "{out}"
    );

    // The always hook runs at createRuntime and poststop; the MPI hook only when asked for.
    let image = sb.pull("busybox");
    let before = common::leak_snapshot();
    sb.run_ok(&[&image, "true"]);
    assert_eq!(fs::read_to_string(&log).unwrap(), "always\nalways\n");
    fs::remove_file(&log).unwrap();
    sb.run_ok(&[
        "--annotation",
        "com.hooks.mpi.enabled=true",
        "--annotation",
        "com.hooks.mpi.type=mpich",
        &image,
        "true",
    ]);
    let ran = fs::read_to_string(&log).unwrap();
    assert_eq!(ran.lines().filter(|l| *l == "mpich").count(), 1, "{ran}");
    assert_eq!(ran.lines().filter(|l| *l == "always").count(), 2, "{ran}");
    // Sarus's flags: --mpi (the site's default type), --mpi=TYPE and --mpi-type=TYPE.
    for flags in [
        vec!["--mpi"],
        vec!["--mpi=mpich"],
        vec!["--mpi-type", "mpich"],
    ] {
        fs::remove_file(&log).unwrap();
        let mut args = flags.clone();
        args.extend([image.as_str(), "true"]);
        sb.run_ok(&args);
        let ran = fs::read_to_string(&log).unwrap();
        assert_eq!(
            ran.lines().filter(|l| *l == "mpich").count(),
            1,
            "{flags:?}: {ran}"
        );
    }
    // A type no hook serves is refused before anything runs, naming the option.
    let o = sb.run(&["--mpi=nosuch", &image, "true"]);
    let line = assert_one_error_line(&o, "--mpi=nosuch");
    assert!(line.contains("--mpi=nosuch: no MPI hook serves"), "{line}");
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);

    // A broken hook file is an error naming it, for listing and for running.
    fs::write(hooks.join("40-broken.json"), "{\"version\": \"1.0.0\"").unwrap();
    let o = sb.egret(&["hooks"]);
    let line = assert_one_error_line(&o, "hooks with a broken file");
    assert!(line.contains("40-broken.json"), "{line}");
    let o = sb.run(&[&image, "true"]);
    let line = assert_one_error_line(&o, "run with a broken hook file");
    assert!(line.contains("40-broken.json"), "{line}");
    sb.assert_no_leftovers();
}

#[test]
fn hooks_without_a_hooks_dir_list_nothing() {
    let _s = serial();
    let sb = Sandbox::with(|_, cfg| {
        cfg.as_object_mut().unwrap().remove("hooksDir");
    });
    let (out, _) = sb.ok(&["hooks"]);
    assert_eq!(out.lines().count(), 1, "header only: {out}");
    let (out, _) = sb.ok(&["hooks", "-m"]);
    assert_eq!(out.lines().count(), 1, "header only: {out}");
}

#[test]
fn an_egret_not_installed_setuid_says_run_needs_root() {
    let _s = serial();
    common::require_root();
    // The installed egret is setuid root (cli_user.rs runs it as a user); a copy without the
    // bit, as a user, cannot run containers and says what to do.
    let dir = common::scratch_dir(None);
    let copy = dir.join("egret");
    std::fs::copy(common::EGRET_BIN, &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = common::run_as_user(
        common::TEST_USER.name,
        &[
            copy.to_str().unwrap(),
            "run",
            &common::registry_image("busybox"),
            "true",
        ],
    );
    let line = assert_one_error_line(&o, "run as a user");
    assert!(line.contains("install egret setuid root"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
