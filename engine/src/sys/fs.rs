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

/// Opens the directory `path` itself (`O_DIRECTORY | O_NOFOLLOW`: a link in its place is
/// refused), for descriptor-relative work below it.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `raw` was just returned by a successful open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens the absolute `path` with no symbolic link followed on the way (`RESOLVE_NO_SYMLINKS`):
/// for paths a user named that must lead where they say. `O_CLOEXEC` is added.
pub fn open_no_symlinks(path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let raw = nix::fcntl::openat2(libc::AT_FDCWD, path, how)?;
    // SAFETY: `raw` was just returned by a successful openat2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The magic link naming `fd`: what mount(2) and friends take to act on an opened file without
/// resolving its path again.
pub fn proc_path<Fd: AsFd>(fd: &Fd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Opens `path` for reading strictly below `dir`, following no symbolic link, magic link or
/// mount crossing on the way (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`), without blocking on a FIFO or taking a terminal:
/// the way root reads files in a directory someone else could write.
pub fn open_read_beneath<Fd: AsFd>(dir: &Fd, path: &Path) -> io::Result<std::fs::File> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
        )
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let raw = nix::fcntl::openat2(dir.as_fd().as_raw_fd(), path, how)?;
    // SAFETY: `raw` was just returned by a successful openat2 and is owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// Opens `path` inside the directory tree `root` as if `root` were `/` (`openat2` with
/// `RESOLVE_IN_ROOT`: absolute symlinks and `..` stay inside, magic links refused), optionally
/// without crossing a mount point (`RESOLVE_NO_XDEV`): one resolution by the kernel, after which
/// the caller works on the descriptor only. `flags` gets `O_CLOEXEC` (openat2 refuses flags that
/// do not fit, e.g. `O_NOCTTY` with `O_PATH`).
pub fn open_in_root<Fd: AsFd>(
    root: &Fd,
    path: &Path,
    flags: OFlag,
    same_mount: bool,
) -> io::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if same_mount {
        resolve |= ResolveFlag::RESOLVE_NO_XDEV;
    }
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve);
    let raw = nix::fcntl::openat2(root.as_fd().as_raw_fd(), path, how)?;
    // SAFETY: `raw` was just returned by a successful openat2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
