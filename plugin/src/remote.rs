//! slurmstepd: start the step's launcher (`user_init`), hand each task to it (`task_init`), and
//! make sure nothing outlives the step (`exit`).

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egret_engine::config::Config;
use egret_engine::slurm::{client, multiprog, protocol, step};
use egret_engine::sys::process::PidFd;

use crate::ffi::{self, Spank};
use crate::state;

/// slurm.h's step id of the batch script step.
const SLURM_BATCH_SCRIPT: u32 = 0xffff_fffb;

fn is_remote() -> bool {
    ffi::context() == ffi::Context::S_CTX_REMOTE
}

/// `slurm_spank_user_init`: start the launcher. Errors are kept for `task_init`, which can show
/// them on the user's terminal; failing here would drain the node for batch steps.
pub fn user_init(sp: Spank, _args: &[String]) -> Result<(), String> {
    if !is_remote() {
        return Ok(());
    }
    let job_env = sp.env();
    let lookup = |k: &str| {
        job_env
            .iter()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
    };
    state::with(|s| {
        if let Err(e) = s.options.apply_env(lookup) {
            s.remote_error.get_or_insert(format!("egret: {e}"));
        }
        if s.options.entrypoint.is_none() && s.execute_entrypoint {
            s.options.entrypoint = Some(true);
        }
        if s.options.remap_root.is_none() && s.remap_root {
            s.options.remap_root = Some(true);
        }
    });
    if !state::with(|s| s.options.active() && s.remote_error.is_none()) {
        return Ok(());
    }
    if let Err(e) = start_launcher(sp) {
        state::with(|s| s.remote_error = Some(e));
    }
    Ok(())
}

fn start_launcher(sp: Spank) -> Result<(), String> {
    let missing = |what: &str| format!("egret: slurmstepd did not provide the {what}");
    let uid = sp.uid().ok_or_else(|| missing("job uid"))?;
    let gid = sp.gid().ok_or_else(|| missing("job gid"))?;
    let job = sp.job_id().ok_or_else(|| missing("job id"))?;
    let step = sp.step_id().ok_or_else(|| missing("step id"))?;
    let node = sp.node_id().ok_or_else(|| missing("node id"))?;
    let local_tasks = sp.local_task_count().ok_or_else(|| missing("task count"))?;
    let (config_path, launcher, options) =
        state::with(|s| (s.config.clone(), s.launcher.clone(), s.options.clone()));
    let cfg = Config::load(&config_path).map_err(|e| format!("egret: {e}"))?;
    let socket = step::socket_path(&cfg.run_dir, job, step, node);
    let batch_script = (step == SLURM_BATCH_SCRIPT)
        .then(|| sp.argv().first().map(PathBuf::from))
        .flatten();
    let req = protocol::StepRequest {
        job_id: job,
        step_id: step,
        node_id: node,
        uid,
        gid,
        local_tasks,
        options,
        batch_script,
        socket: socket.clone(),
        config: config_path,
        job_env: sp.env(),
        global_scope: state::with(|s| s.global_scope),
    };
    let body = serde_json::to_vec(&req).map_err(|e| format!("egret: {e}"))?;
    let pid = ffi::as_root(|| spawn_launcher(&launcher, &cfg.run_dir, &body))?;
    let pidfd = PidFd::open(nix::unistd::Pid::from_raw(pid)).ok();
    state::with(|s| {
        s.launcher_pid = Some(pid);
        s.launcher_pidfd = pidfd;
        s.socket = Some(socket);
        s.step = Some((job, step, node));
    });
    Ok(())
}

fn spawn_launcher(launcher: &Path, run_dir: &Path, request: &[u8]) -> Result<i32, String> {
    // An explicit mode: slurmstepd's umask may be the user's (SLURM_UMASK=0000).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)
        .map_err(|e| format!("egret: {}: {e}", run_dir.display()))?;
    // One old generation is kept: /run is memory.
    let log_path = run_dir.join("launcher.log");
    if fs::metadata(&log_path).is_ok_and(|m| m.len() > 8 << 20) {
        let _ = fs::rename(&log_path, run_dir.join("launcher.log.1"));
    }
    // Root-only: it names the images users run.
    let log = fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(run_dir.join("launcher.log"))
        .map_err(|e| format!("egret: {}/launcher.log: {e}", run_dir.display()))?;
    // A log left by an older version may be world-readable.
    let _ = log.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut cmd = Command::new(launcher);
    // Nothing of the user's step reaches root's helper but the request: not the user's
    // working directory, not their environment.
    cmd.arg("serve")
        .current_dir("/")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log);
    ffi::exec_as_root(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("egret: cannot start {}: {e}", launcher.display()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(request)
        .map_err(|e| format!("egret: cannot talk to the launcher: {e}"))?;
    drop(stdin);
    Ok(child.id() as i32)
}

/// `slurm_spank_task_init`: in the task process, as the user, with the final environment and
/// the task's stdio. Hands the task to the launcher and ends with the container's exit code.
pub fn task_init(sp: Spank, _args: &[String]) -> Result<(), String> {
    if !is_remote() || !state::with(|s| s.options.active()) {
        return Ok(());
    }
    let local_id = sp.task_id().unwrap_or(0);
    let (error, pid, socket, launcher) = state::with(|s| {
        (
            s.remote_error.clone(),
            s.launcher_pid,
            s.socket.clone(),
            s.launcher_pidfd.take(),
        )
    });
    let fail = |msg: String| -> ! {
        // One line per node is enough: the other tasks fail silently with the same status.
        if local_id == 0 {
            eprintln!("{msg}");
        }
        ffi::exit_task(1)
    };
    if let Some(e) = error {
        fail(e);
    }
    let (Some(pid), Some(socket)) = (pid, socket) else {
        fail("egret: the container launcher was not started (see slurmd's log)".into());
    };
    let env = sp.env();
    let mut fds = vec![0, 1, 2];
    if let Some(n) = env
        .iter()
        .find_map(|e| e.strip_prefix("PMI_FD="))
        .and_then(|v| v.parse::<i32>().ok())
    {
        if n > 2 {
            fds.push(n);
        }
    }
    let mut keep = fds.clone();
    keep.extend(launcher.as_ref().map(|l| l.as_fd().as_raw_fd()));
    ffi::close_exec_fds(&keep);
    let global_id = sp.task_global_id().unwrap_or(0);
    let mut argv = sp.argv();
    if env.iter().any(|e| e == &format!("{}=1", multiprog::MARKER)) {
        // srun ships the multi-prog file's text as the job's last argument (older Slurm: its
        // path, then read as the user: this is the task).
        let last = argv.last().cloned().unwrap_or_default();
        let text = if last.contains('\n') {
            last
        } else {
            std::fs::read_to_string(&last)
                .unwrap_or_else(|e| fail(format!("egret: --multi-prog {last}: {e}")))
        };
        argv =
            multiprog::argv_for(&text, global_id).unwrap_or_else(|e| fail(format!("egret: {e}")));
    }
    let hello = protocol::Hello {
        local_id: local_id.max(0) as u32,
        global_id,
        argv,
        env,
        fds: fds.clone(),
        tty: nix::unistd::isatty(0).unwrap_or(false),
    };
    let launcher_alive = || match &launcher {
        Some(l) => !l.has_exited(),
        None => ffi::process_alive(pid),
    };
    match client::run_task(&socket, &launcher_alive, hello, &fds) {
        Ok(code) => ffi::exit_task(code),
        Err(e) => {
            let msg = e.to_string();
            fail(if msg.starts_with("egret") {
                msg
            } else {
                format!("egret: {msg}")
            })
        }
    }
}

/// `slurm_spank_exit` in slurmstepd: the launcher normally ended with the last task; make sure
/// of it and remove whatever a crash could have left (socket, runc state).
pub fn exit(_sp: Spank, _args: &[String]) -> Result<(), String> {
    if !is_remote() {
        return Ok(());
    }
    let (pid, launcher, socket, step, config) = state::with(|s| {
        (
            s.launcher_pid.take(),
            s.launcher_pidfd.take(),
            s.socket.take(),
            s.step.take(),
            s.config.clone(),
        )
    });
    let Some(pid) = pid else { return Ok(()) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ffi::reap(pid) {
        if Instant::now() > deadline {
            // By pidfd: the number may have been reaped by slurmstepd and reused meanwhile.
            match &launcher {
                Some(l) => {
                    let _ = l.signal(nix::sys::signal::Signal::SIGKILL);
                }
                None => ffi::kill_hard(pid),
            }
            let _ = ffi::reap(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(socket) = socket {
        let _ = fs::remove_file(socket);
    }
    if let (Some((job, step, node)), Ok(cfg)) = (step, Config::load(&config)) {
        remove_runc_state(&cfg, &step::container_prefix(job, step, node));
    }
    Ok(())
}

/// Deletes (killing if needed) every runc container of this step still known to runc. A step
/// killed by Slurm may still be tearing runc down, so look again until none is left (2 s).
fn remove_runc_state(cfg: &Config, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<String> = fs::read_dir(&cfg.runc_root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for name in left {
            let _ = Command::new(&cfg.runc_path)
                .arg("--root")
                .arg(&cfg.runc_root)
                .args(["delete", "--force", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `slurm_spank_job_epilog` (root, once per job and node, after its last step): named
/// containers live as long as the job.
pub fn job_epilog(sp: Spank, args: &[String]) -> Result<(), String> {
    let config = state::plugin_args(args)?.config;
    let (Some(uid), Some(job)) = (sp.uid(), sp.job_id()) else {
        return Ok(());
    };
    let cfg = Config::load(&config).map_err(|e| format!("egret: {e}"))?;
    egret_engine::slurm::named::remove_job(&cfg, uid, job)
        .map_err(|e| format!("egret: removing the named containers of job {job}: {e}"))
}
