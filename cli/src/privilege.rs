//! Whose `egret` this is, and when it may be root.
//!
//! `egret` is installed setuid root, as Sarus is, so users can pull, list, remove and run images
//! in the root-owned store. Started by a user it is root only for the verbs that need it, and
//! then the way `egret-launcher` is: fully root, acting for a user named by the identity taken
//! here, at the start (every file of theirs opened as them, skopeo run as them with their
//! environment; see `docs/security.md`). Until a verb asks, it runs with the user's effective
//! uid; verbs that need nothing of root (help, version, hooks, check, ssh-keygen, import) give
//! root up for good before they do anything.

use std::ffi::OsString;
use std::io;

use egret_engine::container::user::{UserError, UserIdentity};
use egret_engine::sys::process;
use nix::unistd::{geteuid, getuid, setresuid, Uid};

/// Where root's commands are looked up once the user's environment is set aside.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(transparent)]
    Caller(#[from] UserError),
    /// setresuid failed: the binary is not installed as expected, or the kernel refused.
    #[error("cannot {what}: {source}")]
    Switch {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Who started egret, and their environment as they started it.
pub struct Caller {
    /// The real uid, gid and groups: whose index, files and containers every verb works on.
    pub identity: UserIdentity,
    /// The environment egret was started with: what `run` passes into the container and the
    /// variables skopeo may use; the process itself runs with a clean one once it is root.
    pub env: Vec<(OsString, OsString)>,
    /// The umask egret was started with, for the container's processes; egret's own files are
    /// made with root's fixed one, so a umask of 000 or 777 changes nothing about them.
    pub umask: u32,
    /// A user's process running a setuid-root binary (root's own calls are not).
    setuid: bool,
}

impl Caller {
    /// The first thing `main` does, while the process is single-threaded: note who the caller
    /// is, and (setuid) lower the effective uid to theirs, keeping root as the saved uid.
    pub fn at_start() -> Result<Caller, PrivilegeError> {
        let identity = UserIdentity::current_real()?;
        let umask = process::set_umask(process::ROOT_UMASK);
        let setuid = geteuid().is_root() && !getuid().is_root();
        if setuid {
            let user = Uid::from_raw(identity.uid);
            // Parsing, config loading and checks run as the user; root stays in the saved uid.
            setresuid(user, user, Uid::from_raw(0)).map_err(|e| PrivilegeError::Switch {
                what: "switch to the caller's uid",
                source: e.into(),
            })?;
        }
        Ok(Caller {
            identity,
            env: std::env::vars_os().collect(),
            umask,
            setuid,
        })
    }

    /// Whether a user (not root) started this setuid egret.
    pub fn is_setuid(&self) -> bool {
        self.setuid
    }

    /// The caller's environment as (name, value) pairs (variables that are not UTF-8 left out).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
            .collect()
    }

    /// The caller's environment as `NAME=VALUE` strings (what skopeo's user filter takes).
    pub fn env_strings(&self) -> Vec<String> {
        self.env_pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// For a verb that needs no privilege: root is gone for good (real, effective and saved).
    pub fn drop_root(&self) -> Result<(), PrivilegeError> {
        if !self.setuid {
            return Ok(());
        }
        let user = Uid::from_raw(self.identity.uid);
        setresuid(user, user, user).map_err(|e| PrivilegeError::Switch {
            what: "give up root",
            source: e.into(),
        })
    }

    /// For a verb that uses privilege, after its security checks: fully root (a real uid of 0
    /// too, so no program root starts mistakes itself for a user's), with a clean environment
    /// (nothing the user exported reaches what root runs: the `PATH`, the locale, `TMPDIR`...).
    pub fn become_root(&self) -> Result<(), PrivilegeError> {
        if !self.setuid {
            return Ok(());
        }
        self.root_again()?;
        let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
        for name in names {
            std::env::remove_var(name);
        }
        std::env::set_var("PATH", ROOT_PATH);
        Ok(())
    }

    /// While a privileged verb only waits (for its container), its real uid is the user's again,
    /// as when they started it, so that they may signal it (`kill PID`, `timeout`, a job
    /// script's `trap`): egret passes the signal on to the container. The effective and saved
    /// uids stay root's; nothing is started meanwhile (see [`Caller::root_again`]).
    pub fn signalable_by_user(&self) -> Result<(), PrivilegeError> {
        if !self.setuid {
            return Ok(());
        }
        let root = Uid::from_raw(0);
        setresuid(Uid::from_raw(self.identity.uid), root, root).map_err(|e| {
            PrivilegeError::Switch {
                what: "let the caller signal egret",
                source: e.into(),
            }
        })
    }

    /// Fully root again after [`Caller::signalable_by_user`], before starting anything.
    pub fn root_again(&self) -> Result<(), PrivilegeError> {
        if !self.setuid {
            return Ok(());
        }
        let root = Uid::from_raw(0);
        setresuid(root, root, root).map_err(|e| PrivilegeError::Switch {
            what: "become root",
            source: e.into(),
        })
    }
}
