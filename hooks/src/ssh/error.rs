//! The SSH hook's one error type.

use std::io;
use std::path::{Path, PathBuf};

use egret_engine::sys::in_root;

use crate::bind;
use crate::ssh::{keys, PORT_ANNOTATION};

/// Why the SSH hook failed; the message is the hook's one log line.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "--container-ssh needs a private PID namespace (--container-pid=private), \
         this container shares the host's"
    )]
    HostPid,
    #[error("--container-ssh is for ordinary users: dropbear does not run as root")]
    Root,
    #[error(transparent)]
    User(#[from] egret_engine::container::user::UserError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("{name}={value:?}: {what}")]
    Setting {
        name: String,
        value: String,
        what: &'static str,
    },
    #[error("{} not found (install Debian's dropbear-bin or set DROPBEAR_DIR)", path.display())]
    Missing { path: PathBuf },
    #[error("{program}: {msg}")]
    Tool { program: String, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bind(#[from] bind::BindError),
    #[error(transparent)]
    Target(#[from] in_root::InRootError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "port {port} is already in use on this node (another --container-ssh step?); \
         choose another with --container-annotation={PORT_ANNOTATION}=PORT"
    )]
    PortInUse { port: u16 },
    #[error("dropbear did not start on port {port}: {log}")]
    Daemon { port: u16, log: String },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SshError {
    let what = what.into();
    move |source| SshError::Sys { what, source }
}
