//! User namespaces made only to describe an id mapping: the kernel takes an idmapped mount's
//! mapping from a user namespace (`mount_setattr(MOUNT_ATTR_IDMAP)`), so one is created, given
//! its maps and kept as a descriptor; its short-lived member process is gone when this returns.
//!
//! # References
//! user_namespaces(7) (`uid_map`, `gid_map`), clone(2), mount_setattr(2).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// A user namespace mapping id 0 to `uid` (users) and `gid` (groups), one id each and nothing
/// else. The caller must be root in the initial user namespace (it writes the maps of a
/// namespace whose only process is its own child).
pub fn map_zero_to(uid: u32, gid: u32) -> io::Result<OwnedFd> {
    // The child blocks on this pipe until the namespace is described, then exits.
    let (hold_rd, hold_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: a raw clone without CLONE_VM is a fork into a new user namespace. The child only
    // calls read(2) and _exit(2), both async-signal-safe, so it is sound even when the caller has
    // other threads (whose locks the child never touches).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: closes the child's copy of the write end (so the parent's close is the end of
        // file), reads into a live one-byte buffer, then exits without returning (no unwinding,
        // no atexit handlers of the parent).
        unsafe {
            libc::close(hold_wr.as_raw_fd());
            libc::read(hold_rd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(hold_rd);
    let child = Pid::from_raw(pid as libc::pid_t);
    // The child is ours and not yet reaped: its pid cannot name another process meanwhile.
    let described = describe(child, uid, gid);
    drop(hold_wr);
    let _ = waitpid(child, None);
    described
}

fn describe(child: Pid, uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let write = |file: &str, line: String| -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(format!("/proc/{child}/{file}"))?
            .write_all(line.as_bytes())
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))?;
    let ns = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/{child}/ns/user"))?;
    Ok(ns.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_zero_to_the_given_ids_when_root() {
        if !nix::unistd::geteuid().is_root() {
            // Writing another namespace's maps needs root; the system tests exercise it.
            assert!(map_zero_to(4242, 4243).is_err());
            return;
        }
        let ns = map_zero_to(4242, 4243).unwrap();
        let st = nix::sys::stat::fstat(ns.as_raw_fd()).unwrap();
        let own = nix::sys::stat::stat("/proc/self/ns/user").unwrap();
        assert_ne!(st.st_ino, own.st_ino, "a namespace of its own");
    }
}
