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

/// `CAP_SYS_RESOURCE`: among other things, lets its holder write past disk quotas and into a
/// filesystem's reserved blocks.
const CAP_SYS_RESOURCE: u32 = 24;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Runs `f` with `CAP_SYS_RESOURCE` out of the calling thread's effective set (capabilities
/// belong to threads), then puts it back, so that what `f` sets up to write later on root's
/// behalf obeys quotas and reserved blocks: an overlay records its mounter's credentials and
/// writes its upper layer with them.
pub fn without_resource_override<R>(f: impl FnOnce() -> R) -> io::Result<R> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are valid for the version-3 layout (two data words) and
    // outlive the call.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    let had = data;
    data[0].effective &= !(1 << CAP_SYS_RESOURCE);
    // SAFETY: as above; lowering the effective set needs no privilege and can be undone.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })?;
    let r = f();
    // SAFETY: as above; the old effective set is within the permitted set, unchanged.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, had.as_ptr()) })?;
    Ok(r)
}

/// Makes `cmd`'s process (run as root) start without `CAP_SYS_RESOURCE`: dropped from the
/// bounding set before exec, so root's exec does not grant it again. Its writes then obey the
/// quotas of the files' owners and the filesystem's reserved blocks.
pub fn drop_resource_override_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl (async-signal-safe);
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_CAPBSET_DROP,
                CAP_SYS_RESOURCE as libc::c_ulong,
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

    fn cap_line(status: &str, key: &str) -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line[key.len()..].trim(), 16).unwrap()
    }

    #[test]
    fn the_resource_override_is_gone_on_that_thread_and_in_children() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let bit = 1u64 << CAP_SYS_RESOURCE;
        let eff = || {
            cap_line(
                &std::fs::read_to_string("/proc/thread-self/status").unwrap(),
                "CapEff:",
            )
        };
        let before = eff();
        assert_eq!(without_resource_override(eff).unwrap(), before & !bit);
        assert_eq!(eff(), before, "the thread's set is back afterwards");
        let mut cmd = std::process::Command::new("grep");
        cmd.args(["^CapEff:", "/proc/self/status"]);
        drop_resource_override_on_exec(&mut cmd);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert_eq!(cap_line(&out, "CapEff:") & bit, 0, "{out}");
    }

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
