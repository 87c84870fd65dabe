//! What the SSH hook changes in the container's rootfs: the user's `~/.ssh` and login shell.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use egret_engine::container::user::UserIdentity;
use egret_engine::sys::in_root;

use crate::bind::{self, BindOptions};
use crate::ssh::error::io_err;
use crate::ssh::{files, SshError};

/// Binds the private `~/.ssh` over the container's. When the home is the user's own directory
/// bound from the host (`--container-mount-home`) and has no `.ssh`, root may not create one
/// there: the user does (mode 0700), as `ssh` would, and the bind hides its contents.
pub(super) fn bind_home_ssh(
    rootfs: &Path,
    stage: &Path,
    home_ssh: &Path,
    user: &UserIdentity,
) -> Result<(), SshError> {
    match bind::bind(rootfs, stage, home_ssh, BindOptions::default()) {
        Err(bind::BindError::Target {
            source: in_root::InRootError::OnOtherMount { .. },
            ..
        }) => {
            let rel = in_root::resolve_in_root(rootfs, home_ssh)?;
            let path = rootfs.join(rel);
            user.run_as(|| {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o700).create(&path)
            })?
            .map_err(io_err(home_ssh))?;
            bind::bind(rootfs, stage, home_ssh, BindOptions::default())?;
            Ok(())
        }
        other => other.map(|_| ()).map_err(SshError::from),
    }
}

/// Makes the user's login shell one dropbear accepts: present in the image (else `/bin/sh`)
/// and listed in `/etc/shells`. Returns the shell. `/etc` is resolved once, inside the rootfs
/// and on the image's own filesystem: what is read is what is replaced, never a file of a bind
/// mount (a link from the image into a user's host directory is refused, not followed).
pub(super) fn fix_login(rootfs: &Path, uid: u32) -> Result<String, SshError> {
    let etc = in_root::ContainerDir::open(rootfs, Path::new("/etc"))?;
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let passwd = text(etc.read(OsStr::new("passwd"))?).unwrap_or_default();
    let exists = |shell: &str| {
        in_root::resolve_in_root(rootfs, Path::new(shell))
            .ok()
            .and_then(|rel| fs::symlink_metadata(rootfs.join(rel)).ok())
            .is_some_and(|m| m.is_file())
    };
    let (fixed, shell) = files::fix_passwd(&passwd, uid, exists);
    if let Some(new) = fixed {
        etc.replace(OsStr::new("passwd"), new.as_bytes(), 0o644)?;
    }
    let shells = text(etc.read(OsStr::new("shells"))?);
    if let Some(new) = files::fix_shells(shells.as_deref(), &shell) {
        etc.replace(OsStr::new("shells"), new.as_bytes(), 0o644)?;
    }
    Ok(shell)
}
