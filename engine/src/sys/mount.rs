//! `mount_setattr(2)` (Linux 5.12): change the flags of a mount, optionally of its whole subtree,
//! without clearing the flags that are already set (a `MS_REMOUNT|MS_BIND` replaces them all).
//!
//! # References
//! mount_setattr(2).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

pub use libc::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// Sets `attrs` (`MOUNT_ATTR_*` bits) on the mount `fd` is the root of, and on every mount below
/// it when `recursive`. `ENOSYS` on kernels before 5.12.
pub fn set_attrs<Fd: AsFd>(fd: &Fd, attrs: u64, recursive: bool) -> io::Result<()> {
    set_attrs_and_propagation(fd, attrs, 0, recursive)
}

/// [`set_attrs`], also setting the propagation type (`MS_UNBINDABLE`, `MS_PRIVATE`, ...; 0
/// leaves it as it is). Works on a detached tree from `open_tree(2)` before it is attached.
pub fn set_attrs_and_propagation<Fd: AsFd>(
    fd: &Fd,
    attrs: u64,
    propagation: u64,
    recursive: bool,
) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    mount_setattr(
        fd,
        libc::mount_attr {
            attr_set: attrs,
            attr_clr: 0,
            propagation,
            userns_fd: 0,
        },
        flags,
    )
}

/// Makes the detached tree `fd` (from `open_tree(OPEN_TREE_CLONE)`, not attached yet) an idmapped
/// mount: file owners are shown, and written, through the maps of the user namespace `userns`
/// (see [`super::userns`]). Linux 5.12; `EINVAL` where the filesystem does not support it (squashfs does on the 6.18 kernels
/// egret is tested on).
pub fn set_idmap<Fd: AsFd, U: AsFd>(fd: &Fd, userns: &U) -> io::Result<()> {
    mount_setattr(
        fd,
        libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_fd().as_raw_fd() as u64,
        },
        libc::AT_EMPTY_PATH as libc::c_uint,
    )
}

/// mount_setattr(2) on the mount `fd` is the root of.
fn mount_setattr<Fd: AsFd>(
    fd: &Fd,
    mut attr: libc::mount_attr,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: the path is a valid empty C string, `attr` is a valid `struct mount_attr` whose size
    // is passed along, and both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
