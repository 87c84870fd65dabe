//! The launcher's image step: from the user's `--container-image` to a squashfs file to mount.

use std::path::PathBuf;

use crate::config::Config;
use crate::container::user::UserIdentity;
use crate::image::metadata::ImageMeta;
use crate::image::reference::ImageSource;

use super::fanout;
use super::protocol::StepRequest;
use super::user_squashfs::UserSquashfsError;
use crate::image::import::ImportError;
use crate::image::reference::RefError;
use crate::image::store::StoreError;

/// Why the step's image cannot be had; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum StepImageError {
    #[error("--container-image={image}: {source}")]
    BadReference {
        image: String,
        #[source]
        source: RefError,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("{0}")]
    UserSquashfs(#[from] UserSquashfsError),
    /// The step's first node could not import the image; this is its reason.
    #[error("{0} (on the step's first node)")]
    FirstNode(String),
}

/// Imports (at most once, under the store's locks) and returns the image file and its metadata.
pub fn resolve(
    cfg: &Config,
    req: &StepRequest,
    user: &UserIdentity,
    image: &str,
    progress: &super::task_progress::TaskProgress,
) -> Result<(PathBuf, ImageMeta), StepImageError> {
    let source = ImageSource::parse(image).map_err(|source| StepImageError::BadReference {
        image: image.to_string(),
        source,
    })?;
    match source {
        ImageSource::Registry(r) => {
            let store = crate::image::store::Store::open(
                &cfg.local_repository_base_dir,
                user.uid,
                user.gid,
                &cfg.repository_metadata_lock_timings,
            )?
            // "waiting for another import of ..." must reach the user, not only the log.
            .with_notifier({
                let p = progress.clone();
                move |msg: &str| crate::image::progress::Progress::phase(&p, msg)
            });
            // Root never talks to the registry: skopeo runs as the user, with their own
            // credentials (auth files, credential helpers) found as they would find them.
            let fetcher = crate::image::registry::Skopeo::new(cfg)
                .as_user(crate::image::registry::FetchUser::new(user, &req.job_env));
            let opts = crate::image::import::PullOptions {
                auth: crate::image::registry::FetchAuth::default(),
                progress: std::sync::Arc::new(progress.clone()),
                ..Default::default()
            };
            // The digest srun resolved once for every node of the step, if it could.
            let handed = super::step_digest::handed(&req.job_env, req.step_id, &r);
            // Several nodes with stores of their own: the first imports, the others get its
            // squashfs through Slurm's broadcast.
            let digest = handed.as_deref().or(r.digest.as_deref());
            let fanout = fanout::Fanout::for_step(cfg, req, user, digest);
            let first = fanout.as_ref().filter(|f| f.is_first());
            if let Some(f) = fanout.as_ref().filter(|f| !f.is_first()) {
                if let Some(img) =
                    fanout::receive(f, &store, &r, progress).map_err(StepImageError::FirstNode)?
                {
                    super::store_bound::apply(cfg, &store, &img.squashfs);
                    return Ok((img.squashfs, img.meta));
                }
            }
            let pulled = crate::image::import::pull_for_step(
                cfg,
                &store,
                &fetcher,
                &r,
                handed.as_deref(),
                &opts,
            )
            .inspect_err(|e| {
                if let Some(f) = first {
                    fanout::send_failure(f, &e.to_string());
                }
            })?;
            if let Some(f) = first {
                fanout::send(f, &pulled.image, pulled.status.downloaded(), progress);
            }
            let img = pulled.image;
            super::store_bound::apply(cfg, &store, &img.squashfs);
            Ok((img.squashfs, img.meta))
        }
        ImageSource::SquashfsFile(p) => {
            // Relative paths are the user's, from the directory the job was submitted from.
            let p = if p.is_absolute() {
                p
            } else {
                super::plan::job_cwd(&req.job_env).join(p)
            };
            let store = crate::image::store::Store::open(
                &cfg.local_repository_base_dir,
                user.uid,
                user.gid,
                &cfg.repository_metadata_lock_timings,
            )?;
            let (file, meta) = super::user_squashfs::import(cfg, &store, user, &p)?;
            super::store_bound::apply(cfg, &store, &file);
            Ok((file, meta))
        }
    }
}
