//! pyxis parity through real `srun`/`sbatch`: options from `PYXIS_CONTAINER_*` /
//! `EGRET_CONTAINER_*`, repeated and conflicting options, pyxis's environment rules and escaped
//! `#` in `#SBATCH` lines. Needs root and the cluster of `make up`.

use egret_test_support as common;

use std::process::{Command, Output, Stdio};

fn image(name: &str) -> String {
    format!("--container-image={}", common::registry_image(name))
}

/// `srun` with extra environment variables; the test's own PYXIS_/EGRET_ variables never leak in.
fn srun_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    common::require_root();
    let mut cmd = Command::new("timeout");
    cmd.arg("180").arg("srun").args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("PYXIS_CONTAINER_") || k.starts_with("EGRET_CONTAINER_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("srun runs")
}

fn out_err(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: &Output) -> String {
    let (out, err) = out_err(o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    out
}

#[test]
fn pyxis_container_image_variable_runs_the_container() {
    let busybox = common::registry_image("busybox");
    let out = ok(&srun_env(
        &[("PYXIS_CONTAINER_IMAGE", &busybox)],
        &["cat", "/etc/os-release"],
    ));
    assert!(out.contains("ID=egret-busybox"), "{out}");
}

#[test]
fn command_line_wins_over_the_variables() {
    let entry = common::registry_image("entrypoint");
    let out = ok(&srun_env(
        &[
            ("PYXIS_CONTAINER_IMAGE", &entry),
            ("PYXIS_CONTAINER_WORKDIR", "/etc"),
        ],
        &[
            &image("busybox"),
            "--container-workdir=/data",
            "sh",
            "-c",
            "pwd; grep ^ID= /etc/os-release",
        ],
    ));
    assert!(out.contains("/data\nID=egret-busybox"), "{out}");
}

#[test]
fn egret_variables_win_over_pyxis_variables() {
    let out = ok(&srun_env(
        &[
            ("PYXIS_CONTAINER_WORKDIR", "/etc"),
            ("EGRET_CONTAINER_WORKDIR", "/data"),
        ],
        &[&image("busybox"), "pwd"],
    ));
    assert_eq!(out.trim(), "/data");
}

#[test]
fn boolean_variables_take_pyxis_values() {
    for (var, val, expect) in [
        ("PYXIS_CONTAINER_READONLY", "1", "refused"),
        ("PYXIS_CONTAINER_READONLY", "no", "wrote"),
        ("PYXIS_CONTAINER_WRITABLE", "false", "refused"),
        ("EGRET_CONTAINER_WRITABLE", "Y", "wrote"),
    ] {
        let out = ok(&srun_env(
            &[(var, val)],
            &[
                &image("busybox"),
                "sh",
                "-c",
                "touch /newfile 2>/dev/null && echo wrote || echo refused",
            ],
        ));
        assert_eq!(out.trim(), expect, "{var}={val}");
    }
}

#[test]
fn bad_variable_values_fail_in_srun_before_queueing() {
    for (var, val) in [
        ("PYXIS_CONTAINER_MOUNT_HOME", "maybe"),
        ("PYXIS_CONTAINER_MOUNTS", "/tmp:"),
        ("EGRET_CONTAINER_PID", "shared"),
    ] {
        let before = common::next_job_id();
        let o = srun_env(&[(var, val)], &[&image("busybox"), "true"]);
        let (_, err) = out_err(&o);
        assert!(!o.status.success(), "{var}={val}: {err}");
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret:")).collect();
        assert_eq!(ours.len(), 1, "{err}");
        assert!(ours[0].contains(&format!("{var}={val}")), "{err}");
        assert_eq!(common::next_job_id(), before, "{var}: a job was queued");
    }
}

#[test]
fn repeated_and_conflicting_options_fail_before_queueing() {
    let busybox = image("busybox");
    let entry = image("entrypoint");
    for (args, needle) in [
        (
            vec![busybox.as_str(), entry.as_str(), "true"],
            "--container-image given twice with different values",
        ),
        (
            vec![
                busybox.as_str(),
                "--container-writable",
                "--container-readonly",
                "true",
            ],
            "both --container-writable and --container-readonly",
        ),
        (
            vec![
                busybox.as_str(),
                "--container-workdir=/a",
                "--container-workdir=/b",
                "true",
            ],
            "--container-workdir given twice",
        ),
        (
            vec![busybox.as_str(), "--container-workdir=", "true"],
            "--container-workdir: empty value",
        ),
    ] {
        let before = common::next_job_id();
        let o = srun_env(&[], &args);
        let (_, err) = out_err(&o);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(common::next_job_id(), before, "{args:?}: a job was queued");
    }
    let long = format!("--container-workdir=/{}", "x".repeat(5000));
    let o = srun_env(&[], &[&busybox, &long, "true"]);
    assert!(out_err(&o).1.contains("longer than"), "{:?}", out_err(&o));
    // The same value twice is not a conflict (Slurm itself may report an option twice).
    let out = ok(&srun_env(
        &[],
        &[
            &busybox,
            &busybox,
            "--container-workdir=/data",
            "--container-workdir=/data",
            "pwd",
        ],
    ));
    assert_eq!(out.trim(), "/data");
}

#[test]
fn locale_variables_stay_outside_unless_named() {
    let env = [
        ("LANG", "xx_YY.UTF-8"),
        ("LC_ALL", "xx_YY"),
        ("LANGUAGE", "xx"),
    ];
    let cmd = [
        "sh",
        "-c",
        "echo \"lang=$LANG lc=$LC_ALL language=$LANGUAGE\"",
    ];
    let busybox = image("busybox");
    let mut args = vec![busybox.as_str()];
    args.extend(cmd);
    let out = ok(&srun_env(&env, &args));
    assert_eq!(out.trim(), "lang= lc= language=");
    let mut args = vec![busybox.as_str(), "--container-env=LC_ALL"];
    args.extend(cmd);
    let out = ok(&srun_env(&env, &args));
    assert_eq!(out.trim(), "lang= lc=xx_YY language=");
}

#[test]
fn pytorch_images_get_the_distributed_variables_from_the_step() {
    let out = ok(&srun_env(
        &[],
        &[
            "-N2",
            "-n2",
            "-l",
            &image("pytorch"),
            "sh",
            "-c",
            "echo addr=$MASTER_ADDR port=$MASTER_PORT world=$WORLD_SIZE rank=$RANK local=$LOCAL_RANK job=$SLURM_JOB_ID",
        ],
    ));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{out}");
    for (i, line) in lines.iter().enumerate() {
        let job: u64 = line
            .rsplit("job=")
            .next()
            .and_then(|j| j.trim().parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        let port = job % 16384 + 49152;
        // WORLD_SIZE is set by the image itself: its value is kept, as enroot's hook does.
        assert!(
            line.contains(&format!(
                "addr=n1 port={port} world=from-image rank={i} local=0"
            )),
            "{out}"
        );
    }
    // Without PYTORCH_VERSION in the image, nothing is added.
    let out = ok(&srun_env(
        &[],
        &[
            &image("busybox"),
            "sh",
            "-c",
            "echo addr=$MASTER_ADDR rank=$RANK",
        ],
    ));
    assert_eq!(out.trim(), "addr= rank=");
}

#[test]
fn sbatch_image_with_an_escaped_hash_runs_the_script_in_the_container() {
    let script = format!(
        "#!/bin/sh\n#SBATCH --container-image={}\\#egret/busybox\ngrep ^ID= /etc/os-release\ntest -r \"$0\" && echo script-visible\n",
        common::REGISTRY
    );
    let (code, out) = common::sbatch_wait(&script);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ID=egret-busybox") && out.contains("script-visible"),
        "{out}"
    );
}

#[test]
fn container_save_writes_a_user_owned_squashfs_that_runs_again() {
    use std::os::unix::fs::MetadataExt;
    let user = common::TEST_USER;
    let dir = common::scratch_dir(Some(user));
    let saved = dir.join("saved.sqsh");
    let save = format!("--container-save={}", saved.display());
    let before = common::leak_snapshot();
    let o = common::srun_as(
        user.name,
        &[
            &image("busybox"),
            &save,
            "--container-mounts=/tmp:/hostmnt",
            "sh",
            "-c",
            "echo changed > /tmp/marker && mkdir /tmp/gone && rmdir /tmp/gone",
        ],
    );
    ok(&o);
    let meta = std::fs::metadata(&saved).expect("the saved image exists when srun returns");
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["saved.sqsh"], "temporary files left behind");
    common::assert_no_leaks(&before);
    let again = format!("--container-image={}", saved.display());
    let out = ok(&common::srun_as(
        user.name,
        &[
            &again,
            "sh",
            "-c",
            "cat /tmp/marker; test -e /tmp/gone || echo deleted; ls /hostmnt 2>/dev/null | wc -l",
        ],
    ));
    // The changes are kept; the bind mount's contents are not in the file.
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["changed", "deleted", "0"],
        "{out}"
    );
}

#[test]
fn container_save_errors_are_clear() {
    let before = common::next_job_id();
    let o = srun_env(
        &[],
        &[&image("busybox"), "--container-save=/tmp/somedir/", "true"],
    );
    let (_, err) = out_err(&o);
    assert!(
        !o.status.success() && err.contains("names a directory"),
        "{err}"
    );
    assert_eq!(common::next_job_id(), before, "a job was queued");
    // A directory the user cannot write: the step fails with one line, nothing is written.
    let user = common::TEST_USER;
    let o = common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "--container-save=/root/not-yours.sqsh",
            "true",
        ],
    );
    let (_, err) = out_err(&o);
    assert!(!o.status.success(), "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("--container-save=/root/not-yours.sqsh"),
        "{err}"
    );
    assert!(!std::path::Path::new("/root/not-yours.sqsh").exists());
}

#[test]
fn entrypoint_options_of_pyxis_are_accepted() {
    // cudaenv's entrypoint prints entry-stdout (shown on stderr with the log on) and ends with
    // exec "$@"; pyxis_env.rs tests what is hidden.
    let out = ok(&srun_env(
        &[],
        &[
            &image("cudaenv"),
            "--container-entrypoint",
            "--container-entrypoint-log",
            "echo",
            "from-cli",
        ],
    ));
    assert_eq!(out.trim(), "from-cli");
    let out = ok(&srun_env(
        &[
            ("PYXIS_CONTAINER_ENTRYPOINT", "1"),
            ("PYXIS_CONTAINER_ENTRYPOINT_LOG", "1"),
        ],
        &[&image("cudaenv"), "sh", "-c", "echo $FROM_ENTRY"],
    ));
    assert_eq!(out.trim(), "set-by-entry");
    let out = ok(&srun_env(&[], &[&image("entrypoint"), "echo", "plain"]));
    assert_eq!(out.trim(), "plain");
}

#[test]
fn remap_root_is_root_in_a_user_namespace_only() {
    let user = common::TEST_USER;
    let script = "id -u; id -g; cat /proc/self/uid_map; touch /tmp/mine && ls -ln /tmp/mine | awk '{print $3}'; touch /etc/mine 2>/dev/null && echo wrote-etc || echo etc-refused";
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "--container-remap-root",
            "sh",
            "-c",
            script,
        ],
    ));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], ["0"], "{out}");
    assert_eq!(lines[1], ["0"], "{out}");
    assert_eq!(lines[2], ["0", &user.uid.to_string(), "1"], "{out}");
    assert_eq!(lines[3], ["0"], "{out}");
    // The image is remapped root's (remap_root.rs has the details).
    assert_eq!(lines[4], ["wrote-etc"], "{out}");
    // From the variable, and the command line wins over it.
    let out = ok(&srun_env(
        &[("PYXIS_CONTAINER_REMAP_ROOT", "1")],
        &[&image("busybox"), "id", "-u"],
    ));
    assert_eq!(out.trim(), "0");
    let o = common::srun_as(
        user.name,
        &["--no-container-remap-root", &image("busybox"), "id", "-u"],
    );
    assert_eq!(ok(&o).trim(), user.uid.to_string());
    let o = srun_env(
        &[],
        &[
            &image("busybox"),
            "--container-remap-root",
            "--no-container-remap-root",
            "true",
        ],
    );
    assert!(out_err(&o)
        .1
        .contains("both --container-remap-root and --no-container-remap-root"));
    // Hooks that run inside the container (here the timestamp hooks, asked for by the
    // environment) would not be root there: refused in one line.
    let o = srun_env(
        &[("TIMESTAMP_HOOK_LOGFILE", "/tmp/egret-remap-ts.log")],
        &[&image("busybox"), "--container-remap-root", "true"],
    );
    let (_, err) = out_err(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("--container-remap-root cannot be combined with hooks"),
        "{err}"
    );
}

#[test]
fn workdir_with_dotdot_stays_inside_the_rootfs() {
    let out = ok(&srun_env(
        &[],
        &[
            &image("busybox"),
            "--container-workdir=/data/../../../etc",
            "pwd",
        ],
    ));
    assert_eq!(out.trim(), "/etc");
    // Without --container-workdir: the image's WORKDIR, else `/`, never the host's cwd.
    let out = ok(&srun_env(&[], &[&image("entrypoint"), "pwd"]));
    assert_eq!(out.trim(), "/work");
    let out = ok(&srun_env(&[], &[&image("busybox"), "pwd"]));
    assert_eq!(out.trim(), "/");
}

#[test]
fn multi_prog_gives_each_task_its_line() {
    let dir = common::scratch_dir(None);
    let conf = dir.join("tasks.conf");
    std::fs::write(
        &conf,
        "# rank command\n0 grep ^ID= /etc/os-release\n1-2 echo task=%t offset=%o\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_string();
    let out = ok(&srun_env(
        &[],
        &["-n3", "-l", "--multi-prog", &image("busybox"), &conf],
    ));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "0: ID=egret-busybox",
            "1: task=1 offset=0",
            "2: task=2 offset=1"
        ],
        "{out}"
    );
}

#[test]
fn srun_help_lists_every_option_with_the_egret_prefix() {
    common::require_root();
    let o = Command::new("srun").arg("--help").output().unwrap();
    let help =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    for opt in egret_engine::slurm::options::OPTIONS {
        let flag = format!("--{}", opt.name);
        let at = help
            .find(&format!("{flag} "))
            .or_else(|| help.find(&format!("{flag}=")))
            .or_else(|| help.find(&format!("{flag}[")))
            .or_else(|| help.find(&format!("{flag}\n")))
            .unwrap_or_else(|| panic!("{flag} missing from srun --help"));
        assert!(help[at..].contains("[egret]"), "{flag}");
    }
}
