//! The image `egret run` runs: a stored image, looked up in the caller's own index, or root's
//! own squashfs file.

use std::io;
use std::path::PathBuf;

use egret_engine::config::Config;
use egret_engine::container::user::UserIdentity;
use egret_engine::image::metadata::ImageMeta;
use egret_engine::image::reference::{ImageSource, RefError};
use egret_engine::image::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}, see 'egret run --help'")]
    Reference(#[source] RefError),
    #[error("{}: {source}", .path.display())]
    SquashfsPath { path: PathBuf, source: io::Error },
    #[error("{}: running a squashfs file directly is reserved to root; use 'egret load' or 'egret pull'", .0.display())]
    SquashfsNotRoot(PathBuf),
    #[error("--centralized-repository: no centralizedRepositoryDir in the configuration")]
    NoCentralizedRepository,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {reference} is not available; pull it first with 'egret pull {image}'")]
    NotAvailable { reference: String, image: String },
}

/// The squashfs and metadata of `image`.
pub fn find_image(
    cfg: &Config,
    user: &UserIdentity,
    image: &str,
    centralized: bool,
) -> Result<(PathBuf, ImageMeta), ImageError> {
    let source = ImageSource::parse(image).map_err(ImageError::Reference)?;
    let r = match source {
        ImageSource::Registry(r) => r,
        // Root's own file: kernel-mounting it is root's call. Users go through the store.
        ImageSource::SquashfsFile(p) if user.uid == 0 => {
            let p = std::path::absolute(&p)
                .map_err(|source| ImageError::SquashfsPath { path: p, source })?;
            return Ok((p, ImageMeta::default()));
        }
        ImageSource::SquashfsFile(p) => return Err(ImageError::SquashfsNotRoot(p)),
    };
    let timings = &cfg.repository_metadata_lock_timings;
    let store = if centralized {
        let dir = cfg
            .centralized_repository_dir
            .as_deref()
            .ok_or(ImageError::NoCentralizedRepository)?;
        Store::open_centralized_readonly(dir, timings)
    } else {
        Store::open_readonly(&cfg.local_repository_base_dir, user.uid, user.gid, timings)
    };
    // The store is root's (its files 0600): root reads the caller's own index in it, which
    // names only what the caller pulled or loaded.
    match store.lookup(&r)? {
        Some(img) => Ok((img.squashfs, img.meta)),
        None => Err(ImageError::NotAvailable {
            reference: r.display(),
            image: image.to_string(),
        }),
    }
}
