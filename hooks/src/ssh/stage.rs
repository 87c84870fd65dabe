//! The staging tmpfs where the SSH hook makes the container's files before binding them.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use egret_engine::container::user::UserIdentity;

use crate::ssh::error::{io_err, sys_err};
use crate::ssh::payload::Payload;
use crate::ssh::{files, keys, SshError};

/// In the task's bundle directory (root's).
pub(super) const STAGE_DIR: &str = "egret-ssh-stage";
/// The daemon's host key, inside the user's `~/.ssh` tmpfs.
pub(super) const HOST_KEY_NAME: &str = "egret_host_key";

/// A tmpfs on `<bundle>/egret-ssh-stage` in the container's mount namespace where the files
/// are made before they are bound into the rootfs; unmounted (the binds keep it) on drop.
pub(super) struct Stage {
    dir: PathBuf,
}

impl Stage {
    pub(super) fn new(dir: &Path) -> Result<Stage, SshError> {
        use nix::mount::{mount, MsFlags};
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=64m"),
        )
        .map_err(sys_err(format!(
            "cannot mount a tmpfs on {}",
            dir.display()
        )))?;
        Ok(Stage {
            dir: dir.to_path_buf(),
        })
    }

    pub(super) fn fill(
        &self,
        p: &Payload,
        keyset: &keys::KeySet,
        user: &UserIdentity,
        env: &[String],
        port: u16,
        client_key: &Path,
    ) -> Result<(), SshError> {
        let opt = self.dir.join("opt");
        for d in ["", "bin", "lib", "libexec"] {
            let path = opt.join(d);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let copy = |src: &Path, dst: PathBuf, mode: u32| -> Result<(), SshError> {
            fs::copy(src, &dst).map_err(io_err(src))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(io_err(&dst))
        };
        // Not executable: they only run through the host's loader (which just reads them).
        // dropbear re-executes itself for every connection; exec'd directly, the image's
        // loader would pair the host's programs with the image's libc. Refused, dropbear
        // serves the connection without re-exec.
        copy(&p.dropbear, opt.join("libexec/dropbear"), 0o644)?;
        copy(&p.dbclient, opt.join("libexec/dbclient"), 0o644)?;
        for (name, host) in &p.libs {
            copy(host, opt.join("lib").join(name), 0o755)?;
        }
        // Started through this link, the daemon shows as `dropbear` in ps, not as the loader.
        let link = opt.join("bin/dropbear");
        std::os::unix::fs::symlink(format!("../lib/{}", p.loader), &link).map_err(io_err(&link))?;
        let write = |rel: &str, text: String, mode: u32| -> Result<(), SshError> {
            let path = opt.join(rel);
            fs::write(&path, text).map_err(io_err(&path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(&path))
        };
        write(
            "bin/ssh",
            files::ssh_wrapper(&p.loader, port, &client_key.display().to_string()),
            0o755,
        )?;
        write("session", files::session_script(), 0o755)?;
        write("environment", files::environment(env), 0o644)?;

        let home = self.dir.join("home");
        fs::create_dir(&home).map_err(io_err(&home))?;
        for (name, data) in [
            (keys::AUTHORIZED_KEYS, &keyset.authorized_keys),
            (keys::CLIENT_KEY, &keyset.client_key),
            (HOST_KEY_NAME, &keyset.host_key),
        ] {
            let path = home.join(name);
            fs::write(&path, data).map_err(io_err(&path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(&path))?;
            chown(&path, user)?;
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).map_err(io_err(&home))?;
        chown(&home, user)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// For files the hook itself just made on its own tmpfs.
fn chown(path: &Path, user: &UserIdentity) -> Result<(), SshError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(io_err(path))
}
