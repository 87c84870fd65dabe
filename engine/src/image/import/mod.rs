//! Importing images: `pull` (registry) and `load` (docker-archive / OCI archive tars).
//!
//! Pull: resolve tag → digest (one manifest request, with the user's credentials, every time);
//! if the store has that digest, record it in the user's index and stop; otherwise, under the
//! digest's import lock, download into a temporary directory while the layers stream through
//! the flattener into mksquashfs as they arrive (see [`stream`]), and rename the result into the
//! store once every digest checked out. Concurrent imports of one
//! digest download it once: the others wait for the lock, then find it stored.

pub mod oci;
mod stream;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, LockTimings};
use crate::image::flatten::{flatten, FlattenEvent, LayerInput};
use crate::image::progress::{mb, Progress, StderrProgress};
use crate::image::reference::ImageRef;
use crate::image::registry::{host_arch, ArchiveFormat, FetchAuth, FetchError, Fetcher};
use crate::image::squash::{Mksquashfs, SquashError};
use crate::image::store::{clean_stale, Lock, LockMode, Store, StoreError, StoredImage, WorkDir};
use oci::{Layout, OciError};

/// Prefix of the download directories in the temp dir (which may be shared, e.g. /var/tmp).
const TEMP_PREFIX: &str = "egret-import-";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Squash(#[from] SquashError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{reference}: the registry sent a manifest with digest {got}, not the requested one")]
    DigestMismatch { reference: String, got: String },
    #[error("{path}: {reason}")]
    Archive { path: PathBuf, reason: String },
}

pub struct PullOptions {
    pub auth: FetchAuth,
    /// Where blobs are downloaded while an import runs (Sarus' `--temp-dir`); default: the
    /// config's `tempDir`.
    pub temp_dir: Option<PathBuf>,
    /// How long to wait for another process importing the same image.
    pub import_wait: Duration,
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            auth: FetchAuth::default(),
            temp_dir: None,
            import_wait: Duration::from_secs(3600),
            progress: Arc::new(StderrProgress::default()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// Downloaded and converted by this call.
    Downloaded,
    /// The digest was already stored: nothing was downloaded.
    UpToDate,
    /// Another process imported it while this one waited: nothing was downloaded.
    ImportedByOther,
    /// The registry was unreachable; the image stored for this reference was used.
    Offline,
}

impl PullStatus {
    pub fn downloaded(self) -> bool {
        self == PullStatus::Downloaded
    }
}

#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: StoredImage,
    /// The reference as asked, pinned to the stored manifest digest.
    pub reference: ImageRef,
    pub status: PullStatus,
}

/// Pulls `r` for the store's user and returns the stored image (see [`pull_image`]).
pub fn pull(
    cfg: &Config,
    store: &Store,
    fetcher: &dyn Fetcher,
    r: &ImageRef,
    opts: &PullOptions,
) -> Result<StoredImage, ImportError> {
    pull_image(cfg, store, fetcher, r, opts).map(|p| p.image)
}

pub fn pull_image(
    cfg: &Config,
    store: &Store,
    fetcher: &dyn Fetcher,
    r: &ImageRef,
    opts: &PullOptions,
) -> Result<Pulled, ImportError> {
    pull_as(cfg, store, fetcher, r, r, opts)
}

/// A Slurm step's pull: `r` as the user asked for it, `resolved` the manifest digest their
/// srun resolved `r`'s tag to (with their own identity, once for every node of the step).
///
/// A digest (handed over, or in `r` itself) is only a name for what to fetch: when the user's
/// own index already maps this repository to it, and the image is stored, it is used without a
/// registry request (the user read it from the registry before, so the store's privacy rule
/// holds); otherwise the manifest is fetched by digest as the user (which proves they may read
/// it) and every byte is verified against the digest, as for any pull. `r`'s tag is recorded
/// in the index with the image it names now.
pub fn pull_for_step(
    cfg: &Config,
    store: &Store,
    fetcher: &dyn Fetcher,
    r: &ImageRef,
    resolved: Option<&str>,
    opts: &PullOptions,
) -> Result<Pulled, ImportError> {
    let query = match (resolved, &r.digest) {
        (Some(d), None) => r.with_digest(d),
        _ => r.clone(),
    };
    if query.digest.is_some() {
        if let Some(known) = store.lookup(&query)? {
            let what = format!("another import of {}", r.display());
            let wait = wait_timings(store, opts);
            if let Some((image, replaced)) = reuse(store, r, &known.digest, &what, &wait)? {
                let progress = &*opts.progress;
                // "up to date" keeps the routine line out of the job's output.
                progress.done(&format!("{} is up to date ({})", r.display(), image.digest));
                collect_replaced(store, replaced, progress);
                return Ok(Pulled {
                    reference: r.with_digest(&image.digest),
                    image,
                    status: PullStatus::UpToDate,
                });
            }
        }
    }
    pull_as(cfg, store, fetcher, &query, r, opts)
}

/// Resolves and fetches `query`, recording the result in the index as `r` (the same image
/// reference, maybe without the digest `query` pins).
fn pull_as(
    cfg: &Config,
    store: &Store,
    fetcher: &dyn Fetcher,
    query: &ImageRef,
    r: &ImageRef,
    opts: &PullOptions,
) -> Result<Pulled, ImportError> {
    let progress = &*opts.progress;
    progress.phase(&format!("resolving {}", query.display()));
    let raw = match fetcher.inspect_raw(query, &opts.auth) {
        Ok(raw) => raw,
        Err(e) if e.is_unreachable() => {
            let Some(image) = store.lookup(query)? else {
                return Err(e.into());
            };
            progress.warn(&format!(
                "{e}; using the stored {} ({})",
                r.display(),
                image.digest
            ));
            let reference = r.with_digest(&image.digest);
            return Ok(Pulled {
                image,
                reference,
                status: PullStatus::Offline,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let resolved = oci::resolve(&raw, &query.display(), "linux", host_arch())?;
    check_requested_digest(query, &resolved)?;
    let digest = resolved.digest.clone();
    let pinned = r.with_digest(&digest);
    let wait = wait_timings(store, opts);
    let what = format!("another import of {}", r.display());
    // Whatever a killed import left (its locks are free now) goes, also when nothing is
    // downloaded this time: that import may have installed the image before dying.
    let temp_dir = opts.temp_dir.as_deref().unwrap_or(&cfg.temp_dir);
    store.clean_stale();
    clean_stale(temp_dir, TEMP_PREFIX);

    if let Some((image, replaced)) = reuse(store, r, &digest, &what, &wait)? {
        progress.done(&format!("{} is up to date ({digest})", r.display()));
        collect_replaced(store, replaced, progress);
        return Ok(Pulled {
            image,
            reference: pinned,
            status: PullStatus::UpToDate,
        });
    }
    let lock = store.lock_digest(&digest, LockMode::Exclusive, &what, &wait)?;
    if let Some(image) = store.lookup_digest(&digest)? {
        let replaced = record(store, r, &image)?;
        drop(lock);
        progress.done(&format!(
            "{} was imported by another process ({digest})",
            r.display()
        ));
        collect_replaced(store, replaced, progress);
        return Ok(Pulled {
            image,
            reference: pinned,
            status: PullStatus::ImportedByOther,
        });
    }

    let work = store.work_dir()?;
    let download = WorkDir::create(temp_dir, TEMP_PREFIX)?;
    let out = work.path().join("image.squashfs");
    let d = stream::Download {
        fetcher,
        r,
        pinned: &pinned,
        resolved: &resolved,
        raw: &raw,
    };
    let meta = stream::download_and_squash(cfg, &d, &download, &out, opts)?;
    drop(download);
    let image = store.install(&lock, &digest, &out, &meta)?;
    let replaced = record(store, r, &image)?;
    drop(lock);
    progress.done(&format!(
        "stored {} ({digest}, {})",
        r.display(),
        mb(image.size)
    ));
    collect_replaced(store, replaced, progress);
    Ok(Pulled {
        image,
        reference: pinned,
        status: PullStatus::Downloaded,
    })
}

/// Imports the image in a docker-archive or OCI archive tar under the name `name` (for the CLI,
/// `load/library/NAME:TAG`). The store key is the digest of the manifest skopeo writes.
pub fn load(
    cfg: &Config,
    store: &Store,
    fetcher: &dyn Fetcher,
    archive: &Path,
    name: &ImageRef,
    opts: &PullOptions,
) -> Result<Pulled, ImportError> {
    let progress = &*opts.progress;
    let format = detect_archive(archive)?;
    progress.phase(&format!(
        "reading {} ({})",
        archive.display(),
        format.transport()
    ));
    let temp_dir = opts.temp_dir.as_deref().unwrap_or(&cfg.temp_dir);
    store.clean_stale();
    clean_stale(temp_dir, TEMP_PREFIX);
    let download = WorkDir::create(temp_dir, TEMP_PREFIX)?;
    let oci_dir = download.path().join("oci");
    let owner = fetcher.runs_as();
    if let Some((uid, gid)) = owner {
        // A user's skopeo writes the layout: into a directory of theirs inside `download`,
        // which they may pass through but not list or change; root reads it as untrusted.
        let io_err = |source| crate::image::store::StoreError::Io {
            path: oci_dir.clone(),
            source,
        };
        std::fs::create_dir(&oci_dir).map_err(io_err)?;
        let fd = crate::sys::fs::open_dir(&oci_dir).map_err(io_err)?;
        std::os::unix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(io_err)?;
        std::fs::set_permissions(download.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(io_err)?;
    }
    fetcher.copy_archive_to_oci_dir(archive, format, &oci_dir)?;
    let layout = Layout::read_written_by(&oci_dir, owner.map(|(uid, _)| uid))?;
    let digest = layout.manifest_digest.clone();
    let wait = wait_timings(store, opts);
    let what = format!("another import of {}", name.display());
    if let Some((image, replaced)) = reuse(store, name, &digest, &what, &wait)? {
        progress.done(&format!("{} is up to date ({digest})", name.display()));
        collect_replaced(store, replaced, progress);
        return Ok(Pulled {
            image,
            reference: name.with_digest(&digest),
            status: PullStatus::UpToDate,
        });
    }
    let lock = store.lock_digest(&digest, LockMode::Exclusive, &what, &wait)?;
    let (image, status) = match store.lookup_digest(&digest)? {
        Some(image) => (image, PullStatus::ImportedByOther),
        None => {
            let work = store.work_dir()?;
            (
                convert(cfg, store, &lock, &work, &layout, &digest, progress)?,
                PullStatus::Downloaded,
            )
        }
    };
    let replaced = record(store, name, &image)?;
    drop(lock);
    progress.done(&format!(
        "stored {} ({digest}, {})",
        name.display(),
        mb(image.size)
    ));
    collect_replaced(store, replaced, progress);
    Ok(Pulled {
        image,
        reference: name.with_digest(&digest),
        status,
    })
}

/// The fast path: `digest` is already stored → record `r` for this user under the shared lock
/// (which keeps a concurrent `rmi` from deleting it in between).
fn reuse(
    store: &Store,
    r: &ImageRef,
    digest: &str,
    what: &str,
    wait: &LockTimings,
) -> Result<Option<(StoredImage, Option<String>)>, ImportError> {
    let _shared = store.lock_digest(digest, LockMode::Shared, what, wait)?;
    match store.lookup_digest(digest)? {
        Some(image) => {
            let replaced = record(store, r, &image)?;
            Ok(Some((image, replaced)))
        }
        None => Ok(None),
    }
}

/// Records `r` → `image`; returns the digest `r` pointed at before, if it moved (a tag that
/// now names a newer image). The caller holds `image`'s digest lock.
fn record(store: &Store, r: &ImageRef, image: &StoredImage) -> Result<Option<String>, ImportError> {
    let before = store.find(r)?.map(|e| e.registry_digest);
    store.record(r, image)?;
    Ok(before.filter(|d| *d != image.digest))
}

/// Deletes the image a moved tag used to name, if nobody references it any more. Called with no
/// digest lock held (`collect` takes the old digest's lock; holding two invites deadlocks).
fn collect_replaced(store: &Store, replaced: Option<String>, progress: &dyn Progress) {
    if let Some(old) = replaced {
        if let Err(e) = store.collect(&old) {
            progress.warn(&format!("cannot remove the replaced image {old}: {e}"));
        }
    }
}

fn wait_timings(store: &Store, opts: &PullOptions) -> LockTimings {
    LockTimings {
        timeout_ms: u64::try_from(opts.import_wait.as_millis()).unwrap_or(u64::MAX),
        warning_ms: store.lock_timings().warning_ms,
    }
}

/// The registry must serve what a requested digest names (the index or the manifest itself).
fn check_requested_digest(r: &ImageRef, resolved: &oci::Resolved) -> Result<(), ImportError> {
    if let Some(wanted) = &r.digest {
        let got = resolved.index_digest.as_ref().unwrap_or(&resolved.digest);
        if got != wanted && &resolved.digest != wanted {
            return Err(ImportError::DigestMismatch {
                reference: r.display(),
                got: got.clone(),
            });
        }
    }
    Ok(())
}

/// Pulls `r` straight into the squashfs file `out`, without the store: the enroot-style
/// `egret import`, which any user may run (nothing here needs privileges). Download and
/// squashfs are made in a work directory next to `out` and the finished file renamed into
/// place, so `out` is never half-written. Returns the manifest digest.
pub fn pull_to_file(
    cfg: &Config,
    fetcher: &dyn Fetcher,
    r: &ImageRef,
    opts: &PullOptions,
    out: &Path,
) -> Result<String, ImportError> {
    let progress = &*opts.progress;
    progress.phase(&format!("resolving {}", r.display()));
    let raw = fetcher.inspect_raw(r, &opts.auth)?;
    let resolved = oci::resolve(&raw, &r.display(), "linux", host_arch())?;
    check_requested_digest(r, &resolved)?;
    let digest = resolved.digest.clone();
    let pinned = r.with_digest(&digest);
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let work = WorkDir::create(parent.unwrap_or(Path::new(".")), ".egret-import-")?;
    let file = work.path().join("image.sqsh");
    let d = stream::Download {
        fetcher,
        r,
        pinned: &pinned,
        resolved: &resolved,
        raw: &raw,
    };
    stream::download_and_squash(cfg, &d, &work, &file, opts)?;
    std::fs::rename(&file, out).map_err(|source| ImportError::Archive {
        path: out.to_path_buf(),
        reason: format!("cannot move the image into place: {source}"),
    })?;
    progress.done(&format!("wrote {} ({digest})", out.display()));
    Ok(digest)
}

fn convert(
    cfg: &Config,
    store: &Store,
    lock: &Lock,
    work: &WorkDir,
    layout: &Layout,
    digest: &str,
    progress: &dyn Progress,
) -> Result<StoredImage, ImportError> {
    let out = work.path().join("image.squashfs");
    squash_layout(cfg, layout, &out, progress)?;
    Ok(store.install(lock, digest, &out, &layout.meta)?)
}

/// Flattens the layers of `layout` (complete on disk: `load`) into the squashfs file `out`.
fn squash_layout(
    cfg: &Config,
    layout: &Layout,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(), ImportError> {
    check_platform(&layout.meta, progress);
    let n = layout.layers.len();
    progress.phase(&layer_phase(n));
    let total: u64 = layout.layers.iter().map(|l| l.size).sum();
    let read = AtomicU64::new(0);
    let current = AtomicUsize::new(0);
    let tick = |bytes| progress.advance(bytes, Some(total), current.load(Ordering::Relaxed), n);
    let mut inputs = Vec::with_capacity(n);
    for l in &layout.layers {
        let reader = layout.open_layer(l)?;
        inputs.push(LayerInput {
            name: l.digest.clone(),
            reader: Box::new(Counted {
                inner: reader,
                read: &read,
                tick: &tick,
            }),
        });
    }
    squash_inputs(cfg, inputs, &current, out, progress)
}

/// mksquashfs writes `out` from the flattened `inputs`; `current` follows the layer being
/// merged (0-based, top-down), for progress.
fn squash_inputs(
    cfg: &Config,
    inputs: Vec<LayerInput<'_>>,
    current: &AtomicUsize,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(), ImportError> {
    let squashed = Mksquashfs::from_config(cfg).build(out, |stdin| {
        flatten(inputs, stdin, &mut |ev| match ev {
            FlattenEvent::Layer { index, .. } => current.store(index - 1, Ordering::Relaxed),
            FlattenEvent::Warning(w) => progress.warn(&w),
        })
    })?;
    for w in &squashed.warnings {
        progress.warn(&format!("mksquashfs: {w}"));
    }
    Ok(())
}

/// The phase line of squashing `n` layers.
fn layer_phase(n: usize) -> String {
    format!("squashing {n} layer{}", if n == 1 { "" } else { "s" })
}

/// Warns when the image is built for another platform than this host's.
fn check_platform(meta: &crate::image::metadata::ImageMeta, progress: &dyn Progress) {
    if let Some(p) = &meta.platform {
        let host = format!("linux/{}", host_arch());
        if !p.starts_with(&host) {
            progress.warn(&format!("the image is built for {p}, this host is {host}"));
        }
    }
}

/// Counts bytes read across all layers, for progress (layers are read on decoder threads).
struct Counted<'a, R> {
    inner: R,
    read: &'a AtomicU64,
    tick: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        (self.tick)(read);
        Ok(n)
    }
}

/// docker-archive has `manifest.json`, an OCI archive `oci-layout`; either may be gzipped.
pub fn detect_archive(path: &Path) -> Result<ArchiveFormat, ImportError> {
    let fail = |reason: String| ImportError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut buf = BufReader::with_capacity(1 << 20, file);
    let head = buf
        .fill_buf()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    let mut ar = tar::Archive::new(reader);
    // The tar crate quotes header bytes in its errors: keep them out of a one-line message.
    let not_tar = |_: io::Error| fail("not a tar archive".into());
    let entries = ar.entries().map_err(not_tar)?;
    for entry in entries {
        let entry = entry.map_err(not_tar)?;
        let p = entry.path_bytes();
        let name = p.strip_prefix(b"./").unwrap_or(&p);
        match name {
            b"oci-layout" => return Ok(ArchiveFormat::OciArchive),
            b"manifest.json" => return Ok(ArchiveFormat::DockerArchive),
            _ => {}
        }
    }
    Err(fail(
        "neither a docker-archive (no manifest.json) nor an OCI archive (no oci-layout)".into(),
    ))
}

#[cfg(test)]
mod tests;
