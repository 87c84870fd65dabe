//! `egret-launcher`: the per-node, per-step root helper started by the SPANK plugin. Thin: the
//! logic is `egret_engine::slurm`.
//!
//! - `egret-launcher serve` reads a `StepRequest` (JSON) on stdin and serves the step's tasks.
//!   (Its runc children join the tasks' cgroups themselves: there is no `join-cgroup` mode.)
//! - `egret-launcher inspect-tag REF`, run by srun as the user: the raw manifest REF's tag
//!   names, fetched without skopeo where skopeo's configuration changes nothing (exit 3 when it
//!   would: srun then runs skopeo).

use std::process::ExitCode;

use egret_engine::slurm::{protocol::StepRequest, step};
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
        Some("inspect-tag") if args.len() == 2 => ExitCode::from(
            egret_engine::image::manifest_get::inspect_tag_main(
                &args[1],
                egret_engine::slurm::step_digest::SUBMIT_TIMEOUT,
            )
            .clamp(0, 255) as u8,
        ),
        _ => {
            eprintln!(
                "egret-launcher is started by the egret SPANK plugin; it is not a user command"
            );
            ExitCode::from(2)
        }
    }
}
