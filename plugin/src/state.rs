//! The plugin's per-process state: plugin arguments, the options seen so far, and (in
//! slurmstepd) the launcher it started. Only Slurm's callback thread touches it.

use std::path::PathBuf;
use std::sync::Mutex;

use egret_engine::slurm::options::ContainerOptions;

use crate::remote::RemoteError;

pub struct State {
    pub config: PathBuf,
    pub launcher: PathBuf,
    /// The site's default for running the image's ENTRYPOINT.
    pub execute_entrypoint: bool,
    /// The site's default for `--container-remap-root`.
    pub remap_root: bool,
    /// `container_scope=global`: named containers outlive their job.
    pub global_scope: bool,
    /// `resolve_tags=submit` (see plugin_args).
    pub resolve_on_submit: bool,
    /// In srun, the step's tag being resolved while Slurm creates the step.
    pub pending_digest: Option<egret_engine::slurm::step_digest::Pending>,
    pub options: ContainerOptions,
    /// In slurmstepd, the first failure of the step's setup (a bad option value, a launcher
    /// that could not start): reported on the user's terminal by task_init.
    pub remote_error: Option<RemoteError>,
    pub launcher_pid: Option<i32>,
    /// The launcher named by pidfd, opened while it was our unreaped child: slurmstepd may reap
    /// it (it waits for any child), after which its number may name another process.
    pub launcher_pidfd: Option<egret_engine::sys::process::PidFd>,
    pub socket: Option<PathBuf>,
    /// (job, step, node) of the step this slurmstepd runs.
    pub step: Option<(u32, u32, u32)>,
    /// slurmstepd has settled the options and started the launcher (or failed to).
    pub launch_attempted: bool,
}

pub static STATE: Mutex<State> = Mutex::new(State {
    config: PathBuf::new(),
    launcher: PathBuf::new(),
    execute_entrypoint: false,
    remap_root: false,
    global_scope: false,
    resolve_on_submit: true,
    pending_digest: None,
    options: ContainerOptions {
        image: None,
        mounts: None,
        workdir: None,
        env_names: Vec::new(),
        entrypoint: None,
        entrypoint_log: false,
        writable: None,
        mount_home: None,
        remap_root: None,
        name: None,
        save: None,
        mpi_hook: None,
        devices: None,
        annotations: Vec::new(),
        pid_private: None,
        unshare: None,
        init: false,
        ssh: false,
        environment: None,
        edf_env: Vec::new(),
    },
    remote_error: None,
    launcher_pid: None,
    launcher_pidfd: None,
    socket: None,
    step: None,
    launch_attempted: false,
});

/// Runs `f` on the state. A panic while it was locked (caught by the entry point) leaves the
/// state usable: every field is valid on its own.
pub fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}
