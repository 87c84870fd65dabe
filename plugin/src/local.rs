//! srun, sbatch and salloc: everything is checked here, before the job is queued.

use std::path::PathBuf;

use egret_engine::config::Config;
use egret_engine::edf::{self, EdfError, Resolved};
use egret_engine::slurm::options::OptionError;
use egret_engine::slurm::{multiprog, step_digest};

use crate::ffi::{self, Spank};
use crate::state;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The options (and `PYXIS_CONTAINER_*`/`EGRET_CONTAINER_*`) do not go together.
    #[error(transparent)]
    InvalidOptions(#[from] OptionError),
    /// `--environment`: the EDF (read here, as the user) is refused.
    #[error(transparent)]
    Edf(#[from] EdfError),
}

/// `slurm_spank_init_post_opt`: checks that need every option at once.
pub fn init_post_opt(sp: Spank, _args: &[String]) -> Result<(), LocalError> {
    if ffi::context() == ffi::Context::S_CTX_LOCAL && srun_multi_prog() {
        // slurmstepd chooses a multi-prog task's command only when it execs it, after egret has
        // taken the task over: tell the tasks to read the file themselves.
        // srun sends its own environment to the tasks (spank_setenv is remote-only); option
        // processing runs before srun starts its threads.
        std::env::set_var(multiprog::MARKER, "1");
    }
    match ffi::context() {
        ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR => {
            // A value from an outer step never reaches this one (nor a batch script): srun
            // sets it again below, for this step's own resolution only. Removed now, while the
            // process has one thread.
            std::env::remove_var(step_digest::VAR);
            // PYXIS_CONTAINER_*/EGRET_CONTAINER_* are checked here too, so a bad value fails
            // before the job is queued; slurmstepd reads them again from the job's environment.
            // The EDF is read here, as the user, before the job is queued; the nodes get what
            // it resolved to (edf::VAR), never the file.
            std::env::remove_var(edf::VAR);
            let handed = state::with(settle)?;
            if let Some(text) = handed {
                std::env::set_var(edf::VAR, text);
            }
            if ffi::context() == ffi::Context::S_CTX_LOCAL {
                start_resolution();
            }
            Ok(())
        }
        ffi::Context::S_CTX_REMOTE => {
            crate::remote::start_step(sp);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The options in their order of precedence: the command line (already in the state), the
/// EDF of `--environment` or `EGRET_ENVIRONMENT`, then the `PYXIS_`/`EGRET_CONTAINER_*`
/// defaults. Returns the value of `edf::VAR` for the nodes when an EDF was given.
fn settle(s: &mut state::State) -> Result<Option<String>, LocalError> {
    let lookup = |k: &str| std::env::var(k).ok();
    s.options.environment_from_env(lookup)?;
    let resolved = match s.options.environment.clone() {
        Some(value) => Some(resolve(&value)?),
        None => None,
    };
    if let Some(r) = &resolved {
        edf::apply(&mut s.options, r)?;
    }
    s.options.apply_env(lookup)?;
    let handed = match &resolved {
        Some(r) if !s.options.active() => {
            return Err(EdfError::NoImage {
                name: r.environment.clone(),
            }
            .into())
        }
        Some(r) => Some(r.encode()?),
        None => None,
    };
    s.options.finish()?;
    Ok(handed)
}

/// Resolves `--environment=value` in this process: its working directory, `$HOME` (or the
/// password database's), `EDF_PATH` and the environment for `${VAR}`.
fn resolve(value: &str) -> Result<Resolved, EdfError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"));
    let env = |k: &str| std::env::var(k).ok();
    let host = edf::Host {
        search: edf::SearchPath {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            home,
            edf_path: std::env::var("EDF_PATH").ok(),
        },
        env: &env,
    };
    edf::resolve(value, &host)
}

/// srun: starts resolving the step's tag (skopeo as the user, who runs srun) so that it runs
/// while Slurm allocates and creates the step; `local_user_init` collects it.
fn start_resolution() {
    let (on, image, config, launcher) = state::with(|s| {
        (
            s.resolve_on_submit,
            s.options.image.clone(),
            s.config.clone(),
            s.launcher.clone(),
        )
    });
    let Some(image) = image.filter(|_| on) else {
        return;
    };
    // Without a configuration here (a submit host egret is not installed on), the nodes
    // resolve the tag.
    let Ok(cfg) = Config::load_on(&config, &egret_engine::config::local_node_name()) else {
        return;
    };
    match step_digest::start(&cfg, &launcher, &image) {
        Some(Ok(p)) => state::with(|s| s.pending_digest = Some(p)),
        Some(Err(e)) => ffi::log_info(&format!("egret: {e}; the nodes resolve {image}")),
        None => {}
    }
}

/// `slurm_spank_local_user_init` (srun, after the step was created, just before its tasks are
/// launched; srun merges its environment into the step's right after): hands the resolved
/// reference to every node. Any failure leaves the resolution to the nodes, as before.
pub fn local_user_init(_sp: Spank, _args: &[String]) -> Result<(), LocalError> {
    let Some(pending) = state::with(|s| s.pending_digest.take()) else {
        return Ok(());
    };
    match pending.finish() {
        // srun's other threads (signals, I/O) do not read the environment.
        Ok(pinned) => std::env::set_var(step_digest::VAR, pinned),
        Err(e) => ffi::log_info(&format!("egret: {e}; the nodes resolve the tag")),
    }
    Ok(())
}

/// Whether this srun was started with `--multi-prog` (srun keeps it to itself).
fn srun_multi_prog() -> bool {
    std::fs::read("/proc/self/cmdline")
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"--multi-prog"))
        .unwrap_or(false)
}
