//! The Slurm global sync hook (createRuntime): waits until every task of the job step has its
//! container; see `egret_hooks::sync` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("slurm-sync", egret_hooks::sync::hook)
}
