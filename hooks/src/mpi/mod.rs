//! The native MPI hook (MPICH ABI): replaces the container's MPI libraries by the host's.
//!
//! Configured by the hook's own environment (the `env` of its hooks.d JSON, written by the
//! admin; never the container's):
//! - `MPI_LIBS` (required): colon list of host MPI libraries, each `libX.so.MAJOR[.MINOR...]`;
//! - `MPI_DEPENDENCY_LIBS`: host libraries the MPI libraries need;
//! - `MPI_DEPENDENCY_MODULE_DIRS`: host directories of plugins a dependency library loads from
//!   beside itself (UCX's `ucx/`), each bound beside where its libraries went
//!   (see [`plan::module_binds`]);
//! - `BIND_MOUNTS`: host files, directories and device nodes, mounted at the same path;
//! - `LDCONFIG_PATH`: the host's trusted `ldconfig` (default `/sbin/ldconfig`);
//! - `MPI_COMPATIBILITY_TYPE`: `major` (default), `full` or `strict` (see [`version::Compat`]).
//!
//! Runs at `createContainer` (inside the container's mount namespace, before `pivot_root`): its
//! mounts are this container's only, and the rootfs is still at its host path.

pub mod plan;
pub mod version;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use egret_engine::sys::in_root::{self, InRootError};

use crate::bind::{self, BindError, BindOptions};
use crate::{ldcache, HookContext};

use plan::{ContainerLib, HostLib};
use version::{Compat, LibName};

#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    #[error("{var}: {msg}")]
    Config { var: &'static str, msg: String },
    #[error("host library {}: {source}", path.display())]
    HostLib {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("MPI_DEPENDENCY_MODULE_DIRS entry {}: not a directory", path.display())]
    ModuleDir { path: PathBuf },
    #[error("BIND_MOUNTS entry {}: {source}", path.display())]
    BindMount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "host MPI library {} has no major version in its file name (expected libX.so.MAJOR[.MINOR...])",
        path.display()
    )]
    HostWithoutMajor { path: PathBuf },
    #[error(
        "the image's MPI library {} has no major version in its file name, its ABI cannot be checked",
        path.display()
    )]
    ContainerWithoutMajor { path: PathBuf },
    #[error(
        "the image has no MPI library in its linker cache (looked for {wanted}); build it with a \
         dynamically linked MPICH and run ldconfig"
    )]
    NoMpi { wanted: String },
    #[error(
        "the host MPI library {} ({host_version}) is not ABI-compatible with the image's {} \
         ({container_version}) in '{mode}' compatibility mode",
        host.display(),
        container.display()
    )]
    Incompatible {
        host: PathBuf,
        host_version: String,
        container: PathBuf,
        container_version: String,
        mode: &'static str,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    LdCache(#[from] ldcache::LdcacheError),
    #[error("image library {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: InRootError,
    },
}

/// The hook's settings, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mpi_libs: Vec<PathBuf>,
    pub dependency_libs: Vec<PathBuf>,
    pub module_dirs: Vec<PathBuf>,
    pub bind_mounts: Vec<PathBuf>,
    pub ldconfig: PathBuf,
    pub compat: Compat,
}

pub const DEFAULT_LDCONFIG: &str = "/sbin/ldconfig";

impl Config {
    /// `get` reads one variable of the hook's environment.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, MpiError> {
        let list = |var: &'static str| -> Result<Vec<PathBuf>, MpiError> {
            let value = get(var).unwrap_or_default();
            value
                .split(':')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let p = PathBuf::from(s);
                    if p.is_absolute() {
                        Ok(p)
                    } else {
                        Err(MpiError::Config {
                            var,
                            msg: format!("'{s}' is not an absolute path"),
                        })
                    }
                })
                .collect()
        };
        let mpi_libs = list("MPI_LIBS")?;
        if mpi_libs.is_empty() {
            return Err(MpiError::Config {
                var: "MPI_LIBS",
                msg: "not set: the hook needs the host MPI libraries".into(),
            });
        }
        let compat_value = get("MPI_COMPATIBILITY_TYPE").unwrap_or_default();
        let compat = Compat::parse(&compat_value).ok_or_else(|| MpiError::Config {
            var: "MPI_COMPATIBILITY_TYPE",
            msg: format!("'{compat_value}' is not one of major, full, strict"),
        })?;
        let ldconfig = match get("LDCONFIG_PATH").filter(|s| !s.is_empty()) {
            None => PathBuf::from(DEFAULT_LDCONFIG),
            Some(p) if Path::new(&p).is_absolute() => PathBuf::from(p),
            Some(p) => {
                return Err(MpiError::Config {
                    var: "LDCONFIG_PATH",
                    msg: format!("'{p}' is not an absolute path"),
                })
            }
        };
        Ok(Config {
            mpi_libs,
            dependency_libs: list("MPI_DEPENDENCY_LIBS")?,
            module_dirs: list("MPI_DEPENDENCY_MODULE_DIRS")?,
            bind_mounts: list("BIND_MOUNTS")?,
            ldconfig,
            compat,
        })
    }
}

/// A host library as configured: its version from the configured file name, refined by the file
/// it resolves to (`libmpi.so.12` → `libmpi.so.12.1.3`). Host paths are the admin's.
pub fn host_lib(path: &Path) -> Result<HostLib, MpiError> {
    let real = std::fs::canonicalize(path).map_err(|source| MpiError::HostLib {
        path: path.to_path_buf(),
        source,
    })?;
    if !real.is_file() {
        return Err(MpiError::HostLib {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    let name = LibName::parse(&file_name(path)).ok_or_else(|| MpiError::HostLib {
        path: path.to_path_buf(),
        source: std::io::Error::other("not a shared library file name (libX.so[.N...])"),
    })?;
    let name = match LibName::parse(&file_name(&real)) {
        Some(r) => name.refine(&r),
        None => name,
    };
    Ok(HostLib {
        path: path.to_path_buf(),
        name,
    })
}

/// The container's libraries from its linker cache entries (soname, container path): symlinks
/// are resolved inside `rootfs` (never on the host); stale entries, whose file is gone, and
/// entries that are not library file names are dropped.
pub fn container_libs(
    rootfs: &Path,
    entries: &[(String, PathBuf)],
) -> Result<Vec<ContainerLib>, MpiError> {
    let mut out = Vec::new();
    for (soname, path) in entries {
        let rel = in_root::resolve_in_root(rootfs, path).map_err(|source| MpiError::Resolve {
            path: path.clone(),
            source,
        })?;
        match std::fs::symlink_metadata(rootfs.join(&rel)) {
            Ok(m) if m.is_file() => {}
            _ => continue,
        }
        let Some(name) = LibName::parse(&file_name(path)) else {
            continue;
        };
        let name = match LibName::parse(&file_name(&rel)) {
            Some(r) => name.refine(&r),
            None => name,
        };
        out.push(ContainerLib {
            soname: soname.clone(),
            real: Path::new("/").join(rel),
            name,
        });
    }
    Ok(out)
}

/// The hook: plan from the linker cache, bind, refresh the cache.
pub fn run(ctx: &HookContext) -> Result<(), MpiError> {
    let cfg = Config::from_env(crate::hook_env)?;
    let rootfs = ctx.rootfs();
    let mpi_libs = cfg
        .mpi_libs
        .iter()
        .map(|p| host_lib(p))
        .collect::<Result<Vec<_>, _>>()?;
    let dependency_libs = cfg
        .dependency_libs
        .iter()
        .map(|p| host_lib(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Only 64-bit entries: a host library never replaces another architecture's.
    let entries: Vec<(String, PathBuf)> = ldcache::container_libraries(rootfs, &cfg.ldconfig)?
        .into_iter()
        .filter(|l| l.is_64bit())
        .map(|l| (l.soname, l.path))
        .collect();
    let container = container_libs(rootfs, &entries)?;
    let plan = plan::plan(&mpi_libs, &dependency_libs, &container, cfg.compat)?;
    for w in &plan.warnings {
        crate::warn!("{w}");
    }
    let ro = BindOptions {
        readonly: true,
        ..BindOptions::default()
    };
    for b in &plan.binds {
        bind::bind(rootfs, &b.source, &b.destination, ro)?;
        crate::info!(
            "{} {} with {}",
            if b.replaces { "replaced" } else { "added" },
            b.destination.display(),
            b.source.display()
        );
    }
    // After the libraries: a host libucs bound over the image's loads the plugins beside it,
    // which must then be the host's own (the image's, built for its own UCX, crash it).
    // Binding them there, rather than pointing UCX_MODULE_DIR elsewhere, keeps the plugins
    // beside the library in use whatever loads it, and needs nothing of the environment.
    for d in &cfg.module_dirs {
        if !d.is_dir() {
            return Err(MpiError::ModuleDir { path: d.clone() });
        }
    }
    for b in plan::module_binds(&plan.binds, &cfg.module_dirs) {
        bind::bind(rootfs, &b.source, &b.destination, ro)?;
        crate::info!(
            "mounted {} over {}",
            b.source.display(),
            b.destination.display()
        );
    }
    for p in &cfg.bind_mounts {
        let meta = std::fs::metadata(p).map_err(|source| MpiError::BindMount {
            path: p.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if ft.is_char_device() || ft.is_block_device() {
            bind::bind_device(rootfs, p, p)?;
        } else {
            let opts = BindOptions {
                recursive: true,
                ..BindOptions::default()
            };
            bind::bind(rootfs, p, p, opts)?;
        }
        crate::debug!("mounted {}", p.display());
    }
    // Directories that received new libraries may not be in the image's ld.so.conf.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for b in plan.binds.iter().filter(|b| !b.replaces) {
        if let Some(d) = b.destination.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    ldcache::refresh(rootfs, &cfg.ldconfig, &dirs)?;
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::symlink;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn config_from_the_hook_environment() {
        let c = Config::from_env(env(&[
            ("MPI_LIBS", "/h/libmpi.so.12:/h/libmpicxx.so.12"),
            ("MPI_DEPENDENCY_LIBS", ""),
            ("MPI_DEPENDENCY_MODULE_DIRS", "/h/lib/ucx"),
            ("BIND_MOUNTS", "/dev/shm::/var/run/x"),
            ("MPI_COMPATIBILITY_TYPE", "strict"),
        ]))
        .unwrap();
        assert_eq!(c.mpi_libs.len(), 2);
        assert!(c.dependency_libs.is_empty());
        assert_eq!(c.module_dirs, [PathBuf::from("/h/lib/ucx")]);
        assert_eq!(
            c.bind_mounts,
            [PathBuf::from("/dev/shm"), "/var/run/x".into()]
        );
        assert_eq!(c.ldconfig, PathBuf::from(DEFAULT_LDCONFIG));
        assert_eq!(c.compat, Compat::Strict);

        for (pairs, needle) in [
            (vec![], "MPI_LIBS: not set"),
            (vec![("MPI_LIBS", "")], "MPI_LIBS: not set"),
            (
                vec![("MPI_LIBS", "lib/libmpi.so.12")],
                "not an absolute path",
            ),
            (
                vec![
                    ("MPI_LIBS", "/l/libmpi.so.12"),
                    ("MPI_COMPATIBILITY_TYPE", "minor"),
                ],
                "MPI_COMPATIBILITY_TYPE: 'minor'",
            ),
            (
                vec![
                    ("MPI_LIBS", "/l/libmpi.so.12"),
                    ("LDCONFIG_PATH", "ldconfig"),
                ],
                "LDCONFIG_PATH",
            ),
            (
                vec![("MPI_LIBS", "/l/libmpi.so.12"), ("BIND_MOUNTS", "dev/x")],
                "BIND_MOUNTS",
            ),
            (
                vec![
                    ("MPI_LIBS", "/l/libmpi.so.12"),
                    ("MPI_DEPENDENCY_MODULE_DIRS", "ucx"),
                ],
                "MPI_DEPENDENCY_MODULE_DIRS",
            ),
        ] {
            let e = Config::from_env(env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn host_library_versions_follow_the_real_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("libmpi.so.12.1.3"), "elf").unwrap();
        symlink("libmpi.so.12.1.3", d.path().join("libmpi.so.12")).unwrap();
        let h = host_lib(&d.path().join("libmpi.so.12")).unwrap();
        assert_eq!(h.name.version, [12, 1, 3]);
        assert_eq!(h.path, d.path().join("libmpi.so.12"));
        let e = host_lib(&d.path().join("libmpi.so.13"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("libmpi.so.13"), "{e}");
        std::fs::write(d.path().join("mpi.txt"), "x").unwrap();
        assert!(host_lib(&d.path().join("mpi.txt")).is_err());
        assert!(host_lib(d.path()).is_err());
    }

    #[test]
    fn container_libraries_resolve_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libmpich.so.12.2.2"), "elf").unwrap();
        symlink("libmpich.so.12.2.2", lib.join("libmpich.so.12")).unwrap();
        // An absolute link resolves inside the rootfs, never on the host.
        symlink(
            "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
            lib.join("libmpich.so"),
        )
        .unwrap();
        // /lib -> usr/lib as in merged-/usr images; a link to a host file is not followed out.
        symlink("/etc/passwd", root.path().join("usr/lib/libevil.so.1")).unwrap();
        symlink("usr/lib", root.path().join("lib")).unwrap();
        let entries: Vec<(String, PathBuf)> = [
            ("libmpich.so.12", "/lib/x86_64-linux-gnu/libmpich.so.12"),
            ("libmpich.so", "/usr/lib/x86_64-linux-gnu/libmpich.so"),
            ("libgone.so.1", "/usr/lib/libgone.so.1"),
            ("libevil.so.1", "/lib/libevil.so.1"),
        ]
        .iter()
        .map(|(s, p)| (s.to_string(), PathBuf::from(p)))
        .collect();
        let libs = container_libs(root.path(), &entries).unwrap();
        let got: Vec<(&str, String, String)> = libs
            .iter()
            .map(|l| {
                (
                    l.soname.as_str(),
                    l.real.display().to_string(),
                    l.name.version_string(),
                )
            })
            .collect();
        let real = "/usr/lib/x86_64-linux-gnu/libmpich.so.12.2.2".to_string();
        assert_eq!(
            got,
            [
                ("libmpich.so.12", real.clone(), "12.2.2".to_string()),
                ("libmpich.so", real, "12.2.2".to_string()),
            ]
        );
    }
}
