//! flock-based locks and locked work directories.
//!
//! Lock files may be unlinked by whoever holds them exclusively (`rmi` drops a digest's lock
//! file with the image), so every acquisition checks, once it holds the lock, that the path
//! still names the inode it locked, and starts over if not.
//!
//! Locks are polled (non-blocking attempts every 100 ms) rather than blocking, so a waiter can
//! say why it waits and give up after the configured time.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::StoreError;
use crate::config::LockTimings;

const POLL: Duration = Duration::from_millis(100);
/// A work directory is considered abandoned after this long when locks do not work at all.
const STALE_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held flock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub(crate) path: PathBuf,
}

/// How a waiter talks: what it waits for, and when it says so.
pub(crate) struct Wait<'a> {
    pub what: &'a str,
    pub timings: &'a LockTimings,
    /// Say so at the first failed attempt (an import of a whole image is worth announcing at
    /// once); otherwise only after `warningMs`, since index locks are held for milliseconds.
    pub announce_at_once: bool,
    pub notify: &'a dyn Fn(&str),
}

/// Takes a lock on `path`, creating the file (0644) when `create`. Returns `Ok(None)` when the
/// file does not exist and `create` is false.
pub(crate) fn acquire(
    path: &Path,
    mode: LockMode,
    create: bool,
    wait: &Wait<'_>,
) -> Result<Option<Lock>, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let start = Instant::now();
    let mut last_notice: Option<Instant> = None;
    loop {
        let file = match OpenOptions::new()
            .read(true)
            .create(create)
            .write(create)
            .mode(0o644)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let attempt = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => {
                if same_inode(&file, path) {
                    return Ok(Some(Lock {
                        _file: file,
                        path: path.to_path_buf(),
                    }));
                }
                // Unlinked (or replaced) between open and lock: try again on the new file.
                continue;
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        drop(file);
        let waited = start.elapsed();
        if waited >= Duration::from_millis(wait.timings.timeout_ms) {
            return Err(StoreError::LockTimeout {
                what: wait.what.to_string(),
                path: path.to_path_buf(),
                waited_s: waited.as_secs(),
            });
        }
        let warn_every = Duration::from_millis(wait.timings.warning_ms.max(1));
        let due = match last_notice {
            None => wait.announce_at_once || waited >= warn_every,
            Some(t) => t.elapsed() >= warn_every,
        };
        if due {
            let secs = waited.as_secs();
            if secs == 0 {
                (wait.notify)(&format!("waiting for {}", wait.what));
            } else {
                (wait.notify)(&format!("still waiting for {} ({secs} s)", wait.what));
            }
            last_notice = Some(Instant::now());
        }
        std::thread::sleep(POLL);
    }
}

fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A directory for one import's in-progress files, locked for as long as it exists, so a later
/// import can tell an abandoned one (lock free: its owner died) from a running one.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Creates `<parent>/<prefix><random>` (0700) and locks it.
    pub fn create(parent: &Path, prefix: &str) -> Result<WorkDir, StoreError> {
        let io_err = |source| StoreError::Io {
            path: parent.to_path_buf(),
            source,
        };
        loop {
            let path = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(parent)
                .map_err(io_err)?
                .keep();
            // A concurrent cleanup sees the new directory unlocked for a moment and may remove
            // it before it is opened or after it is locked: either way, start over.
            let dir = match File::open(&path) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            };
            match dir.try_lock() {
                Ok(()) if same_inode(&dir, &path) => return Ok(WorkDir { path, _lock: dir }),
                Ok(()) | Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Failed or finished: either way nothing in here is wanted any more.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes `<parent>/<prefix>*` directories left by imports that died (their lock is free).
/// Only directories owned by us are considered: `parent` may be a shared /var/tmp.
/// Returns how many were removed.
pub fn clean_stale(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Ok(dir) = File::open(&path) else { continue };
        let abandoned = match dir.try_lock() {
            Ok(()) => same_inode(&dir, &path),
            Err(TryLockError::WouldBlock) => false,
            // No working locks on this filesystem: fall back to age.
            Err(TryLockError::Error(_)) => meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > STALE_AGE),
        };
        if abandoned && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}
