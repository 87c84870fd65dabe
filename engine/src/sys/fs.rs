//! Descriptor-relative file operations that return owned descriptors.
//!
//! # References
//! openat(2), openat2(2), proc(5) (`/proc/self/fd`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// `openat(dir, path, flags | O_CLOEXEC, mode)`, with the result owned.
pub fn openat<Fd: AsFd>(dir: &Fd, path: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::openat(
        Some(dir.as_fd().as_raw_fd()),
        path,
        flags | OFlag::O_CLOEXEC,
        mode,
    )?;
    // SAFETY: `raw` was just returned by a successful openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The magic link naming `fd`: what mount(2) and friends take to act on an opened file without
/// resolving its path again.
pub fn proc_path<Fd: AsFd>(fd: &Fd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}
