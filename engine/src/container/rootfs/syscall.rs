//! The privileged operations the bundle is assembled with, behind a trait: [`LinuxSyscall`] does
//! them, the recording fake of the tests only writes them down, so the mount sequence is checked
//! without root.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};

use crate::container::user::{open_o_path, UserError, UserIdentity};
use crate::sys;

/// An attached loop device; dropping it lets autoclear detach the device once unmounted.
pub struct LoopHandle {
    pub device: PathBuf,
    _attached: Option<sys::loopdev::LoopDevice>,
}

pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// Binds what `source` refers to onto what `target` refers to with its flags already set:
    /// a detached copy of the source (`open_tree`), its flags (`mount_setattr`), then attached
    /// (`move_mount`); neither path is resolved again. `target_path` names the target for
    /// kernels without that API (before 5.12), where the flags are set by path after the bind.
    fn bind_fd(
        &self,
        source: &OwnedFd,
        target: &OwnedFd,
        target_path: &Path,
        flags: BindFlags,
    ) -> io::Result<()>;
    /// Binds the mount at `source` onto `target` as an idmapped mount in which on-disk owner 0
    /// (user and group) is shown, and written, as `uid`/`gid`; every other owner is unmapped.
    fn bind_idmapped(&self, source: &Path, target: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Attaches `image` to a loop device, read-only and autoclear.
    fn attach_loop(&self, image: &File, name: &Path) -> io::Result<LoopHandle>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Opens `path` with `O_PATH` as `user`, or as root for trusted (site) paths.
    fn open_as(&self, user: Option<&UserIdentity>, path: &Path) -> Result<OwnedFd, UserError>;
    /// True when the calling thread is in a mount namespace made by
    /// [`super::enter_private_mount_namespace`].
    fn in_private_namespace(&self) -> io::Result<bool>;
}

/// How [`Syscall::bind_fd`] binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BindFlags {
    /// With the mounts below the source (`MS_REC`).
    pub recursive: bool,
    /// `MOUNT_ATTR_*` bits added to the source's own flags, on every mount of the copy.
    pub attrs: u64,
    /// No bind can be made of the result (pyxis's `unbindable`).
    pub unbindable: bool,
}

/// The real thing.
pub struct LinuxSyscall;

/// Mount namespaces (by inode) made by `enter_private_mount_namespace` in this process.
static PRIVATE_NAMESPACES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Identifies the calling thread's mount namespace (not the main thread's) by its inode.
pub fn current_namespace() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/mnt")?.ino())
}

pub(super) fn remember_private_namespace() -> io::Result<()> {
    let ns = current_namespace()?;
    PRIVATE_NAMESPACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ns);
    Ok(())
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn bind_fd(
        &self,
        source: &OwnedFd,
        target: &OwnedFd,
        target_path: &Path,
        flags: BindFlags,
    ) -> io::Result<()> {
        let propagation = if flags.unbindable {
            MsFlags::MS_UNBINDABLE.bits()
        } else {
            0
        };
        let tree = match sys::mounttree::clone_tree(source, flags.recursive) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return bind_legacy(source, target, target_path, flags)
            }
            other => other?,
        };
        match sys::mount::set_attrs_and_propagation(&tree, flags.attrs, propagation, true) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return bind_legacy(source, target, target_path, flags)
            }
            other => other?,
        }
        sys::mounttree::attach(&tree, target)
    }

    fn bind_idmapped(&self, source: &Path, target: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let userns = sys::userns::map_zero_to(uid, gid)?;
        let tree = sys::mounttree::clone_tree(&sys::fs::open_dir(source)?, false)?;
        sys::mount::set_idmap(&tree, &userns)?;
        sys::mounttree::attach(&tree, &sys::fs::open_dir(target)?)
    }

    fn attach_loop(&self, image: &File, name: &Path) -> io::Result<LoopHandle> {
        let dev = sys::loopdev::attach_read_only(image, name)?;
        Ok(LoopHandle {
            device: dev.path.clone(),
            _attached: Some(dev),
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn open_as(&self, user: Option<&UserIdentity>, path: &Path) -> Result<OwnedFd, UserError> {
        match user {
            Some(u) => u.open_path(path),
            None => open_o_path(path).map_err(|source| UserError::Access {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn in_private_namespace(&self) -> io::Result<bool> {
        let ns = current_namespace()?;
        Ok(PRIVATE_NAMESPACES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ns))
    }
}

/// Kernels without `open_tree`/`mount_setattr`: bind by descriptor, then set the flags on the
/// mount now at `target_path` (a path again: only where the new API is missing).
fn bind_legacy(
    source: &OwnedFd,
    target: &OwnedFd,
    target_path: &Path,
    flags: BindFlags,
) -> io::Result<()> {
    let mut ms = MsFlags::MS_BIND;
    if flags.recursive {
        ms |= MsFlags::MS_REC;
    }
    nix::mount::mount(
        Some(&sys::fs::proc_path(source)),
        &sys::fs::proc_path(target),
        None::<&str>,
        ms,
        None::<&str>,
    )?;
    if flags.unbindable {
        nix::mount::mount(
            None::<&str>,
            target_path,
            None::<&str>,
            MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            None::<&str>,
        )?;
    }
    remount_legacy(target_path, flags.attrs)
}

/// Kernels before 5.12: one remount of the top mount only, repeating the flags it has (a bind
/// remount replaces them all).
fn remount_legacy(target: &Path, attrs: u64) -> io::Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let have = statvfs(target)?.flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    for (attr, ms) in [
        (sys::mount::MOUNT_ATTR_RDONLY, MsFlags::MS_RDONLY),
        (sys::mount::MOUNT_ATTR_NOSUID, MsFlags::MS_NOSUID),
        (sys::mount::MOUNT_ATTR_NODEV, MsFlags::MS_NODEV),
        (sys::mount::MOUNT_ATTR_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if attrs & attr != 0 {
            flags |= ms;
        }
    }
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(io::Error::from)
}

/// One privileged operation, as the fake saw it. Descriptor paths (`/proc/self/fd/N`) are
/// recorded as the paths they stand for.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
    },
    BindFd {
        source: PathBuf,
        target: PathBuf,
        flags: BindFlags,
    },
    BindIdmapped {
        source: PathBuf,
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
    AttachLoop {
        image: PathBuf,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    OpenAs {
        uid: Option<u32>,
        path: PathBuf,
    },
}

/// Records every call and performs none (opening files excepted: that needs no privilege).
#[cfg(test)]
#[derive(Default)]
pub struct RecordingSyscall {
    pub calls: Mutex<Vec<Call>>,
}

#[cfg(test)]
impl RecordingSyscall {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn real(p: &Path) -> PathBuf {
        if p.starts_with("/proc/self/fd") {
            std::fs::read_link(p).unwrap_or_else(|_| p.to_path_buf())
        } else {
            p.to_path_buf()
        }
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(Call::Mount {
            source: source.map(Self::real),
            target: Self::real(target),
            fstype: fstype.map(String::from),
            flags,
            data: data.map(String::from),
        });
        Ok(())
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount {
            target: target.to_path_buf(),
        });
        Ok(())
    }

    fn bind_fd(
        &self,
        source: &OwnedFd,
        target: &OwnedFd,
        _target_path: &Path,
        flags: BindFlags,
    ) -> io::Result<()> {
        self.record(Call::BindFd {
            source: Self::real(&sys::fs::proc_path(source)),
            target: Self::real(&sys::fs::proc_path(target)),
            flags,
        });
        Ok(())
    }

    fn bind_idmapped(&self, source: &Path, target: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(Call::BindIdmapped {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            uid,
            gid,
        });
        Ok(())
    }

    fn attach_loop(&self, _image: &File, name: &Path) -> io::Result<LoopHandle> {
        self.record(Call::AttachLoop {
            image: name.to_path_buf(),
        });
        Ok(LoopHandle {
            device: "/dev/loop-fake".into(),
            _attached: None,
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(Call::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
        });
        Ok(())
    }

    fn open_as(&self, user: Option<&UserIdentity>, path: &Path) -> Result<OwnedFd, UserError> {
        self.record(Call::OpenAs {
            uid: user.map(|u| u.uid),
            path: path.to_path_buf(),
        });
        open_o_path(path).map_err(|source| UserError::Access {
            path: path.to_path_buf(),
            source,
        })
    }

    fn in_private_namespace(&self) -> io::Result<bool> {
        Ok(true)
    }
}
