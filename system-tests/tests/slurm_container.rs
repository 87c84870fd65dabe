//! `srun --container-image` and `#SBATCH --container-image` against the real local cluster
//! (slurmctld + two slurmd, the plugin in plugstack.conf), real runc and the local registry.
//!
//! Run with `make test` (after `make up`); every test needs root and fails loudly without it.

use egret_test_support as common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn busybox() -> String {
    format!("--container-image={}", common::registry_image("busybox"))
}

fn srun(args: &[&str]) -> Output {
    common::require_root();
    Command::new("timeout")
        .arg("180")
        .arg("srun")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("srun runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn srun_runs_the_command_in_the_image() {
    let o = srun(&[&busybox(), "cat", "/etc/os-release"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("ID=egret-busybox"), "{out}");
}

#[test]
fn exit_code_reaches_srun() {
    let o = srun(&[&busybox(), "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{:?}", text(&o));
}

#[test]
fn every_task_runs_in_its_own_container_with_its_rank() {
    let o = srun(&[
        "-n3",
        &busybox(),
        "sh",
        "-c",
        "echo rank=$SLURM_PROCID; test -f /etc/os-release",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for r in 0..3 {
        assert!(out.contains(&format!("rank={r}")), "{out}");
    }
}

#[test]
fn two_nodes_each_run_their_tasks() {
    let o = srun(&[
        "-N2",
        "-n4",
        &busybox(),
        "sh",
        "-c",
        "echo $SLURMD_NODENAME:$SLURM_PROCID",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("n1:") && out.contains("n2:"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn stdin_reaches_the_container() {
    common::require_root();
    let o = common::run_with_stdin(
        Command::new("timeout").args(["60", "srun", &busybox(), "tr", "a-z", "A-Z"]),
        b"hello stdin\n",
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("HELLO STDIN"),
        "{:?}",
        o
    );
}

#[test]
fn runs_as_the_user_not_root() {
    common::require_root();
    let o = srun_as_user_in(std::path::Path::new("/tmp"), &[&busybox(), "id"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("uid=4242") && out.contains("gid=4242"),
        "{out}"
    );
}

#[test]
fn root_runs_as_root_inside() {
    let o = srun(&[&busybox(), "id", "-u"]);
    assert_eq!(text(&o).0.trim(), "0", "{:?}", text(&o));
}

#[test]
fn env_merges_task_and_image() {
    let img = format!("--container-image={}", common::registry_image("entrypoint"));
    let o = srun(&[
        &img,
        "/bin/sh",
        "-c",
        "echo foo=$FOO job=$SLURM_JOB_ID pwd=$(pwd)",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("foo=bar"), "image env missing: {out}");
    assert!(!out.contains("job= "), "task env missing: {out}");
    assert!(out.contains("pwd=/work"), "image WORKDIR not used: {out}");
}

#[test]
fn workdir_option_wins() {
    let o = srun(&[&busybox(), "--container-workdir=/data", "pwd"]);
    assert_eq!(text(&o).0.trim(), "/data", "{:?}", text(&o));
}

#[test]
fn entrypoint_runs_only_when_asked() {
    // cudaenv's entrypoint exports FROM_ENTRY and ends with exec "$@" (pyxis_env.rs has more).
    let img = format!("--container-image={}", common::registry_image("cudaenv"));
    let show = "echo ${FROM_ENTRY-none}";
    let o = srun(&[&img, "--container-entrypoint", "sh", "-c", show]);
    assert_eq!(text(&o).0.trim(), "set-by-entry", "{:?}", text(&o));
    let o = srun(&[&img, "sh", "-c", show]);
    assert_eq!(text(&o).0.trim(), "none", "{:?}", text(&o));
    let img = format!("--container-image={}", common::registry_image("entrypoint"));
    let o = srun(&[&img, "echo", "plain"]);
    assert_eq!(text(&o).0.trim(), "plain", "{:?}", text(&o));
}

#[test]
fn container_mounts_bind_host_paths() {
    common::require_root();
    let dir = common::scratch_dir(None).display().to_string();
    std::fs::write(format!("{dir}/file.txt"), "from host\n").unwrap();
    let spec = format!("--container-mounts={dir}:/mnt/host:ro");
    let o = srun(&[
        &busybox(),
        &spec,
        "sh",
        "-c",
        "cat /mnt/host/file.txt; touch /mnt/host/x 2>&1 || echo readonly",
    ]);
    let (out, err) = text(&o);
    assert!(
        out.contains("from host") && out.contains("readonly"),
        "{out}\n{err}"
    );
    assert!(!std::path::Path::new(&format!("{dir}/x")).exists());
}

#[test]
fn readonly_container_cannot_be_written() {
    let o = srun(&[
        &busybox(),
        "--container-readonly",
        "sh",
        "-c",
        "touch /newfile && echo wrote || echo refused",
    ]);
    assert!(text(&o).0.contains("refused"), "{:?}", text(&o));
    let o = srun(&[&busybox(), "sh", "-c", "touch /newfile && echo wrote"]);
    assert!(text(&o).0.contains("wrote"), "{:?}", text(&o));
}

#[test]
fn bad_option_fails_in_srun_before_queueing() {
    let before = common::next_job_id();
    let o = srun(&[&busybox(), "--container-pid=shared", "true"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("--container-pid=shared"), "{err}");
    assert_eq!(common::next_job_id(), before, "a job was created");
    let o = srun(&["--container-image=UPPER/Case::x", "true"]);
    assert!(
        !o.status.success() && text(&o).1.contains("--container-image"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn missing_image_is_one_clear_line() {
    let img = format!(
        "--container-image={}",
        common::registry_image("does-not-exist")
    );
    let o = srun(&[&img, "true"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("does-not-exist"), "{err}");
}

#[test]
fn sbatch_runs_the_batch_script_in_the_container() {
    common::require_root();
    let script = format!(
        "#!/bin/sh\n#SBATCH --container-image={}\ncat /etc/os-release\necho script-done\nexit 3\n",
        common::registry_image("busybox")
    );
    let (code, out) = common::sbatch_wait(&script);
    assert!(
        out.contains("ID=egret-busybox") && out.contains("script-done"),
        "{out}"
    );
    assert_eq!(code, 3, "{out}");
}

#[test]
fn scancel_stops_the_container_and_leaves_nothing() {
    common::require_root();
    let before = common::leak_snapshot();
    let mut child = Command::new("srun")
        .args(["-J", "egret-scancel", &busybox(), "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(Command::new("scancel")
        .args(["-n", "egret-scancel"])
        .status()
        .unwrap()
        .success());
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "srun did not end after scancel"
    );
    common::assert_no_leaks(&before);
}

#[test]
fn many_steps_leave_nothing_behind() {
    common::require_root();
    let before = common::leak_snapshot();
    // 200 consecutive container steps of one job (two tasks each), then a few as separate jobs.
    let script = format!(
        "#!/bin/sh
i=0
while [ $i -lt 200 ]; do
  srun -n2 {} true || {{ echo failed-at-$i; exit 1; }}
  i=$((i+1))
done
echo steps-done=$i
",
        busybox()
    );
    let (_, out) = common::sbatch_wait_with(&script, &["-n2"]);
    assert!(out.contains("steps-done=200"), "{out}");
    for _ in 0..5 {
        let o = srun(&["-n2", &busybox(), "true"]);
        assert!(o.status.success(), "{:?}", text(&o));
    }
    common::assert_no_leaks(&before);
    // Neither the user's registry credentials (copied for skopeo) nor step sockets stay behind.
    let left = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(left("/var/tmp", "egret-auth-"), 0);
    assert_eq!(left("/run/egret", "step-"), 0);
}

fn wait_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

#[test]
fn pty_gives_the_container_a_terminal() {
    common::require_root();
    let o = Command::new("timeout")
        .args(["120", "script", "-qec"])
        .arg(format!(
            "srun --pty {} sh -c 'tty; test -t 0 && echo is-a-tty'",
            busybox()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(
        out.contains("/dev/pts/") && out.contains("is-a-tty"),
        "{out}\n{err}"
    );
    // Without --pty the container has no terminal.
    let o = srun(&[&busybox(), "sh", "-c", "test -t 0 || echo no-tty"]);
    assert!(text(&o).0.contains("no-tty"), "{:?}", text(&o));
}

#[test]
fn pmi2_descriptor_reaches_the_container() {
    // A PMI-1 handshake over PMI_FD, answered by Slurm's pmi2 plugin from inside each container.
    let o = srun(&[
        "--mpi=pmi2",
        "-N2",
        "-n2",
        &busybox(),
        "sh",
        "-c",
        "printf 'cmd=init pmi_version=1 pmi_subversion=1\\n' >&$PMI_FD; read -r l <&$PMI_FD; echo \"$PMI_RANK $l\"",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for rank in 0..2 {
        assert!(
            out.contains(&format!("{rank} cmd=response_to_init rc=0")),
            "{out}\n{err}"
        );
    }
}

#[test]
fn pmix_server_directory_is_bound_for_the_user() {
    common::require_root();
    let o = srun_as_user_in(
        std::path::Path::new("/tmp"),
        &[
            "--mpi=pmix",
            "-n2",
            &busybox(),
            "sh",
            "-c",
            "ls $PMIX_SERVER_TMPDIR | grep -c pmix_dstor; test -S /run/munge/munge.socket.2 && echo munge",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(out.matches("munge").count(), 2, "{out}");
    assert!(
        out.lines()
            .filter(|l| l.trim().parse::<u32>().is_ok_and(|n| n >= 1))
            .count()
            == 2,
        "{out}"
    );
}

#[test]
fn hostile_pmix_dir_in_the_env_is_refused() {
    common::require_root();
    std::fs::create_dir_all("/tmp/pmix.evil").unwrap();
    std::os::unix::fs::chown("/tmp/pmix.evil", Some(0), Some(0)).unwrap();
    let o = Command::new("runuser")
        .args([
            "-u",
            common::TEST_USER.name,
            "--",
            "timeout",
            "120",
            "srun",
            &busybox(),
            "true",
        ])
        .env("PMIX_SERVER_TMPDIR", "/tmp/pmix.evil")
        .current_dir("/tmp")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("PMIX_SERVER_TMPDIR"),
        "{err}"
    );
}

#[test]
fn time_limit_kills_the_container() {
    common::require_root();
    let before = common::leak_snapshot();
    let start = std::time::Instant::now();
    let o = srun(&["-t", "1", &busybox(), "sleep", "600"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(170),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        text(&o).1.contains("TIME LIMIT") || text(&o).1.contains("CANCELLED"),
        "{:?}",
        text(&o)
    );
    common::assert_no_leaks(&before);
}

#[test]
fn named_container_keeps_changes_across_the_steps_of_a_job() {
    common::require_root();
    let img = common::registry_image("busybox");
    let script = format!(
        "#!/bin/sh\necho job=$SLURM_JOB_ID\n\
         srun --container-image={img} --container-name=dev sh -c 'echo kept > /state.txt'\n\
         srun --container-name=dev cat /state.txt\n\
         srun --container-image={img} cat /state.txt || echo unnamed-is-fresh\n\
         srun --container-name=other true || echo other-missing\n\
         echo script-done\n"
    );
    // sbatch --wait may report the failed step's exit code: the script's end is the signal.
    let (_, out) = common::sbatch_wait(&script);
    assert!(out.contains("script-done"), "{out}");
    assert!(out.contains("\nkept\n"), "{out}");
    assert!(out.contains("unnamed-is-fresh"), "{out}");
    assert!(
        out.contains("no container named 'other'") && out.contains("other-missing"),
        "{out}"
    );
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("job="))
        .expect("job id")
        .trim()
        .to_string();
    let dir = format!("/var/lib/egret/containers/0/{job}");
    assert!(
        common::wait_for(Duration::from_secs(30), || !std::path::Path::new(&dir)
            .exists()),
        "{dir} survived the job"
    );
}

#[test]
fn denied_mount_destination_is_one_clear_line() {
    let o = srun(&[&busybox(), "--container-mounts=/tmp:/etc/hostile", "true"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("/etc/hostile"), "{err}");
}

fn srun_as_user_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", common::TEST_USER.name, "--", "timeout", "120", "srun"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn users_squashfs_file_runs_after_a_safe_reimport() {
    common::require_root();
    let dir = common::scratch_dir(Some(common::TEST_USER));
    common::users_squashfs(&dir, "mine.sqsh", "from my sqsh\n");
    // Relative to the submit directory, as with pyxis.
    let o = srun_as_user_in(
        &dir,
        &[
            "--container-image=./mine.sqsh",
            "sh",
            "-c",
            "cat /hello; id -u",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("from my sqsh") && out.contains("4242"),
        "{out}"
    );
}

#[test]
fn squashfs_the_user_cannot_read_or_corrupt_is_refused() {
    common::require_root();
    let dir = common::scratch_dir(Some(common::TEST_USER));
    let f = common::users_squashfs(&dir, "mine.sqsh", "from my sqsh\n");
    // Someone else's private file: the launcher opens it as the user, so it is refused.
    let private = dir.join("private.sqsh");
    std::fs::copy(&f, &private).unwrap();
    std::os::unix::fs::chown(&private, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let o = srun_as_user_in(&dir, &["--container-image=./private.sqsh", "true"]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("cannot read it as egretuser"),
        "{err}"
    );
    // Garbage with the right name.
    let bad = dir.join("bad.sqsh");
    std::fs::write(&bad, vec![0x41u8; 8192]).unwrap();
    std::os::unix::fs::chown(
        &bad,
        Some(common::TEST_USER.uid),
        Some(common::TEST_USER.gid),
    )
    .unwrap();
    let o = srun_as_user_in(&dir, &["--container-image=./bad.sqsh", "true"]);
    let (_, err) = text(&o);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret")).collect();
    assert!(
        !o.status.success() && ours.len() == 1 && ours[0].contains("bad.sqsh"),
        "{err}"
    );
}

#[test]
fn first_import_is_reported_then_the_cached_image_starts_silently() {
    common::require_root();
    let image = common::registry_image("reported");
    // Only this test runs this image (an image of its own): removing it from root's index drops
    // it from the store, whatever ran before.
    let _ = common::egret().args(["rmi", &image]).output();
    let opt = format!("--container-image={image}");
    let o = srun(&[&opt, "cat", "/etc/os-release"]);
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.contains("ID=egret-busybox"),
        "{out}\n{err}"
    );
    assert!(
        err.contains("egret: downloading") && err.contains("egret: stored"),
        "{err}"
    );
    let o = srun(&[&opt, "true"]);
    let (_, err) = text(&o);
    assert!(o.status.success() && !err.contains("egret"), "{err}");
}

#[test]
fn container_cgroup_is_nested_in_the_tasks_cgroup() {
    // Whatever cgroup Slurm puts a task in, the container lives below it (limits and accounting
    // apply) in the hierarchies that need a group of its own, never at the root where runc
    // would put it by default; in the scheduling ones (cpu, cpuacct, cpuset) it stays in the
    // task's own group, as a plain task does (no deeper hierarchy at every context switch).
    let host = srun(&["-n1", "cat", "/proc/self/cgroup"]);
    let inner = srun(&["-n1", &busybox(), "cat", "/proc/self/cgroup"]);
    let (host, inner) = (text(&host).0, text(&inner).0);
    let path = egret_test_support::cgroup_path;
    for ctrl in ["memory", "pids", "devices", "freezer"] {
        let (h, c) = (path(&host, ctrl), path(&inner, ctrl));
        let parent = h.trim_end_matches('/');
        assert!(
            c.starts_with(&format!("{parent}/egret-")),
            "{ctrl}: container in {c}, task in {h}"
        );
    }
    for ctrl in ["cpu", "cpuacct", "cpuset"] {
        let (h, c) = (path(&host, ctrl), path(&inner, ctrl));
        assert_eq!(c, h, "{ctrl}: the container is not in the task's own group");
    }
}

#[test]
fn cpu_binding_is_kept_inside_the_container() {
    // task/affinity binds each task; runc's cpuset cgroup must not undo it.
    let o = srun(&[
        "-n2",
        "--cpu-bind=map_cpu:1,0",
        &busybox(),
        "sh",
        "-c",
        "echo rank$SLURM_PROCID=$(grep Cpus_allowed_list /proc/self/status | cut -f2)",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("rank0=1") && out.contains("rank1=0"), "{out}");
}

#[test]
fn missing_command_exits_127_like_a_shell() {
    let o = srun(&[&busybox(), "/no/such/command"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains("egret: /no/such/command: command not found in the container"),
        "{err}"
    );
    assert!(!err.contains("freezer"), "runc's warnings leaked: {err}");
}
