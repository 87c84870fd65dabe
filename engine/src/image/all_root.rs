//! An image with every file owned by root: what `--container-remap-root` shows (idmapped) as the
//! remapped root's, so that all of the image is that root's, as in pyxis's unpacked copy. A
//! single-id map would leave the files of the image's other users (apt's `_apt`, a `jovyan`
//! home) unmapped and unwritable.
//!
//! Made once per image, by root, from the squashfs root already trusts (a store's image, built
//! and verified by root), and kept next to it as `<stem>.all-root.squashfs`; the store deletes
//! it with the image.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags};

use crate::config::Config;
use crate::container::rootfs::{LinuxSyscall, Syscall};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum AllRootError {
    #[error("refusing to mount {} outside a private mount namespace", image.display())]
    NotPrivate { image: PathBuf },
    #[error("cannot prepare {} for --container-remap-root: {source}", image.display())]
    Io {
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare {} for --container-remap-root: mksquashfs failed ({status}): {stderr}", image.display())]
    Mksquashfs {
        image: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Where the all-root copy of `image` lives.
pub fn path_for(image: &Path) -> PathBuf {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(".squashfs").unwrap_or(&name);
    image.with_file_name(format!("{stem}.all-root.squashfs"))
}

fn lock_path_for(image: &Path) -> PathBuf {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    image.with_file_name(format!(".{name}.all-root.lock"))
}

/// The all-root copy of `image`, made now if it is not there yet (`notify` tells the user why
/// the step waits). Mounts `image` for the copy: call it in a private mount namespace.
pub fn ensure(cfg: &Config, image: &Path, notify: &dyn Fn(&str)) -> Result<PathBuf, AllRootError> {
    let out = path_for(image);
    if out.is_file() {
        return Ok(out);
    }
    let io_err = |source| AllRootError::Io {
        image: image.to_path_buf(),
        source,
    };
    if !LinuxSyscall.in_private_namespace().map_err(io_err)? {
        return Err(AllRootError::NotPrivate {
            image: image.to_path_buf(),
        });
    }
    // One maker per image; the others wait and reuse its result.
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(lock_path_for(image))
        .map_err(io_err)?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(io::Error::from(e)))?;
    if out.is_file() {
        return Ok(out);
    }
    notify("preparing the image for --container-remap-root (once per image)");
    make(cfg, image, &out).map_err(|e| match e {
        Made::Io(source) => io_err(source),
        Made::Failed(status, stderr) => AllRootError::Mksquashfs {
            image: image.to_path_buf(),
            status,
            stderr,
        },
    })?;
    Ok(out)
}

enum Made {
    Io(io::Error),
    Failed(std::process::ExitStatus, String),
}

impl From<io::Error> for Made {
    fn from(e: io::Error) -> Made {
        Made::Io(e)
    }
}

fn make(cfg: &Config, image: &Path, out: &Path) -> Result<(), Made> {
    // The image, mounted read-only where only root looks (this namespace, a 0700 directory).
    let view = tempfile::Builder::new()
        .prefix(".all-root-")
        .tempdir_in(out.parent().unwrap_or(Path::new("/")))?;
    let file = File::open(image)?;
    let lo = sys::loopdev::attach_read_only(&file, image)?;
    nix::mount::mount(
        Some(&lo.path),
        view.path(),
        Some("squashfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    drop(lo);
    let tmp = out.with_file_name(format!(
        ".{}.{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = squash(cfg, view.path(), &tmp);
    let _ = nix::mount::umount2(view.path(), MntFlags::MNT_DETACH);
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, out)?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn squash(cfg: &Config, tree: &Path, tmp: &Path) -> Result<(), Made> {
    let output = Command::new(&cfg.mksquashfs_path)
        .arg(tree)
        .arg(tmp)
        .args(["-noappend", "-quiet", "-no-progress", "-all-root"])
        .args(cfg.mksquashfs_options.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or("").trim().to_string();
    Err(Made::Failed(output.status, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_sits_next_to_the_image() {
        let img = Path::new("/var/lib/egret/store/images/sha256-ab.squashfs");
        assert_eq!(
            path_for(img),
            Path::new("/var/lib/egret/store/images/sha256-ab.all-root.squashfs")
        );
        assert_eq!(
            lock_path_for(img),
            Path::new("/var/lib/egret/store/images/.sha256-ab.squashfs.all-root.lock")
        );
        assert_eq!(
            path_for(Path::new("/n/image.sqsh")),
            Path::new("/n/image.sqsh.all-root.squashfs")
        );
    }
}
