//! A [`Resolved`] environment merged into the step's options, between the command line and
//! the `PYXIS_`/`EGRET_CONTAINER_*` defaults (which `apply_env` adds afterwards, only where
//! neither gave a value).
//!
//! - `image`, `workdir`, `entrypoint`, `writable`: the EDF's unless the command line gave one.
//! - `mounts`: the EDF's first, then the command line's; an EDF mount whose destination the
//!   command line also mounts is left out (the command line wins).
//! - `[env]`: set (or unset) in the container over the image's; a name the command line's
//!   `--container-env` takes from the host wins over the EDF's.
//! - `[annotations]`: the command line's `--container-annotation` wins key by key.
//!   `com.hooks.ssh.enabled = "true"` is `--container-ssh` (the SSH hook with its private PID
//!   namespace, so it is refused with `--container-pid=host`), and
//!   `com.pyxis.entrypoint_log = "true"` is `--container-entrypoint-log`, as in CSCS's pyxis.

use std::path::{Path, PathBuf};

use super::error::EdfError;
use super::Resolved;
use crate::container::mounts::pyxis::{self, PyxisMount};
use crate::hooks::annotations::SSH_ENABLED;
use crate::slurm::options::ContainerOptions;

/// CSCS's pyxis annotation for `--container-entrypoint-log`.
pub const ENTRYPOINT_LOG: &str = "com.pyxis.entrypoint_log";

pub fn apply(opts: &mut ContainerOptions, r: &Resolved) -> Result<(), EdfError> {
    if opts.image.is_none() {
        opts.image = r.image.as_ref().map(|s| s.value.clone());
    }
    if opts.workdir.is_none() {
        opts.workdir = r.workdir.as_ref().map(|s| s.value.clone());
    }
    if opts.entrypoint.is_none() {
        opts.entrypoint = r.entrypoint.as_ref().map(|s| s.value);
    }
    if opts.writable.is_none() {
        opts.writable = r.writable.as_ref().map(|s| s.value);
    }
    if !r.mounts.is_empty() {
        let taken: Vec<PathBuf> = opts.mounts.as_deref().map(destinations).unwrap_or_default();
        let mut items: Vec<String> = r
            .mounts
            .iter()
            .map(|m| m.value.clone())
            .filter(|m| destinations(m).iter().all(|d| !taken.contains(d)))
            .collect();
        items.extend(opts.mounts.take());
        opts.mounts = (!items.is_empty()).then(|| items.join(","));
    }
    opts.edf_env = r
        .env
        .iter()
        .map(|e| (e.value.name.clone(), e.value.value.clone()))
        .collect();
    for a in &r.annotations {
        let (k, v) = &a.value;
        let on = v.eq_ignore_ascii_case("true");
        if k == SSH_ENABLED && on {
            if opts.pid_private == Some(false) {
                return Err(EdfError::BadValue {
                    at: a.at(&format!("annotations.{k}")),
                    what: "the SSH hook needs a private PID namespace: it cannot be combined with --container-pid=host".into(),
                });
            }
            opts.ssh = true;
        }
        if k == ENTRYPOINT_LOG && on {
            opts.entrypoint_log = true;
        }
        if !opts.annotations.iter().any(|(ok, _)| ok == k) {
            opts.annotations.push((k.clone(), v.clone()));
        }
    }
    Ok(())
}

/// The destinations of a `--container-mounts` value (already checked).
fn destinations(mounts: &str) -> Vec<PathBuf> {
    pyxis::parse(mounts, Path::new("/"))
        .unwrap_or_default()
        .into_iter()
        .map(|m| match m {
            PyxisMount::Bind(b, _) => b.destination,
            PyxisMount::Tmpfs { destination, .. } => destination,
            PyxisMount::Umount(d) => d,
        })
        .collect()
}
