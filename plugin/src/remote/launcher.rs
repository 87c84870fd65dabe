//! `user_init`'s work: start the step's root launcher (`egret-launcher serve`) and hand it the
//! step's request on its stdin.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use egret_engine::config::{Config, ConfigError};
use egret_engine::slurm::{node_name, protocol, step};
use egret_engine::sys::process::{self, PidFd};

use super::effective_root::EffectiveRoot;
use crate::ffi::Spank;
use crate::state;

/// slurm.h's step id of the batch script step.
const SLURM_BATCH_SCRIPT: u32 = 0xffff_fffb;

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("slurmstepd did not provide the {0}")]
    MissingItem(&'static str),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Request(#[from] serde_json::Error),
    #[error("cannot become root in slurmstepd to start the launcher: {0}")]
    BecomeRoot(#[source] io::Error),
    #[error("{}: {source}", .dir.display())]
    RunDir { dir: PathBuf, source: io::Error },
    #[error("{}/launcher.log: {source}", .run_dir.display())]
    Log { run_dir: PathBuf, source: io::Error },
    #[error("cannot start {}: {source}", .launcher.display())]
    Spawn {
        launcher: PathBuf,
        source: io::Error,
    },
    #[error("cannot create the step's socket {}: {source}", .path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot talk to the launcher: {0}")]
    SendRequest(#[source] io::Error),
}

/// Starts the launcher for this step and records it (pid, pidfd, socket, step) in the state.
pub fn start(sp: Spank) -> Result<(), LauncherError> {
    let uid = sp.uid().ok_or(LauncherError::MissingItem("job uid"))?;
    let gid = sp.gid().ok_or(LauncherError::MissingItem("job gid"))?;
    let job = sp.job_id().ok_or(LauncherError::MissingItem("job id"))?;
    let step = sp.step_id().ok_or(LauncherError::MissingItem("step id"))?;
    let node = sp.node_id().ok_or(LauncherError::MissingItem("node id"))?;
    let local_tasks = sp
        .local_task_count()
        .ok_or(LauncherError::MissingItem("task count"))?;
    let (config_path, launcher, options) =
        state::with(|s| (s.config.clone(), s.launcher.clone(), s.options.clone()));
    let job_env = sp.env();
    let cfg = Config::load_on(&config_path, &node_name(&job_env, node))?;
    let socket = step::socket_path(&cfg.run_dir, job, step, node);
    let batch_script = (step == SLURM_BATCH_SCRIPT)
        .then(|| sp.argv().first().map(PathBuf::from))
        .flatten();
    let mut req = protocol::StepRequest {
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
        job_env,
        global_scope: state::with(|s| s.global_scope),
        // Set below, once the socket is bound.
        listener_fd: None,
    };
    let pid = {
        let _root = EffectiveRoot::enter().map_err(LauncherError::BecomeRoot)?;
        // Bound here, before the tasks are forked: they connect at once, whatever the launcher
        // is doing yet (no retry loop, no sleep), and their hellos wait in the socket. This
        // process keeps no copy: the tasks forked from it must not hold the listener.
        let listener =
            step::bind_socket(&socket, uid, gid).map_err(|source| LauncherError::Socket {
                path: socket.clone(),
                source,
            })?;
        req.listener_fd = Some(listener.as_raw_fd());
        let body = serde_json::to_vec(&req)?;
        spawn(&launcher, &cfg.run_dir, &body, &listener)?
    };
    // Opened while it is our unreaped child, so the number still names it.
    let pidfd = PidFd::open(nix::unistd::Pid::from_raw(pid)).ok();
    state::with(|s| {
        s.launcher_pid = Some(pid);
        s.launcher_pidfd = pidfd;
        s.socket = Some(socket);
        s.step = Some((job, step, node));
    });
    Ok(())
}

/// Spawns `launcher serve` fully as root, logging to `run_dir/launcher.log`, and writes
/// `request` to its stdin. Returns its pid.
fn spawn(
    launcher: &Path,
    run_dir: &Path,
    request: &[u8],
    listener: &std::os::unix::net::UnixListener,
) -> Result<i32, LauncherError> {
    // An explicit mode: slurmstepd's umask may be the user's (SLURM_UMASK=0000).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)
        .map_err(|source| LauncherError::RunDir {
            dir: run_dir.to_path_buf(),
            source,
        })?;
    // Whoever made it first (runc making runcRoot's parents 0700, a umask): users' tasks must
    // reach the launcher's socket in it.
    fs::set_permissions(run_dir, fs::Permissions::from_mode(0o755)).map_err(|source| {
        LauncherError::RunDir {
            dir: run_dir.to_path_buf(),
            source,
        }
    })?;
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
        .map_err(|source| LauncherError::Log {
            run_dir: run_dir.to_path_buf(),
            source,
        })?;
    // A log left by an older version may be world-readable.
    let _ = log.set_permissions(fs::Permissions::from_mode(0o600));
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
    // Of slurmstepd's descriptors only the step's socket, under its own number (named in the
    // request).
    process::run_as_root_on_exec(&mut cmd, Some(listener.as_raw_fd()));
    let mut child = cmd.spawn().map_err(|source| LauncherError::Spawn {
        launcher: launcher.to_path_buf(),
        source,
    })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(request)
        .map_err(LauncherError::SendRequest)?;
    drop(stdin);
    Ok(child.id() as i32)
}
