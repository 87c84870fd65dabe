//! The store's size bound (`localRepositoryMaxBytes`): least-recently-used images are deleted
//! until the store fits. A use is recorded as the `.meta` file's mtime ([`Store::touch`]).
//!
//! An evicted image's index entries stay (Sarus's `images` keeps listing what the user pulled);
//! its next use imports it again. A running container keeps its loop mount of the unlinked file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{digest_stem, LockMode, Store, StoreError};

/// One image file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    pub digest: String,
    pub squashfs: PathBuf,
    /// Bytes of the squashfs and its `.meta`.
    pub bytes: u64,
    pub last_use: SystemTime,
}

impl Store {
    /// Records that `digest` was used now (root only; a user's store is not bounded).
    pub fn touch(&self, digest: &str) {
        let Ok((_, meta)) = self.image_paths(digest) else {
            return;
        };
        let now = nix::sys::time::TimeSpec::UTIME_NOW;
        let _ = nix::sys::stat::utimensat(
            None,
            &meta,
            &now,
            &now,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }

    /// Every complete image file with its size and last use, least recently used first.
    pub fn usage(&self) -> Result<Vec<ImageUsage>, StoreError> {
        let dir = self.root.join("images");
        let io_err = |source| StoreError::Io {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".squashfs")) else {
                continue;
            };
            let digest = stem.replacen('-', ":", 1);
            if digest_stem(&digest).is_err() {
                continue;
            }
            let Ok(sq) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let meta = std::fs::symlink_metadata(dir.join(format!("{stem}.meta"))).ok();
            let last_use = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .or_else(|| sq.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(ImageUsage {
                digest,
                squashfs: entry.path(),
                bytes: sq.len()
                    + meta.map_or(0, |m| m.len())
                    + std::fs::symlink_metadata(crate::image::all_root::path_for(&entry.path()))
                        .map_or(0, |m| m.len()),
                last_use,
            });
        }
        out.sort_by(|a, b| (a.last_use, &a.digest).cmp(&(b.last_use, &b.digest)));
        Ok(out)
    }

    /// Deletes least-recently-used images until the store holds at most `max_bytes`, never one
    /// whose squashfs `keep` names (the image about to be used, a named container's). Returns
    /// the digests deleted; stops short when only kept images are left.
    pub fn evict_to(
        &self,
        max_bytes: u64,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let images = self.usage()?;
        let mut total: u64 = images.iter().map(|i| i.bytes).sum();
        let mut evicted = Vec::new();
        for img in images {
            if total <= max_bytes {
                break;
            }
            if keep(&img.squashfs) {
                continue;
            }
            if self.delete_image(&img.digest)? {
                total = total.saturating_sub(img.bytes);
                evicted.push(img.digest);
            }
        }
        Ok(evicted)
    }

    /// Deletes a digest's files under its exclusive lock (an import or reuse in progress is
    /// waited for). Returns whether they were there.
    fn delete_image(&self, digest: &str) -> Result<bool, StoreError> {
        let what = format!("the lock of image {digest}");
        let lock = self.lock_digest(digest, LockMode::Exclusive, &what, &self.timings)?;
        self.remove_image_files(digest, lock)
    }
}
