//! Named containers (`--container-name`): the writable layer of a container kept on disk for the
//! rest of the job, so later steps find the files earlier steps wrote.
//!
//! Layout: `containersDir/UID/JOB/NAME/{origin.json,upper,work}`, root-owned (the `upper` layer
//! belongs to the user). `origin.json` remembers the image the container was created from, so
//! a later step can name the container without `--container-image`. The job epilog removes
//! `containersDir/UID/JOB`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::imagemeta::ImageMeta;

#[derive(Serialize, Deserialize)]
struct Origin {
    image_file: PathBuf,
    meta: ImageMeta,
}

/// The directory of a job's named containers for one user.
pub fn job_dir(cfg: &Config, uid: u32, job: u32) -> PathBuf {
    cfg.containers_dir
        .join(uid.to_string())
        .join(job.to_string())
}

/// Finds container `name` of the job, or creates it from `image` (resolved by `resolve`).
/// Returns the image file, its metadata and the directory holding the writable layer.
pub fn open_or_create(
    cfg: &Config,
    uid: u32,
    job: u32,
    name: &str,
    image: Option<&str>,
    resolve: impl FnOnce(&str) -> Result<(PathBuf, ImageMeta), String>,
) -> Result<(PathBuf, ImageMeta, PathBuf), String> {
    let dir = job_dir(cfg, uid, job).join(name);
    let origin_path = dir.join("origin.json");
    if let Ok(text) = fs::read(&origin_path) {
        let o: Origin = serde_json::from_slice(&text)
            .map_err(|e| format!("egret: container '{name}': {}: {e}", origin_path.display()))?;
        if !o.image_file.exists() {
            return Err(format!(
                "egret: container '{name}': its image was removed from the store; create it again under another name"
            ));
        }
        return Ok((o.image_file, o.meta, dir));
    }
    let Some(image) = image else {
        return Err(format!(
            "egret: no container named '{name}' in job {job}; create it with --container-image"
        ));
    };
    let (image_file, meta) = resolve(image)?;
    create_private_dir(&dir)?;
    let origin = Origin {
        image_file: image_file.clone(),
        meta: meta.clone(),
    };
    let tmp = dir.join("origin.json.tmp");
    let body = serde_json::to_vec(&origin).map_err(|e| format!("egret: {e}"))?;
    fs::write(&tmp, body)
        .and_then(|_| fs::rename(&tmp, &origin_path))
        .map_err(|e| format!("egret: {}: {e}", origin_path.display()))?;
    Ok((image_file, meta, dir))
}

/// Creates `dir` and its parents, each root-only (0700 below the shared top 0711).
fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(dir)
        .map_err(|e| format!("egret: {}: {e}", dir.display()))
}

/// Removes every named container of a job (job epilog, root).
pub fn remove_job(cfg: &Config, uid: u32, job: u32) -> std::io::Result<()> {
    match fs::remove_dir_all(job_dir(cfg, uid, job)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        Config {
            containers_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn created_once_then_found_without_image() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path());
        let img = t.path().join("img.sqsh");
        fs::write(&img, b"x").unwrap();
        let resolved = img.clone();
        let (f, _, dir) = open_or_create(&c, 5, 7, "dev", Some("busybox"), |_| {
            Ok((resolved, ImageMeta::default()))
        })
        .unwrap();
        assert_eq!(f, img);
        assert!(dir.join("origin.json").exists());
        let (f2, _, _) = open_or_create(&c, 5, 7, "dev", None, |_| panic!("no import")).unwrap();
        assert_eq!(f2, img);
        remove_job(&c, 5, 7).unwrap();
        let e = open_or_create(&c, 5, 7, "dev", None, |_| panic!("no import")).unwrap_err();
        assert!(e.contains("no container named 'dev'"), "{e}");
    }
}
