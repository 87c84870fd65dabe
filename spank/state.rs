//! The plugin's per-process state: plugin arguments, the options seen so far, and (in
//! slurmstepd) the launcher it started. Only Slurm's callback thread touches it.

use std::path::PathBuf;
use std::sync::Mutex;

use egret_engine::launcher::options::{Arg, ContainerOptions, OPTIONS};

use crate::ffi::{self, Spank};

pub struct State {
    pub config: PathBuf,
    pub launcher: PathBuf,
    pub options: ContainerOptions,
    /// A remote option value that failed validation: reported to the user in task_init.
    pub remote_error: Option<String>,
    pub launcher_pid: Option<i32>,
    pub socket: Option<PathBuf>,
    /// (job, step, node) of the step this slurmstepd runs.
    pub step: Option<(u32, u32, u32)>,
}

pub static STATE: Mutex<State> = Mutex::new(State {
    config: PathBuf::new(),
    launcher: PathBuf::new(),
    options: ContainerOptions {
        image: None,
        mounts: None,
        workdir: None,
        env_names: Vec::new(),
        entrypoint: None,
        writable: None,
        mount_home: None,
        name: None,
        save: None,
        mpi_hook: None,
        devices: None,
        annotations: Vec::new(),
        pid_private: None,
        init: false,
    },
    remote_error: None,
    launcher_pid: None,
    socket: None,
    step: None,
});

pub fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// `slurm_spank_init`: read the plugin arguments and register the options (in every context
/// where options exist: srun, sbatch/salloc and slurmstepd).
pub fn init(sp: Spank, args: &[String]) -> Result<(), String> {
    let (config, launcher) = plugin_args(args)?;
    with(|s| {
        s.config = config;
        s.launcher = launcher;
    });
    match ffi::context() {
        ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR | ffi::Context::S_CTX_REMOTE => {}
        _ => return Ok(()),
    }
    for (i, o) in OPTIONS.iter().enumerate() {
        let has_arg = match o.arg {
            Arg::None => 0,
            Arg::Required => 1,
            Arg::Optional => 2,
        };
        sp.register_option(
            o.name,
            o.arginfo,
            o.usage,
            has_arg,
            i as i32,
            crate::option_cb,
        )
        .map_err(|rc| {
            format!(
                "egret: cannot register --{} (error {rc}; is pyxis also loaded?)",
                o.name
            )
        })?;
    }
    Ok(())
}

/// `config=PATH` and `launcher=PATH` from the plugstack.conf line.
pub fn plugin_args(args: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let mut config = PathBuf::from(egret_engine::config::DEFAULT_CONFIG_PATH);
    let mut launcher = PathBuf::from(egret_engine::launcher::server::DEFAULT_LAUNCHER);
    for a in args {
        match a.split_once('=') {
            Some(("config", v)) => config = PathBuf::from(v),
            Some(("launcher", v)) => launcher = PathBuf::from(v),
            _ => {
                return Err(format!(
                    "egret: unknown plugstack.conf argument '{a}' (expected config=PATH or launcher=PATH)"
                ))
            }
        }
    }
    Ok((config, launcher))
}

/// An option callback: validate where the user typed it; in slurmstepd keep the first error to
/// report it on the task's terminal.
pub fn set_option(val: i32, value: Option<&str>, remote: bool) -> Result<(), String> {
    let r = with(|s| s.options.set(val as usize, value));
    match r {
        Ok(()) => Ok(()),
        Err(e) if remote => {
            with(|s| s.remote_error.get_or_insert(format!("egret: {e}")).clone());
            Ok(())
        }
        Err(e) => Err(format!("egret: {e}")),
    }
}
