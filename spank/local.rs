//! srun, sbatch and salloc: everything is checked here, before the job is queued.

use crate::ffi::{self, Spank};
use crate::state;

/// `slurm_spank_init_post_opt`: checks that need every option at once.
pub fn init_post_opt(_sp: Spank, _args: &[String]) -> Result<(), String> {
    match ffi::context() {
        ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR => {
            // PYXIS_CONTAINER_*/EGRET_CONTAINER_* are checked here too, so a bad value fails
            // before the job is queued; slurmstepd reads them again from the job's environment.
            state::with(|s| {
                s.options.apply_env(|k| std::env::var(k).ok())?;
                s.options.finish()
            })
            .map_err(|e| format!("egret: {e}"))
        }
        _ => Ok(()),
    }
}
