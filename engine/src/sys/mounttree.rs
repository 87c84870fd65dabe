//! The "new mount API" pieces that `nix` does not wrap: `open_tree(2)` with `OPEN_TREE_CLONE`
//! (a detached copy of a mount tree, i.e. a bind mount not attached anywhere yet) and
//! `move_mount(2)` (attach it onto an opened target). Together with [`super::mount::set_attrs`]
//! this binds a source onto a target descriptor with its final flags already set, without
//! resolving either path again (Linux 5.2; `mount_setattr` 5.12).
//!
//! # References
//! open_tree(2), move_mount(2), mount_setattr(2).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached bind mount of what `source` (any descriptor, `O_PATH` included) refers to, with
/// the mounts below it when `recursive`. Dropping the descriptor unmounts it unless it was
/// attached with [`attach`].
pub fn clone_tree<Fd: AsFd>(source: &Fd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid empty C string that outlives the call; the other arguments
    // are integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful open_tree returns a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// Attaches the detached tree `tree` (from [`clone_tree`]) on top of what `target` refers to.
pub fn attach<T: AsFd, U: AsFd>(tree: &T, target: &U) -> io::Result<()> {
    // SAFETY: both paths are valid empty C strings that outlive the call; the descriptors are
    // borrowed for its duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            target.as_fd().as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
