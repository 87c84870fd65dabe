//! `slurm_spank_task_init`: in the task process, as the user, with the final environment and
//! the task's stdio. Hands the task to the launcher and ends with the container's exit code.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use egret_engine::slurm::client::{self, ClientError};
use egret_engine::slurm::multiprog::MultiProgError;
use egret_engine::slurm::{multiprog, protocol};
use egret_engine::sys::process;
use nix::unistd::Pid;

use super::{is_remote, RemoteError};
use crate::ffi::Spank;
use crate::state;

#[derive(Debug, thiserror::Error)]
enum TaskError {
    /// What went wrong in `user_init` (or an option callback) for this step.
    #[error(transparent)]
    Setup(#[from] RemoteError),
    #[error("the container launcher was not started (see slurmd's log)")]
    LauncherNotStarted,
    #[error("--multi-prog {path}: {source}")]
    MultiProgFile { path: String, source: io::Error },
    #[error(transparent)]
    MultiProg(#[from] MultiProgError),
    #[error("{0}")]
    Client(#[from] ClientError),
}

impl TaskError {
    /// The line the user reads. The launcher's own explanations, relayed by the client, already
    /// carry the prefix.
    fn user_line(&self) -> String {
        let msg = self.to_string();
        match self {
            TaskError::Client(_) if msg.starts_with("egret") => msg,
            _ => format!("egret: {msg}"),
        }
    }
}

/// Never returns into slurmstepd: the task process ends here, with the container's exit code.
pub fn task_init(sp: Spank, _args: &[String]) -> Result<(), Infallible> {
    if !is_remote() || !state::with(|s| s.options.active()) {
        return Ok(());
    }
    let local_id = sp.task_id().unwrap_or(0);
    match run(sp, local_id) {
        Ok(code) => process::exit_now(code),
        Err(e) => {
            // One line per node is enough: the other tasks fail silently with the same status.
            if local_id == 0 {
                eprintln!("{}", e.user_line());
            }
            process::exit_now(1)
        }
    }
}

/// Hands the task over; the container's exit code.
fn run(sp: Spank, local_id: i32) -> Result<i32, TaskError> {
    // A forked copy of slurmstepd's state: taking from it affects this task only.
    let (error, pid, socket, launcher) = state::with(|s| {
        (
            s.remote_error.take(),
            s.launcher_pid,
            s.socket.clone(),
            s.launcher_pidfd.take(),
        )
    });
    if let Some(e) = error {
        return Err(e.into());
    }
    let (Some(pid), Some(socket)) = (pid, socket) else {
        return Err(TaskError::LauncherNotStarted);
    };
    let env = sp.env();
    let mut fds: Vec<RawFd> = vec![0, 1, 2];
    if let Some(n) = env
        .iter()
        .find_map(|e| e.strip_prefix("PMI_FD="))
        .and_then(|v| v.parse::<RawFd>().ok())
    {
        if n > 2 {
            fds.push(n);
        }
    }
    let mut keep = fds.clone();
    keep.extend(launcher.as_ref().map(|l| l.as_fd().as_raw_fd()));
    process::close_cloexec_fds_except(&keep);
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
                .map_err(|source| TaskError::MultiProgFile { path: last, source })?
        };
        argv = multiprog::argv_for(&text, global_id)?;
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
        None => process::is_alive(Pid::from_raw(pid)),
    };
    Ok(client::run_task(&socket, &launcher_alive, hello, &fds)?)
}
