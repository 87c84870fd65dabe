//! `slurm_spank_exit` in slurmstepd: the launcher normally ended with the last task; make sure
//! of it and remove whatever a crash could have left (socket, runc state).

use std::convert::Infallible;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use egret_engine::config::Config;
use egret_engine::slurm::{node_name, step};
use egret_engine::sys::process;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::is_remote;
use crate::ffi::Spank;
use crate::state;

/// Waits 3 s for the launcher, then kills it; then cleans up after it.
pub fn exit(sp: Spank, _args: &[String]) -> Result<(), Infallible> {
    if !is_remote() {
        return Ok(());
    }
    let (pid, launcher, socket, step, config) = state::with(|s| {
        (
            s.launcher_pid.take(),
            s.launcher_pidfd.take(),
            s.socket.take(),
            s.step.take(),
            s.config.clone(),
        )
    });
    let Some(pid) = pid.map(Pid::from_raw) else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    // Woken by the launcher's exit itself where its pidfd is held, not by the next poll tick.
    if let Some(l) = &launcher {
        l.wait_exit(deadline.saturating_duration_since(Instant::now()));
    }
    while !process::reap_if_exited(pid) {
        if Instant::now() > deadline {
            // By pidfd: the number may have been reaped by slurmstepd and reused meanwhile.
            match &launcher {
                Some(l) => {
                    let _ = l.signal(Signal::SIGKILL);
                }
                None => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
            }
            let _ = process::reap_if_exited(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(socket) = socket {
        let _ = fs::remove_file(socket);
    }
    let Some((job, step, node)) = step else {
        return Ok(());
    };
    if let Ok(cfg) = Config::load_on(&config, &node_name(&sp.env(), node)) {
        remove_runc_state(&cfg, &step::container_prefix(job, step, node));
    }
    Ok(())
}

/// Deletes (killing if needed) every runc container of this step still known to runc. A step
/// killed by Slurm may still be tearing runc down, so look again until none is left (2 s).
fn remove_runc_state(cfg: &Config, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<String> = fs::read_dir(&cfg.runc_root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for name in left {
            let _ = Command::new(&cfg.runc_path)
                .arg("--root")
                .arg(&cfg.runc_root)
                .args(["delete", "--force", &name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
