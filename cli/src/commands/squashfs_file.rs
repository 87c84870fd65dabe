//! import, export: enroot-style squashfs files. `egret import` builds a portable `.sqsh` once
//! (on a login node, as any user: nothing touches the store) that `srun
//! --container-image=./FILE.sqsh` runs many times; `egret export` writes one from an image
//! already in the store.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use egret_engine::image::import::{self, ImportError, PullOptions};
use egret_engine::image::progress::StderrProgress;
use egret_engine::image::reference::{ImageRef, RefError};
use egret_engine::image::registry::Skopeo;
use egret_engine::image::store::{Store, StoreError};

use crate::context::Context;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The file to write (default: the repository and tag with '/' and ':' as '+', .sqsh, in
    /// the current directory, as enroot names it).
    #[arg(short = 'o', long, value_name = "FILE.sqsh")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// [REGISTRY/]REPOSITORY[:TAG][@DIGEST], or REGISTRY#REPOSITORY[:TAG] (enroot form).
    #[arg(value_name = "REF")]
    reference: String,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// An image of yours in the store, as `egret images` shows it.
    #[arg(value_name = "REF")]
    reference: String,
    /// The file to write.
    #[arg(value_name = "FILE.sqsh")]
    output: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SquashfsFileError {
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error("{}: is a directory; give a file name such as image.sqsh", .0.display())]
    OutputIsDirectory(PathBuf),
    #[error("{} exists; remove it or add --force", .0.display())]
    OutputExists(PathBuf),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reference, as the store names it.
    #[error("{0}: no such image of yours (see 'egret images')")]
    NoSuchImage(String),
    #[error("{}: {source}", .output.display())]
    Write { output: PathBuf, source: io::Error },
    /// Writing the output as the caller: the switch to them failed.
    #[error(transparent)]
    AsUser(#[from] egret_engine::container::user::UserError),
}

pub fn import(c: &Context, a: ImportArgs) -> Result<ExitCode, SquashfsFileError> {
    let r = ImageRef::parse(&a.reference)?;
    let out = a.output.clone().unwrap_or_else(|| default_name(&r));
    check_destination(&out, a.force)?;
    let opts = PullOptions {
        progress: Arc::new(StderrProgress::default()),
        ..PullOptions::default()
    };
    let fetcher = Skopeo::new(&c.config);
    import::pull_to_file(&c.config, &fetcher, &r, &opts, &out)?;
    Ok(ExitCode::SUCCESS)
}

/// Root reads the caller's image from the store (its files are root's alone); the output is
/// created and written as the caller (a setuid egret never writes a user's path as root).
pub fn export(c: &Context, a: ExportArgs) -> Result<ExitCode, SquashfsFileError> {
    let r = ImageRef::parse(&a.reference)?;
    let timings = &c.config.repository_metadata_lock_timings;
    let store = Store::open_readonly(&c.config.local_repository_base_dir, c.uid, c.gid, timings);
    let image = store
        .lookup(&r)?
        .ok_or_else(|| SquashfsFileError::NoSuchImage(r.display()))?;
    let write_err = |source| SquashfsFileError::Write {
        output: a.output.clone(),
        source,
    };
    let mut input = fs::File::open(&image.squashfs).map_err(write_err)?;
    let write = |input: &mut fs::File| -> Result<(), SquashfsFileError> {
        check_destination(&a.output, a.force)?;
        copy_new(input, &a.output).map_err(write_err)
    };
    match c.caller.is_setuid() {
        true => c.caller.identity.run_as(|| write(&mut input))??,
        false => write(&mut input)?,
    }
    eprintln!("egret: wrote {} ({})", a.output.display(), image.digest);
    Ok(ExitCode::SUCCESS)
}

/// enroot's naming: `egret/busybox:latest` → `egret+busybox+latest.sqsh`.
fn default_name(r: &ImageRef) -> PathBuf {
    let tag = r.tag.as_deref().unwrap_or("latest");
    PathBuf::from(format!("{}+{tag}.sqsh", r.repository.replace('/', "+")))
}

/// Refuses a directory, and an existing file unless `--force`.
fn check_destination(out: &Path, force: bool) -> Result<(), SquashfsFileError> {
    if out.as_os_str().to_string_lossy().ends_with('/') || out.is_dir() {
        return Err(SquashfsFileError::OutputIsDirectory(out.to_path_buf()));
    }
    if !force && fs::symlink_metadata(out).is_ok() {
        return Err(SquashfsFileError::OutputExists(out.to_path_buf()));
    }
    Ok(())
}

/// Copies `input` to `dst` through a new file next to it, renamed into place when complete.
fn copy_new(input: &mut fs::File, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = tempfile::Builder::new()
        .prefix(".egret-export-")
        .tempfile_in(dir.unwrap_or(Path::new(".")))?;
    let mut output = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp.path())?;
    io::copy(input, &mut output)?;
    output.set_permissions(fs::Permissions::from_mode(0o644))?;
    output.sync_all()?;
    tmp.persist(dst).map_err(|e| e.error)?;
    Ok(())
}
