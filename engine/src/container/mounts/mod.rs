//! Bind mounts and devices requested by users: their syntaxes ([`sarus`] `--mount`, [`pyxis`]
//! `--container-mounts`, [`device`] `--device`) and the site's deny lists ([`policy`]). Finding or
//! creating a mount target inside the container's root filesystem is [`crate::sys::in_root`].

pub mod device;
pub mod policy;
pub mod pyxis;
pub mod sarus;

use std::path::{Component, Path, PathBuf};

use crate::config::SiteDevice;

pub use device::parse_device;
pub use policy::{check_destination, is_under_dev};
pub use pyxis::parse_pyxis_mounts;
pub use sarus::parse_sarus_mount;

/// A user's mount or device request that is malformed or that the site's rules refuse.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("'{item}': {reason}")]
    Parse { item: String, reason: String },
    #[error("destination {} is not allowed by the site's policy ({} is excluded)", destination.display(), rule.display())]
    Denied { destination: PathBuf, rule: PathBuf },
    #[error("destination {} is reserved for the runtime (use --device for device files)", destination.display())]
    Reserved { destination: PathBuf },
}

impl MountError {
    /// A syntax error in `item` (shown escaped, so that a control character cannot forge a line).
    pub(crate) fn parse(item: &str, reason: impl Into<String>) -> MountError {
        MountError::Parse {
            item: item.escape_debug().to_string(),
            reason: reason.into(),
        }
    }
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub readonly: bool,
}

/// A host device node made available in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub host: PathBuf,
    pub container: PathBuf,
    /// A non-empty subset of `rwm` (read, write, mknod), each letter at most once.
    pub access: String,
}

impl DeviceRequest {
    /// A `siteDevices` entry of the config (already validated there).
    pub fn from_site(d: &SiteDevice) -> DeviceRequest {
        DeviceRequest {
            host: d.source.clone(),
            container: d.destination.clone().unwrap_or_else(|| d.source.clone()),
            access: d.access.clone().unwrap_or_else(|| "rwm".into()),
        }
    }
}

/// `p`, the `what` of `item`, as an absolute path (an error naming `item` otherwise).
pub(crate) fn absolute(item: &str, what: &str, p: &str) -> Result<PathBuf, MountError> {
    if p.is_empty() {
        return Err(MountError::parse(item, format!("empty {what}")));
    }
    if !p.starts_with('/') {
        return Err(MountError::parse(
            item,
            format!("{what} '{p}' must be an absolute path"),
        ));
    }
    Ok(PathBuf::from(p))
}

/// `path` made absolute and free of `.` and `..` without looking at any filesystem (`..` at the
/// root stays at the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn normalize_clamps_at_root() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), p("/a/c"));
        assert_eq!(normalize(Path::new("/../../etc")), p("/etc"));
        assert_eq!(normalize(Path::new("a//b/")), p("/a/b"));
    }
}
