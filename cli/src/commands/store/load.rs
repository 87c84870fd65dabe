//! `egret load`: import a docker-archive or OCI archive tar into the store under a name.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use egret_engine::image::import::{self, ImportError, PullOptions};
use egret_engine::image::progress::StderrProgress;
use egret_engine::image::reference::{ImageRef, RefError, DOCKER_HUB, LOAD_SERVER};
use egret_engine::slurm::store_bound;

use super::{fetcher, need_root, open_store, temp_dir, StoreAccessError};
use crate::context::Context;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Load into the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// Where to unpack the archive's layers while importing (default: tempDir).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// A docker-archive (`docker save`) or OCI archive tar, optionally gzipped.
    #[arg(value_name = "ARCHIVE")]
    archive: PathBuf,
    /// The name to store it under; it is listed as load/library/NAME:TAG.
    #[arg(value_name = "NAME[:TAG]")]
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Name(#[from] RefError),
    #[error("NAME '{0}' must not contain a digest")]
    NameWithDigest(String),
    #[error("NAME '{0}' must not name a registry: loaded images are stored as load/library/NAME")]
    NameWithRegistry(String),
    #[error("{}: {source}", .archive.display())]
    ArchivePath { archive: PathBuf, source: io::Error },
    #[error("{}: no such archive file", .0.display())]
    NoArchive(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreAccessError),
    #[error(transparent)]
    Import(#[from] ImportError),
}

pub fn load(c: &Context, a: LoadArgs) -> Result<ExitCode, LoadError> {
    let name = load_name(&a.name)?;
    need_root()?;
    let archive = std::path::absolute(&a.archive).map_err(|source| LoadError::ArchivePath {
        archive: a.archive.clone(),
        source,
    })?;
    if !archive.is_file() {
        return Err(LoadError::NoArchive(archive));
    }
    let store = open_store(c, a.centralized_repository)?;
    let opts = PullOptions {
        temp_dir: temp_dir(c, a.temp_dir)?,
        progress: Arc::new(StderrProgress::default()),
        ..PullOptions::default()
    };
    let fetcher = fetcher(c);
    let loaded = import::load(&c.config, &store, &fetcher, &archive, &name, &opts)?;
    if !a.centralized_repository {
        store_bound::apply(&c.config, &store, &loaded.image.squashfs);
    }
    Ok(ExitCode::SUCCESS)
}

/// NAME[:TAG] → `load/library/NAME:TAG` (Sarus' naming of loaded images).
fn load_name(name: &str) -> Result<ImageRef, LoadError> {
    let r = ImageRef::parse(name)?;
    if r.digest.is_some() {
        return Err(LoadError::NameWithDigest(name.to_string()));
    }
    let explicit_hub = name.starts_with("docker.io/") || name.starts_with("index.docker.io/");
    if r.registry == LOAD_SERVER {
        return Ok(r);
    }
    if r.registry != DOCKER_HUB || explicit_hub || name.contains('#') {
        return Err(LoadError::NameWithRegistry(name.to_string()));
    }
    Ok(ImageRef {
        registry: LOAD_SERVER.to_string(),
        ..r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names() {
        assert_eq!(
            load_name("my_debian").unwrap().display(),
            "load/library/my_debian:latest"
        );
        assert_eq!(load_name("ns/app:2").unwrap().display(), "load/ns/app:2");
        assert_eq!(
            load_name("load/library/x:1").unwrap().display(),
            "load/library/x:1"
        );
        let err = |n: &str| load_name(n).unwrap_err().to_string();
        assert!(err("nvcr.io/nvidia/x").contains("registry"));
        assert!(err("docker.io/x").contains("registry"));
        let d = format!("x@sha256:{}", "a".repeat(64));
        assert!(err(&d).contains("digest"));
        assert!(load_name("Bad").is_err());
    }
}
