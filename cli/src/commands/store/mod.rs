//! pull, load, images, rmi: Sarus' verbs over the engine's import and store.

pub mod credentials;
pub mod images;
pub mod load;
pub mod pull;
pub mod rmi;

use std::path::Path;

use egret_engine::image::store::{Store, StoreError};

use crate::context::Context;

/// Why a store command could not get at its store.
#[derive(Debug, thiserror::Error)]
pub enum StoreAccessError {
    #[error("needs root (the store is root-owned); inside Slurm use srun --container-image")]
    NeedsRoot,
    #[error("--centralized-repository: the config sets no centralizedRepositoryDir")]
    NoCentralizedRepository,
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

/// Opens the caller's store (or the centralized one) for writing.
pub fn open_store(c: &Context, centralized: bool) -> Result<Store, StoreAccessError> {
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
