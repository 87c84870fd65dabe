//! `egret rmi`: remove an image (by name, or every name of a digest) from the store.

use std::process::ExitCode;

use egret_engine::image::reference::{ImageRef, RefError};
use egret_engine::image::store::StoreError;

use super::{need_root, open_store, StoreAccessError};
use crate::context::Context;

#[derive(clap::Args)]
pub struct RmiArgs {
    /// Remove from the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// REPOSITORY[:TAG], REPOSITORY@DIGEST, REPOSITORY:TAG@DIGEST, or a digest alone (every
    /// name of it), as `egret images [--digests]` shows them.
    #[arg(value_name = "REF")]
    reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RmiError {
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error(transparent)]
    Store(#[from] StoreAccessError),
    /// Listing the index (to find a digest's names) or removing a name.
    #[error(transparent)]
    Index(#[from] StoreError),
    #[error("no image of yours has digest {0}")]
    NoSuchDigest(String),
}

pub fn rmi(c: &Context, a: RmiArgs) -> Result<ExitCode, RmiError> {
    // A digest alone (`sha256:…`, as `egret images --digests` shows): every name of it.
    let by_digest = a.reference.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    });
    let refs = if by_digest {
        need_root()?;
        let store = open_store(c, a.centralized_repository)?;
        let names: Vec<ImageRef> = store
            .list()?
            .into_iter()
            .filter(|e| e.registry_digest == a.reference)
            .filter_map(|e| ImageRef::parse(&e.unique_key).ok())
            .collect();
        if names.is_empty() {
            return Err(RmiError::NoSuchDigest(a.reference));
        }
        names
    } else {
        vec![ImageRef::parse(&a.reference)?]
    };
    need_root()?;
    let store = open_store(c, a.centralized_repository)?;
    let mut removed = Vec::new();
    for r in &refs {
        match store.remove(r) {
            Ok(gone) => removed.extend(gone),
            // An earlier name of the same digest may have taken this one with it.
            Err(_) if by_digest && !removed.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for e in removed {
        println!("removed {}", e.unique_key);
    }
    Ok(ExitCode::SUCCESS)
}
