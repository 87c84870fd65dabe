//! Who the container runs as, and doing file work with that user's rights.
//!
//! egret is root while it assembles a container; every path a user supplies (mount sources, device
//! paths) is resolved and opened with the user's credentials through [`UserIdentity::run_as`], so a
//! user can never reach through egret what they could not reach themselves.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("cannot look up uid {uid}: {source}")]
    Lookup {
        uid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("uid {uid} has no entry in the user database")]
    Unknown { uid: u32 },
    #[error("user name of uid {uid} contains a NUL byte")]
    BadName { uid: u32 },
    #[error("cannot list the groups of user {name}: {source}")]
    Groups {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot take the identity of uid {uid}: {source}")]
    Switch {
        uid: u32,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Access {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The identity the container's processes get, and the one user-supplied paths are resolved with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
}

impl UserIdentity {
    /// The user `uid` with primary group `gid` (Slurm's job gid, which may differ from the passwd
    /// entry's) and the supplementary groups the group database gives them.
    pub fn from_uid(uid: u32, gid: u32) -> Result<UserIdentity, UserError> {
        let user = passwd_entry(uid)?;
        let cname = CString::new(user.name.clone()).map_err(|_| UserError::BadName { uid })?;
        let groups = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)).map_err(|source| {
            UserError::Groups {
                name: user.name.clone(),
                source,
            }
        })?;
        Ok(UserIdentity {
            uid,
            gid,
            groups: groups.into_iter().map(Gid::as_raw).collect(),
            name: user.name,
            home: user.dir,
        })
    }

    /// The caller of this process (its real ids and current supplementary groups): the user who
    /// ran a setuid-root `egret`.
    pub fn current_real() -> Result<UserIdentity, UserError> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let user = passwd_entry(uid)?;
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .map_err(|source| UserError::Groups {
                name: user.name.clone(),
                source,
            })?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        Ok(UserIdentity {
            uid,
            gid,
            groups,
            name: user.name,
            home: user.dir,
        })
    }

    /// Runs `f` with this user's uid, gid and groups (on a helper thread; the caller's
    /// credentials do not change). Descriptors opened by `f` remain usable afterwards.
    pub fn run_as<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, UserError> {
        crate::sys::creds::run_as(self.uid, self.gid, &self.groups, f).map_err(|source| {
            UserError::Switch {
                uid: self.uid,
                source,
            }
        })
    }

    /// Opens `path` as this user with `O_PATH` (following symlinks with the user's rights): a
    /// handle to bind-mount or `fstat`, never to read through root's eyes.
    pub fn open_path(&self, path: &Path) -> Result<OwnedFd, UserError> {
        self.run_as(|| open_o_path(path))?
            .map_err(|source| UserError::Access {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Reads a whole file as this user.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, UserError> {
        self.run_as(|| {
            let mut buf = Vec::new();
            File::open(path)?.read_to_end(&mut buf).map(|_| buf)
        })?
        .map_err(|source| UserError::Access {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `open(path, O_PATH|O_CLOEXEC)` with the caller's rights.
pub fn open_o_path(path: &Path) -> io::Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

fn passwd_entry(uid: u32) -> Result<User, UserError> {
    User::from_uid(Uid::from_raw(uid))
        .map_err(|source| UserError::Lookup { uid, source })?
        .ok_or(UserError::Unknown { uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known() {
        let root = UserIdentity::from_uid(0, 0).unwrap();
        assert_eq!(root.name, "root");
        assert!(root.groups.contains(&0));
        assert!(root.home.is_absolute());
    }

    #[test]
    fn unknown_uid_is_an_error() {
        let e = UserIdentity::from_uid(3_999_999_999, 1).unwrap_err();
        assert!(matches!(e, UserError::Unknown { .. }), "{e}");
    }

    #[test]
    fn current_real_has_primary_group() {
        let me = UserIdentity::current_real().unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert!(me.groups.contains(&me.gid));
    }

    #[test]
    fn user_cannot_read_what_root_can() {
        let nobody = UserIdentity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            name: "nobody".into(),
            home: "/".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let e = nobody.read_file(&secret).unwrap_err();
        if nix::unistd::geteuid().is_root() {
            assert!(
                matches!(e, UserError::Access { .. }) && e.to_string().contains("secret"),
                "{e}"
            );
            assert_eq!(std::fs::read(&secret).unwrap(), b"x", "root still can");
        } else {
            // Without privilege the identity switch itself is refused.
            assert!(matches!(e, UserError::Switch { .. }), "{e}");
        }
    }
}
