//! The glibc hook: replaces the container's glibc with the host's when the container's is older
//! and has the same soname, so that host libraries mounted by other hooks (MPI) find the glibc
//! they were built against.
//!
//! Configured by the hook's env: `GLIBC_LIBS` (required, colon list of host glibc libraries
//! named by their sonames: `/lib/x86_64-linux-gnu/libc.so.6:.../libm.so.6:.../ld-linux-x86-64.so.2`
//! ...; one of them must be `libc.so.N`) and `LDCONFIG_PATH` (the host's ldconfig, used to read the
//! container's linker cache). Selected by the annotation `com.hooks.glibc.enabled=true`, which
//! `--mpi-hook` sets.
//!
//! Skipped, with a message, when the container has no `/etc/ld.so.cache` or no 64-bit `libc.so.*`
//! in it (musl or static images), when the sonames differ, or when the container's glibc is not
//! older. Versions are read without running anything of the container: from the `GNU C Library
//! ... version X.Y` banner every glibc `libc.so` carries, else from its highest `GLIBC_X.Y`
//! symbol version. Each host library is bound read-only over every 64-bit library of the
//! container's cache with the same name, and over `/lib64/<name>` when the image has that file
//! (the ELF interpreter path) and it is a different file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use egret_engine::sys::in_root;
use regex::bytes::Regex;

use crate::bind::{self, BindError, BindOptions};
use crate::ldcache::{self, CachedLib, LdcacheError};
use crate::HookContext;

/// Larger than any libc.so; a bigger file is not read whole.
const MAX_LIB_SIZE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GlibcError {
    #[error("GLIBC_LIBS: {0}")]
    Config(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot find the glibc version of the host's {}", path.display())]
    HostVersion { path: PathBuf },
    #[error(transparent)]
    LdCache(#[from] LdcacheError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A glibc version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The glibc version a `libc.so` file's contents declare (see the module documentation).
pub fn version_of(contents: &[u8]) -> Option<Version> {
    let banner = Regex::new(r"GNU C Library [^\n\x00]*?version (\d+)\.(\d+)").expect("regex");
    let num = |m: Option<regex::bytes::Match>| -> Option<u32> {
        std::str::from_utf8(m?.as_bytes()).ok()?.parse().ok()
    };
    if let Some(c) = banner.captures(contents) {
        return Some(Version(num(c.get(1))?, num(c.get(2))?));
    }
    let symver = Regex::new(r"GLIBC_(\d+)\.(\d+)").expect("regex");
    symver
        .captures_iter(contents)
        .filter_map(|c| Some(Version(num(c.get(1))?, num(c.get(2))?)))
        .max()
}

/// `libc.so.N` names (the soname every glibc has; `libc.so` alone is the linker script).
pub fn is_libc_soname(name: &str) -> bool {
    name.strip_prefix("libc.so.")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// What to do, given the sonames and versions found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Replace,
    Skip(String),
}

pub fn decide(
    host_soname: &str,
    host: Version,
    container_soname: &str,
    container: Option<Version>,
) -> Decision {
    if host_soname != container_soname {
        return Decision::Skip(format!(
            "the container's {container_soname} and the host's {host_soname} are not compatible"
        ));
    }
    match container {
        None => Decision::Skip("cannot tell the container's glibc version".into()),
        Some(c) if c >= host => Decision::Skip(format!(
            "the container's glibc {c} is not older than the host's {host}"
        )),
        Some(_) => Decision::Replace,
    }
}

/// Reads a file of the container, as root but never through a link at its last component and
/// only when it is a regular file (the other components were resolved inside the rootfs).
fn read_container_file(rootfs: &Path, path: &Path) -> Result<Vec<u8>, GlibcError> {
    let read_err = |source| GlibcError::Read {
        path: path.to_path_buf(),
        source,
    };
    let rel = in_root::resolve_in_root(rootfs, path).map_err(|e| read_err(io::Error::other(e)))?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(rootfs.join(rel))
        .map_err(read_err)?;
    read_regular(file).map_err(read_err)
}

fn read_regular(file: File) -> io::Result<Vec<u8>> {
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(MAX_LIB_SIZE).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The container paths a host library named `name` replaces: the 64-bit cache entries of that
/// name, and `/lib64/<name>` when present.
pub fn targets(rootfs: &Path, cache: &[CachedLib], name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut resolved: Vec<PathBuf> = Vec::new();
    let lib64 = Path::new("/lib64").join(name);
    let candidates = cache
        .iter()
        .filter(|l| l.is_64bit() && l.soname == name)
        .map(|l| l.path.clone())
        .chain(ldcache::exists_in_root(rootfs, &lib64).then_some(lib64));
    for p in candidates {
        let Ok(r) = in_root::resolve_in_root(rootfs, &p) else {
            continue;
        };
        if !resolved.contains(&r) {
            resolved.push(r);
            out.push(p);
        }
    }
    out
}

/// The hook.
pub fn run(ctx: &HookContext) -> Result<(), GlibcError> {
    let libs: Vec<PathBuf> = crate::hook_env("GLIBC_LIBS")
        .ok_or_else(|| GlibcError::Config("not set in the hook's env".into()))?
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let name_of = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let host_libc = libs
        .iter()
        .find(|p| name_of(p).is_some_and(|n| is_libc_soname(&n)))
        .ok_or_else(|| GlibcError::Config("no libc.so.N in the list".into()))?;
    let host_soname = name_of(host_libc).unwrap_or_default();
    let rootfs = ctx.rootfs();
    if !ldcache::exists_in_root(rootfs, Path::new("/etc/ld.so.cache")) {
        crate::info!("the container has no /etc/ld.so.cache (not a glibc image?): skipped");
        return Ok(());
    }
    let cache = ldcache::container_libraries(rootfs, &ldcache::ldconfig_path())?;
    let Some(container_libc) = cache
        .iter()
        .find(|l| l.is_64bit() && is_libc_soname(&l.soname))
    else {
        crate::info!("the container has no 64-bit glibc: skipped");
        return Ok(());
    };
    let host_text = std::fs::read(host_libc).map_err(|source| GlibcError::Read {
        path: host_libc.clone(),
        source,
    })?;
    let host_version = version_of(&host_text).ok_or_else(|| GlibcError::HostVersion {
        path: host_libc.clone(),
    })?;
    let container_version = read_container_file(rootfs, &container_libc.path)
        .map(|t| version_of(&t))
        .unwrap_or_else(|e| {
            crate::warn!("{e}");
            None
        });
    match decide(
        &host_soname,
        host_version,
        &container_libc.soname,
        container_version,
    ) {
        Decision::Skip(why) => {
            crate::info!("{why}: skipped");
            return Ok(());
        }
        Decision::Replace => crate::info!(
            "replacing the container's glibc {} with the host's {host_version}",
            container_version.map(|v| v.to_string()).unwrap_or_default()
        ),
    }
    for lib in &libs {
        let Some(name) = name_of(lib) else { continue };
        let found = targets(rootfs, &cache, &name);
        if found.is_empty() {
            crate::warn!("{name} is not in the container's linker cache: not replaced");
        }
        for t in found {
            let at = bind::bind(
                rootfs,
                lib,
                &t,
                BindOptions {
                    readonly: true,
                    recursive: false,
                },
            )?;
            crate::debug!("{} over {}", lib.display(), at.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_banner_or_the_symbol_versions() {
        let banner = b"\x00GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\n\x00GLIBC_2.40";
        assert_eq!(version_of(banner), Some(Version(2, 36)));
        let old = b"GNU C Library (GNU libc) stable release version 2.17, by Roland McGrath";
        assert_eq!(version_of(old), Some(Version(2, 17)));
        let symvers = b"\x00GLIBC_2.2.5\x00GLIBC_2.28\x00GLIBC_2.3\x00GLIBC_PRIVATE\x00";
        assert_eq!(version_of(symvers), Some(Version(2, 28)));
        assert_eq!(version_of(b"musl libc"), None);
        assert!(Version(2, 9) < Version(2, 10));
        let host = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let v = version_of(&host).unwrap();
        let out = std::process::Command::new("getconf")
            .arg("GNU_LIBC_VERSION")
            .output()
            .unwrap();
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(Some(v.to_string().as_str()), want.split_whitespace().last());
    }

    #[test]
    fn decisions() {
        let v = |a, b| Some(Version(a, b));
        assert_eq!(
            decide("libc.so.6", Version(2, 36), "libc.so.6", v(2, 28)),
            Decision::Replace
        );
        assert!(matches!(
            decide("libc.so.6", Version(2, 36), "libc.so.6", v(2, 36)),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide("libc.so.6", Version(2, 36), "libc.so.6", v(2, 38)),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide("libc.so.6", Version(2, 36), "libc.so.7", v(2, 1)),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide("libc.so.6", Version(2, 36), "libc.so.6", None),
            Decision::Skip(_)
        ));
        assert!(is_libc_soname("libc.so.6"));
        assert!(!is_libc_soname("libc.so"));
        assert!(!is_libc_soname("libc.so.6.1"));
        assert!(!is_libc_soname("libcrypt.so.1"));
    }

    #[test]
    fn targets_are_cache_entries_and_lib64_deduplicated() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), "").unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        let cache = vec![
            CachedLib {
                soname: "ld-linux-x86-64.so.2".into(),
                flags: "libc6,x86-64".into(),
                path: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            },
            CachedLib {
                soname: "ld-linux-x86-64.so.2".into(),
                flags: "libc6".into(),
                path: "/lib32/ld-linux-x86-64.so.2".into(),
            },
        ];
        let t = targets(r, &cache, "ld-linux-x86-64.so.2");
        assert_eq!(
            t,
            vec![PathBuf::from("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")]
        );
        // A separate copy at /lib64 is a target of its own.
        std::fs::remove_file(r.join("lib64/ld-linux-x86-64.so.2")).unwrap();
        std::fs::write(r.join("lib64/ld-linux-x86-64.so.2"), "").unwrap();
        assert_eq!(targets(r, &cache, "ld-linux-x86-64.so.2").len(), 2);
        assert!(targets(r, &cache, "libm.so.6").is_empty());
    }
}
