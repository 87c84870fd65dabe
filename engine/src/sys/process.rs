//! Processes: a checked `fork`, processes named by pidfd, and what a child does between fork and
//! exec.
//!
//! # References
//! fork(2) (multi-threaded callers), pidfd_open(2), pidfd_send_signal(2), unix(7)
//! (`SO_PEERPIDFD`, Linux 6.5), proc(5) (`/proc/self/status`, a pidfd's `fdinfo`).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::Pid;

/// Number of threads of the calling process.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Forks; the child runs `f` and exits with its result (101 if it panics) without returning.
/// Refused in a multi-threaded process, where the child could inherit a lock held by a thread
/// that does not exist in it.
pub fn fork_child<F: FnOnce() -> i32>(f: F) -> io::Result<Pid> {
    // A thread that was just joined may still be finishing its exit in the kernel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    while thread_count()? != 1 {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::other("cannot fork a multi-threaded process"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Nothing buffered may be written twice, by parent and child.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process has a single thread (checked above), so the child inherits no lock
    // held by another thread and may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            // SAFETY: _exit never returns and skips the parent's atexit handlers, which belong
            // to the parent.
            unsafe { libc::_exit(code) }
        }
    }
}

/// A descriptor that becomes readable when process `pid` (a child of ours) exits. `ENOSYS` before
/// Linux 5.3.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A process named by a pidfd rather than by its number, which the kernel recycles once the
/// process is reaped. Its number is only ever used between two checks that the process has not
/// been reaped ([`PidFd::with_pid`]): while a process is unreaped nobody else can hold its number.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// The process `pid` is now. Sound only where `pid` cannot have been recycled (a child of
    /// ours not yet waited for); elsewhere use [`PidFd::of_peer`].
    pub fn open(pid: Pid) -> io::Result<PidFd> {
        pidfd_open(pid).map(PidFd)
    }

    /// The process that connected the Unix socket `sock` (the kernel's record from connect
    /// time, Linux 6.5). `ENOPROTOOPT` on older kernels.
    pub fn of_peer<Fd: std::os::fd::AsFd>(sock: &Fd) -> io::Result<PidFd> {
        let mut fd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` and `len` are valid for writes of the sizes passed and outlive the call.
        let r = unsafe {
            libc::getsockopt(
                sock.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERPIDFD,
                &mut fd as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a successful SO_PEERPIDFD returns a new descriptor that nobody else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The process's number in our PID namespace, or `ESRCH` once it was reaped.
    pub fn pid(&self) -> io::Result<i32> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.0.as_raw_fd()))?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| io::Error::other("a pidfd's fdinfo has no Pid line"))?;
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(pid)
    }

    /// Runs `f` with the process's number, and returns its result only if the process was not
    /// reaped before `f` returned (so the number denoted this process throughout).
    pub fn with_pid<R>(&self, f: impl FnOnce(i32) -> R) -> io::Result<R> {
        let pid = self.pid()?;
        let r = f(pid);
        if self.pid()? != pid {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(r)
    }

    /// Sends `sig` to this process; `ESRCH` once it exited, never to another process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> io::Result<()> {
        // SAFETY: integer arguments and a null siginfo (the kernel fills it as for kill(2)).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited (reaped or not): the pidfd polls readable then.
    pub fn has_exited(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits up to `timeout` for the process to exit; whether it has (reaped or not). Wakes at
    /// the exit itself, not at the next tick of a polling loop.
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    /// The descriptor, for `setns(2)` into the process's namespaces and for poll.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }
}

/// Makes `cmd`'s process start with no signal blocked. A blocked signal stays blocked across
/// exec, and std does not reset the mask: a caller that blocks signals to forward them would
/// otherwise start runc (and the container) deaf to them.
pub fn unblock_signals_on_exec(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls sigemptyset and
    // pthread_sigmask, which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            match libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        })
    };
}

/// Sets this process's umask to `mask` and returns the one it had.
pub fn set_umask(mask: u32) -> u32 {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        mask as libc::mode_t,
    ))
    .bits() as u32
}

/// The umask root's own files are made with, whatever the caller's was.
pub const ROOT_UMASK: u32 = 0o022;

/// Makes `cmd`'s process find the open file `file` as descriptor `target` (for programs that
/// take a path: they are given `/proc/self/fd/<target>`). `file` must outlive the spawn.
pub fn pass_fd_on_exec<Fd: AsRawFd>(cmd: &mut Command, file: &Fd, target: i32) {
    let fd = file.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls dup2 (async-signal-safe); it
    // allocates nothing and takes no lock. dup2 clears close-on-exec on the new descriptor.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Makes `cmd`'s process run with exactly the user's identity: supplementary groups, gid and
/// uid (real, effective and saved, so no capability survives), `no_new_privs` (no setuid program
/// it runs can give any back), then its working directory `cwd`, entered as the user (`/` when
/// the user cannot enter it). For programs root runs on a user's behalf, such as skopeo.
pub fn run_as_user_on_exec(cmd: &mut Command, uid: u32, gid: u32, groups: &[u32], cwd: &Path) {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let cwd = std::ffi::CString::new(cwd.as_os_str().as_bytes())
        .unwrap_or_else(|_| std::ffi::CString::from(c"/"));
    // SAFETY: the closure runs between fork and exec and only makes raw system calls (setgroups,
    // setresgid, setresuid, prctl, chdir), which are async-signal-safe; it allocates nothing
    // (`groups` and `cwd` were allocated before the fork) and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let ok = |r: libc::c_long| {
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            ok(libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr(),
            ))?;
            ok(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            ok(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
            if libc::chdir(cwd.as_ptr()) != 0 {
                ok(libc::chdir(c"/".as_ptr()) as libc::c_long)?;
            }
            Ok(())
        })
    };
}

/// Makes `cmd`'s process receive SIGKILL when the thread that spawned it ends (a helper that
/// must not outlive the launcher, even one killed with SIGKILL).
pub fn die_with_parent_on_exec(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl (async-signal-safe);
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Makes `cmd`'s process run fully as root (no supplementary groups, gid and uid 0: real,
/// effective and saved) with no descriptor above stdio: for a root helper started from a process
/// whose effective uid is root but whose other ids are a user's (slurmstepd in `user_init`), and
/// whose own descriptors (sockets to slurmd, logs) must not leak to the helper. `keep` (3 or
/// above) is the one exception: the helper inherits it under its number.
pub fn run_as_root_on_exec(cmd: &mut Command, keep: Option<RawFd>) {
    let keep = keep.filter(|k| *k >= 3).map(|k| k as u32);
    // Marked close-on-exec rather than closed, so that a failed exec can still report its
    // errno on std's own (close-on-exec) pipe; closed where the kernel lacks the flag.
    fn close_on_exec(first: u32, last: u32) {
        const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
        // SAFETY: close_range takes integers and touches only this process's descriptor table.
        unsafe {
            if libc::syscall(libc::SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) != 0 {
                libc::syscall(libc::SYS_close_range, first, last, 0u32);
            }
        }
    }
    // SAFETY: the closure runs between fork and exec and only makes raw system calls
    // (setgroups, setresgid, setresuid, close_range, fcntl), which are async-signal-safe; it
    // allocates nothing and takes no lock. Raw calls change only the calling thread, the
    // child's only one.
    unsafe {
        cmd.pre_exec(move || {
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            match keep {
                Some(k) => {
                    if libc::fcntl(k as i32, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if k > 3 {
                        close_on_exec(3, k - 1);
                    }
                    close_on_exec(k + 1, u32::MAX);
                }
                None => close_on_exec(3, u32::MAX),
            }
            Ok(())
        })
    };
}

/// True while process `pid` exists (`EPERM` counts: a root process seen from a user).
pub fn is_alive(pid: Pid) -> bool {
    matches!(
        nix::sys::signal::kill(pid, None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// Reaps our child `pid` if it has exited; true when it is gone: reaped now, or already by
/// someone else waiting for any child (then it is no child of ours, `ECHILD`, and its number must
/// not be looked at again).
pub fn reap_if_exited(pid: Pid) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(e) => e == nix::errno::Errno::ECHILD,
    }
}

/// Ends the process with `code` at once, after flushing stdout and stderr, without running
/// atexit handlers (in a process forked by another program, they are that program's).
pub fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: _exit never returns and has no memory-safety preconditions.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor above stdio that is marked close-on-exec, except those in `keep`: for
/// a process that will never exec, where descriptors inherited for someone else's exec (the
/// write end of its own stdin pipe, say) would keep pipes open. Descriptors the caller owns (an
/// `OwnedFd`) must be in `keep`.
pub fn close_cloexec_fds_except(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Collected first: the directory's own descriptor is closed before any is looked at.
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd <= 2 || keep.contains(&fd) {
            continue;
        }
        // SAFETY: F_GETFD only reads descriptor flags; a stale number (the read_dir descriptor,
        // already closed) just fails.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
            // SAFETY: an exec would close it anyway, and the caller keeps what it owns.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_names_its_process_and_stops_working_once_it_is_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = PidFd::open(Pid::from_raw(pid)).unwrap();
        assert_eq!(fd.pid().unwrap(), pid);
        assert_eq!(fd.with_pid(|p| p * 2).unwrap(), pid * 2);
        assert!(!fd.has_exited());
        fd.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
        while !fd.has_exited() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            fd.pid().unwrap(),
            pid,
            "exited but not reaped: still its number"
        );
        child.wait().unwrap();
        assert_eq!(fd.pid().unwrap_err().raw_os_error(), Some(libc::ESRCH));
        let after = fd.signal(nix::sys::signal::Signal::SIGKILL).unwrap_err();
        assert_eq!(after.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn the_peer_of_a_socket_is_its_connecting_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        match PidFd::of_peer(&a) {
            Ok(fd) => assert_eq!(fd.pid().unwrap(), std::process::id() as i32),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "{e}"),
        }
    }

    #[test]
    fn set_umask_returns_the_previous_mask() {
        let before = set_umask(ROOT_UMASK);
        assert_eq!(set_umask(before), ROOT_UMASK);
    }

    #[test]
    fn a_child_is_alive_until_reaped() {
        // Reaped by `reap_if_exited`, the function under test.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(is_alive(pid));
        assert!(!reap_if_exited(pid));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reap_if_exited(pid) {
            assert!(std::time::Instant::now() < deadline, "never reaped");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(reap_if_exited(pid), "ECHILD once reaped: gone");
    }
}
