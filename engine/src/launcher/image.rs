//! The launcher's image step: from the user's `--container-image` to a squashfs file to mount.

use std::path::PathBuf;

use crate::config::Config;
use crate::imagemeta::ImageMeta;
use crate::reference::ImageSource;
use crate::user::UserIdentity;

use super::protocol::StepRequest;

/// Imports (at most once, under the store's locks) and returns the image file and its metadata.
pub fn resolve(
    cfg: &Config,
    _req: &StepRequest,
    user: &UserIdentity,
    image: &str,
) -> Result<(PathBuf, ImageMeta), String> {
    let source =
        ImageSource::parse(image).map_err(|e| format!("egret: --container-image={image}: {e}"))?;
    match source {
        ImageSource::Registry(r) => {
            let store = crate::store::Store::open(
                &cfg.local_repository_base_dir,
                user.uid,
                user.gid,
                &cfg.repository_metadata_lock_timings,
            )
            .map_err(|e| format!("egret: {e}"))?;
            let fetcher = crate::skopeo::Skopeo::new(cfg);
            let opts = crate::import::PullOptions::default();
            let img = crate::import::pull(cfg, &store, &fetcher, &r, &opts).map_err(|e| format!("egret: {e}"))?;
            Ok((img.squashfs, img.meta))
        }
        ImageSource::SquashfsFile(p) => Err(format!(
            "egret: --container-image={}: squashfs files are not supported yet; push the image to a registry",
            p.display()
        )),
    }
}
