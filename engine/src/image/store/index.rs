//! A user's `metadata.json`, in Sarus' format: which references that user pulled, and the
//! stored image (by manifest digest) each one resolved to.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::image::reference::{short_repository, ImageRef};

/// One line of `egret images`. Field names and meanings follow Sarus' metadata.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// `server/namespace/image:tag`, or `…@sha256:…` for an image pulled by digest.
    pub unique_key: String,
    pub server: String,
    /// Everything between the server and the last path component (`library`, `nvidia`, …).
    pub namespace: String,
    pub image: String,
    /// Empty for an image pulled by digest.
    pub tag: String,
    /// Always empty: Sarus ≤ 1.4 kept another digest here.
    #[serde(default)]
    pub digest: String,
    /// The manifest digest the reference resolved to: the store key.
    pub registry_digest: String,
    /// The image ID: hex sha256 of the image config.
    #[serde(default)]
    pub id: String,
    pub image_path: String,
    pub metadata_path: String,
    /// Human-readable size, e.g. `2.59MB`.
    #[serde(default)]
    pub datasize: String,
    /// When it was stored, `YYYY-MM-DDTHH:MM:SS` (UTC).
    #[serde(default)]
    pub created: String,
}

impl IndexEntry {
    /// The unique key a reference is recorded under: the digest wins over the tag (Sarus).
    pub fn key_for(r: &ImageRef) -> String {
        match (&r.digest, &r.tag) {
            (Some(d), _) => format!("{}@{d}", r.name()),
            (None, Some(t)) => format!("{}:{t}", r.name()),
            (None, None) => format!("{}:latest", r.name()),
        }
    }

    pub fn repository(&self) -> String {
        if self.namespace.is_empty() {
            self.image.clone()
        } else {
            format!("{}/{}", self.namespace, self.image)
        }
    }

    /// The reference this entry answers to (by tag, or by digest when it has no tag).
    pub fn image_ref(&self) -> ImageRef {
        ImageRef {
            registry: self.server.clone(),
            repository: self.repository(),
            tag: (!self.tag.is_empty()).then(|| self.tag.clone()),
            digest: self.tag.is_empty().then(|| self.registry_digest.clone()),
        }
    }

    /// What `images` prints in the REPOSITORY column.
    pub fn short_repository(&self) -> String {
        short_repository(&self.server, &self.repository())
    }

    /// Does `r` name this entry? A digest matches any entry of that repository with that
    /// digest; a tag matches only its own key.
    pub fn matches(&self, r: &ImageRef) -> bool {
        if self.server != r.registry || self.repository() != r.repository {
            return false;
        }
        match &r.digest {
            // The key covers a digest that named a manifest list (the entry then records the
            // digest of the platform's manifest).
            Some(d) => &self.registry_digest == d || self.unique_key == Self::key_for(r),
            None => self.unique_key == Self::key_for(r),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub images: Vec<IndexEntry>,
}

impl Index {
    /// A missing file is an empty index; an unreadable or corrupt one is an error (silently
    /// starting over would lose the user's list).
    pub fn read(path: &Path) -> Result<Index, StoreError> {
        let mut text = Vec::new();
        match File::open(path) {
            Ok(mut f) => f.read_to_end(&mut text).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|source| StoreError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Replaces `path` atomically: temp file, fsync, rename, fsync of the directory. A reader
    /// (or a crash) sees the old file or the new one, never a mix.
    pub fn write(&self, path: &Path, mode: u32, gid: Option<u32>) -> Result<(), StoreError> {
        let dir = path.parent().expect("index path has a parent");
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".metadata.json.")
            .tempfile_in(dir)
            .map_err(io_err)?;
        let mut body = serde_json::to_vec_pretty(self).expect("index serializes");
        body.push(b'\n');
        tmp.as_file().write_all(&body).map_err(io_err)?;
        set_perms(tmp.as_file(), mode, gid).map_err(io_err)?;
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        sync_dir(dir).map_err(io_err)
    }
}

pub(crate) fn set_perms(f: &File, mode: u32, gid: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = gid {
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(f, None, Some(g))?;
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?
        .sync_all()
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC for a Unix time (days-to-civil conversion of the proleptic
/// Gregorian calendar; no time zone database needed).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Sarus' size style: megabytes with two decimals.
pub fn human_size(bytes: u64) -> String {
    format!("{:.2}MB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31T23:59:59");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(2_715_000), "2.59MB");
        assert_eq!(human_size(0), "0.00MB");
    }

    #[test]
    fn keys_and_matching() {
        let d = format!("sha256:{}", "a".repeat(64));
        let tagged = ImageRef::parse("alpine:3").unwrap();
        assert_eq!(IndexEntry::key_for(&tagged), "docker.io/library/alpine:3");
        let both = ImageRef::parse(&format!("alpine:3@{d}")).unwrap();
        assert_eq!(
            IndexEntry::key_for(&both),
            format!("docker.io/library/alpine@{d}")
        );
        let e = IndexEntry {
            unique_key: IndexEntry::key_for(&tagged),
            server: "docker.io".into(),
            namespace: "library".into(),
            image: "alpine".into(),
            tag: "3".into(),
            digest: String::new(),
            registry_digest: d.clone(),
            id: String::new(),
            image_path: String::new(),
            metadata_path: String::new(),
            datasize: String::new(),
            created: String::new(),
        };
        assert!(e.matches(&tagged));
        assert!(
            e.matches(&both),
            "a digest matches whatever tag it was pulled under"
        );
        assert!(!e.matches(&ImageRef::parse("alpine").unwrap()));
        assert!(!e.matches(&ImageRef::parse("other:3").unwrap()));
        assert_eq!(e.short_repository(), "alpine");
        assert_eq!(e.image_ref(), tagged);
    }

    #[test]
    fn sarus_metadata_json_parses() {
        let text = r#"{"images":[{"uniqueKey":"docker.io/library/alpine:latest",
            "server":"docker.io","namespace":"library","image":"alpine","tag":"latest",
            "digest":"","registryDigest":"sha256:73c1","id":"a366738a1861",
            "imagePath":"/x/alpine/latest.squashfs","metadataPath":"/x/alpine/latest.meta",
            "datasize":"2.59MB","created":"2022-05-25T09:19:59"}]}"#;
        let idx: Index = serde_json::from_str(text).unwrap();
        assert_eq!(idx.images[0].registry_digest, "sha256:73c1");
        let back = serde_json::to_value(&idx).unwrap();
        assert_eq!(back["images"][0]["registryDigest"], "sha256:73c1");
        assert_eq!(
            back["images"][0]["uniqueKey"],
            "docker.io/library/alpine:latest"
        );
    }
}
