//! The store's size bound (`localRepositoryMaxBytes`), applied after every import or reuse by a
//! step and by `egret pull`/`load`: it keeps the image in use and every image a named container
//! on this node was made from (see `store::evict`).

use std::path::Path;

use crate::config::Config;
use crate::image::store::Store;

/// Applies the store's size bound (`localRepositoryMaxBytes`), keeping `in_use` and every
/// image a named container was made from. A failure is a warning: the step has its image.
pub fn apply(cfg: &Config, store: &Store, in_use: &Path) {
    let Some(max) = cfg.local_repository_max_bytes else {
        return;
    };
    let pinned = super::named::images_in_use(cfg);
    match store.evict_to(max, &|p| p == in_use || pinned.contains(p)) {
        Ok(gone) if !gone.is_empty() => eprintln!(
            "egret: store over {max} bytes: deleted the least recently used {}",
            gone.join(", ")
        ),
        Ok(_) => {}
        Err(e) => eprintln!("egret: warning: store size bound: {e}"),
    }
}
