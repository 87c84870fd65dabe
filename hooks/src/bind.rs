//! Bind mounts from the host into the container's rootfs, done by a hook at `createContainer`
//! (root, in the container's mount namespace, before `pivot_root`).
//!
//! Sources come from the hook's JSON (the admin's, trusted) and are opened normally.
//! Destinations are inside the user's image (hostile): they are resolved with
//! [`in_root::resolve_in_root`] and opened (created when missing) with [`in_root::open_in_root`],
//! component by component without following links. The source is then cloned as a detached
//! mount (`open_tree`), its flags are set on the clone (`nosuid`, `nodev` unless it is a device,
//! `ro` when asked) and it is attached onto the opened target (`move_mount`): no path is
//! resolved twice and the mount is never visible with weaker flags.
//!
//! Targets under the container's `/dev` (runc's tmpfs, a mount of its own) are created inside
//! that tmpfs; elsewhere nothing is created on a mount other than the rootfs's own (a user's
//! bind of a host directory is never written into as root).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use egret_engine::sys::in_root::{self, InRootError, TargetKind};
use egret_engine::sys::mount::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use egret_engine::sys::{mount as sysmount, mounttree};
use nix::sys::stat::{fstat, SFlag};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot open {}: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a character or block device", path.display())]
    NotADevice { path: PathBuf },
    #[error("mount target {} in the container: {source}", destination.display())]
    Target {
        destination: PathBuf,
        #[source]
        source: InRootError,
    },
    #[error("cannot bind {} onto {} in the container: {source}", source_path.display(), destination.display())]
    Mount {
        source_path: PathBuf,
        destination: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How to bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    pub readonly: bool,
    /// Also bind the mounts below a directory source (`rbind`).
    pub recursive: bool,
}

/// What a source is, which decides the target's kind and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Dir,
    File,
    Device,
}

fn source_kind(fd: &OwnedFd, path: &Path) -> Result<SourceKind, BindError> {
    let st = fstat(fd.as_raw_fd()).map_err(|e| BindError::Source {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => SourceKind::Dir,
            SFlag::S_IFCHR | SFlag::S_IFBLK => SourceKind::Device,
            _ => SourceKind::File,
        },
    )
}

fn open_source(path: &Path) -> Result<OwnedFd, BindError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| BindError::Source {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds the host path `source` at `destination` (absolute, as the container sees it) inside
/// `rootfs`. Returns the destination as resolved in the container (image symlinks followed).
pub fn bind(
    rootfs: &Path,
    source: &Path,
    destination: &Path,
    opts: BindOptions,
) -> Result<PathBuf, BindError> {
    let src = open_source(source)?;
    let kind = source_kind(&src, source)?;
    attach(rootfs, source, &src, kind, destination, opts)
}

/// Binds the host device node `device` at `destination` in the container (`nosuid`, devices
/// allowed). The container can only use it if its device cgroup allows it: the engine adds the
/// rules for the devices a hook declares (see the admin guide).
pub fn bind_device(rootfs: &Path, device: &Path, destination: &Path) -> Result<PathBuf, BindError> {
    let src = open_source(device)?;
    if source_kind(&src, device)? != SourceKind::Device {
        return Err(BindError::NotADevice {
            path: device.to_path_buf(),
        });
    }
    attach(
        rootfs,
        device,
        &src,
        SourceKind::Device,
        destination,
        BindOptions::default(),
    )
}

fn attach(
    rootfs: &Path,
    source: &Path,
    src: &OwnedFd,
    kind: SourceKind,
    destination: &Path,
    opts: BindOptions,
) -> Result<PathBuf, BindError> {
    let target_err = |source: InRootError| BindError::Target {
        destination: destination.to_path_buf(),
        source,
    };
    let mount_err = |e: io::Error| BindError::Mount {
        source_path: source.to_path_buf(),
        destination: destination.to_path_buf(),
        source: e,
    };
    let target_kind = if kind == SourceKind::Dir {
        TargetKind::Dir
    } else {
        TargetKind::File
    };
    let rel = in_root::resolve_in_root(rootfs, destination).map_err(target_err)?;
    let target = open_target(rootfs, &rel, target_kind).map_err(target_err)?;
    let tree =
        mounttree::clone_tree(src, opts.recursive && kind == SourceKind::Dir).map_err(mount_err)?;
    let mut attrs = MOUNT_ATTR_NOSUID;
    if kind != SourceKind::Device {
        attrs |= MOUNT_ATTR_NODEV;
    }
    if opts.readonly {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    sysmount::set_attrs(&tree, attrs, true).map_err(mount_err)?;
    mounttree::attach(&tree, &target).map_err(mount_err)?;
    Ok(Path::new("/").join(rel))
}

/// Opens the resolved target `rel`, creating it inside the container's `/dev` mount when it lies
/// there, inside the rootfs's own filesystem otherwise.
fn open_target(rootfs: &Path, rel: &Path, kind: TargetKind) -> Result<OwnedFd, InRootError> {
    let dev = in_root::resolve_in_root(rootfs, Path::new("/dev"))?;
    if let Ok(inside) = rel.strip_prefix(&dev) {
        if !inside.as_os_str().is_empty() && is_mount_root(&rootfs.join(&dev), rootfs) {
            return in_root::open_in_root(&rootfs.join(&dev), inside, kind);
        }
    }
    in_root::open_in_root(rootfs, rel, kind)
}

/// True when `dir` is on another filesystem than `rootfs` (runc's `/dev` tmpfs).
fn is_mount_root(dir: &Path, rootfs: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(dir), std::fs::metadata(rootfs)) {
        (Ok(d), Ok(r)) => d.is_dir() && d.dev() != r.dev(),
        _ => false,
    }
}
