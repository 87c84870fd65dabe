//! The plugin's per-process state: plugin arguments, the options seen so far, and (in
//! slurmstepd) the launcher it started. Only Slurm's callback thread touches it.

use std::path::PathBuf;
use std::sync::Mutex;

use egret_engine::slurm::options::{Arg, ContainerOptions, OPTIONS};

use crate::ffi::{self, Spank};

pub struct State {
    pub config: PathBuf,
    pub launcher: PathBuf,
    /// The site's default for running the image's ENTRYPOINT.
    pub execute_entrypoint: bool,
    /// The site's default for `--container-remap-root`.
    pub remap_root: bool,
    /// `container_scope=global`: named containers outlive their job.
    pub global_scope: bool,
    pub options: ContainerOptions,
    /// A remote option value that failed validation: reported to the user in task_init.
    pub remote_error: Option<String>,
    pub launcher_pid: Option<i32>,
    /// The launcher named by pidfd, opened while it was our unreaped child: slurmstepd may reap
    /// it (it waits for any child), after which its number may name another process.
    pub launcher_pidfd: Option<egret_engine::sys::process::PidFd>,
    pub socket: Option<PathBuf>,
    /// (job, step, node) of the step this slurmstepd runs.
    pub step: Option<(u32, u32, u32)>,
}

pub static STATE: Mutex<State> = Mutex::new(State {
    config: PathBuf::new(),
    launcher: PathBuf::new(),
    execute_entrypoint: false,
    remap_root: false,
    global_scope: false,
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
    },
    remote_error: None,
    launcher_pid: None,
    launcher_pidfd: None,
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
    let pa = plugin_args(args)?;
    with(|s| {
        s.config = pa.config;
        s.launcher = pa.launcher;
        s.execute_entrypoint = pa.execute_entrypoint;
        s.remap_root = pa.remap_root;
        s.global_scope = pa.global_scope;
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

/// The plugstack.conf arguments: `config=PATH`, `launcher=PATH`, and pyxis's
/// `execute_entrypoint=0|1` (whether the image's ENTRYPOINT runs when neither
/// `--container-entrypoint` nor `--no-container-entrypoint` is given; default 0) and
/// `remap_root=0|1` (the default of `--container-remap-root`; default 0) and
/// `container_scope=job|global` (how long named containers live; default job).
pub struct PluginArgs {
    pub config: PathBuf,
    pub launcher: PathBuf,
    pub execute_entrypoint: bool,
    pub remap_root: bool,
    pub global_scope: bool,
}

pub fn plugin_args(args: &[String]) -> Result<PluginArgs, String> {
    let mut out = PluginArgs {
        config: PathBuf::from(egret_engine::config::DEFAULT_CONFIG_PATH),
        launcher: PathBuf::from(egret_engine::slurm::step::DEFAULT_LAUNCHER),
        execute_entrypoint: false,
        remap_root: false,
        global_scope: false,
    };
    for a in args {
        match a.split_once('=') {
            Some(("config", v)) => out.config = PathBuf::from(v),
            Some(("launcher", v)) => out.launcher = PathBuf::from(v),
            Some(("container_scope", v)) => {
                out.global_scope = match v {
                    "job" => false,
                    "global" => true,
                    _ => {
                        return Err(format!(
                            "egret: plugstack.conf: container_scope={v}: expected job or global"
                        ))
                    }
                }
            }
            Some((key @ ("execute_entrypoint" | "remap_root"), v)) => {
                let on = egret_engine::slurm::options::parse_bool(v).ok_or_else(|| {
                    format!("egret: plugstack.conf: {key}={v}: expected 0 or 1")
                })?;
                if key == "remap_root" {
                    out.remap_root = on;
                } else {
                    out.execute_entrypoint = on;
                }
            }
            _ => {
                return Err(format!(
                    "egret: unknown plugstack.conf argument '{a}' (expected config=PATH, launcher=PATH, execute_entrypoint=0|1, remap_root=0|1 or container_scope=job|global)"
                ))
            }
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plugstack_arguments() {
        let pa = plugin_args(&args(&["config=/x/egret.json", "execute_entrypoint=1"])).unwrap();
        assert_eq!(pa.config, PathBuf::from("/x/egret.json"));
        assert!(pa.execute_entrypoint);
        assert!(!plugin_args(&[]).unwrap().execute_entrypoint);
        let e = plugin_args(&args(&["execute_entrypoint=maybe"]))
            .err()
            .unwrap();
        assert!(e.contains("execute_entrypoint=maybe"), "{e}");
        let e = plugin_args(&args(&["container_scope=everywhere"]))
            .err()
            .unwrap();
        assert!(e.contains("container_scope=everywhere"), "{e}");
        assert!(
            plugin_args(&args(&["container_scope=global"]))
                .unwrap()
                .global_scope
        );
        let e = plugin_args(&args(&["colour=blue"])).err().unwrap();
        assert!(e.contains("unknown plugstack.conf argument"), "{e}");
    }
}
