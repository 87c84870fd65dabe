//! Process plumbing of the launcher: descriptor layout for runc and termination handling.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Highest number of descriptors a task may hand over (checked by the protocol too).
const MAX: usize = super::protocol::MAX_FDS;
/// Parking area above any descriptor the shuffle could target.
const PARK: RawFd = 64;

/// Makes the child start with `fds[0..]` as its descriptors 0, 1, 2, 3, ... (stdio, then the
/// descriptors runc passes on with `--preserve-fds`).
pub fn map_fds_on_exec(cmd: &mut Command, fds: Vec<RawFd>) {
    let mut table = [-1 as RawFd; MAX];
    let n = fds.len().min(MAX);
    table[..n].copy_from_slice(&fds[..n]);
    // SAFETY: the closure runs between fork and exec and only calls fcntl/dup2/close, which are
    // async-signal-safe; it touches no allocation or lock.
    unsafe {
        cmd.pre_exec(move || {
            // Park every source above the targets first, so no dup2 clobbers a later source.
            let mut parked = [-1 as RawFd; MAX];
            for i in 0..n {
                let p = libc::fcntl(table[i], libc::F_DUPFD, PARK);
                if p < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                parked[i] = p;
            }
            for (i, p) in parked.iter().enumerate().take(n) {
                if libc::dup2(*p, i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*p);
            }
            Ok(())
        });
    }
}

/// Makes the launcher deaf to the signals Slurm sends to every process of a step (Ctrl-C,
/// `scancel`, time limit). Containers get them from their task (forwarded) and from Slurm
/// directly; the launcher must outlive them to clean up, and is stopped by `slurm_spank_exit`.
/// The signals are blocked in every thread and drained by one waiting thread.
pub fn ignore_job_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    // Threads started later inherit the mask; children get a clean one (unblock_signals_on_exec).
    let _ = set.thread_block();
    std::thread::spawn(move || loop {
        let _ = set.wait();
    });
}
