//! egret's OCI hooks: one binary per hook (`src/bin/egret-<name>-hook.rs`), all logic here.
//!
//! Shared by every hook: [`context`] (the container state and `config.json`), [`log`] (one
//! logging setup honouring `com.hooks.logging.level`), [`bind`] (bind mounts into the rootfs
//! that never leave it) and [`ldcache`] (the container's linker cache, read and refreshed with
//! the host's trusted `ldconfig`). [`run_main`] ties them together for a hook's `main`.
//!
//! Hooks run as root. What comes from the hook's JSON (its `args` and `env`) is the admin's and
//! trusted; everything in the container (its files, its environment, its annotations) is the
//! user's and is not.

pub mod bind;
pub mod context;
pub mod ldcache;
pub mod log;

pub mod amdgpu;
pub mod glibc;
pub mod mount_hook;
pub mod timestamp;

pub mod mpi;

pub mod ssh;
pub mod sync;

use std::fmt::Display;
use std::process::ExitCode;

pub use context::HookContext;

/// A hook's `main`: reads the context from stdin, sets up logging from the annotation
/// `com.hooks.logging.level`, runs `f` and turns an error into one log line and exit status 1.
pub fn run_main<E, F>(name: &str, f: F) -> ExitCode
where
    E: Display,
    F: FnOnce(&HookContext) -> Result<(), E>,
{
    let ctx = match HookContext::from_stdin() {
        Ok(ctx) => ctx,
        Err(e) => {
            log::init(name, log::Level::DEFAULT);
            log::error(e);
            return ExitCode::FAILURE;
        }
    };
    let value = ctx.annotation(log::LEVEL_ANNOTATION);
    let (level, understood) = log::Level::from_annotation(value);
    log::init(name, level);
    if !understood {
        warn!(
            "ignoring {}={:?}: expected error|warn|info|debug or 0..3",
            log::LEVEL_ANNOTATION,
            value.unwrap_or_default()
        );
    }
    match f(&ctx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(e);
            ExitCode::FAILURE
        }
    }
}

/// A hook's own configuration variable (from the `env` of its JSON, which is the process
/// environment of the hook), empty values counting as unset.
pub fn hook_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
