//! Doing file work as another user without changing the credentials of the process.
//!
//! On Linux credentials belong to threads; glibc's `setuid`/`setgroups` broadcast a change to every
//! thread, the raw system calls do not. `run_as` starts a throw-away thread, switches *its* real,
//! effective, saved and filesystem ids and supplementary groups to the user's with the raw calls
//! (which also drops all its capabilities), runs the closure there and lets the thread end. The
//! caller's threads stay root throughout, and nothing has to be switched back.
//!
//! # References
//! credentials(7) ("per-thread"), setresuid(2), setgroups(2) (C library/kernel differences).

use std::io;

/// Runs `f` on a new thread that has `uid`, `gid` and `groups` as its only identity, and returns
/// its result. Descriptors it opens stay valid for the whole process. A panic in `f` is resumed
/// on the caller's thread.
pub fn run_as<R, F>(uid: u32, gid: u32, groups: &[u32], f: F) -> io::Result<R>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> io::Result<R> {
            become_user(uid, gid, groups)?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Switches the calling thread, and only it, to the user. Groups first: setgroups needs the
/// privilege that setresuid takes away.
fn become_user(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is a valid slice of gid_t for the duration of the call; the kernel copies it.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    check(r)?;
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    check(r)?;
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    check(r)
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_new_thread_changes() {
        let uid = nix::unistd::geteuid().as_raw();
        let inside = run_as(65534, 65534, &[65534], || {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        if uid == 0 {
            assert_eq!(inside.unwrap(), (65534, 65534));
        } else {
            // Without privilege even setgroups is refused, and nothing runs.
            assert_eq!(inside.unwrap_err().raw_os_error(), Some(libc::EPERM));
        }
        assert_eq!(
            nix::unistd::geteuid().as_raw(),
            uid,
            "the calling thread must not change"
        );
    }
}
