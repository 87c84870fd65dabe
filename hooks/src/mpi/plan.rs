//! What the MPI hook mounts where: pure logic over the host libraries named in the hook's
//! environment and the container's libraries from its linker cache.
//!
//! - Each host MPI library replaces every container library with the same ABI linker name
//!   (`libmpi.so`, `libmpich.so` folded onto it; see [`LibName::abi_name`]) after the version
//!   check of the selected [`Compat`] mode; it is bound over the container library's real file,
//!   so every symlink naming it (`libmpich.so.12`, `libmpi.so.12`, ...) reaches the host library.
//! - A host MPI library without a counterpart is added to the library directory (below).
//! - A dependency library replaces the container library with the same soname, else is added.
//! - The library directory is the directory of the first replaced container library (so a host
//!   library's `$ORIGIN` RUNPATH finds its added dependencies), `/usr/lib` when nothing was
//!   replaced.
//! - A module directory (`MPI_DEPENDENCY_MODULE_DIRS`, e.g. UCX's `ucx/` of transport plugins
//!   that `libucs` loads from beside the file it was loaded from) is bound, under its own name,
//!   beside every container file that a host library of its parent directory was bound onto
//!   ([`module_binds`]): the plugins found there are then the host library's own, over the
//!   image's (built for the image's library, which the host one replaced).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::version::{Compat, LibName, Verdict};
use super::MpiError;

/// A library named in `MPI_LIBS` or `MPI_DEPENDENCY_LIBS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLib {
    /// The path as configured (bind source).
    pub path: PathBuf,
    /// From the configured file name, refined by its real file's name.
    pub name: LibName,
}

/// A library of the container's linker cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLib {
    /// The cache's key (the soname or link name the loader asks for).
    pub soname: String,
    /// Absolute container path of the real file (symlinks resolved inside the rootfs).
    pub real: PathBuf,
    /// From the cached path's file name, refined by the real file's name.
    pub name: LibName,
}

/// One bind mount of a host file into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute container path.
    pub destination: PathBuf,
    /// Over an existing container library (true) or as a new file (false).
    pub replaces: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub binds: Vec<Bind>,
    /// Partial compatibility notes, for the log.
    pub warnings: Vec<String>,
}

pub const DEFAULT_LIB_DIR: &str = "/usr/lib";

pub fn plan(
    mpi_libs: &[HostLib],
    dependency_libs: &[HostLib],
    container: &[ContainerLib],
    compat: Compat,
) -> Result<Plan, MpiError> {
    let mut out = Plan::default();
    let mut added: Vec<&HostLib> = Vec::new();
    let mut found_any = false;
    for host in mpi_libs {
        if host.name.major().is_none() {
            return Err(MpiError::HostWithoutMajor {
                path: host.path.clone(),
            });
        }
        let abi = host.name.abi_name();
        let mut seen = BTreeSet::new();
        let candidates: Vec<&ContainerLib> = container
            .iter()
            .filter(|c| c.name.abi_name() == abi && seen.insert(c.real.clone()))
            .collect();
        if candidates.is_empty() {
            added.push(host);
            continue;
        }
        found_any = true;
        let versioned: Vec<&&ContainerLib> = candidates
            .iter()
            .filter(|c| c.name.major().is_some())
            .collect();
        if versioned.is_empty() {
            return Err(MpiError::ContainerWithoutMajor {
                path: candidates[0].real.clone(),
            });
        }
        for c in versioned {
            match compat.check(&host.name, &c.name) {
                Verdict::Incompatible => {
                    return Err(MpiError::Incompatible {
                        host: host.path.clone(),
                        host_version: host.name.version_string(),
                        container: c.real.clone(),
                        container_version: c.name.version_string(),
                        mode: compat.as_str(),
                    })
                }
                Verdict::Partial => out.warnings.push(format!(
                    "partial ABI compatibility: host {} ({}) is older than the container's {} ({}); replacing it anyway",
                    host.path.display(),
                    host.name.version_string(),
                    c.real.display(),
                    c.name.version_string()
                )),
                Verdict::Compatible => {}
            }
            out.binds.push(Bind {
                source: host.path.clone(),
                destination: c.real.clone(),
                replaces: true,
            });
        }
    }
    if !found_any {
        let wanted: BTreeSet<String> = mpi_libs.iter().map(|h| h.name.abi_name()).collect();
        return Err(MpiError::NoMpi {
            wanted: wanted.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let lib_dir = out
        .binds
        .first()
        .and_then(|b| b.destination.parent())
        .unwrap_or(Path::new(DEFAULT_LIB_DIR))
        .to_path_buf();
    for host in added {
        push_added(&mut out, host, &lib_dir);
    }
    for dep in dependency_libs {
        let file = file_name(&dep.path);
        let mut seen = BTreeSet::new();
        let same: Vec<&ContainerLib> = container
            .iter()
            .filter(|c| {
                (c.soname == file || file_name(&c.real) == file) && seen.insert(c.real.clone())
            })
            .collect();
        if same.is_empty() {
            push_added(&mut out, dep, &lib_dir);
        }
        for c in same {
            push_unique(
                &mut out,
                Bind {
                    source: dep.path.clone(),
                    destination: c.real.clone(),
                    replaces: true,
                },
            );
        }
    }
    Ok(out)
}

fn push_added(out: &mut Plan, host: &HostLib, lib_dir: &Path) {
    push_unique(
        out,
        Bind {
            source: host.path.clone(),
            destination: lib_dir.join(file_name(&host.path)),
            replaces: false,
        },
    );
}

/// Two host files for one destination would hide each other: the first wins.
fn push_unique(out: &mut Plan, bind: Bind) {
    if !out.binds.iter().any(|b| b.destination == bind.destination) {
        out.binds.push(bind);
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The binds of the host module directories `module_dirs`: each beside the container file of
/// every bind in `lib_binds` whose source lies in the module directory's parent (one bind per
/// container directory). A module directory none of whose sibling libraries was bound gets none:
/// the image's libraries there are its own, and so are their plugins.
pub fn module_binds(lib_binds: &[Bind], module_dirs: &[PathBuf]) -> Vec<Bind> {
    let mut out: Vec<Bind> = Vec::new();
    for dir in module_dirs {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        for b in lib_binds
            .iter()
            .filter(|b| b.source.parent() == Some(parent))
        {
            let Some(at) = b.destination.parent() else {
                continue;
            };
            let destination = at.join(name);
            if !out.iter().any(|o| o.destination == destination) {
                out.push(Bind {
                    source: dir.clone(),
                    destination,
                    replaces: false,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(path: &str) -> HostLib {
        let name = LibName::parse(Path::new(path).file_name().unwrap().to_str().unwrap()).unwrap();
        HostLib {
            path: path.into(),
            name,
        }
    }

    fn lib(soname: &str, real: &str) -> ContainerLib {
        let name = LibName::parse(soname).unwrap().refine(
            &LibName::parse(Path::new(real).file_name().unwrap().to_str().unwrap()).unwrap(),
        );
        ContainerLib {
            soname: soname.into(),
            real: real.into(),
            name,
        }
    }

    const D: &str = "/usr/lib/x86_64-linux-gnu";

    /// Debian's libmpich12 as ldconfig lists it (the dev link too).
    fn debian_image() -> Vec<ContainerLib> {
        vec![
            lib("libmpich.so.12", &format!("{D}/libmpich.so.12.2.2")),
            lib("libmpich.so", &format!("{D}/libmpich.so.12.2.2")),
            lib("libmpichfort.so.12", &format!("{D}/libmpichfort.so.12.2.2")),
            lib("libfabric.so.1", &format!("{D}/libfabric.so.1.18.2")),
            lib("libc.so.6", &format!("{D}/libc.so.6")),
        ]
    }

    fn bind(source: &str, destination: &str, replaces: bool) -> Bind {
        Bind {
            source: source.into(),
            destination: destination.into(),
            replaces,
        }
    }

    #[test]
    fn host_libmpi_replaces_the_debian_libmpich_and_adds_the_rest() {
        let p = plan(
            &[
                host("/opt/m/lib/libmpi.so.12"),
                host("/opt/m/lib/libmpicxx.so.12"),
            ],
            &[
                host("/opt/m/lib/mpich/libfabric.so.1"),
                host("/opt/m/lib/mpich/libucp.so.0"),
            ],
            &debian_image(),
            Compat::Major,
        )
        .unwrap();
        assert_eq!(
            p.binds,
            vec![
                bind(
                    "/opt/m/lib/libmpi.so.12",
                    &format!("{D}/libmpich.so.12.2.2"),
                    true
                ),
                bind(
                    "/opt/m/lib/libmpicxx.so.12",
                    &format!("{D}/libmpicxx.so.12"),
                    false
                ),
                bind(
                    "/opt/m/lib/mpich/libfabric.so.1",
                    &format!("{D}/libfabric.so.1.18.2"),
                    true
                ),
                bind(
                    "/opt/m/lib/mpich/libucp.so.0",
                    &format!("{D}/libucp.so.0"),
                    false
                ),
            ]
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn full_mode_warns_about_an_older_host_minor_and_strict_refuses_it() {
        let host = [host("/opt/m/lib/libmpi.so.12")];
        let p = plan(&host, &[], &debian_image(), Compat::Full).unwrap();
        assert_eq!(p.binds.len(), 1);
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("partial ABI compatibility"),
            "{:?}",
            p.warnings
        );
        let e = plan(&host, &[], &debian_image(), Compat::Strict)
            .unwrap_err()
            .to_string();
        for needle in [
            "/opt/m/lib/libmpi.so.12",
            "(12)",
            "libmpich.so.12.2.2",
            "(12.2.2)",
            "strict",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn a_different_major_is_refused_in_every_mode() {
        for mode in [Compat::Major, Compat::Full, Compat::Strict] {
            let e = plan(&[host("/h/libmpi.so.40.1")], &[], &debian_image(), mode)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("40.1") && e.contains("12.2.2") && e.contains(mode.as_str()),
                "{e}"
            );
        }
    }

    #[test]
    fn an_image_without_mpi_is_refused() {
        let image = vec![lib("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6")];
        let e = plan(&[host("/h/libmpi.so.12")], &[], &image, Compat::Major).unwrap_err();
        assert!(matches!(e, MpiError::NoMpi { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("no MPI library") && e.contains("libmpi.so") && e.contains("ldconfig"),
            "{e}"
        );
        let e = plan(&[host("/h/libmpi.so.12")], &[], &[], Compat::Major).unwrap_err();
        assert!(matches!(e, MpiError::NoMpi { .. }), "{e}");
    }

    #[test]
    fn versions_are_required() {
        let e = plan(&[host("/h/libmpi.so")], &[], &debian_image(), Compat::Major).unwrap_err();
        assert!(matches!(e, MpiError::HostWithoutMajor { .. }), "{e}");
        let image = vec![lib("libmpi.so", "/usr/lib/libmpi.so")];
        let e = plan(&[host("/h/libmpi.so.12")], &[], &image, Compat::Major).unwrap_err();
        assert!(matches!(e, MpiError::ContainerWithoutMajor { .. }), "{e}");
    }

    #[test]
    fn several_container_copies_are_all_replaced_once_each() {
        let image = vec![
            lib("libmpi.so.12", "/usr/lib/libmpi.so.12.1.0"),
            lib("libmpi.so", "/usr/lib/libmpi.so.12.1.0"),
            lib("libmpich.so.12", "/opt/other/libmpich.so.12.0.5"),
        ];
        let host_libs = [host("/h/libmpi.so.12.1.1")];
        let p = plan(&host_libs, &[host("/h/libdep.so.3")], &image, Compat::Major).unwrap();
        assert_eq!(
            p.binds,
            vec![
                bind("/h/libmpi.so.12.1.1", "/usr/lib/libmpi.so.12.1.0", true),
                bind("/h/libmpi.so.12.1.1", "/opt/other/libmpich.so.12.0.5", true),
                bind("/h/libdep.so.3", "/usr/lib/libdep.so.3", false),
            ]
        );
        // One incompatible copy is enough to refuse.
        let e = plan(&host_libs, &[], &image, Compat::Strict)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/opt/other/libmpich.so.12.0.5"), "{e}");
    }

    #[test]
    fn module_dirs_go_beside_where_their_libraries_went() {
        let bind = |src: &str, dst: &str| Bind {
            source: PathBuf::from(src),
            destination: PathBuf::from(dst),
            replaces: true,
        };
        let libs = [
            bind(
                "/h/lib/libmpi.so.12",
                "/usr/lib/x86_64-linux-gnu/libmpich.so.12.2.2",
            ),
            bind(
                "/h/lib/mpich/libucs.so.0",
                "/usr/lib/x86_64-linux-gnu/libucs.so.0.0.0",
            ),
            bind(
                "/h/lib/mpich/libuct.so.0",
                "/usr/lib/x86_64-linux-gnu/libuct.so.0.0.0",
            ),
            bind("/h/lib/mpich/libfabric.so.1", "/usr/lib64/libfabric.so.1"),
        ];
        let got = module_binds(
            &libs,
            &[
                PathBuf::from("/h/lib/mpich/ucx"),
                PathBuf::from("/h/other/plugins"),
            ],
        );
        let got: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|b| {
                (
                    b.source.to_str().unwrap(),
                    b.destination.to_str().unwrap(),
                    b.replaces,
                )
            })
            .collect();
        // Once per container directory; nothing for a directory whose libraries stayed out.
        assert_eq!(
            got,
            [
                ("/h/lib/mpich/ucx", "/usr/lib/x86_64-linux-gnu/ucx", false),
                ("/h/lib/mpich/ucx", "/usr/lib64/ucx", false),
            ]
        );
        assert!(module_binds(&libs, &[]).is_empty());
    }
}
