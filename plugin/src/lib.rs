//! `spank_egret.so`: the SPANK plugin that runs Slurm tasks in containers.
//!
//! Thin by design: option parsing and every decision live in `egret_engine`; this crate maps
//! Slurm's callbacks onto it, one module per Slurm context: [`options`] (`slurm_spank_init` and
//! the option callback, everywhere), [`local`] (srun, sbatch, salloc), [`remote`] (slurmstepd)
//! and [`job_epilog`]. Every entry point catches panics (a panic crossing `extern "C"` would
//! abort slurmstepd) and logs an error once, after `egret: `, through Slurm; the plugin never
//! starts a thread. This file holds only the entry points.

// The FFI layer: the only module of the plugin allowed `unsafe` (with the entry points below).
#[allow(unsafe_code)]
mod ffi;
mod job_epilog;
mod local;
mod options;
mod plugin_args;
mod remote;
mod state;

use std::ffi::{c_char, c_int};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ffi::{RawSpank, Spank};

/// Slurm finds the plugin by these three symbols; `plugin_version` must match the running
/// Slurm's major.minor release.
#[no_mangle]
#[allow(unsafe_code)] // an exported symbol Slurm reads
pub static plugin_name: [u8; 6] = *b"egret\0";
#[no_mangle]
#[allow(unsafe_code)] // an exported symbol Slurm reads
pub static plugin_type: [u8; 6] = *b"spank\0";
#[no_mangle]
#[allow(unsafe_code)] // an exported symbol Slurm reads
pub static plugin_version: u32 = ffi::SLURM_VERSION_NUMBER;
#[no_mangle]
#[allow(unsafe_code)] // an exported symbol Slurm reads
pub static spank_plugin_version: u32 = 1;

const SPANK_ERR: c_int = -1;

/// Runs a callback body, turning errors and panics into Slurm's -1. The one place the plugin's
/// errors are logged.
fn guard<E: Display>(name: &str, f: impl FnOnce() -> Result<(), E>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            ffi::log_error(&format!("egret: {e}"));
            SPANK_ERR
        }
        Err(_) => {
            ffi::log_error(&format!("egret: internal error in {name}"));
            SPANK_ERR
        }
    }
}

macro_rules! callback {
    ($sym:ident, $body:path) => {
        #[no_mangle]
        #[allow(unsafe_code)] // a C ABI entry point: Slurm's raw handle and argv come in here
        /// # Safety
        /// Called by Slurm with its live handle and `ac` valid plugin argument strings.
        pub unsafe extern "C" fn $sym(sp: RawSpank, ac: c_int, av: *mut *mut c_char) -> c_int {
            guard(stringify!($sym), || {
                // SAFETY: Slurm passes its live handle and plugin arguments to every callback.
                let (sp, args) = unsafe { (Spank::from_raw(sp), ffi::plugin_args(ac, av)) };
                $body(sp, &args)
            })
        }
    };
}

callback!(slurm_spank_init, options::init);
callback!(slurm_spank_init_post_opt, local::init_post_opt);
callback!(slurm_spank_local_user_init, local::local_user_init);
callback!(slurm_spank_user_init, remote::user_init);
callback!(slurm_spank_task_init, remote::task_init);
callback!(slurm_spank_exit, remote::exit);
callback!(slurm_spank_job_epilog, job_epilog::job_epilog);

/// The one callback Slurm calls for every option egret registered (`val` = index in the table).
#[allow(unsafe_code)] // a C ABI entry point: Slurm's raw option string comes in here
unsafe extern "C" fn option_cb(val: c_int, optarg: *const c_char, remote: c_int) -> c_int {
    guard("option", || {
        // SAFETY: Slurm passes NULL or a valid string.
        let value = unsafe { ffi::optarg(optarg) };
        options::set_option(val, value.as_deref(), remote != 0)
    })
}
