//! Manifests and OCI layouts: which manifest a reference resolves to, and what a downloaded
//! layout holds (config, layers), with every blob checked against its digest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::image::metadata::ImageMeta;
use crate::image::reference::check_digest;
use crate::image::registry::OCI_REF_NAME;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Manifests, configs and index.json are small; anything bigger is not one.
const MAX_JSON: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("manifest of {reference}: {reason}")]
    Manifest { reference: String, reason: String },
    #[error("OCI layout {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// Both single manifests and indexes (OCI or Docker), parsed leniently: only what we use.
#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The image manifest's digest: the store key.
    pub digest: String,
    /// The digest of the index it was picked from, if the reference named an index.
    pub index_digest: Option<String>,
    /// Sum of the layer sizes, when the manifest itself was fetched.
    pub download_size: Option<u64>,
    pub layers: Option<usize>,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Resolves raw manifest bytes: the digest of exactly these bytes, or, for a manifest list /
/// index, the entry for `os`/`arch`.
pub fn resolve(raw: &[u8], reference: &str, os: &str, arch: &str) -> Result<Resolved, OciError> {
    let bad = |reason: String| OciError::Manifest {
        reference: reference.to_string(),
        reason,
    };
    let m: AnyManifest =
        serde_json::from_slice(raw).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let digest = sha256_digest(raw);
    if m.schema_version == 1 || m.media_type.contains("distribution.manifest.v1") {
        return Err(bad(
            "Docker schema 1 images are not supported; re-push the image".into(),
        ));
    }
    let is_index = m.media_type == OCI_INDEX
        || m.media_type == DOCKER_LIST
        || (m.media_type.is_empty() && m.manifests.is_some());
    if is_index {
        let entries = m.manifests.unwrap_or_default();
        let pick = entries.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        });
        let Some(pick) = pick else {
            let mut have: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            have.dedup();
            return Err(bad(format!(
                "no {os}/{arch} image in this manifest list (it has: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )));
        };
        check_digest(&pick.digest).map_err(|e| bad(format!("entry for {os}/{arch}: {e}")))?;
        return Ok(Resolved {
            digest: pick.digest.clone(),
            index_digest: Some(digest),
            download_size: None,
            layers: None,
        });
    }
    if !(m.media_type.is_empty() || m.media_type == OCI_MANIFEST || m.media_type == DOCKER_MANIFEST)
    {
        return Err(bad(format!("unsupported media type '{}'", m.media_type)));
    }
    let layers = m.layers.unwrap_or_default();
    Ok(Resolved {
        digest,
        index_digest: None,
        download_size: Some(layers.iter().map(|l| l.size).sum()),
        layers: Some(layers.len()),
    })
}

/// An image inside a complete OCI layout (`index.json`, `blobs/sha256/HEX`): what `load` reads.
#[derive(Debug, Clone)]
pub struct Layout {
    files: LayoutFiles,
    /// Digest of the manifest blob in the layout (skopeo may have converted a Docker manifest
    /// in an OCI layout, so there this need not be the registry's digest).
    pub manifest_digest: String,
    pub config_digest: String,
    pub meta: ImageMeta,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// How a layout's files are reached: through one descriptor of its directory, every file opened
/// below it without following links (`openat2`), never through a path resolved again. When the
/// directory was written by someone else (a user's skopeo), only regular files that user owns,
/// with one link, are read: a link to a file the user could not read is never opened by root.
#[derive(Debug, Clone)]
struct LayoutFiles {
    dir: PathBuf,
    fd: Arc<OwnedFd>,
    owner: Option<u32>,
}

impl LayoutFiles {
    /// The root-created directory `dir` (its last component not followed).
    fn open(dir: &Path) -> Result<Self, OciError> {
        let fd = crate::sys::fs::open_dir(dir).map_err(|source| OciError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(LayoutFiles {
            dir: dir.to_path_buf(),
            fd: Arc::new(fd),
            owner: None,
        })
    }

    fn blob_name(&self, digest: &str) -> Result<PathBuf, OciError> {
        // Digests come from files we parse: validate before they become a path.
        check_digest(digest).map_err(|e| OciError::Layout {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let (algo, hex) = digest.split_once(':').expect("checked");
        Ok(Path::new("blobs").join(algo).join(hex))
    }

    /// Opens `name` below the directory: a regular file, and the owner's when one is set.
    fn open_file(&self, name: &Path) -> Result<File, OciError> {
        let path = self.dir.join(name);
        let bad = |reason: String| OciError::Layout {
            path: path.clone(),
            reason,
        };
        let f =
            crate::sys::fs::open_read_beneath(&*self.fd, name).map_err(|source| OciError::Io {
                path: path.clone(),
                source,
            })?;
        let m = f.metadata().map_err(|source| OciError::Io {
            path: path.clone(),
            source,
        })?;
        if !m.is_file() {
            return Err(bad("not a regular file".into()));
        }
        if let Some(uid) = self.owner {
            if m.uid() != uid || m.nlink() != 1 {
                return Err(bad(format!(
                    "not a file the download wrote (owner uid {}, {} links)",
                    m.uid(),
                    m.nlink()
                )));
            }
        }
        Ok(f)
    }

    fn read_small(&self, name: &Path) -> Result<Vec<u8>, OciError> {
        let mut bytes = Vec::new();
        self.open_file(name)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| OciError::Io {
                path: self.dir.join(name),
                source,
            })?;
        Ok(bytes)
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, OciError> {
        let name = self.blob_name(digest)?;
        let bytes = self.read_small(&name)?;
        let got = sha256_digest(&bytes);
        if got != digest {
            return Err(OciError::Layout {
                path: self.dir.join(name),
                reason: format!("blob digest mismatch: expected {digest}, got {got}"),
            });
        }
        Ok(bytes)
    }
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    user: Option<String>,
}

impl Layout {
    /// Reads the OCI layout `dir` (root-created): index.json → manifest → config, verifying
    /// each blob's digest.
    pub fn read(dir: &Path) -> Result<Layout, OciError> {
        Layout::read_written_by(dir, None)
    }

    /// [`Layout::read`] of a layout written by `owner` (a user's skopeo) into a directory root
    /// created for them: only regular files `owner` owns, with one link, are read.
    pub fn read_written_by(dir: &Path, owner: Option<u32>) -> Result<Layout, OciError> {
        let mut files = LayoutFiles::open(dir)?;
        files.owner = owner;
        let bad = |reason: String| OciError::Layout {
            path: dir.to_path_buf(),
            reason,
        };
        let index: AnyManifest =
            serde_json::from_slice(&files.read_small(Path::new("index.json"))?)
                .map_err(|e| bad(format!("index.json: {e}")))?;
        let entries = index.manifests.unwrap_or_default();
        let named = entries.iter().find(|d| {
            d.annotations
                .get("org.opencontainers.image.ref.name")
                .map(String::as_str)
                == Some(OCI_REF_NAME)
        });
        let desc = match (named, entries.as_slice()) {
            (Some(d), _) => d,
            (None, [only]) => only,
            (None, []) => return Err(bad("no image in index.json".into())),
            (None, _) => return Err(bad("more than one image; cannot tell which to use".into())),
        };
        let manifest_bytes = files.read_blob(&desc.digest)?;
        let digest = desc.digest.clone();
        Layout::from_manifest(files, &manifest_bytes, digest)
    }

    fn from_manifest(
        files: LayoutFiles,
        manifest_bytes: &[u8],
        manifest_digest: String,
    ) -> Result<Layout, OciError> {
        let dir = files.dir.clone();
        let bad = |reason: String| OciError::Layout {
            path: dir.clone(),
            reason,
        };
        let m = ImageManifest::parse(manifest_bytes, &manifest_digest).map_err(bad)?;
        let config_bytes = files.read_blob(&m.config.digest)?;
        let meta = meta_from_config(&config_bytes, &m.config.digest).map_err(bad)?;
        Ok(Layout {
            files,
            manifest_digest,
            config_digest: m.config.digest,
            meta,
            layers: m.layers,
        })
    }

    /// Opens a layer for streaming; the reader fails at EOF if the digest or size is wrong.
    pub fn open_layer(&self, layer: &Descriptor) -> Result<VerifyingReader<File>, OciError> {
        let name = self.files.blob_name(&layer.digest)?;
        let f = self.files.open_file(&name)?;
        Ok(VerifyingReader::new(f, &layer.digest, Some(layer.size)))
    }
}

/// The parts of an image manifest an import uses, checked: a config, and layers that are
/// neither encrypted nor named by a malformed digest.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    pub config: Descriptor,
    /// Base first.
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Parses the manifest `digest` names; the error is the reason alone.
    pub fn parse(bytes: &[u8], digest: &str) -> Result<ImageManifest, String> {
        let m: AnyManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest {digest}: {e}"))?;
        if m.manifests.is_some() {
            return Err("the layout holds an index, not an image manifest".into());
        }
        let config = m.config.ok_or("manifest has no config")?;
        check_digest(&config.digest).map_err(|e| format!("config: {e}"))?;
        let layers = m.layers.unwrap_or_default();
        for l in &layers {
            if l.media_type.contains("encrypted") {
                return Err(format!(
                    "layer {} is encrypted ({})",
                    l.digest, l.media_type
                ));
            }
            check_digest(&l.digest).map_err(|e| format!("layer: {e}"))?;
        }
        Ok(ImageManifest { config, layers })
    }
}

/// The image metadata in `bytes`, the config blob `config` names as fetched from the registry
/// on its own (not from a layout), once they are checked against its digest and size.
pub fn meta_from_fetched_config(
    bytes: &[u8],
    config: &Descriptor,
    reference: &str,
) -> Result<ImageMeta, OciError> {
    let manifest_err = |reason| OciError::Manifest {
        reference: reference.to_string(),
        reason,
    };
    let got = sha256_digest(bytes);
    if got != config.digest || (config.size != 0 && bytes.len() as u64 != config.size) {
        return Err(manifest_err(format!(
            "the registry's image config is not the one its manifest names: expected {} \
             ({} bytes), got {got} ({} bytes)",
            config.digest,
            config.size,
            bytes.len()
        )));
    }
    meta_from_config(bytes, &config.digest).map_err(manifest_err)
}

/// The image metadata in the config blob `digest` (already verified).
fn meta_from_config(bytes: &[u8], digest: &str) -> Result<ImageMeta, String> {
    let cfg: ConfigFile =
        serde_json::from_slice(bytes).map_err(|e| format!("image config {digest}: {e}"))?;
    let c = cfg.config.unwrap_or_default();
    let platform = match (&cfg.os, &cfg.architecture, &cfg.variant) {
        (os, arch, _) if os.is_empty() && arch.is_empty() => None,
        (os, arch, Some(v)) => Some(format!("{os}/{arch}/{v}")),
        (os, arch, None) => Some(format!("{os}/{arch}")),
    };
    Ok(ImageMeta {
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        env: c.env.unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        user: c.user.filter(|u| !u.is_empty()),
        image_id: Some(digest.trim_start_matches("sha256:").to_string()),
        platform,
    })
}

/// The blobs of an OCI layout (`blobs/sha256/HEX`) while skopeo may still be writing it, in the
/// directory `fd` names, written by the user `owner`. skopeo renames a blob into its name once
/// it is complete; either way every byte is checked against the digest of a manifest this
/// process verified, never against anything skopeo wrote (its `index.json` and manifest are not
/// read at all).
#[derive(Debug, Clone)]
pub struct BlobDir {
    files: LayoutFiles,
}

impl BlobDir {
    pub fn new(dir: &Path, fd: OwnedFd, owner: Option<u32>) -> BlobDir {
        BlobDir {
            files: LayoutFiles {
                dir: dir.to_path_buf(),
                fd: Arc::new(fd),
                owner,
            },
        }
    }

    /// The blob `digest` names (to be read through a [`VerifyingReader`]), or None while it is
    /// not there yet.
    pub fn try_open(&self, digest: &str) -> Result<Option<File>, OciError> {
        let name = self.files.blob_name(digest)?;
        match self.files.open_file(&name) {
            Ok(f) => Ok(Some(f)),
            Err(OciError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The image metadata from the (verified) config blob `config`.
    pub fn read_config(&self, config: &Descriptor) -> Result<ImageMeta, OciError> {
        let bytes = self.files.read_blob(&config.digest)?;
        meta_from_config(&bytes, &config.digest).map_err(|reason| OciError::Layout {
            path: self.files.dir.clone(),
            reason,
        })
    }
}

/// Hashes what passes through and, at EOF, fails unless the digest (and size) match.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
    size: Option<u64>,
    seen: u64,
    checked: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, digest: &str, size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            expected: digest.to_string(),
            size,
            seen: 0,
            checked: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.seen += n as u64;
            return Ok(n);
        }
        if !self.checked && !buf.is_empty() {
            self.checked = true;
            let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob digest mismatch: expected {}, got {got}",
                        self.expected
                    ),
                ));
            }
            if let Some(size) = self.size.filter(|&s| s != self.seen) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob size mismatch: expected {size} bytes, got {}",
                        self.seen
                    ),
                ));
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_over_exact_bytes() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"sha256:00","size":5}]}"#;
        let mut with_newline = m.to_vec();
        with_newline.push(b'\n');
        let a = resolve(m, "x", "linux", "amd64").unwrap();
        let b = resolve(&with_newline, "x", "linux", "amd64").unwrap();
        assert_ne!(
            a.digest, b.digest,
            "a trailing newline is part of the manifest"
        );
        assert_eq!(b.digest, sha256_digest(&with_newline));
        assert_eq!(a.download_size, Some(5));
    }

    #[test]
    fn index_picks_the_host_platform() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"digest": d('a'), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": d('b'), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": d('c'), "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
            ]
        })
        .to_string();
        let r = resolve(idx.as_bytes(), "x", "linux", "amd64").unwrap();
        assert_eq!(r.digest, d('b'));
        assert_eq!(r.index_digest, Some(sha256_digest(idx.as_bytes())));
        let e = resolve(idx.as_bytes(), "x", "linux", "s390x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no linux/s390x") && e.contains("linux/arm64, linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        let e = resolve(br#"{"schemaVersion":1,"name":"x"}"#, "x", "linux", "amd64").unwrap_err();
        assert!(e.to_string().contains("schema 1"));
        assert!(resolve(b"<html>", "x", "linux", "amd64")
            .unwrap_err()
            .to_string()
            .contains("JSON"));
        let e = resolve(
            br#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
            "x",
            "linux",
            "amd64",
        );
        assert!(e.unwrap_err().to_string().contains("text/plain"));
    }

    #[test]
    fn verifying_reader_checks_at_eof() {
        let data = b"hello".to_vec();
        let good = sha256_digest(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], &good, Some(5))
            .read_to_end(&mut out)
            .unwrap();
        let bad = sha256_digest(b"other");
        let e = VerifyingReader::new(&data[..], &bad, None)
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        let e = VerifyingReader::new(&data[..], &good, Some(6))
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("size mismatch"), "{e}");
    }
}
