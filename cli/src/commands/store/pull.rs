//! `egret pull`: import an image from a registry into the store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use egret_engine::image::import::{self, ImportError, PullOptions, PullStatus};
use egret_engine::image::progress::StderrProgress;
use egret_engine::image::reference::{ImageRef, RefError};
use egret_engine::slurm::store_bound;

use super::credentials::{self, CredentialsError};
use super::{centralized_dir, fetcher, need_root, open_store, temp_dir, StoreAccessError};
use crate::context::Context;

#[derive(clap::Args)]
pub struct PullArgs {
    /// Registry user name (the password comes from --password-stdin or a --login prompt).
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the registry password from standard input (one line).
    #[arg(long, conflicts_with = "login")]
    pub password_stdin: bool,
    /// Prompt for the registry user name and password on the terminal.
    #[arg(long)]
    pub login: bool,
    /// Pull into the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// Where to download layers while importing (default: tempDir from the config).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// [REGISTRY/]REPOSITORY[:TAG][@DIGEST], or REGISTRY#REPOSITORY[:TAG] (enroot form).
    #[arg(value_name = "REF")]
    reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Store(#[from] StoreAccessError),
    #[error(transparent)]
    Import(#[from] ImportError),
}

pub fn pull(c: &Context, a: PullArgs) -> Result<ExitCode, PullError> {
    let r = ImageRef::parse(&a.reference)?;
    need_root()?;
    let auth = credentials::from_args(&a)?;
    let store = open_store(c, a.centralized_repository)?;
    let opts = PullOptions {
        auth,
        temp_dir: temp_dir(c, a.temp_dir)?,
        progress: Arc::new(StderrProgress::default()),
        ..PullOptions::default()
    };
    let fetcher = fetcher(c);
    // Sarus's header, on stdout where scripts read it (progress goes to stderr).
    let images_dir = match a.centralized_repository {
        true => centralized_dir(c)?.to_path_buf(),
        false => c.config.local_repository_base_dir.clone(),
    };
    let temp = opts.temp_dir.as_ref().unwrap_or(&c.config.temp_dir);
    println!("# image            : {}", r.display());
    println!("# cache directory  : {:?}", temp.display().to_string());
    println!("# temp directory   : {:?}", temp.display().to_string());
    println!(
        "# images directory : {:?}",
        images_dir.join("images").display().to_string()
    );
    let pulled = import::pull_image(&c.config, &store, &fetcher, &r, &opts)?;
    println!("# image digest     : {}", pulled.image.digest);
    if pulled.status == PullStatus::UpToDate {
        println!(
            "Image for {} is already available and up to date",
            r.display()
        );
    }
    if !a.centralized_repository {
        store_bound::apply(&c.config, &store, &pulled.image.squashfs);
    }
    Ok(ExitCode::SUCCESS)
}
