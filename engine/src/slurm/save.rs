//! `--container-save=PATH`: at the end of the step, the container's root filesystem (image plus
//! the tasks' changes) becomes a squashfs file owned by the user, runnable again with
//! `--container-image=PATH`.
//!
//! The file is the user's: it is created and renamed into place with the user's credentials, in
//! a directory the user can write, and never follows a symlink. Root only reads the rootfs,
//! through a non-recursive bind of the overlay, so nothing bind-mounted into the container (the
//! home directory, site or user mounts) ends up in the file.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::config::Config;
use crate::container::user::UserIdentity;
use crate::sys::creds::run_as;

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("--container-save={}: {reason}", path.display())]
    Path { path: PathBuf, reason: String },
    #[error("--container-save={}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-save={}: mksquashfs failed: {stderr}", path.display())]
    Mksquashfs { path: PathBuf, stderr: String },
}

/// The absolute destination of `--container-save=value`: relative paths start in `cwd`.
pub fn destination(value: &str, cwd: &Path) -> Result<PathBuf, SaveError> {
    let path = PathBuf::from(value);
    if value.ends_with('/') {
        return Err(SaveError::Path {
            path,
            reason: "names a directory; give a file name such as image.sqsh".into(),
        });
    }
    let abs = if path.is_absolute() {
        path
    } else {
        cwd.join(path)
    };
    if abs.file_name().is_none() {
        return Err(SaveError::Path {
            path: abs,
            reason: "has no file name".into(),
        });
    }
    Ok(abs)
}

/// Checks, before the step starts (and before its image is imported), that `user` may create
/// `dest`: its directory exists and the user can write and enter it. The save itself checks
/// again (the directory may change during the step).
pub fn check_writable(dest: &Path, user: &UserIdentity) -> Result<(), SaveError> {
    let dir = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    as_user(user, || {
        nix::unistd::access(
            &dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(io::Error::from)
    })
    .map_err(|source| SaveError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

/// Writes the squashfs of `rootfs` to `dest` as `user`. `scratch` is a root-owned directory of
/// the bundle for the temporary mount point. `all_root`: the rootfs shows the image's root as
/// the user (remapped root); its files are saved as root's, as the image had them.
pub fn save(
    cfg: &Config,
    rootfs: &Path,
    scratch: &Path,
    dest: &Path,
    user: &UserIdentity,
    all_root: bool,
) -> Result<(), SaveError> {
    let io_err = |source| SaveError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let dir = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = dest.file_name().unwrap_or_default().to_os_string();
    let mut tmp_name = OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".egret-save-{}", std::process::id()));
    let tmp = dir.join(&tmp_name);

    // The user creates the file: their permission on the directory, their ownership, no symlink.
    let out = as_user(user, || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    })
    .map_err(io_err)?;

    let result = squash_into(cfg, rootfs, scratch, &out, dest, all_root).and_then(|()| {
        out.sync_all().map_err(io_err)?;
        as_user(user, || fs::rename(&tmp, dest)).map_err(io_err)
    });
    if result.is_err() {
        let _ = as_user(user, || fs::remove_file(&tmp));
    }
    result
}

/// Runs `f` with the user's credentials (on a thread of its own).
fn as_user<R: Send>(
    user: &UserIdentity,
    f: impl FnOnce() -> io::Result<R> + Send,
) -> io::Result<R> {
    run_as(user.uid, user.gid, &user.groups, f)?
}

fn squash_into(
    cfg: &Config,
    rootfs: &Path,
    scratch: &Path,
    out: &File,
    dest: &Path,
    all_root: bool,
) -> Result<(), SaveError> {
    let io_err = |source| SaveError::Io {
        path: dest.to_path_buf(),
        source,
    };
    // The overlay alone, without the mounts stacked on it.
    let view = scratch.join("save-view");
    fs::create_dir_all(&view).map_err(io_err)?;
    mount(
        Some(rootfs),
        &view,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io_err(e.into()))?;
    let result = run_mksquashfs(cfg, &view, out, dest, all_root);
    let _ = umount2(&view, MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(&view);
    result
}

fn run_mksquashfs(
    cfg: &Config,
    view: &Path,
    out: &File,
    dest: &Path,
    all_root: bool,
) -> Result<(), SaveError> {
    let io_err = |source| SaveError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let mut log = tempfile::tempfile().map_err(io_err)?;
    // mksquashfs writes through the user's descriptor, given to it as fd 3.
    let mut cmd = Command::new(&cfg.mksquashfs_path);
    cmd.arg(view)
        .arg("/proc/self/fd/3")
        .args(["-noappend", "-quiet", "-no-progress", "-exit-on-error"])
        .args(cfg.mksquashfs_options.split_whitespace())
        .args(all_root.then_some("-all-root"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().map_err(io_err)?);
    crate::sys::process::pass_fd_on_exec(&mut cmd, out, 3);
    // Root reads the rootfs; the user's file it writes obeys the user's quota and the reserved
    // blocks as if the user wrote it.
    crate::sys::creds::drop_resource_override_on_exec(&mut cmd);
    let status = cmd.status().map_err(io_err)?;
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    let _ = log.rewind();
    let _ = log.read_to_string(&mut stderr);
    let stderr = stderr.lines().last().unwrap_or("").trim().to_string();
    Err(SaveError::Mksquashfs {
        path: dest.to_path_buf(),
        stderr: format!("{status}: {stderr}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let cwd = Path::new("/home/u/job");
        assert_eq!(
            destination("out.sqsh", cwd).unwrap(),
            Path::new("/home/u/job/out.sqsh")
        );
        assert_eq!(
            destination("/scratch/a.sqsh", cwd).unwrap(),
            Path::new("/scratch/a.sqsh")
        );
        let e = destination("/scratch/dir/", cwd).unwrap_err().to_string();
        assert!(e.contains("names a directory"), "{e}");
    }
}
