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

pub use egret_engine::container::ldcache::{parse_print_cache, CachedLib};
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

/// The `ldconfig` the hook's JSON names in `LDCONFIG_PATH`, else [`DEFAULT_LDCONFIG`].
pub fn ldconfig_path() -> PathBuf {
    crate::hook_env("LDCONFIG_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LDCONFIG))
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
