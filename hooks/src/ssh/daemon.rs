//! The dropbear daemon: started chrooted as the user, recorded in the bundle, stopped at
//! `poststop`.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egret_engine::container::user::UserIdentity;
use nix::unistd::Pid;

use crate::ssh::error::{io_err, sys_err};
use crate::ssh::SshError;

/// In the task's bundle directory (root's): the daemon's host pid and start time, its log.
const PID_FILE: &str = "egret-ssh-dropbear.pid";
pub(super) const LOG_FILE: &str = "egret-ssh-dropbear.log";
/// How long the daemon may take to answer on its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Forks the daemon: a new session in the container's pid namespace (entered before), chrooted
/// into the rootfs, with the user's ids only, `no_new_privs`, stdio on the log.
pub(super) fn spawn_daemon(
    rootfs: &Path,
    user: &UserIdentity,
    argv: &[String],
    log: fs::File,
) -> Result<Pid, SshError> {
    use std::ffi::CString;
    let cstr = |s: &str| CString::new(s).map_err(|_| sys_err(s.to_string())(nix::Error::EINVAL));
    let c_argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let c_env = vec![cstr("PATH=/usr/local/bin:/usr/bin:/bin")?];
    let devnull = fs::File::open("/dev/null").map_err(io_err(Path::new("/dev/null")))?;
    let user = user.clone();
    let rootfs = rootfs.to_path_buf();
    egret_engine::sys::process::fork_child(move || {
        let res = (|| -> Result<(), String> {
            use nix::unistd::{dup2, setgroups, setresgid, setresuid, Gid, Uid};
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            dup2(devnull.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
            dup2(log.as_raw_fd(), 1).map_err(|e| format!("dup2: {e}"))?;
            dup2(log.as_raw_fd(), 2).map_err(|e| format!("dup2: {e}"))?;
            nix::unistd::chroot(&rootfs).map_err(|e| format!("chroot: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
            let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
            let gid = Gid::from_raw(user.gid);
            setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
            let uid = Uid::from_raw(user.uid);
            setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
            nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
            let e = nix::unistd::execve(&c_argv[0], &c_argv, &c_env).unwrap_err();
            Err(format!("cannot run {}: {e}", argv[0]))
        })();
        if let Err(msg) = res {
            eprintln!("egret ssh hook: {msg}");
        }
        127
    })
    .map_err(|e| SshError::Io {
        path: PathBuf::from("fork"),
        source: e,
    })
}

/// `/proc/PID/stat` field 22: when the process started, to tell it from a later one with the
/// same pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

pub(super) fn record(bundle: &Path, pid: Pid) -> Result<(), SshError> {
    let path = bundle.join(PID_FILE);
    let start = start_time(pid.as_raw()).unwrap_or(0);
    fs::write(&path, format!("{} {start}\n", pid.as_raw())).map_err(io_err(&path))
}

pub(super) fn wait_listening(child: Pid, port: u16, log: &Path) -> Result<(), SshError> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let exited = !matches!(
            waitpid(child, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        if exited || Instant::now() >= deadline {
            let text = fs::read_to_string(log).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(if exited { "it exited" } else { "no answer" });
            return Err(SshError::Daemon {
                port,
                log: last.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// poststop: ends the recorded daemon (its process group), if it is still the same process.
pub(super) fn stop(bundle: &Path) {
    use nix::sys::signal::{kill, Signal};
    let path = bundle.join(PID_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return;
    };
    let _ = fs::remove_file(&path);
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<i32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    let same = || start_time(pid) == Some(start);
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        if !same() {
            return;
        }
        // The daemon leads its own session and process group; its children are in it.
        let _ = kill(Pid::from_raw(-pid), sig);
        let _ = kill(Pid::from_raw(pid), sig);
        let deadline = Instant::now() + Duration::from_secs(2);
        while same() && Instant::now() < deadline {
            if fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    crate::debug!("stopped dropbear {pid}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_tells_processes_apart() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
