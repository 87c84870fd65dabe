//! run, hooks. (Owner: run side.)
use std::process::ExitCode;

use crate::image_cmds::Context;

#[derive(clap::Args)]
pub struct RunArgs {}
#[derive(clap::Args)]
pub struct HooksArgs {}

pub fn run(_c: &Context, _a: RunArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
pub fn hooks(_c: &Context, _a: HooksArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
