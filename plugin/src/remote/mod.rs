//! slurmstepd: start the step's launcher (`init_post_opt`, else `user_init`), hand each task to
//! it (`task_init`), and make sure nothing outlives the step (`exit`).

mod effective_root;
mod launcher;
mod step_exit;
mod task;

use std::convert::Infallible;

use egret_engine::edf::{self, EdfError, Resolved};
use egret_engine::slurm::options::OptionError;

pub use self::launcher::LauncherError;
pub use self::step_exit::exit;
pub use self::task::task_init;
use crate::ffi::{self, Spank};
use crate::state;

/// A failure of the step's setup in slurmstepd, kept for `task_init` to show on the user's
/// terminal (failing `user_init` instead would drain the node for batch steps).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A bad option value or `PYXIS_CONTAINER_*`/`EGRET_CONTAINER_*` variable.
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error(transparent)]
    Launcher(#[from] LauncherError),
    /// What srun resolved of `--environment`, refused as hostile input.
    #[error(transparent)]
    Edf(#[from] EdfError),
}

fn is_remote() -> bool {
    ffi::context() == ffi::Context::S_CTX_REMOTE
}

/// `slurm_spank_user_init`: start the launcher, if `init_post_opt` has not (see [`start_step`]).
pub fn user_init(sp: Spank, _args: &[String]) -> Result<(), Infallible> {
    if is_remote() {
        start_step(sp);
    }
    Ok(())
}

/// Settles the step's options and starts its launcher, once per slurmstepd. Called from
/// `slurm_spank_init_post_opt`, as root and about 5 ms before `user_init`: the launcher then
/// sets the rootfs up while slurmstepd finishes its own set-up, and the task finds it ready.
/// Errors are kept for `task_init`, which can show them on the user's terminal; failing here
/// would drain the node for batch steps.
pub fn start_step(sp: Spank) {
    if state::with(|s| std::mem::replace(&mut s.launch_attempted, true)) {
        return;
    }
    let job_env = sp.env();
    let lookup = |k: &str| {
        job_env
            .iter()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=').map(str::to_string))
    };
    state::with(|s| {
        if let Err(e) = settle(&mut s.options, &lookup) {
            s.remote_error.get_or_insert(e);
        }
        if s.options.entrypoint.is_none() && s.execute_entrypoint {
            s.options.entrypoint = Some(true);
        }
        if s.options.remap_root.is_none() && s.remap_root {
            s.options.remap_root = Some(true);
        }
    });
    if !state::with(|s| s.options.active() && s.remote_error.is_none()) {
        return;
    }
    if let Err(e) = launcher::start(sp) {
        state::with(|s| s.remote_error = Some(e.into()));
    }
}

/// The options in the order srun settled them (see `local::settle`), the EDF taken from what
/// srun handed over in the job's environment and checked again: root never reads the file.
fn settle(
    opts: &mut egret_engine::slurm::options::ContainerOptions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), RemoteError> {
    opts.environment_from_env(lookup)?;
    if let Some(value) = opts.environment.clone() {
        let r = Resolved::decode(&value, lookup(edf::VAR).as_deref())?;
        edf::apply(opts, &r)?;
    }
    opts.apply_env(lookup)?;
    Ok(())
}
