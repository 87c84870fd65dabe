//! The task side: runs inside the Slurm task (SPANK `task_init`, as the user, with the task's
//! final environment and stdio), hands the task over to the launcher and waits for its end.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::protocol::{self, Hello, ProtocolError, ToTask};
use crate::container::runtime::FORWARDED_SIGNALS;
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the egret launcher for this step is not running (see the slurmd log)")]
    LauncherGone,
    #[error("timed out after {0:?} waiting for the egret launcher socket {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The launcher's own one-line explanation (image not found, mount denied, ...).
    #[error("{0}")]
    Launcher(String),
}

/// Signals the task forwards to its container (Ctrl-C from srun, scancel, time limit warnings):
/// the job signals of [`FORWARDED_SIGNALS`] and SIGCONT. The launcher passes on these and no
/// others (no SIGSTOP or SIGKILL to root's runc).
pub const FORWARDED: &[Signal] = &{
    let job = FORWARDED_SIGNALS;
    let mut all = [Signal::SIGCONT; FORWARDED_SIGNALS.len() + 1];
    let mut i = 0;
    while i < job.len() {
        all[i] = job[i];
        i += 1;
    }
    all
};

/// The launcher socket, for the signal handler (a handler can only reach globals).
static SOCKET_FD: AtomicI32 = AtomicI32::new(-1);

/// Connects to the launcher, hands it the task (argv, env and descriptors `fds`, which must
/// start with 0, 1, 2) and returns the container's exit code.
pub fn run_task(
    socket: &Path,
    launcher_alive: &dyn Fn() -> bool,
    hello: Hello,
    fds: &[RawFd],
) -> Result<i32, ClientError> {
    let mut sock = connect(socket, launcher_alive)?;
    // The socket exists before the launcher runs (the plugin binds it): a launcher that ended
    // before it accepted us resets the connection.
    protocol::send_hello(&sock, hello, fds).map_err(gone_if_reset)?;
    SOCKET_FD.store(sock.as_raw_fd(), Ordering::SeqCst);
    install_forwarders();
    loop {
        match protocol::recv::<ToTask>(&mut sock) {
            Ok(ToTask::Message(line)) => eprintln!("{line}"),
            Ok(ToTask::Exit(code)) => return Ok(code),
            Ok(ToTask::Error(msg)) => return Err(ClientError::Launcher(msg)),
            Err(ProtocolError::Closed) => return Err(ClientError::LauncherGone),
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(gone_if_reset(e)),
        }
    }
}

/// A connection the launcher never served (it ended first) is the launcher gone.
fn gone_if_reset(e: ProtocolError) -> ClientError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    match &e {
        ProtocolError::Io(io) if matches!(io.kind(), ConnectionReset | BrokenPipe) => {
            ClientError::LauncherGone
        }
        ProtocolError::Sys(nix::Error::ECONNRESET | nix::Error::EPIPE) => ClientError::LauncherGone,
        _ => e.into(),
    }
}

/// The socket normally exists before the task does (the plugin binds it); an older plugin's
/// launcher creates it itself, early, but may still be starting.
fn connect(socket: &Path, launcher_alive: &dyn Fn() -> bool) -> Result<UnixStream, ClientError> {
    let limit = Duration::from_secs(60);
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(_) if !launcher_alive() => return Err(ClientError::LauncherGone),
            Err(_) if start.elapsed() > limit => {
                return Err(ClientError::Timeout(limit, socket.display().to_string()))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

extern "C" fn forward(sig: libc::c_int) {
    let fd = SOCKET_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    // The frame is built on the stack without allocating: a handler may only call
    // async-signal-safe functions, and write(2) is one.
    let mut buf = [0u8; 32];
    let n = signal_frame(sig, &mut buf);
    // `fd` is our socket (or closed, in which case the write fails harmlessly).
    sys::fd::write_from_signal_handler(fd, &buf[..n]);
}

/// Encodes `ToLauncher::Signal(sig)` exactly as `protocol::encode` would, without allocating.
fn signal_frame(sig: i32, buf: &mut [u8; 32]) -> usize {
    let mut body = [0u8; 24];
    let prefix = b"{\"Signal\":";
    body[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = sig.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        body[len] = digits[d];
        len += 1;
    }
    body[len] = b'}';
    len += 1;
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    buf[4..4 + len].copy_from_slice(&body[..len]);
    4 + len
}

fn install_forwarders() {
    for sig in FORWARDED {
        // `forward` only loads an atomic and calls write(2): async-signal-safe.
        let _ = sys::signal::set_async_safe_handler(*sig, forward);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::protocol::ToLauncher;

    #[test]
    fn signal_frame_matches_protocol_encoding() {
        for sig in [1, 2, 15, 64] {
            let mut buf = [0u8; 32];
            let n = signal_frame(sig, &mut buf);
            assert_eq!(
                &buf[..n],
                &protocol::encode(&ToLauncher::Signal(sig)).unwrap()[..]
            );
        }
    }
}
