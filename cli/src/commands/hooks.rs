//! `egret hooks [--mpi]`: the OCI hooks of the configured hooks.d.

use std::process::ExitCode;

use egret_engine::hooks::{self, schema::HooksError};

use crate::context::Context;

#[derive(clap::Args)]
pub struct HooksArgs {
    /// List only the MPI hooks, with the MPI type each serves.
    #[arg(short = 'm', long)]
    mpi: bool,
}

/// The one error is the engine's: a hooks.d file it cannot read or parse.
pub fn hooks(c: &Context, a: HooksArgs) -> Result<ExitCode, HooksError> {
    let cfg = &c.config;
    let hooks = match cfg.hooks_dir.as_deref() {
        Some(dir) if dir.exists() => hooks::schema::load_dir(dir)?,
        _ => Vec::new(),
    };
    if a.mpi {
        print!(
            "{}",
            hooks::listing::format_mpi_list(&hooks::mpi::mpi_hooks(
                &hooks,
                cfg.default_mpi_type.as_deref()
            ))
        );
    } else {
        print!("{}", hooks::listing::format_list(&hooks));
    }
    Ok(ExitCode::SUCCESS)
}
