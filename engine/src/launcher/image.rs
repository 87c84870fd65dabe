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
    req: &StepRequest,
    user: &UserIdentity,
    image: &str,
    progress: &super::progress::TaskProgress,
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
            .map_err(|e| format!("egret: {e}"))?
            // "waiting for another import of ..." must reach the user, not only the log.
            .with_notifier({
                let p = progress.clone();
                move |msg: &str| crate::progress::Progress::phase(&p, msg)
            });
            let fetcher = crate::skopeo::Skopeo::new(cfg);
            let auth = UserAuthFile::copy_from(cfg, req, user)?;
            let opts = crate::import::PullOptions {
                auth: crate::skopeo::FetchAuth {
                    authfile: Some(auth.path.clone()),
                    creds: None,
                },
                progress: std::sync::Arc::new(progress.clone()),
                ..Default::default()
            };
            let img = crate::import::pull(cfg, &store, &fetcher, &r, &opts)
                .map_err(|e| format!("egret: {e}"))?;
            Ok((img.squashfs, img.meta))
        }
        ImageSource::SquashfsFile(p) => {
            // Relative paths are the user's, from the directory the job was submitted from.
            let p = if p.is_absolute() {
                p
            } else {
                super::server::job_cwd(req).join(p)
            };
            let store = crate::store::Store::open(
                &cfg.local_repository_base_dir,
                user.uid,
                user.gid,
                &cfg.repository_metadata_lock_timings,
            )
            .map_err(|e| format!("egret: {e}"))?;
            super::sqsh::import(cfg, &store, user, &p)
        }
    }
}

/// The user's registry credentials, copied (read as the user) into a root-only temporary file
/// for skopeo. Always present, empty when the user has none: skopeo runs as root and must never
/// fall back to root's own credentials.
struct UserAuthFile {
    path: PathBuf,
}

impl UserAuthFile {
    fn copy_from(cfg: &Config, req: &StepRequest, user: &UserIdentity) -> Result<Self, String> {
        let env = |k: &str| {
            req.job_env.iter().find_map(|e| {
                e.strip_prefix(k)
                    .and_then(|v| v.strip_prefix('='))
                    .map(str::to_string)
            })
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = env("REGISTRY_AUTH_FILE") {
            candidates.push(p.into());
        }
        if let Some(d) = env("XDG_RUNTIME_DIR") {
            candidates.push(PathBuf::from(d).join("containers/auth.json"));
        }
        candidates.push(user.home.join(".config/containers/auth.json"));
        candidates.push(user.home.join(".docker/config.json"));
        let body = candidates
            .iter()
            .filter(|p| p.is_absolute())
            .find_map(|p| user.read_file(p).ok())
            .filter(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok())
            .unwrap_or_else(|| b"{}".to_vec());
        let mut f = tempfile::Builder::new()
            .prefix("egret-auth-")
            .suffix(".json")
            .tempfile_in(&cfg.temp_dir)
            .map_err(|e| format!("egret: {}: {e}", cfg.temp_dir.display()))?;
        use std::io::Write;
        f.write_all(&body)
            .map_err(|e| format!("egret: auth file: {e}"))?;
        let (_, path) = f.keep().map_err(|e| format!("egret: auth file: {e}"))?;
        Ok(UserAuthFile { path })
    }
}

impl Drop for UserAuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
