//! The streaming layer flattener: OCI layer blobs in, ONE merged tar out (for `mksquashfs -tar`).
//!
//! Layers are read top-down (last layer first), so the first entry seen for a path is the one
//! that survives, and whiteouts are known before the lower entries they hide. Every surviving
//! entry is re-emitted with a fresh, canonical header: mksquashfs never parses the untrusted
//! tars, and nothing is ever unpacked onto the host filesystem.
//!
//! Rules, for an entry at path P in layer L:
//! - hidden if an upper layer whited out P or an ancestor, made an ancestor opaque, emitted P
//!   already, or replaced an ancestor with a non-directory;
//! - an error if P is absolute or has a `..` component, or if an ancestor of P is a
//!   non-directory in the merged view that a naive extractor would follow (same layer, or an
//!   upper layer that put entries under a path this layer makes a non-directory);
//! - hardlinks are written after everything else (mksquashfs drops a link whose target it has
//!   not seen yet) and dropped with a warning when the target is not in the merged tree.
//!
//! Decompression runs ahead on threads of its own (see [`decode`]); the merge itself is
//! sequential, top-down.

mod decode;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Big reads keep the decompressors and the pipe to mksquashfs busy with few syscalls.
const READ_BUFFER: usize = 1 << 20;
const WRITE_BUFFER: usize = 1 << 20;
/// Hardlink chains longer than this are treated as broken (they can only come from a loop).
const MAX_LINK_CHAIN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("layer {layer}: cannot read: {source}")]
    Read {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: unsupported compression ({what}); only gzip, zstd and plain tar")]
    Compression { layer: String, what: &'static str },
    #[error("cannot write the merged tar: {source}")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: entry '{path}': {reason}")]
    UnsafeEntry {
        layer: String,
        path: String,
        reason: String,
    },
}

impl FlattenError {
    /// True when the consumer of the merged tar went away (mksquashfs died): its own error is
    /// the one worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, FlattenError::Write { source } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// One layer blob, in image order (base layer first). `name` (usually the digest) is what error
/// messages call it; the reader yields the blob as stored (compressed or not). It is read on a
/// decoder thread, hence `Send`.
pub struct LayerInput<'a> {
    pub name: String,
    pub reader: Box<dyn Read + Send + 'a>,
}

/// What the flattener tells its caller while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlattenEvent {
    /// Starting layer `index` (1-based, counted top-down) of `total`.
    Layer {
        index: usize,
        total: usize,
        name: String,
    },
    /// Something was dropped or ignored; the image is still usable.
    Warning(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlattenStats {
    /// Entries written, directories and hardlinks included.
    pub entries: u64,
    pub hardlinks: u64,
    pub dropped_hardlinks: u64,
    /// File content bytes written.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    /// A regular file, symlink, device node or fifo: anything a hardlink may point at.
    Leaf,
    HardLink,
}

/// What the merged view knows about one path. Layer numbers count top-down (0 = top layer);
/// for each marker the uppermost layer that set it is kept, which is all the checks need.
#[derive(Debug, Default)]
struct Node {
    emitted: Option<(usize, Kind)>,
    /// Uppermost layer with an entry under this path while the path itself had none yet.
    implied: Option<usize>,
    whiteout: Option<usize>,
    opaque: Option<usize>,
}

fn keep_min(slot: &mut Option<usize>, layer: usize) {
    if slot.is_none_or(|l| layer < l) {
        *slot = Some(layer);
    }
}

/// Header fields carried over from the input, with PAX overrides applied.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct DeferredLink {
    layer: usize,
    path: Vec<u8>,
    target: Vec<u8>,
    meta: Meta,
}

/// Flattens `layers` (base first) into one tar written to `out`, then finishes the archive.
/// Layers are decoded on scoped threads, a few ahead of the merge (see [`decode`]); `out` is
/// written from the calling thread only.
pub fn flatten<W: Write>(
    layers: Vec<LayerInput<'_>>,
    out: W,
    events: &mut dyn FnMut(FlattenEvent),
) -> Result<FlattenStats, FlattenError> {
    let mut f = Flattener {
        nodes: HashMap::new(),
        out: tar::Builder::new(Tagged {
            inner: io::BufWriter::with_capacity(WRITE_BUFFER, out),
            failed: false,
        }),
        links: Vec::new(),
        stats: FlattenStats::default(),
        names: layers.iter().rev().map(|l| l.name.clone()).collect(),
    };
    let total = layers.len();
    let ahead = decode::max_ahead();
    std::thread::scope(|s| {
        let mut pending: VecDeque<LayerInput<'_>> = layers.into_iter().rev().collect();
        let mut running: VecDeque<(String, decode::Decoded)> = VecDeque::new();
        for index in 0..total {
            while running.len() < ahead {
                let Some(l) = pending.pop_front() else { break };
                running.push_back((l.name.clone(), decode::spawn(s, l.name, l.reader)));
            }
            let (name, decoded) = running.pop_front().expect("one decoder per layer");
            events(FlattenEvent::Layer {
                index: index + 1,
                total,
                name: name.clone(),
            });
            // On an error the queues are dropped here, which stops the decoders still running.
            f.layer(index, &name, decoded, events)?;
        }
        f.finish(events)
    })
}

struct Flattener<W: Write> {
    nodes: HashMap<Vec<u8>, Node>,
    out: tar::Builder<Tagged<io::BufWriter<W>>>,
    links: Vec<DeferredLink>,
    stats: FlattenStats,
    /// Layer names, top-down (indexed like the layer numbers in `Node`).
    names: Vec<String>,
}

enum Verdict {
    Emit,
    Skip,
}

impl<W: Write> Flattener<W> {
    fn layer(
        &mut self,
        li: usize,
        name: &str,
        mut decoded: decode::Decoded,
        events: &mut dyn FnMut(FlattenEvent),
    ) -> Result<(), FlattenError> {
        // A failed decoder knows why (digest mismatch, bad compression): that is the error.
        let read_err = |decoded: &decode::Decoded, source: io::Error| {
            decoded.take_error().unwrap_or_else(|| FlattenError::Read {
                layer: name.to_string(),
                source,
            })
        };
        let failed = {
            let mut archive = tar::Archive::new(&mut decoded);
            match archive.entries() {
                Err(source) => Some(FlattenError::Read {
                    layer: name.to_string(),
                    source,
                }),
                Ok(entries) => {
                    let mut failed = None;
                    for entry in entries {
                        let done = match entry {
                            Ok(mut entry) => self.entry(li, name, &mut entry, events),
                            Err(source) => Err(FlattenError::Read {
                                layer: name.to_string(),
                                source,
                            }),
                        };
                        if let Err(e) = done {
                            failed = Some(e);
                            break;
                        }
                    }
                    failed
                }
            }
        };
        if let Some(e) = failed {
            // A read error of the entry (or its data) may be the decoder's own failure.
            return Err(match e {
                FlattenError::Read { source, .. } => read_err(&decoded, source),
                other => other,
            });
        }
        // The rest of the layer after the end-of-archive marker: the decoder reads the blob to
        // its end (digest check, trailing garbage), and its verdict arrives with the last chunk.
        io::copy(&mut decoded, &mut io::sink()).map_err(|e| read_err(&decoded, e))?;
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        li: usize,
        layer: &str,
        entry: &mut tar::Entry<'_, R>,
        events: &mut dyn FnMut(FlattenEvent),
    ) -> Result<(), FlattenError> {
        let raw_path = entry.path_bytes().into_owned();
        let unsafe_entry = |reason: String| FlattenError::UnsafeEntry {
            layer: layer.to_string(),
            path: String::from_utf8_lossy(&raw_path)
                .escape_debug()
                .to_string(),
            reason,
        };
        let path = normalize(&raw_path).map_err(|r| unsafe_entry(r.to_string()))?;
        let etype = entry.header().entry_type();
        if etype == EntryType::XGlobalHeader {
            return Ok(());
        }
        let (parent, base) = split_last(&path);
        if base.starts_with(WHITEOUT_PREFIX) {
            if base == OPAQUE_MARKER {
                keep_min(
                    &mut self.nodes.entry(parent.to_vec()).or_default().opaque,
                    li,
                );
            } else if !base.starts_with(b".wh..wh.") && base.len() > WHITEOUT_PREFIX.len() {
                // `.wh..wh.*` other than the opaque marker is aufs bookkeeping: ignore it.
                let mut target = parent.to_vec();
                if !target.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(&base[WHITEOUT_PREFIX.len()..]);
                keep_min(&mut self.nodes.entry(target).or_default().whiteout, li);
            }
            return Ok(());
        }
        if path.is_empty() {
            // The root directory: its mode and owner are fixed by mksquashfs' -root-* options.
            return Ok(());
        }
        let kind = match etype {
            EntryType::Directory => Kind::Dir,
            EntryType::Link => Kind::HardLink,
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => Kind::Leaf,
            other => {
                events(FlattenEvent::Warning(format!(
                    "layer {layer}: skipping '{}' of unsupported tar type {:?}",
                    lossy(&path),
                    other.as_byte() as char
                )));
                return Ok(());
            }
        };
        match self.place(li, &path, kind).map_err(unsafe_entry)? {
            Verdict::Skip => return Ok(()),
            Verdict::Emit => {}
        }
        let meta = read_meta(entry).map_err(|e| FlattenError::Read {
            layer: layer.to_string(),
            source: e,
        })?;
        if kind == Kind::HardLink {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = normalize(&target)
                .map_err(|r| unsafe_entry(format!("hardlink target '{}': {r}", lossy(&target))))?;
            if target.is_empty() {
                return Err(unsafe_entry("hardlink to the root directory".into()));
            }
            self.links.push(DeferredLink {
                layer: li,
                path,
                target,
                meta,
            });
            return Ok(());
        }
        self.write(&path, etype, &meta, entry).map_err(|source| {
            // Copying an entry both reads the layer and writes the pipe: the tag says which
            // side failed, so "layer X is corrupt" and "mksquashfs went away" stay distinct.
            if self.out.get_ref().failed {
                FlattenError::Write { source }
            } else {
                FlattenError::Read {
                    layer: layer.to_string(),
                    source,
                }
            }
        })
    }

    /// Decides whether the entry survives in the merged view, and records it if it does.
    fn place(&mut self, li: usize, path: &[u8], kind: Kind) -> Result<Verdict, String> {
        // An opaque marker at the top of a layer hides every lower entry.
        if let Some(root) = self.nodes.get(&b""[..]) {
            if root.opaque.is_some_and(|l| l < li) {
                return Ok(Verdict::Skip);
            }
        }
        // Ancestors, shortest first: the first one that hides or breaks the entry decides.
        for end in memchr_all(path) {
            let anc = &path[..end];
            let Some(node) = self.nodes.get(anc) else {
                continue;
            };
            if node.whiteout.is_some_and(|l| l < li) || node.opaque.is_some_and(|l| l < li) {
                return Ok(Verdict::Skip);
            }
            match node.emitted {
                Some((l, k)) if k != Kind::Dir && l < li => return Ok(Verdict::Skip),
                Some((_, k)) if k != Kind::Dir => {
                    return Err(format!(
                        "its parent '{}' is a symlink or non-directory in the same layer",
                        lossy(anc)
                    ))
                }
                _ => {}
            }
        }
        let node = self.nodes.entry(path.to_vec()).or_default();
        if node.whiteout.is_some_and(|l| l < li) {
            return Ok(Verdict::Skip);
        }
        if node.emitted.is_some() {
            // Shadowed by an upper layer, or a duplicate in this layer (tar readers disagree
            // on which copy wins; the first one is kept, as mksquashfs itself does).
            return Ok(Verdict::Skip);
        }
        if kind != Kind::Dir {
            if let Some(l) = node.implied {
                return Err(if l < li {
                    format!(
                        "is a non-directory here, but upper layer {} has entries under it",
                        self.names[l]
                    )
                } else {
                    "is a non-directory, but this layer has entries under it".to_string()
                });
            }
        }
        node.emitted = Some((li, kind));
        // Mark ancestors as implied directories, deepest first, stopping at one already known.
        let mut end = path.len();
        while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
            let node = self.nodes.entry(path[..slash].to_vec()).or_default();
            if node.emitted.is_some() || node.implied.is_some() {
                break;
            }
            node.implied = Some(li);
            end = slash;
        }
        Ok(Verdict::Emit)
    }

    fn write<R: Read>(
        &mut self,
        path: &[u8],
        etype: EntryType,
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> io::Result<()> {
        let mut h = new_header(meta);
        let p = Path::new(OsStr::from_bytes(path));
        self.pax(meta)?;
        match etype {
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                self.out
                    .append_link(&mut h, p, Path::new(OsStr::from_bytes(&target)))?;
            }
            EntryType::Char | EntryType::Block => {
                h.set_entry_type(etype);
                h.set_size(0);
                let (major, minor) = device_numbers(entry.header())?;
                h.set_device_major(major)?;
                h.set_device_minor(minor)?;
                self.out.append_data(&mut h, p, io::empty())?;
            }
            EntryType::Fifo | EntryType::Directory => {
                h.set_entry_type(etype);
                h.set_size(0);
                self.out.append_data(&mut h, p, io::empty())?;
            }
            _ => {
                let size = entry.size();
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                // Count what is read, so a short entry cannot make the output inconsistent.
                let mut counted = CountingReader { inner: entry, n: 0 };
                self.out.append_data(&mut h, p, &mut counted)?;
                if counted.n != size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("'{}' is truncated", lossy(path)),
                    ));
                }
                self.stats.bytes += size;
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn pax(&mut self, meta: &Meta) -> io::Result<()> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, &[u8])> = meta
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        self.out
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    fn finish(
        mut self,
        events: &mut dyn FnMut(FlattenEvent),
    ) -> Result<FlattenStats, FlattenError> {
        let write = |e| FlattenError::Write { source: e };
        // Directories that only exist as parents of other entries get an explicit entry, so
        // their owner and mode do not depend on who runs mksquashfs.
        let mut implied: Vec<Vec<u8>> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.emitted.is_none() && n.implied.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        implied.sort();
        let dir_meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        };
        for p in implied {
            if p.is_empty() {
                continue;
            }
            let mut h = new_header(&dir_meta);
            h.set_entry_type(EntryType::Directory);
            h.set_size(0);
            self.out
                .append_data(&mut h, Path::new(OsStr::from_bytes(&p)), io::empty())
                .map_err(write)?;
            self.stats.entries += 1;
        }
        let targets: HashMap<Vec<u8>, Vec<u8>> = self
            .links
            .iter()
            .map(|l| (l.path.clone(), l.target.clone()))
            .collect();
        let links = std::mem::take(&mut self.links);
        for link in links {
            match self.resolve_link(&link, &targets) {
                Ok(target) => {
                    let mut h = new_header(&link.meta);
                    h.set_entry_type(EntryType::Link);
                    h.set_size(0);
                    self.out
                        .append_link(
                            &mut h,
                            Path::new(OsStr::from_bytes(&link.path)),
                            Path::new(OsStr::from_bytes(&target)),
                        )
                        .map_err(write)?;
                    self.stats.entries += 1;
                    self.stats.hardlinks += 1;
                }
                Err(why) => {
                    self.stats.dropped_hardlinks += 1;
                    events(FlattenEvent::Warning(format!(
                        "layer {}: dropping hardlink '{}' -> '{}': {why}",
                        self.names[link.layer],
                        lossy(&link.path),
                        lossy(&link.target)
                    )));
                }
            }
        }
        let mut out = self.out.into_inner().map_err(write)?;
        // A BufWriter flushes on drop but swallows the error; a full disk must not.
        out.flush().map_err(write)?;
        Ok(self.stats)
    }

    /// Follows hardlink-to-hardlink chains to an emitted non-directory.
    fn resolve_link(
        &self,
        link: &DeferredLink,
        targets: &HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<Vec<u8>, &'static str> {
        let mut target = link.target.clone();
        for _ in 0..MAX_LINK_CHAIN {
            if target == link.path {
                return Err("it links to itself");
            }
            // A target hidden by a whiteout or an opaque directory was never emitted, and one
            // shadowed by an upper layer's non-directory is not in the merged tree either.
            let node = self
                .nodes
                .get(&target)
                .ok_or("target is not in the image")?;
            match node.emitted {
                Some((_, Kind::Leaf)) => return Ok(target),
                Some((_, Kind::HardLink)) => {
                    target = targets
                        .get(&target)
                        .ok_or("target is not in the image")?
                        .clone();
                }
                Some((_, Kind::Dir)) => return Err("target is a directory"),
                None => return Err("target is not in the merged image (deleted or hidden)"),
            }
        }
        Err("hardlink chain too long")
    }
}

fn new_header(meta: &Meta) -> Header {
    // GNU headers: numeric fields too big for octal get base-256, long names get 'L'/'K'
    // records. (mksquashfs 4.5.1 mangles PAX `linkpath`, stripping a leading '/' and '../'.)
    let mut h = Header::new_gnu();
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime);
    h
}

/// The output, remembering whether a write failed (see `Flattener::entry`).
struct Tagged<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Tagged<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let old = h.as_old();
    let mut meta = Meta {
        mode: lenient(h.mode().map(u64::from), &old.mode)? as u32 & 0o7777,
        uid: lenient(h.uid(), &old.uid)?,
        gid: lenient(h.gid(), &old.gid)?,
        mtime: lenient(h.mtime(), &old.mtime)?,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for rec in pax {
            let rec = rec?;
            let Ok(key) = rec.key() else { continue };
            let num = || rec.value().ok().and_then(|v| v.parse::<u64>().ok());
            match key {
                "uid" => meta.uid = num().unwrap_or(meta.uid),
                "gid" => meta.gid = num().unwrap_or(meta.gid),
                // PAX times may be fractional or negative; keep whole seconds, clamp at 0.
                "mtime" => {
                    if let Some(t) = rec.value().ok().and_then(|v| v.parse::<f64>().ok()) {
                        meta.mtime = t.max(0.0) as u64;
                    }
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "PAX sparse files are not supported",
                    ))
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        // overlayfs reads its own xattrs on lower layers: an image must not
                        // be able to plant redirects or opaque markers in our mounts.
                        if !name.starts_with("trusted.overlay.")
                            && !name.starts_with("user.overlay.")
                        {
                            meta.xattrs
                                .push((name.to_string(), rec.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// Some writers leave numeric fields blank (all NUL or spaces); like Go's archive/tar, read
/// that as 0 rather than failing the whole image.
fn lenient(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

fn device_numbers(h: &Header) -> io::Result<(u32, u32)> {
    let (raw_major, raw_minor) = match (h.as_ustar(), h.as_gnu()) {
        (Some(u), _) => (&u.dev_major[..], &u.dev_minor[..]),
        (None, Some(g)) => (&g.dev_major[..], &g.dev_minor[..]),
        (None, None) => return Ok((0, 0)),
    };
    let major = lenient(
        h.device_major().map(|d| u64::from(d.unwrap_or(0))),
        raw_major,
    )?;
    let minor = lenient(
        h.device_minor().map(|d| u64::from(d.unwrap_or(0))),
        raw_minor,
    )?;
    let fit = |n: u64| {
        u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "device number"))
    };
    Ok((fit(major)?, fit(minor)?))
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

enum Compression {
    Gzip,
    Zstd,
    None,
    Unsupported(&'static str),
}

/// Layer media types lie often enough (and docker-archive has none): trust the magic bytes.
fn detect<R: io::BufRead>(r: &mut R) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] => Compression::Unsupported("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Unsupported("xz"),
        _ => Compression::None,
    })
}

/// Strips `./`, empty and `.` components; rejects absolute paths and `..`.
fn normalize(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path escapes the image root ('..')"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Ends of the strict ancestors of `path` (positions of each '/'), shortest first.
fn memchr_all(path: &[u8]) -> impl Iterator<Item = usize> + '_ {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i)
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).escape_debug().to_string()
}

#[cfg(test)]
mod tests;
