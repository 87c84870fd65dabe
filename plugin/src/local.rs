//! srun, sbatch and salloc: everything is checked here, before the job is queued.

use egret_engine::slurm::multiprog;
use egret_engine::slurm::options::OptionError;

use crate::ffi::{self, Spank};
use crate::state;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The options (and `PYXIS_CONTAINER_*`/`EGRET_CONTAINER_*`) do not go together.
    #[error(transparent)]
    InvalidOptions(#[from] OptionError),
}

/// `slurm_spank_init_post_opt`: checks that need every option at once.
pub fn init_post_opt(_sp: Spank, _args: &[String]) -> Result<(), LocalError> {
    if ffi::context() == ffi::Context::S_CTX_LOCAL && srun_multi_prog() {
        // slurmstepd chooses a multi-prog task's command only when it execs it, after egret has
        // taken the task over: tell the tasks to read the file themselves.
        // srun sends its own environment to the tasks (spank_setenv is remote-only); option
        // processing runs before srun starts its threads.
        std::env::set_var(multiprog::MARKER, "1");
    }
    match ffi::context() {
        ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR => {
            // PYXIS_CONTAINER_*/EGRET_CONTAINER_* are checked here too, so a bad value fails
            // before the job is queued; slurmstepd reads them again from the job's environment.
            state::with(|s| {
                s.options.apply_env(|k| std::env::var(k).ok())?;
                s.options.finish()
            })
            .map_err(LocalError::InvalidOptions)
        }
        _ => Ok(()),
    }
}

/// Whether this srun was started with `--multi-prog` (srun keeps it to itself).
fn srun_multi_prog() -> bool {
    std::fs::read("/proc/self/cmdline")
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"--multi-prog"))
        .unwrap_or(false)
}
