//! A passing security check, remembered by the metadata of every path it looked at, so that the
//! launcher of every step and every `egret run` pay a few dozen `lstat`s instead of the whole
//! check (directory walks, the hooks' JSON).
//!
//! The file is root's: in `runDir` (itself checked: root-owned, writable by root alone), mode
//! 0600, one link, opened without following a link; anything else is ignored. A remembered
//! pass holds only while every path has the same device, inode, type and mode, owner and group,
//! and every file read or directory listed (the config, the hooks directory and its JSON, the
//! programs) also the same size, mtime and ctime: a `chmod o+w`, a `chown`, an edited hook JSON
//! or config, a file renamed into place, a new file in a listed directory, a path that appeared
//! where there was none, all differ. Mode and owner are compared themselves, so a change in the
//! same clock tick as the check is still seen; a file changed within the last seconds before the
//! check (whose next change could keep its timestamps) is not remembered at all.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the cache file must start with: the format and the egret that wrote it.
const MAGIC: &str = "egret-security-check 1";
/// Larger files are not egret's.
const MAX_BYTES: u64 = 1 << 20;

/// The metadata a check depends on (and what any change to a file touches: its ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Stamp {
        Stamp {
            dev: md.dev(),
            ino: md.ino(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// Equal in everything a check of a directory on the way looks at.
    fn same_access(&self, other: &Stamp) -> bool {
        (self.dev, self.ino, self.mode, self.uid, self.gid)
            == (other.dev, other.ino, other.mode, other.uid, other.gid)
    }

    fn fields(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {}",
            self.dev,
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1
        )
    }

    fn parse(fields: &[&str]) -> Option<Stamp> {
        let [dev, ino, mode, uid, gid, size, ms, mn, cs, cn] = fields else {
            return None;
        };
        Some(Stamp {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
            mode: mode.parse().ok()?,
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            size: size.parse().ok()?,
            mtime: (ms.parse().ok()?, mn.parse().ok()?),
            ctime: (cs.parse().ok()?, cn.parse().ok()?),
        })
    }
}

/// Every lookup of one check: (path, links followed) -> its metadata (`None` when absent) and
/// whether what it holds matters (a file read, a directory listed) or only what its metadata
/// says of who may change it (a directory on the way, which other runs change all the time:
/// runDir gets sockets, the bundle directory bundles).
#[derive(Debug, Default)]
pub(super) struct Seen(BTreeMap<(PathBuf, bool), (Option<Stamp>, bool)>);

impl Seen {
    pub(super) fn record(&mut self, path: &Path, follow: bool, md: Option<&fs::Metadata>) {
        let e = self
            .0
            .entry((path.to_path_buf(), follow))
            .or_insert((None, false));
        e.0 = md.map(Stamp::of);
    }

    /// The path's contents count too (both lookups of it).
    pub(super) fn contents_matter(&mut self, path: &Path) {
        for follow in [false, true] {
            if let Some(e) = self.0.get_mut(&(path.to_path_buf(), follow)) {
                e.1 = true;
            }
        }
    }

    /// The same lookup now.
    fn now(path: &Path, follow: bool) -> Result<Option<Stamp>, ()> {
        let r = if follow {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        match r {
            Ok(md) => Ok(Some(Stamp::of(&md))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(()),
        }
    }
}

/// What a check was asked: the config file and the extra paths (the calling binary).
pub(super) struct Inputs {
    header: String,
    name: String,
}

impl Inputs {
    pub(super) fn new(config_path: &Path, extra: &[PathBuf]) -> Inputs {
        let mut header = format!("{MAGIC} {}\n", env!("CARGO_PKG_VERSION"));
        for p in std::iter::once(config_path).chain(extra.iter().map(PathBuf::as_path)) {
            header.push_str("input ");
            header.push_str(&hex(p.as_os_str().as_bytes()));
            header.push('\n');
        }
        // One file per set of inputs (the launcher's, egret's, root's egret), named by a
        // digest of them (FNV-1a: stable, and a collision only costs a full check).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in header.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Inputs {
            header,
            name: format!("security-check-{h:016x}"),
        }
    }
}

/// Where passes are remembered, and who must own that file.
pub(super) struct Store {
    dir: PathBuf,
    owner: u32,
    /// Paths changed less than this long before the check are not remembered.
    settle_secs: i64,
}

impl Store {
    pub(super) fn new(run_dir: &Path, owner: u32) -> Store {
        Store {
            dir: run_dir.to_path_buf(),
            owner,
            settle_secs: 2,
        }
    }

    /// For tests, whose files are all fresh.
    #[cfg(test)]
    pub(super) fn settling(mut self, secs: i64) -> Store {
        self.settle_secs = secs;
        self
    }

    pub(super) fn path(&self, inputs: &Inputs) -> PathBuf {
        self.dir.join(&inputs.name)
    }

    /// The file, when it is the owner's alone: a regular file, mode 0600 or less, one link.
    fn read(&self, inputs: &Inputs) -> Option<String> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(self.path(inputs))
            .ok()?;
        let md = f.metadata().ok()?;
        if !md.is_file()
            || md.uid() != self.owner
            || md.mode() & 0o077 != 0
            || md.nlink() != 1
            || md.len() > MAX_BYTES
        {
            return None;
        }
        let mut text = String::new();
        (&f).take(MAX_BYTES).read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Whether a pass for these inputs is remembered and every path it looked at is unchanged.
    pub(super) fn still_valid(&self, inputs: &Inputs) -> bool {
        let Some(text) = self.read(inputs) else {
            return false;
        };
        let Some(body) = text.strip_prefix(&inputs.header) else {
            return false;
        };
        let mut entries = 0;
        for line in body.lines() {
            let Some((path, follow, contents, stamp)) = parse_entry(line) else {
                return false;
            };
            let same = match (Seen::now(&path, follow), stamp) {
                (Ok(None), None) => true,
                (Ok(Some(now)), Some(then)) if contents => now == then,
                (Ok(Some(now)), Some(then)) => now.same_access(&then),
                _ => false,
            };
            if !same {
                return false;
            }
            entries += 1;
        }
        entries > 0
    }

    /// Remembers a pass (best effort: a cache that cannot be written only costs time).
    pub(super) fn remember(&self, inputs: &Inputs, seen: &Seen) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX);
        let settled = |s: &Stamp| s.ctime.0.max(s.mtime.0).saturating_add(self.settle_secs) <= now;
        let unsettled = seen
            .0
            .values()
            .any(|(s, contents)| *contents && s.as_ref().is_some_and(|s| !settled(s)));
        if seen.0.is_empty() || unsettled {
            return;
        }
        let mut text = inputs.header.clone();
        for ((path, follow), (stamp, contents)) in &seen.0 {
            let kind = if *follow { 'F' } else { 'L' };
            let what = if *contents { 'C' } else { 'M' };
            let fields = stamp.map_or_else(|| "-".to_string(), |s| s.fields());
            text.push_str(&format!(
                "{kind} {what} {} {fields}\n",
                hex(path.as_os_str().as_bytes())
            ));
        }
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", inputs.name, std::process::id()));
        let _ = fs::remove_file(&tmp);
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if written.is_err() || fs::rename(&tmp, self.path(inputs)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// A failed check leaves no pass behind.
    pub(super) fn forget(&self, inputs: &Inputs) {
        let _ = fs::remove_file(self.path(inputs));
    }
}

/// `L|F M|C HEXPATH FIELDS...` or `... HEXPATH -` (absent): links followed or not, contents
/// or only access.
fn parse_entry(line: &str) -> Option<(PathBuf, bool, bool, Option<Stamp>)> {
    let mut it = line.split(' ');
    let follow = match it.next()? {
        "F" => true,
        "L" => false,
        _ => return None,
    };
    let contents = match it.next()? {
        "C" => true,
        "M" => false,
        _ => return None,
    };
    let path = PathBuf::from(std::ffi::OsString::from_vec(unhex(it.next()?)?));
    let rest: Vec<&str> = it.collect();
    let stamp = match rest[..] {
        ["-"] => None,
        _ => Some(Stamp::parse(&rest)?),
    };
    Some((path, follow, contents, stamp))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
