//! What a child does between fork and exec to start in another process's cgroups: join them,
//! prove that the other process was still alive and still in them *after* the join, and hide
//! the hierarchies its program must not make groups of its own in. Policy-free: which files,
//! which process and which mount points is decided by `slurm::cgroup`.
//!
//! # References
//! cgroups(7) (`cgroup.procs`, writing `0` moves the writer), pidfd_open(2) (a pidfd polls
//! readable once its process exited), unshare(2), umount(2), sched_setaffinity(2).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The errno of a refused entry (the process exited or moved): the caller's "task gone".
pub const GONE: i32 = libc::ESRCH;

/// What [`enter_on_exec`] does, all of it prepared (opened, allocated) before the fork.
#[derive(Debug)]
pub struct Entry {
    /// `cgroup.procs` files to write `0` to, each with whether a failure fails the spawn.
    pub procs: Vec<(OwnedFd, bool)>,
    /// A pidfd of the process whose cgroups these are (a duplicate is fine).
    pub owner: OwnedFd,
    /// Its `/proc/PID/cgroup`, by the number it had while the pidfd showed it alive.
    pub membership_path: CString,
    /// That file's text when `procs` were resolved from it.
    pub membership: Vec<u8>,
    /// Lines of `/proc/self/cgroup` the child must still show (groups it shares with the owner
    /// and so was not told to join: the launcher's, inherited at the fork).
    pub already: Vec<Vec<u8>>,
    /// CPU affinity to take after the joins (a cpuset join resets it), `None` to keep.
    pub affinity: Option<libc::cpu_set_t>,
    /// Mount points to unmount in a mount namespace of the child's own (the hierarchies its
    /// program must not see); nothing is unshared when empty.
    pub hide: Vec<CString>,
}

/// Makes `cmd`'s process carry out `entry` before it execs; a refusal fails the spawn with
/// [`GONE`], any other failed step with its errno. Register it before any descriptor shuffle
/// ([`crate::sys::fd::map_fds_on_exec`]), which may reuse the numbers of its descriptors.
pub fn enter_on_exec(cmd: &mut Command, entry: Entry) {
    let mut entry = entry;
    // Room for the membership text and then some: a longer text is a changed one.
    let mut buf = vec![0u8; entry.membership.len() + 256];
    let mut own = vec![0u8; 8192];
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (write, open, read, close, poll, sched_setaffinity, unshare, mount, umount2) on
    // descriptors, strings and a buffer allocated before the fork; it allocates nothing and
    // takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let e = &mut entry;
            // 1. Join: the child moves itself ("0" is the writer), before it is anything but a
            //    copy of the launcher, so runc starts (and creates the container's groups)
            //    inside them. Files were opened while their owner was alive.
            for (fd, required) in &e.procs {
                if libc::write(fd.as_raw_fd(), c"0".as_ptr().cast(), 1) < 0 && *required {
                    return Err(io::Error::last_os_error());
                }
            }
            // 2. Affinity: joining a v1 cpuset cgroup reset it to the whole cpuset; take the
            //    owner's back, as runc (which keeps what it inherits) will pass it on.
            if let Some(set) = &e.affinity {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // 3. Read the owner's membership now, after the join, by its number...
            let Some(len) = read_file(&e.membership_path, &mut buf) else {
                return Err(io::Error::from_raw_os_error(GONE));
            };
            // 4. ...then make sure the number still named it: a pidfd polls readable once its
            //    process exited (zombies included), and while it has not, nobody else can hold
            //    the number. Checked after the read, so the read was of the owner.
            let mut poll = libc::pollfd {
                fd: e.owner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut poll, 1, 0) != 0 {
                return Err(io::Error::from_raw_os_error(GONE));
            }
            // 5. The same groups as when the files were chosen: the owner did not move (a
            //    process that moved could have been replaced in them by anything).
            if buf[..len] != e.membership[..] {
                return Err(io::Error::from_raw_os_error(GONE));
            }
            // 5b. The groups not joined are the child's own (inherited): still so, or the
            //     launcher was moved after they were compared, and runc would start elsewhere.
            if !e.already.is_empty() {
                let Some(len) = read_file(c"/proc/self/cgroup", &mut own) else {
                    return Err(io::Error::last_os_error());
                };
                let text = &own[..len];
                if !e
                    .already
                    .iter()
                    .all(|l| text.split(|b| *b == b'\n').any(|o| o == &l[..]))
                {
                    return Err(io::Error::from_raw_os_error(libc::EAGAIN));
                }
            }
            // 6. Hide: in a copy of the mount namespace (the launcher's own stays whole for the
            //    next task), unmount the hierarchies runc must not make groups in; runc skips a
            //    controller it cannot find mounted and leaves its processes where they are.
            //    Private first, so no unmount propagates anywhere.
            if !e.hide.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                for point in &e.hide {
                    let private = libc::mount(
                        std::ptr::null(),
                        point.as_ptr(),
                        std::ptr::null(),
                        libc::MS_PRIVATE,
                        std::ptr::null(),
                    );
                    if private != 0 || libc::umount2(point.as_ptr(), libc::MNT_DETACH) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        })
    };
}

/// Reads `path` into `buf` (up to its length) with open/read/close alone, so it may run between
/// fork and exec (async-signal-safe: no allocation, no lock; `buf` is allocated by the caller,
/// before the fork); the length read, `None` when it cannot be opened.
fn read_file(path: &std::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: a NUL-terminated path; reads stay within `buf`; the descriptor is ours to close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut len = 0usize;
        while len < buf.len() {
            let n = libc::read(fd, buf.as_mut_ptr().add(len).cast(), buf.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
        Some(len)
    }
}

/// The CPU affinity of process `pid` in the form [`Entry::affinity`] takes.
pub fn affinity_of(pid: i32) -> io::Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_for_self(membership: Vec<u8>) -> Entry {
        let me = crate::sys::process::PidFd::open(nix::unistd::getpid()).unwrap();
        Entry {
            procs: Vec::new(),
            owner: me.as_fd().try_clone_to_owned().unwrap(),
            membership_path: CString::new(format!("/proc/{}/cgroup", std::process::id())).unwrap(),
            membership,
            already: Vec::new(),
            affinity: None,
            hide: Vec::new(),
        }
    }

    #[test]
    fn a_living_owner_in_the_same_groups_lets_the_program_start() {
        let text = std::fs::read(format!("/proc/{}/cgroup", std::process::id())).unwrap();
        let mut cmd = Command::new("true");
        enter_on_exec(&mut cmd, entry_for_self(text));
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn an_owner_in_other_groups_refuses_the_start() {
        let mut cmd = Command::new("true");
        enter_on_exec(&mut cmd, entry_for_self(b"0::/elsewhere\n".to_vec()));
        let err = cmd.status().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(GONE), "{err}");
    }

    #[test]
    fn a_group_not_joined_must_still_be_the_childs_own() {
        let text = std::fs::read(format!("/proc/{}/cgroup", std::process::id())).unwrap();
        let line = text.split(|b| *b == b'\n').next().unwrap().to_vec();
        let mut cmd = Command::new("true");
        let mut entry = entry_for_self(text.clone());
        entry.already = vec![line];
        enter_on_exec(&mut cmd, entry);
        assert!(cmd.status().unwrap().success());
        // A group the child is not in: refused before the program starts.
        let mut cmd = Command::new("true");
        let mut entry = entry_for_self(text);
        entry.already = vec![b"99:nonesuch:/elsewhere".to_vec()];
        enter_on_exec(&mut cmd, entry);
        let err = cmd.status().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
    }

    #[test]
    fn an_exited_owner_refuses_the_start() {
        let mut owner = Command::new("true").spawn().unwrap();
        let pid = owner.id() as i32;
        let fd = crate::sys::process::PidFd::open(nix::unistd::Pid::from_raw(pid)).unwrap();
        let text = std::fs::read(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        // Exited (and reaped): what the number reads now is not the owner's.
        owner.wait().unwrap();
        let mut cmd = Command::new("true");
        let mut entry = entry_for_self(text);
        entry.owner = fd.as_fd().try_clone_to_owned().unwrap();
        entry.membership_path = CString::new(format!("/proc/{pid}/cgroup")).unwrap();
        enter_on_exec(&mut cmd, entry);
        let err = cmd.status().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(GONE), "{err}");
    }
}
