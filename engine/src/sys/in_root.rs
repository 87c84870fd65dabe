//! Finding, creating and rewriting paths *inside* a container's root filesystem without ever
//! leaving it.
//!
//! Resolution inside the rootfs is a component walk: every symlink met (absolute or relative) is
//! re-rooted at the rootfs, `..` stops at the rootfs root, and the number of links followed is
//! bounded. The target is then opened (or created) component by component with `O_NOFOLLOW`, so
//! a symlink that appeared since the walk is an error, never a way out. [`ContainerDir`] lets the
//! kernel resolve once (`openat2` with `RESOLVE_IN_ROOT`) and works on the descriptor after.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Symlinks followed while resolving one path, as the kernel's own limit (`ELOOP`).
const MAX_SYMLINKS: usize = 40;

/// Why a path inside the rootfs could not be resolved, created, read or replaced; `path` is the
/// container path, as the user wrote it or as resolved.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("too many levels of symbolic links resolving {} in the container", path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("cannot resolve {} in the container: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {} in the container: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} in the container is {}", path.display(), if *is_dir { "a directory, the source is not" } else { "not a directory, the source is" })]
    TypeMismatch { path: PathBuf, is_dir: bool },
    #[error("{} changed while the container was being prepared", path.display())]
    Changed { path: PathBuf },
    #[error("{} in the container is on another mount (a bind mount of a host directory?): egret writes only into the image's own files", path.display())]
    NotImageFilesystem { path: PathBuf },
    #[error("cannot create {} in the container: it would be created on another mount", path.display())]
    OnOtherMount { path: PathBuf },
}

/// Resolves the container path `path` inside `root` as the container will see it: symlinks are
/// followed relative to `root` (an absolute target restarts at `root`), `..` never climbs above
/// `root`. Returns the path relative to `root`; its existing components are not symlinks. Missing
/// components are kept as they are (they are created later).
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, InRootError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = normal_components(path).collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let here: PathBuf = resolved.iter().collect::<PathBuf>().join(&c);
        match std::fs::symlink_metadata(root.join(&here)) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(InRootError::SymlinkLoop {
                        path: path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(root.join(&here)).map_err(|source| {
                    InRootError::Resolve {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for t in normal_components(&target)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    pending.push_front(t);
                }
            }
            Ok(_) => resolved.push(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(c),
            Err(source) => {
                return Err(InRootError::Resolve {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(resolved.iter().collect())
}

/// Components that name something (`.` dropped, `..` kept as a plain name for the walk).
fn normal_components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// What a mount target must be: a directory for a directory source, a file otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Dir,
    File,
}

/// Opens (`O_PATH`) the target `rel` (as returned by [`resolve_in_root`]) under `root`, creating
/// missing directories (mode 0755) and, for a file target, an empty file (0644). Every component
/// is opened with `O_NOFOLLOW` relative to its parent: nothing outside `root` is ever touched.
pub fn open_in_root(root: &Path, rel: &Path, kind: TargetKind) -> Result<OwnedFd, InRootError> {
    let shown = Path::new("/").join(rel);
    let create_err = |source: io::Error| InRootError::Create {
        path: shown.clone(),
        source,
    };
    // The rootfs path itself is egret's own (the bundle), not the image's.
    let mut cur = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map(OwnedFd::from)
        .map_err(create_err)?;
    // Creating is only allowed on the rootfs's own filesystem, never inside a bind mount of a
    // host directory.
    let root_dev = fstat(cur.as_raw_fd())
        .map_err(|e| create_err(e.into()))?
        .st_dev;
    let names: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(InRootError::Changed {
                path: shown.clone(),
            }),
        })
        .collect::<Result<_, _>>()?;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let want_dir = !last || kind == TargetKind::Dir;
        let fd = match open_nofollow(&cur, name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if fstat(cur.as_raw_fd())
                    .map_err(|e| create_err(e.into()))?
                    .st_dev
                    != root_dev
                {
                    return Err(InRootError::OnOtherMount {
                        path: shown.clone(),
                    });
                }
                create_entry(&cur, name, want_dir).map_err(create_err)?;
                open_nofollow(&cur, name).map_err(create_err)?
            }
            Err(e) => return Err(create_err(e)),
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| create_err(e.into()))?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if fmt == SFlag::S_IFLNK {
            return Err(InRootError::Changed {
                path: shown.clone(),
            });
        }
        let is_dir = fmt == SFlag::S_IFDIR;
        if is_dir != want_dir {
            let path = if last {
                shown.clone()
            } else {
                Path::new("/").join(names[..=i].iter().collect::<PathBuf>())
            };
            return Err(InRootError::TypeMismatch { path, is_dir });
        }
        cur = fd;
    }
    if names.is_empty() && kind == TargetKind::File {
        return Err(InRootError::TypeMismatch {
            path: shown,
            is_dir: true,
        });
    }
    Ok(cur)
}

fn open_nofollow(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    super::fs::openat(
        dir,
        Path::new(name),
        OFlag::O_PATH | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

fn create_entry(dir: &OwnedFd, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let r = if is_dir {
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
            .map_err(io::Error::from)
    } else {
        super::fs::openat(
            dir,
            Path::new(name),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    };
    match r {
        // Created by someone else meanwhile: the caller re-opens and checks it.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Replaces the container file `path` (absolute) with a new root-owned file holding `contents`
/// (see [`ContainerDir::replace`]); the parent directory is created when missing.
pub fn replace_file_in_root(
    root: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), InRootError> {
    replace_file_in_root_owned(root, path, contents, mode, None)
}

/// [`replace_file_in_root`], the new file owned by `owner` (uid, gid) instead of root.
pub fn replace_file_in_root_owned(
    root: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), InRootError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(InRootError::TypeMismatch {
            path: path.to_path_buf(),
            is_dir: true,
        });
    };
    ContainerDir::open_or_create(root, parent)?.replace_owned(name, contents, mode, owner)
}

/// Files larger than this are not the small configuration files egret reads in a container.
const MAX_CONTAINER_FILE: u64 = 4 << 20;

/// A directory of the container, resolved once by the kernel inside the rootfs
/// (`RESOLVE_IN_ROOT`: the image's links, absolute or relative, stay inside) and on the rootfs's
/// own filesystem (`RESOLVE_NO_XDEV`: never a bind mount of a host directory, never a user's
/// mount). Reads and writes then go through this one descriptor, so what was read is what is
/// replaced, and nothing can be swapped in between.
#[derive(Debug)]
pub struct ContainerDir {
    fd: OwnedFd,
    /// The container path, for messages.
    path: PathBuf,
}

impl ContainerDir {
    /// The existing directory `path` (absolute, in the container) of the rootfs at `root`.
    pub fn open(root: &Path, path: &Path) -> Result<ContainerDir, InRootError> {
        let root_fd = open_rootfs(root, path)?;
        let fd = super::fs::open_in_root(&root_fd, path, OFlag::O_PATH | OFlag::O_DIRECTORY, true)
            .map_err(|source| in_root_error(path, source))?;
        Ok(ContainerDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Like [`open`](Self::open), creating missing directories on the rootfs's own filesystem.
    pub fn open_or_create(root: &Path, path: &Path) -> Result<ContainerDir, InRootError> {
        match ContainerDir::open(root, path) {
            Err(InRootError::Resolve { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                open_in_root(root, &resolve_in_root(root, path)?, TargetKind::Dir)?;
                ContainerDir::open(root, path)
            }
            other => other,
        }
    }

    /// The regular file `name` in this directory, not following a link; `None` when there is
    /// no such regular file (missing, or a link, FIFO, device or directory of the image).
    pub fn read(&self, name: &OsStr) -> Result<Option<Vec<u8>>, InRootError> {
        let shown = self.path.join(name);
        let fd = match super::fs::openat(
            &self.fd,
            Path::new(name),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => {
                return Ok(None)
            }
            Err(source) => {
                return Err(InRootError::Resolve {
                    path: shown,
                    source,
                })
            }
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| InRootError::Resolve {
            path: shown.clone(),
            source: e.into(),
        })?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        use std::io::Read;
        File::from(fd)
            .take(MAX_CONTAINER_FILE)
            .read_to_end(&mut bytes)
            .map_err(|source| InRootError::Resolve {
                path: shown,
                source,
            })?;
        Ok(Some(bytes))
    }

    /// Replaces `name` with a new root-owned file holding `contents`: an existing entry (a
    /// symlink included) is removed first, so nothing is ever written through a link.
    pub fn replace(&self, name: &OsStr, contents: &[u8], mode: u32) -> Result<(), InRootError> {
        self.replace_owned(name, contents, mode, None)
    }

    /// [`replace`](Self::replace), the new file owned by `owner` (uid, gid) when given.
    pub fn replace_owned(
        &self,
        name: &OsStr,
        contents: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), InRootError> {
        let shown = self.path.join(name);
        let create_err = |source: io::Error| InRootError::Create {
            path: shown.clone(),
            source,
        };
        let dir = self.fd.as_raw_fd();
        match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {
                return Err(InRootError::TypeMismatch {
                    path: shown,
                    is_dir: true,
                })
            }
            Ok(_) => unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| create_err(e.into()))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(create_err(e.into())),
        }
        let fd = super::fs::openat(
            &self.fd,
            Path::new(name),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(mode),
        )
        .map_err(create_err)?;
        let mut file = File::from(fd);
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(
                file.as_raw_fd(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| create_err(e.into()))?;
        }
        file.write_all(contents).map_err(create_err)?;
        // The umask may have narrowed the mode.
        nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| create_err(e.into()))
    }
}

/// The rootfs directory itself: egret's own (the bundle), not the image's.
fn open_rootfs(root: &Path, shown: &Path) -> Result<OwnedFd, InRootError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map(OwnedFd::from)
        .map_err(|source| InRootError::Resolve {
            path: shown.to_path_buf(),
            source,
        })
}

fn in_root_error(path: &Path, source: io::Error) -> InRootError {
    match source.raw_os_error() {
        Some(libc::EXDEV) => InRootError::NotImageFilesystem {
            path: path.to_path_buf(),
        },
        Some(libc::ELOOP) => InRootError::SymlinkLoop {
            path: path.to_path_buf(),
        },
        _ => InRootError::Resolve {
            path: path.to_path_buf(),
            source,
        },
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A fake image: /etc real, /link -> /etc (absolute), /rel -> ../../etc (climbs), a loop.
    fn image() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("/etc", r.join("link")).unwrap();
        symlink("../../etc", r.join("usr/rel")).unwrap();
        symlink("lib", r.join("usr/lib64")).unwrap();
        symlink("/loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("/usr/lib64/../../etc/sub", r.join("deep")).unwrap();
        t
    }

    #[test]
    fn symlinks_are_rerooted() {
        let t = image();
        let r = t.path();
        let res = |s: &str| resolve_in_root(r, Path::new(s)).unwrap();
        assert_eq!(res("/link"), p("etc"));
        assert_eq!(res("/link/new/dir"), p("etc/new/dir"));
        assert_eq!(
            res("/usr/rel/sub"),
            p("etc/sub"),
            "'..' stops at the rootfs root"
        );
        assert_eq!(res("/../../../etc"), p("etc"));
        assert_eq!(res("/usr/lib64/x"), p("usr/lib/x"));
        assert_eq!(res("/deep"), p("etc/sub"));
        assert_eq!(res("/missing/../etc"), p("etc"));
        assert_eq!(res("/"), p(""));
        let e = resolve_in_root(r, Path::new("/loop1/x")).unwrap_err();
        assert!(matches!(e, InRootError::SymlinkLoop { .. }), "{e}");
    }

    #[test]
    fn targets_are_created_inside() {
        let t = image();
        let r = t.path();
        let rel = resolve_in_root(r, Path::new("/link/made/here")).unwrap();
        open_in_root(r, &rel, TargetKind::Dir).unwrap();
        assert!(r.join("etc/made/here").is_dir());
        let rel = resolve_in_root(r, Path::new("/usr/rel/file")).unwrap();
        open_in_root(r, &rel, TargetKind::File).unwrap();
        assert!(r.join("etc/file").is_file());
        // Existing targets of the wrong type are refused with the container path.
        let e = open_in_root(r, Path::new("etc/file"), TargetKind::Dir).unwrap_err();
        assert!(
            matches!(e, InRootError::TypeMismatch { is_dir: false, .. }),
            "{e}"
        );
        let e = open_in_root(r, Path::new("etc"), TargetKind::File)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc in the container is a directory"), "{e}");
        // An unresolved path with a symlink in it is never followed.
        let e = open_in_root(r, Path::new("link/x"), TargetKind::Dir).unwrap_err();
        assert!(matches!(e, InRootError::Changed { .. }), "{e}");
    }

    #[test]
    fn replace_file_never_writes_through_links() {
        let t = image();
        let r = t.path();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"host").unwrap();
        symlink(outside.path(), r.join("etc/passwd")).unwrap();
        replace_file_in_root(r, Path::new("/link/passwd"), b"container", 0o644).unwrap();
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"host");
        assert_eq!(std::fs::read(r.join("etc/passwd")).unwrap(), b"container");
        assert!(!r
            .join("etc/passwd")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &r.join("etc/passwd").metadata().unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
        // A missing /etc is created.
        std::fs::remove_dir_all(r.join("etc")).unwrap();
        replace_file_in_root(r, Path::new("/etc/hosts"), b"h", 0o644).unwrap();
        assert_eq!(std::fs::read(r.join("etc/hosts")).unwrap(), b"h");
    }

    #[test]
    fn container_dirs_are_resolved_once_inside_the_root() {
        let t = image();
        let r = t.path();
        // An absolute link of the image is followed inside the rootfs, never to the host's /etc.
        let etc = ContainerDir::open(r, Path::new("/link")).unwrap();
        std::fs::write(r.join("etc/passwd"), b"image").unwrap();
        assert_eq!(etc.read(OsStr::new("passwd")).unwrap().unwrap(), b"image");
        // What was opened stays what is written, even if the path is swapped afterwards.
        std::fs::rename(r.join("etc"), r.join("etc.old")).unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        etc.replace(OsStr::new("passwd"), b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(r.join("etc.old/passwd")).unwrap(), b"new");
        assert!(!r.join("etc/passwd").exists());
        // A FIFO, a link or a directory is no file to read, and reading never blocks.
        nix::unistd::mkfifo(&r.join("etc.old/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        symlink("/etc/passwd", r.join("etc.old/shells")).unwrap();
        assert_eq!(etc.read(OsStr::new("fifo")).unwrap(), None);
        assert_eq!(etc.read(OsStr::new("shells")).unwrap(), None);
        assert_eq!(etc.read(OsStr::new("missing")).unwrap(), None);
        // A loop is one clear error.
        let e = ContainerDir::open(r, Path::new("/loop1")).unwrap_err();
        assert!(matches!(e, InRootError::SymlinkLoop { .. }), "{e}");
    }
}
