//! Every other node's side: wait for the first node's notice, then install the broadcast
//! squashfs in this node's store if its bytes are the ones the notice names.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::image::metadata::ImageMeta;
use crate::image::progress::Progress;
use crate::image::reference::ImageRef;
use crate::image::store::{LockMode, Store, StoredImage};
use crate::sys::fs::open_read_beneath;

use super::notice::{self, Notice, Outcome, MAX_NOTICE};
use super::{Fanout, FanoutError};

const POLL: Duration = Duration::from_millis(50);

/// The image from the first node's broadcast, installed in this node's store and recorded in
/// the user's index as `r`; `Ok(None)` when this node should import it itself (it has it
/// already, it waited once before in this job, no broadcast came, or the broadcast is not the
/// image the notice names). `Err` carries the first node's reason when its import failed.
pub fn receive(
    f: &Fanout,
    store: &Store,
    r: &ImageRef,
    progress: &dyn Progress,
) -> Result<Option<StoredImage>, String> {
    if !matches!(store.lookup_digest(&f.digest), Ok(None)) || f.waited_before() {
        return Ok(None);
    }
    f.mark_waited();
    progress.phase(&format!(
        "waiting for the step's first node to import {}",
        r.display()
    ));
    let Some(n) = wait_notice(f) else {
        progress.warn(&format!(
            "no word from the step's first node in {} s: importing here",
            f.wait.as_secs()
        ));
        return Ok(None);
    };
    let (sha256, size, meta) = match n.outcome {
        Outcome::Ready { sha256, size, meta } => (sha256, size, meta),
        Outcome::Skip => return Ok(None),
        Outcome::Failed { reason } => return Err(reason),
    };
    match install(f, store, r, &sha256, size, &meta) {
        Ok(image) => Ok(Some(image)),
        Err(e) => {
            progress.warn(&format!("{e}: importing here"));
            Ok(None)
        }
    }
}

/// Polls `tempDir` for this step's notice until it decodes (sbcast may still be writing it)
/// or the wait is over.
fn wait_notice(f: &Fanout) -> Option<Notice> {
    let deadline = Instant::now() + f.wait;
    let dir = File::open(&f.drop_dir).ok()?;
    loop {
        if let Ok(bytes) = read_user_file(f, &dir, &f.notice_name(), MAX_NOTICE) {
            if let Ok(n) = notice::decode(&f.unmunge, &bytes) {
                if n.is_for(f.job, f.step, f.user.uid, &f.digest) {
                    return Some(n);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Opens `name` in `tempDir` the way root opens a file someone else may have made: beneath the
/// directory, no symlink, a regular file of the job's user.
fn open_user_file(f: &Fanout, dir: &File, name: &str) -> Result<(File, u64), FanoutError> {
    let path = f.drop_dir.join(name);
    let io = |source| FanoutError::Io {
        path: path.clone(),
        source,
    };
    let file = open_read_beneath(dir, Path::new(name)).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() || meta.uid() != f.user.uid {
        return Err(FanoutError::BadNotice(format!(
            "{} is not a regular file of the job's user",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

fn read_user_file(f: &Fanout, dir: &File, name: &str, max: u64) -> Result<Vec<u8>, FanoutError> {
    let (file, len) = open_user_file(f, dir, name)?;
    if len > max {
        return Err(FanoutError::BadNotice(format!("{name} is too large")));
    }
    let mut bytes = Vec::new();
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|source| FanoutError::Io {
            path: f.drop_dir.join(name),
            source,
        })?;
    Ok(bytes)
}

/// Copies the broadcast file into a work directory of the store, hashing what is copied (the
/// user may change the file meanwhile: only the copy counts), and installs it if it is the
/// image the notice names.
fn install(
    f: &Fanout,
    store: &Store,
    r: &ImageRef,
    sha256: &str,
    size: u64,
    meta: &ImageMeta,
) -> Result<StoredImage, FanoutError> {
    let store_err = |e: crate::image::store::StoreError| FanoutError::Mismatch(e.to_string());
    let what = format!("another import of {}", r.display());
    let lock = store
        .lock_digest(&f.digest, LockMode::Exclusive, &what, store.lock_timings())
        .map_err(store_err)?;
    if let Some(image) = store.lookup_digest(&f.digest).map_err(store_err)? {
        store.record(r, &image).map_err(store_err)?;
        return Ok(image);
    }
    let dir = File::open(&f.drop_dir).map_err(|source| FanoutError::Io {
        path: f.drop_dir.clone(),
        source,
    })?;
    let (mut src, len) = open_user_file(f, &dir, &f.data_name())?;
    if len != size {
        return Err(FanoutError::Mismatch(format!(
            "{} bytes, the first node sent {size}",
            len
        )));
    }
    let work = store.work_dir().map_err(store_err)?;
    let target = work.path().join("image.squashfs");
    let io = |source| FanoutError::Io {
        path: target.clone(),
        source,
    };
    let mut dst = File::create(&target).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut copied = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > size {
            return Err(FanoutError::Mismatch(
                "the file grew while it was read".into(),
            ));
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io)?;
    }
    drop(dst);
    let got = hex::encode(hasher.finalize());
    if got != sha256 || copied != size {
        return Err(FanoutError::Mismatch(format!(
            "sha256 {got}, the first node's is {sha256}"
        )));
    }
    let image = store
        .install(&lock, &f.digest, &target, meta)
        .map_err(store_err)?;
    store.record(r, &image).map_err(store_err)?;
    drop(lock);
    Ok(image)
}
