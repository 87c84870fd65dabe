//! `slurm_spank_init` (the plugin arguments, and the registration of egret's options with
//! Slurm) and the option callback. Options exist in srun, sbatch/salloc and slurmstepd.

use egret_engine::slurm::options::{Arg, OptionError, OPTIONS};

use crate::ffi::{self, Spank};
use crate::plugin_args::{PluginArgs, PluginArgsError};
use crate::remote::RemoteError;
use crate::state;

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(transparent)]
    PluginArgs(#[from] PluginArgsError),
    #[error("cannot register --{name} (error {rc}; is pyxis also loaded?)")]
    Register { name: &'static str, rc: i32 },
    /// A value the user gave srun, sbatch or salloc (the engine's option table says why).
    #[error(transparent)]
    Invalid(#[from] OptionError),
}

/// `slurm_spank_init`: read the plugin arguments and register the options (in every context
/// where options exist: srun, sbatch/salloc and slurmstepd).
pub fn init(sp: Spank, args: &[String]) -> Result<(), OptionsError> {
    let pa = PluginArgs::parse(args)?;
    state::with(|s| {
        s.config = pa.config;
        s.launcher = pa.launcher;
        s.execute_entrypoint = pa.execute_entrypoint;
        s.remap_root = pa.remap_root;
        s.global_scope = pa.global_scope;
        s.resolve_on_submit = pa.resolve_on_submit;
    });
    match ffi::context() {
        ffi::Context::S_CTX_LOCAL | ffi::Context::S_CTX_ALLOCATOR | ffi::Context::S_CTX_REMOTE => {}
        _ => return Ok(()),
    }
    // Slurm hands the option's index in the table back to the callback.
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
        .map_err(|rc| OptionsError::Register { name: o.name, rc })?;
    }
    Ok(())
}

/// An option callback: validate where the user typed it; in slurmstepd keep the first error to
/// report it on the task's terminal.
pub fn set_option(val: i32, value: Option<&str>, remote: bool) -> Result<(), OptionsError> {
    let r = state::with(|s| s.options.set(val as usize, value));
    match r {
        Ok(()) => Ok(()),
        Err(e) if remote => {
            state::with(|s| {
                s.remote_error.get_or_insert(RemoteError::Options(e));
            });
            Ok(())
        }
        Err(e) => Err(OptionsError::Invalid(e)),
    }
}
