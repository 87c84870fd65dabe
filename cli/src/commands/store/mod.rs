//! pull, load, images, rmi: Sarus' verbs over the engine's import and store.

pub mod credentials;
pub mod images;
pub mod load;
pub mod pull;
pub mod rmi;

use std::path::{Path, PathBuf};

use egret_engine::image::registry::{FetchUser, Skopeo};
use egret_engine::image::store::{Store, StoreError};

use crate::context::Context;

/// Why a store command could not get at its store.
#[derive(Debug, thiserror::Error)]
pub enum StoreAccessError {
    #[error("needs root (the store is root-owned); inside Slurm use srun --container-image")]
    NeedsRoot,
    #[error("--centralized-repository: the config sets no centralizedRepositoryDir")]
    NoCentralizedRepository,
    /// Sarus's rule: users read the site's repository; administrators fill it.
    #[error("--centralized-repository: the centralized repository is read-only for users; an administrator (root) adds and removes its images")]
    CentralizedReadOnly,
    /// Root downloads only where root chose (a user's directory could be redirected).
    #[error("--temp-dir {}: only root may choose where imports run; leave it out (the config's tempDir is used)", .0.display())]
    TempDirNotRoot(PathBuf),
    #[error(transparent)]
    Open(#[from] StoreError),
}

/// The store is root-owned: a user's `pull` goes through Slurm instead.
pub fn need_root() -> Result<(), StoreAccessError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(StoreAccessError::NeedsRoot)
}

/// Opens the caller's store (or, for root, the centralized one) for writing.
pub fn open_store(c: &Context, centralized: bool) -> Result<Store, StoreAccessError> {
    if centralized && c.caller.is_setuid() {
        return Err(StoreAccessError::CentralizedReadOnly);
    }
    let timings = &c.config.repository_metadata_lock_timings;
    if c.verbose || c.debug {
        let root = match centralized {
            true => centralized_dir(c)?,
            false => c.config.local_repository_base_dir.as_path(),
        };
        eprintln!(
            "egret: store {} (user {}), temp dir {}",
            root.display(),
            c.uid,
            c.config.temp_dir.display()
        );
    }
    let store = if centralized {
        Store::open_centralized(centralized_dir(c)?, timings)
    } else {
        Store::open(&c.config.local_repository_base_dir, c.uid, c.gid, timings)
    };
    Ok(store?)
}

/// The config's `centralizedRepositoryDir`, which `--centralized-repository` needs.
pub fn centralized_dir(c: &Context) -> Result<&Path, StoreAccessError> {
    c.config
        .centralized_repository_dir
        .as_deref()
        .ok_or(StoreAccessError::NoCentralizedRepository)
}

/// skopeo for this caller: a user's setuid egret runs it as the user, with their credentials and
/// the variables of their environment skopeo may use (root never talks to a registry for them).
pub fn fetcher(c: &Context) -> Skopeo {
    let skopeo = Skopeo::new(&c.config);
    match c.caller.is_setuid() {
        true => skopeo.as_user(FetchUser::new(&c.caller.identity, &c.caller.env_strings())),
        false => skopeo,
    }
}

/// `--temp-dir`, which only root may give.
pub fn temp_dir(
    c: &Context,
    requested: Option<PathBuf>,
) -> Result<Option<PathBuf>, StoreAccessError> {
    match requested {
        Some(dir) if c.caller.is_setuid() => Err(StoreAccessError::TempDirNotRoot(dir)),
        other => Ok(other),
    }
}
