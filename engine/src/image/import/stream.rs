//! A pull's download, flattening and squashing, overlapped.
//!
//! skopeo copies the image into an OCI layout on a thread of its own while this thread runs
//! mksquashfs, fed by the flattener. The flattener's decoders (threads of their own, see
//! `flatten::decode`) wait for their layer's blob to appear in the layout and then follow it, so
//! each layer streams into the flattener as soon as it is there; skopeo renames a blob into its
//! name once it is complete, and a writer that does not is followed to the size the manifest
//! gives. Nothing here trusts skopeo (it runs as the user): the layer list comes from a manifest
//! whose digest this process computed, every blob is read through a [`VerifyingReader`], and
//! the squashfs only becomes visible after the copy, every digest check and mksquashfs
//! succeeded (the caller renames it into place).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use super::oci::{self, BlobDir, ImageManifest, VerifyingReader};
use super::{check_platform, layer_phase, squash_inputs, Counted, ImportError, PullOptions};
use crate::config::Config;
use crate::image::flatten::LayerInput;
use crate::image::metadata::ImageMeta;
use crate::image::progress::Progress;
use crate::image::reference::ImageRef;
use crate::image::registry::Fetcher;
use crate::image::store::{StoreError, WorkDir};

/// How often a decoder looks for a blob that is not there yet: quickly at first (a layer
/// may be about to be renamed into place), then less often.
const POLL_MIN: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(20);

/// What to download: `pinned` (by digest) is what skopeo copies, `r` what messages call it.
pub(super) struct Download<'a> {
    pub fetcher: &'a dyn Fetcher,
    pub r: &'a ImageRef,
    pub pinned: &'a ImageRef,
    pub resolved: &'a oci::Resolved,
    /// The bytes `resolved` was computed from: the image manifest itself unless it was an index.
    pub raw: &'a [u8],
}

/// Downloads `d` into `work` and squashes it into `out` at the same time; returns the image's
/// metadata. On any failure `out` does not exist.
pub(super) fn download_and_squash(
    cfg: &Config,
    d: &Download<'_>,
    work: &WorkDir,
    out: &Path,
    opts: &PullOptions,
) -> Result<ImageMeta, ImportError> {
    let progress = &*opts.progress;
    let (dir, blobs) = download_dir(d.fetcher, work)?;
    let state = Copy::default();
    progress.phase(&format!("downloading {}", d.r.display()));
    let (copied, squashed) = std::thread::scope(|s| {
        let copy = s.spawn(|| {
            let (total, layers) = (d.resolved.download_size, d.resolved.layers.unwrap_or(0));
            let res = d
                .fetcher
                .copy_to_layout(d.pinned, &dir, &opts.auth, &mut |bytes, blobs| {
                    // The blob count includes the config and the manifest; layers are what
                    // people count.
                    progress.advance(bytes, total, blobs.saturating_sub(2).min(layers), layers)
                });
            state.finish(res.is_ok(), progress);
            res
        });
        let squashed = manifest(d, opts).and_then(|m| {
            state.set_layers(m.layers.len(), progress);
            squash(cfg, &blobs, &m, &state, out, progress).map(|()| m)
        });
        let copied = match copy.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (copied, squashed)
    });
    let fail = |e: ImportError| {
        // Best effort: the work directory goes as a whole anyway.
        let _ = std::fs::remove_file(out);
        Err(e)
    };
    // A failed copy explains whatever went wrong while waiting for its blobs.
    if let Err(e) = copied {
        return fail(e.into());
    }
    let m = match squashed {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    match config(d, &blobs, &m, opts) {
        Ok(meta) => {
            check_platform(&meta, progress);
            Ok(meta)
        }
        Err(e) => fail(e),
    }
}

/// The image's metadata from its config blob. skopeo converts a Docker schema 2 image into an
/// OCI one as it copies, and the converted config is serialised anew under another digest: the
/// layout then lacks the blob the verified manifest names, which is fetched on its own instead
/// (layers keep their digests through the conversion).
fn config(
    d: &Download<'_>,
    blobs: &BlobDir,
    m: &ImageManifest,
    opts: &PullOptions,
) -> Result<ImageMeta, ImportError> {
    match blobs.read_config(&m.config) {
        Err(oci::OciError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        done => return Ok(done?),
    }
    let bytes = d.fetcher.inspect_config(d.pinned, &opts.auth)?;
    Ok(oci::meta_from_fetched_config(
        &bytes,
        &m.config,
        &d.pinned.display(),
    )?)
}

/// The directory skopeo writes into, `work/image`. When the fetcher runs as a user the
/// directory is theirs (inside `work`, which only root can list) and root reads it through one
/// descriptor, opening only regular files the user owns, without following links.
fn download_dir(fetcher: &dyn Fetcher, work: &WorkDir) -> Result<(PathBuf, BlobDir), ImportError> {
    let dir = work.path().join("image");
    let io_err = |source| StoreError::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir(&dir).map_err(io_err)?;
    let fd = crate::sys::fs::open_dir(&dir).map_err(io_err)?;
    let owner = fetcher.runs_as();
    if let Some((uid, gid)) = owner {
        // The user may pass through `work` to their directory, not list or change it.
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(io_err)?;
        std::os::unix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(io_err)?;
    }
    let blobs = BlobDir::new(&dir, fd, owner.map(|(uid, _)| uid));
    Ok((dir, blobs))
}

/// The image manifest, as bytes whose digest this process checked: the resolved bytes
/// themselves, or (when they were an index) the platform's manifest, fetched by its digest.
fn manifest(d: &Download<'_>, opts: &PullOptions) -> Result<ImageManifest, ImportError> {
    let digest = &d.resolved.digest;
    let fetched;
    let bytes = if d.resolved.index_digest.is_none() {
        d.raw
    } else {
        fetched = d.fetcher.inspect_raw(d.pinned, &opts.auth)?;
        let got = oci::sha256_digest(&fetched);
        if &got != digest {
            return Err(ImportError::DigestMismatch {
                reference: d.pinned.display(),
                got,
            });
        }
        &fetched
    };
    ImageManifest::parse(bytes, digest).map_err(|reason| {
        ImportError::Oci(oci::OciError::Manifest {
            reference: d.pinned.display(),
            reason,
        })
    })
}

/// mksquashfs fed by the flattener, whose layers arrive while the copy runs.
fn squash(
    cfg: &Config,
    blobs: &BlobDir,
    m: &ImageManifest,
    state: &Copy,
    out: &Path,
    progress: &dyn Progress,
) -> Result<(), ImportError> {
    let n = m.layers.len();
    let total: u64 = m.layers.iter().map(|l| l.size).sum();
    let read = AtomicU64::new(0);
    let current = AtomicUsize::new(0);
    // Squashing progress once the download's is over (one line shows one phase).
    let tick = |bytes| {
        if state.announced.load(Ordering::Relaxed) {
            progress.advance(bytes, Some(total), current.load(Ordering::Relaxed), n)
        }
    };
    let inputs = m
        .layers
        .iter()
        .map(|l| LayerInput {
            name: l.digest.clone(),
            reader: Box::new(Counted {
                inner: VerifyingReader::new(
                    Arriving {
                        blobs,
                        digest: &l.digest,
                        size: l.size,
                        state,
                        file: None,
                        seen: 0,
                    },
                    &l.digest,
                    Some(l.size),
                ),
                read: &read,
                tick: &tick,
            }),
        })
        .collect();
    squash_inputs(cfg, inputs, &current, out, progress)
}

/// Where the copy is, shared by the copy thread and the decoders.
#[derive(Default)]
struct Copy {
    /// 0 running, 1 done, 2 failed.
    status: AtomicU8,
    /// Layer count + 1 once the manifest is known (0: not yet).
    layers: AtomicUsize,
    /// The "squashing" line was printed: the download is over and the manifest known.
    announced: AtomicBool,
}

impl Copy {
    fn finished(&self) -> bool {
        self.status.load(Ordering::Acquire) != 0
    }

    fn finish(&self, ok: bool, progress: &dyn Progress) {
        self.status.store(if ok { 1 } else { 2 }, Ordering::Release);
        self.announce(progress);
    }

    fn set_layers(&self, n: usize, progress: &dyn Progress) {
        self.layers.store(n + 1, Ordering::Release);
        self.announce(progress);
    }

    /// "squashing N layers", once, when both the download succeeded and N is known.
    fn announce(&self, progress: &dyn Progress) {
        let n = self.layers.load(Ordering::Acquire);
        if self.status.load(Ordering::Acquire) == 1
            && n > 0
            && !self.announced.swap(true, Ordering::AcqRel)
        {
            progress.phase(&layer_phase(n - 1));
        }
    }
}

/// One layer's blob as skopeo writes it: waited for until it appears, then read up to the
/// size the manifest gives, waiting at EOF only while the copy still runs and the size is not
/// reached yet. What it reads is checked by the [`VerifyingReader`] around it.
struct Arriving<'a> {
    blobs: &'a BlobDir,
    digest: &'a str,
    size: u64,
    state: &'a Copy,
    file: Option<File>,
    seen: u64,
}

impl Read for Arriving<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pause = POLL_MIN;
        loop {
            // Looked at before the file: a copy that was over then has written all it will.
            let finished = self.state.finished();
            let file = match &mut self.file {
                Some(f) => f,
                None => match self.blobs.try_open(self.digest) {
                    Ok(Some(f)) => self.file.insert(f),
                    Ok(None) if finished => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            "the download ended without this layer",
                        ))
                    }
                    Ok(None) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(POLL_MAX);
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                },
            };
            let n = file.read(buf)?;
            if n > 0 || buf.is_empty() || finished || self.seen >= self.size {
                self.seen += n as u64;
                return Ok(n);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}
