//! `egret-launcher`: the per-node, per-step root helper started by the SPANK plugin. Thin: the
//! logic is `egret_engine::slurm`.
//!
//! - `egret-launcher serve` reads a `StepRequest` (JSON) on stdin and serves the step's tasks;
//! - `egret-launcher join-cgroup FILE... -- PROGRAM ARGS...` joins cgroups, then execs PROGRAM.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use egret_engine::slurm::{cgroup, protocol::StepRequest, step};
use egret_engine::sys::process;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            // Root's own directories, sockets and logs never inherit slurmstepd's umask (the
            // containers get the step's `SLURM_UMASK`, see `task_env::umask`).
            process::set_umask(process::ROOT_UMASK);
            let req: StepRequest = match serde_json::from_reader(std::io::stdin()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("egret-launcher: bad step request on stdin: {e}");
                    return ExitCode::from(2);
                }
            };
            ExitCode::from(step::serve(req).clamp(0, 255) as u8)
        }
        Some("join-cgroup") => {
            let Some(sep) = args.iter().position(|a| a == "--") else {
                eprintln!("egret-launcher join-cgroup: missing '--'");
                return ExitCode::from(2);
            };
            let files: Vec<PathBuf> = args[1..sep].iter().map(PathBuf::from).collect();
            if let Err(e) = cgroup::join(&files) {
                eprintln!("egret: {e}");
                return ExitCode::from(125);
            }
            let Some(program) = args.get(sep + 1) else {
                eprintln!("egret-launcher join-cgroup: no program");
                return ExitCode::from(2);
            };
            let err = Command::new(program).args(&args[sep + 2..]).exec();
            eprintln!("egret: cannot run {program}: {err}");
            ExitCode::from(127)
        }
        _ => {
            eprintln!(
                "egret-launcher is started by the egret SPANK plugin; it is not a user command"
            );
            ExitCode::from(2)
        }
    }
}
