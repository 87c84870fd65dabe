//! The image store: squashfs files keyed by manifest digest, plus one Sarus-style index per user.
//!
//! ```text
//! <root>/images/sha256-<hex>.squashfs   the image (appears only by rename, when complete)
//! <root>/images/sha256-<hex>.meta       its Sarus .meta (ImageMeta JSON)
//! <root>/users/<uid>/metadata.json      the references that user pulled (Sarus format)
//! <root>/users/<uid>/metadata.lock      flock for that index
//! <root>/locks/sha256-<hex>.lock        per-digest lock: import (exclusive), reuse (shared)
//! <root>/tmp/import-<random>/           in-progress imports, each flock'd while alive
//! ```
//!
//! Lock order: digest lock, then index lock; never the other way round. Whoever adds a
//! reference to a digest holds that digest's lock (shared or exclusive), and `remove` holds it
//! exclusively while it checks every index for remaining references, so an image is never
//! deleted under a reference being recorded. A killed process leaves at worst an abandoned work
//! directory (removed by the next import) or an unreferenced image file.

mod evict;
mod index;
mod lock;

pub use evict::ImageUsage;

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use index::{format_utc, human_size, IndexEntry};
pub use lock::{clean_stale, Lock, LockMode, WorkDir};

use crate::config::LockTimings;
use crate::image::metadata::ImageMeta;
use crate::image::reference::{check_digest, DigestError, ImageRef};
use index::{set_perms, sync_dir, Index};
use lock::{acquire, Wait};

/// Prefix of work directories, in `<root>/tmp` and in the configured temp dir.
pub const WORK_PREFIX: &str = "import-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("index {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("gave up after {waited_s} s waiting for {what} (lock {path})")]
    LockTimeout {
        what: String,
        path: PathBuf,
        waited_s: u64,
    },
    #[error("image '{reference}' is not in the store")]
    NotFound { reference: String },
    #[error("invalid digest '{digest}': {reason}")]
    BadDigest {
        digest: String,
        #[source]
        reason: DigestError,
    },
}

/// An image as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    pub squashfs: PathBuf,
    pub meta: ImageMeta,
    /// Size of the squashfs file in bytes.
    pub size: u64,
}

pub struct Store {
    root: PathBuf,
    uid: u32,
    gid: u32,
    timings: LockTimings,
    /// Mode of the index directory and file: private to the user, or public for the
    /// centralized repository that every user reads.
    index_dir_mode: u32,
    index_file_mode: u32,
    notify: Box<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("uid", &self.uid)
            .finish()
    }
}

impl Store {
    /// Opens (creating what is missing) the store at `root` with `owner_uid`'s index.
    pub fn open(
        root: &Path,
        owner_uid: u32,
        owner_gid: u32,
        timings: &LockTimings,
    ) -> Result<Store, StoreError> {
        let s = Store::open_readonly(root, owner_uid, owner_gid, timings);
        s.create_layout()?;
        Ok(s)
    }

    /// The centralized repository: one index, readable by everyone, written by root.
    pub fn open_centralized(root: &Path, timings: &LockTimings) -> Result<Store, StoreError> {
        let s = Store::open_centralized_readonly(root, timings);
        s.create_layout()?;
        Ok(s)
    }

    /// For readers that may not create anything (a user listing their own images).
    pub fn open_readonly(
        root: &Path,
        owner_uid: u32,
        owner_gid: u32,
        timings: &LockTimings,
    ) -> Store {
        Store {
            root: root.to_path_buf(),
            uid: owner_uid,
            gid: owner_gid,
            timings: timings.clone(),
            index_dir_mode: 0o750,
            index_file_mode: 0o640,
            notify: Box::new(|m| eprintln!("egret: {m}")),
        }
    }

    pub fn open_centralized_readonly(root: &Path, timings: &LockTimings) -> Store {
        Store {
            index_dir_mode: 0o755,
            index_file_mode: 0o644,
            ..Store::open_readonly(root, 0, 0, timings)
        }
    }

    /// Where lock-wait messages go (default: stderr).
    pub fn with_notifier(mut self, notify: impl Fn(&str) + Send + Sync + 'static) -> Store {
        self.notify = Box::new(notify);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_timings(&self) -> &LockTimings {
        &self.timings
    }

    pub fn notify(&self, msg: &str) {
        (self.notify)(msg)
    }

    fn create_layout(&self) -> Result<(), StoreError> {
        // images/ is traversable but not listable: a private image's file cannot be found by
        // someone who does not already know its digest.
        if let Some(parent) = self.root.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        mkdir(&self.root, 0o755, None)?;
        mkdir(&self.root.join("images"), 0o711, None)?;
        mkdir(&self.root.join("users"), 0o755, None)?;
        mkdir(&self.root.join("locks"), 0o700, None)?;
        mkdir(&self.root.join("tmp"), 0o700, None)?;
        mkdir(&self.user_dir(), self.index_dir_mode, Some(self.gid))?;
        Ok(())
    }

    fn user_dir(&self) -> PathBuf {
        self.root.join("users").join(self.uid.to_string())
    }

    fn index_path(&self) -> PathBuf {
        self.user_dir().join("metadata.json")
    }

    /// `images/sha256-<hex>.squashfs` and `.meta` for a digest.
    pub fn image_paths(&self, digest: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        let stem = digest_stem(digest)?;
        let dir = self.root.join("images");
        Ok((
            dir.join(format!("{stem}.squashfs")),
            dir.join(format!("{stem}.meta")),
        ))
    }

    fn index_lock(&self, mode: LockMode) -> Result<Option<Lock>, StoreError> {
        let what = format!("the image index of user {}", self.uid);
        let wait = Wait {
            what: &what,
            timings: &self.timings,
            announce_at_once: false,
            notify: &*self.notify,
        };
        let path = self.user_dir().join("metadata.lock");
        match mode {
            LockMode::Exclusive => acquire(&path, mode, true, &wait),
            // Readers that cannot open the lock file (not created yet, or not theirs to open)
            // still read a consistent index: it is only ever replaced by rename.
            LockMode::Shared => match acquire(&path, mode, false, &wait) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == io::ErrorKind::PermissionDenied =>
                {
                    Ok(None)
                }
                other => other,
            },
        }
    }

    /// Locks a digest: exclusive to import or delete it, shared to reuse it. `wait_what` is
    /// how a waiter describes it ("another import of X"); `timings` bound the wait.
    pub fn lock_digest(
        &self,
        digest: &str,
        mode: LockMode,
        wait_what: &str,
        timings: &LockTimings,
    ) -> Result<Lock, StoreError> {
        let stem = digest_stem(digest)?;
        let path = self.root.join("locks").join(format!("{stem}.lock"));
        let wait = Wait {
            what: wait_what,
            timings,
            announce_at_once: true,
            notify: &*self.notify,
        };
        Ok(acquire(&path, mode, true, &wait)?.expect("created"))
    }

    /// A fresh locked directory under `<root>/tmp` (same filesystem as `images/`, so the
    /// result can be renamed into place).
    pub fn work_dir(&self) -> Result<WorkDir, StoreError> {
        WorkDir::create(&self.root.join("tmp"), WORK_PREFIX)
    }

    /// Removes work directories of imports that died. Returns how many.
    pub fn clean_stale(&self) -> usize {
        clean_stale(&self.root.join("tmp"), WORK_PREFIX)
    }

    /// The user's index entry for `r` (by tag, or by digest), if its image is still there.
    pub fn lookup(&self, r: &ImageRef) -> Result<Option<StoredImage>, StoreError> {
        let Some(entry) = self.find(r)? else {
            return Ok(None);
        };
        self.lookup_digest(&entry.registry_digest)
    }

    /// The user's index entry for `r`, whether or not the image file is still present.
    /// Lock-free: the index is only ever replaced by rename, so a reader sees the old file or
    /// the new one, and never queues behind a writer (on a store shared by many nodes, every
    /// node of a step reads at once).
    pub fn find(&self, r: &ImageRef) -> Result<Option<IndexEntry>, StoreError> {
        let index = Index::read(&self.index_path())?;
        Ok(index.images.into_iter().find(|e| e.matches(r)))
    }

    /// The stored image for a manifest digest, if complete (both files present and readable).
    pub fn lookup_digest(&self, digest: &str) -> Result<Option<StoredImage>, StoreError> {
        let (squashfs, meta_path) = self.image_paths(digest)?;
        let size = match std::fs::symlink_metadata(&squashfs) {
            Ok(m) => {
                if nix::unistd::geteuid().is_root() {
                    // Stores made before images were private: closed on first use.
                    if m.mode() & 0o077 != 0 && m.uid() == 0 {
                        for p in [&squashfs, &meta_path] {
                            let mode = std::fs::Permissions::from_mode(IMAGE_MODE);
                            let _ = std::fs::set_permissions(p, mode);
                        }
                    }
                    // The use that least-recently-used collection orders by.
                    self.touch(digest);
                }
                m.len()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: squashfs,
                    source,
                })
            }
        };
        let meta = match std::fs::read(&meta_path) {
            Ok(bytes) => match serde_json::from_slice::<ImageMeta>(&bytes) {
                Ok(m) => m,
                // A damaged .meta makes the image incomplete: the next import replaces it.
                Err(_) => return Ok(None),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: meta_path,
                    source,
                })
            }
        };
        Ok(Some(StoredImage {
            digest: digest.to_string(),
            squashfs,
            meta,
            size,
        }))
    }

    /// The user's index, in the order the entries were recorded.
    pub fn list(&self) -> Result<Vec<IndexEntry>, StoreError> {
        let _lock = self.index_lock(LockMode::Shared)?;
        Ok(Index::read(&self.index_path())?.images)
    }

    /// Records in the user's index that `r` resolves to `img` (replacing an older entry for the
    /// same key). The caller holds `img`'s digest lock.
    pub fn record(&self, r: &ImageRef, img: &StoredImage) -> Result<IndexEntry, StoreError> {
        let (namespace, image) = match r.repository.rsplit_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), r.repository.clone()),
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let entry = IndexEntry {
            unique_key: IndexEntry::key_for(r),
            server: r.registry.clone(),
            namespace,
            image,
            tag: if r.digest.is_some() {
                String::new()
            } else {
                r.tag.clone().unwrap_or_default()
            },
            digest: String::new(),
            registry_digest: img.digest.clone(),
            id: img.meta.image_id.clone().unwrap_or_default(),
            image_path: img.squashfs.display().to_string(),
            metadata_path: self.image_paths(&img.digest)?.1.display().to_string(),
            datasize: human_size(img.size),
            created: format_utc(now),
        };
        let path = self.index_path();
        // Already recorded so (every later step of a job): nothing to write, no lock to take.
        let same = |e: &IndexEntry| {
            e.unique_key == entry.unique_key
                && e.registry_digest == entry.registry_digest
                && e.image_path == entry.image_path
        };
        if let Some(known) = Index::read(&path)?.images.into_iter().find(same) {
            return Ok(known);
        }
        let _lock = self.index_lock(LockMode::Exclusive)?;
        let mut index = Index::read(&path)?;
        index.images.retain(|e| e.unique_key != entry.unique_key);
        index.images.push(entry.clone());
        index.write(&path, self.index_file_mode, Some(self.gid))?;
        Ok(entry)
    }

    /// Removes `r` from the user's index (a digest removes every tag of that repository that
    /// resolved to it), then deletes the image files if no index references them any more.
    /// Running containers keep their loop mount of the unlinked file.
    pub fn remove(&self, r: &ImageRef) -> Result<Vec<IndexEntry>, StoreError> {
        let removed = {
            let _lock = self.index_lock(LockMode::Exclusive)?;
            let path = self.index_path();
            let mut index = Index::read(&path)?;
            let (gone, kept): (Vec<_>, Vec<_>) =
                index.images.into_iter().partition(|e| e.matches(r));
            if gone.is_empty() {
                return Err(StoreError::NotFound {
                    reference: r.display(),
                });
            }
            index.images = kept;
            index.write(&path, self.index_file_mode, Some(self.gid))?;
            gone
        };
        let mut digests: Vec<&str> = removed.iter().map(|e| e.registry_digest.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        for d in digests {
            self.collect(d)?;
        }
        Ok(removed)
    }

    /// Deletes a digest's files when no user's index mentions it (call it after updating the
    /// index, so the last of several concurrent removers sees every removal). Returns whether
    /// it deleted them.
    pub fn collect(&self, digest: &str) -> Result<bool, StoreError> {
        let what = format!("the lock of image {digest}");
        let lock = self.lock_digest(digest, LockMode::Exclusive, &what, &self.timings)?;
        if self.referenced(digest)? {
            return Ok(false);
        }
        self.remove_image_files(digest, lock)?;
        Ok(true)
    }

    /// Deletes a digest's squashfs and `.meta` (and its lock file) under its exclusive `lock`.
    /// Returns whether there was anything to delete.
    fn remove_image_files(&self, digest: &str, lock: Lock) -> Result<bool, StoreError> {
        let (squashfs, meta) = self.image_paths(digest)?;
        let all_root = crate::image::all_root::path_for(&squashfs);
        let mut any = false;
        for p in [&squashfs, &meta, &all_root] {
            match std::fs::remove_file(p) {
                Ok(()) => any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        path: p.clone(),
                        source,
                    })
                }
            }
        }
        // Waiters re-check the inode after locking, so the lock file can go while held.
        let _ = std::fs::remove_file(&lock.path);
        drop(lock);
        let images = self.root.join("images");
        sync_dir(&images).map_err(|source| StoreError::Io {
            path: images,
            source,
        })?;
        Ok(any)
    }

    /// Whether any index mentions `digest`. Indexes are read without their locks: they are
    /// replaced atomically, and nobody can add this digest while we hold its lock. An index
    /// that cannot be read counts as a reference (never delete on doubt).
    fn referenced(&self, digest: &str) -> Result<bool, StoreError> {
        let users = self.root.join("users");
        let entries = std::fs::read_dir(&users).map_err(|source| StoreError::Io {
            path: users.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: users.clone(),
                source,
            })?;
            let path = entry.path().join("metadata.json");
            match Index::read(&path) {
                Ok(index) if index.images.iter().any(|e| e.registry_digest == digest) => {
                    return Ok(true)
                }
                Ok(_) => {}
                Err(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Records `digest` as the store's copy of the user's squashfs file at `path` and returns
    /// the copy it replaces, if any (`users/<uid>/files/<sha256 of the path>`, root's).
    pub fn replace_user_file_copy(&self, path: &Path, digest: &str) -> Option<String> {
        use sha2::{Digest, Sha256};
        let dir = self.user_dir().join("files");
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let key = hex::encode(Sha256::digest(path.as_os_str().as_encoded_bytes()));
        let record = dir.join(key);
        let old = std::fs::read_to_string(&record).ok();
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        if write_synced(&tmp, digest.as_bytes())
            .and_then(|_| std::fs::rename(&tmp, &record))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
        old.map(|o| o.trim().to_string())
            .filter(|o| o != digest && check_digest(o).is_ok())
    }

    /// Moves a finished import into place: `.meta` first, then the squashfs, whose appearance
    /// is what makes the image exist. The caller holds the digest's exclusive lock.
    pub fn install(
        &self,
        _lock: &Lock,
        digest: &str,
        squashfs: &Path,
        meta: &ImageMeta,
    ) -> Result<StoredImage, StoreError> {
        let (final_sqfs, final_meta) = self.image_paths(digest)?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let meta_tmp = squashfs.with_extension("meta");
        let mut body = serde_json::to_vec_pretty(meta).expect("meta serializes");
        body.push(b'\n');
        write_synced(&meta_tmp, &body).map_err(io_err(&meta_tmp))?;
        let f = std::fs::File::open(squashfs).map_err(io_err(squashfs))?;
        set_perms(&f, IMAGE_MODE, None).map_err(io_err(squashfs))?;
        f.sync_all().map_err(io_err(squashfs))?;
        let size = f.metadata().map_err(io_err(squashfs))?.len();
        std::fs::rename(&meta_tmp, &final_meta).map_err(io_err(&final_meta))?;
        std::fs::rename(squashfs, &final_sqfs).map_err(io_err(&final_sqfs))?;
        let images = self.root.join("images");
        sync_dir(&images).map_err(io_err(&images))?;
        Ok(StoredImage {
            digest: digest.to_string(),
            squashfs: final_sqfs,
            meta: meta.clone(),
            size,
        })
    }
}

fn write_synced(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(body)?;
    set_perms(&f, IMAGE_MODE, None)?;
    f.sync_all()
}

/// Image files (squashfs and `.meta`) are root's alone: a user reaches an image only through
/// their own index (root mounts it for them) or their own file. Their names are no secret
/// (`/sys/block/loop*/loop/backing_file`), their bytes are.
pub const IMAGE_MODE: u32 = 0o600;

/// `sha256:<hex>` → `sha256-<hex>`, validating it: digests come from registries and indexes,
/// and end up in file names.
fn digest_stem(digest: &str) -> Result<String, StoreError> {
    check_digest(digest).map_err(|reason| StoreError::BadDigest {
        digest: digest.to_string(),
        reason,
    })?;
    Ok(digest.replacen(':', "-", 1))
}

/// Creates a directory with `mode` (and group `gid` when running as root) if it is missing;
/// an existing one is left as the admin made it.
fn mkdir(path: &Path, mode: u32, gid: Option<u32>) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask may have narrowed the mode.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io_err)?;
            if let Some(g) = gid {
                if nix::unistd::geteuid().is_root() {
                    std::os::unix::fs::chown(path, None, Some(g)).map_err(io_err)?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests;
