//! The container's dynamic linker cache, read and rebuilt with the host's `ldconfig` (its path
//! is the admin's `LDCONFIG_PATH`, default `/sbin/ldconfig`; the image's own `ldconfig` is never
//! run as root).
//!
//! `ldconfig -r ROOT` resolves every path inside ROOT. It writes `ROOT/etc/ld.so.cache` through
//! a fixed temporary name, and all tasks of a node share one rootfs and run their hooks at the
//! same time: [`refresh`] therefore holds an exclusive `flock` on the rootfs directory while it
//! runs. [`container_libraries`] takes the same lock (shared) so it never reads a half-written
//! cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use egret_engine::sys::in_root;
use nix::fcntl::{Flock, FlockArg};

pub const DEFAULT_LDCONFIG: &str = "/sbin/ldconfig";

#[derive(Debug, thiserror::Error)]
pub enum LdcacheError {
    #[error("cannot run {}: {source}", ldconfig.display())]
    Spawn {
        ldconfig: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} {args} failed ({status}): {stderr}", ldconfig.display())]
    Failed {
        ldconfig: PathBuf,
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot lock {}: {source}", rootfs.display())]
    Lock {
        rootfs: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One entry of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLib {
    /// The name the cache maps, usually the soname (`libmpi.so.12`).
    pub soname: String,
    /// What `ldconfig -p` shows in parentheses (`libc6,x86-64`, possibly with hwcap/OS ABI).
    pub flags: String,
    /// The file, as a path in the container.
    pub path: PathBuf,
}

impl CachedLib {
    /// True for a 64-bit x86 library (`x86-64` in the flags); other architectures by their own
    /// tag (`64bit`, `AArch64`...).
    pub fn is_64bit(&self) -> bool {
        let f = &self.flags;
        f.contains("x86-64") || f.contains("64bit") || f.contains("AArch64")
    }
}

/// The `ldconfig` the hook's JSON names in `LDCONFIG_PATH`, else [`DEFAULT_LDCONFIG`].
pub fn ldconfig_path() -> PathBuf {
    crate::hook_env("LDCONFIG_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LDCONFIG))
}

/// Parses `ldconfig -p` output: `\tSONAME (FLAGS) => PATH` lines; the header and trailer lines
/// and anything else are skipped.
pub fn parse_print_cache(text: &str) -> Vec<CachedLib> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (left, path) = line.split_once(" => ")?;
            let (soname, rest) = left.split_once(" (")?;
            let flags = rest.strip_suffix(')')?;
            if soname.is_empty() || !path.starts_with('/') {
                return None;
            }
            Some(CachedLib {
                soname: soname.to_string(),
                flags: flags.to_string(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// The libraries in the container's linker cache whose file exists in the rootfs (resolved
/// inside it). An image without `/etc/ld.so.cache` gives an empty list.
pub fn container_libraries(rootfs: &Path, ldconfig: &Path) -> Result<Vec<CachedLib>, LdcacheError> {
    let cache =
        in_root::resolve_in_root(rootfs, Path::new("/etc/ld.so.cache")).map(|rel| rootfs.join(rel));
    if !matches!(cache, Ok(ref p) if p.is_file()) {
        return Ok(Vec::new());
    }
    let _lock = lock(rootfs, FlockArg::LockShared)?;
    let out = run(ldconfig, rootfs, &["-p".into()])?;
    Ok(parse_print_cache(&out)
        .into_iter()
        .filter(|lib| exists_in_root(rootfs, &lib.path))
        .collect())
}

/// True when the container path `path` names an existing file (not a dangling link) inside
/// `rootfs`.
pub fn exists_in_root(rootfs: &Path, path: &Path) -> bool {
    match in_root::resolve_in_root(rootfs, path) {
        Ok(rel) => std::fs::symlink_metadata(rootfs.join(rel)).is_ok_and(|m| !m.is_dir()),
        Err(_) => false,
    }
}

/// Rebuilds the container's linker cache (`ldconfig -r ROOTFS [DIRS...]`); `extra_dirs` are
/// container directories searched in addition to the image's `/etc/ld.so.conf`.
pub fn refresh(rootfs: &Path, ldconfig: &Path, extra_dirs: &[PathBuf]) -> Result<(), LdcacheError> {
    let _lock = lock(rootfs, FlockArg::LockExclusive)?;
    let args: Vec<String> = extra_dirs.iter().map(|d| d.display().to_string()).collect();
    run(ldconfig, rootfs, &args).map(drop)
}

fn lock(rootfs: &Path, how: FlockArg) -> Result<Flock<File>, LdcacheError> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(rootfs)
        .map_err(|source| LdcacheError::Lock {
            rootfs: rootfs.to_path_buf(),
            source,
        })?;
    Flock::lock(dir, how).map_err(|(_, e)| LdcacheError::Lock {
        rootfs: rootfs.to_path_buf(),
        source: e.into(),
    })
}

fn run(ldconfig: &Path, rootfs: &Path, args: &[String]) -> Result<String, LdcacheError> {
    let out = Command::new(ldconfig)
        .arg("-r")
        .arg(rootfs)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LdcacheError::Spawn {
            ldconfig: ldconfig.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(LdcacheError::Failed {
            ldconfig: ldconfig.to_path_buf(),
            args: format!("-r {} {}", rootfs.display(), args.join(" ")),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "4 libs found in cache `/etc/ld.so.cache'
\tlibmpi.so.12 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libmpi.so.12
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
\tlibc.so.6 (libc6) => /lib/i386-linux-gnu/libc.so.6
\tld-linux-x86-64.so.2 (libc6,x86-64) => /lib64/ld-linux-x86-64.so.2
\tgarbage line without arrow
Cache generated by: ldconfig (GNU libc) stable release version 2.36
";

    #[test]
    fn print_cache_output() {
        let libs = parse_print_cache(OUT);
        assert_eq!(libs.len(), 4);
        assert_eq!(libs[0].soname, "libmpi.so.12");
        assert_eq!(libs[0].flags, "libc6,x86-64");
        assert_eq!(
            libs[0].path,
            Path::new("/usr/lib/x86_64-linux-gnu/libmpi.so.12")
        );
        assert_eq!(libs[1].flags, "libc6,x86-64, OS ABI: Linux 3.2.0");
        assert!(libs[1].is_64bit());
        assert!(!libs[2].is_64bit());
        assert_eq!(libs[3].soname, "ld-linux-x86-64.so.2");
        assert!(parse_print_cache("").is_empty());
    }

    #[test]
    fn existence_is_checked_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/lib/libreal.so.1"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("lib")).unwrap();
        // A link to a host path that exists on the host but not in the root.
        std::os::unix::fs::symlink("/etc/hostname", r.join("usr/lib/libhost.so.1")).unwrap();
        assert!(exists_in_root(r, Path::new("/lib/libreal.so.1")));
        assert!(!exists_in_root(r, Path::new("/usr/lib/libhost.so.1")));
        assert!(!exists_in_root(r, Path::new("/usr/lib/libnone.so.1")));
        assert!(!exists_in_root(r, Path::new("/usr/lib")));
    }

    #[test]
    fn no_cache_means_no_libraries_and_ldconfig_is_not_run() {
        let root = tempfile::tempdir().unwrap();
        let libs = container_libraries(root.path(), Path::new("/nonexistent/ldconfig")).unwrap();
        assert!(libs.is_empty());
    }
}
