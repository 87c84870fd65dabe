//! `--container-workdir` must name a directory the container already has, as pyxis's `chdir`
//! requires. runc would create a missing one (as root, silently); so before each task's runc
//! starts, the directory is looked up in the step's rootfs with the user's rights.

use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::container::rootfs::Rootfs;
use crate::container::user::{UserError, UserIdentity};
use crate::sys;

/// Why the working directory cannot be entered; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    /// pyxis's words ("couldn't chdir to"), which scripts may grep.
    #[error("--container-workdir={value}: couldn't chdir to {}: {} (the directory must exist in the container)", path.display(), errno_text(source))]
    Chdir {
        value: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-workdir: cannot open the container's root {}: {source}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-workdir: {0}")]
    User(#[from] UserError),
}

/// `strerror`'s text, without Rust's "(os error N)".
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// Paths that exist only once runc has made the container's own mounts: its `/proc`, `/sys`
/// and `/dev`, and the mount points it creates for the step's tmpfs and device mounts.
fn made_by_runc(rootfs: &Rootfs, path: &Path) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|r| path.starts_with(r))
        || rootfs.spec_mounts.iter().any(|m| m.destination() == path)
}

/// Checks that `path` (the normalized container path of `value`, the option as typed) is a
/// directory of the container that `user` can reach. The rootfs is opened as root (the bundle
/// is root's); the lookup below it is the user's, resolved by the kernel inside the rootfs
/// (`RESOLVE_IN_ROOT`), and only opens (`O_PATH`): nothing is created or read.
pub fn check(
    rootfs: &Rootfs,
    user: &UserIdentity,
    value: &str,
    path: &Path,
) -> Result<(), WorkdirError> {
    if made_by_runc(rootfs, path) {
        return Ok(());
    }
    let root = sys::fs::open_dir(&rootfs.rootfs).map_err(|source| WorkdirError::Root {
        path: rootfs.rootfs.clone(),
        source,
    })?;
    let found = user
        .run_as(|| sys::fs::open_in_root(&root, path, OFlag::O_PATH | OFlag::O_DIRECTORY, false))?;
    found.map(drop).map_err(|source| WorkdirError::Chdir {
        value: value.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::rootfs::{tmpfs_spec_mount, AttachInfo};

    #[test]
    fn only_existing_directories_of_the_rootfs_or_runcs_own_mounts_pass() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("f"), "").unwrap();
        // An absolute link of the image resolves inside the rootfs, never on the host.
        std::os::unix::fs::symlink("/a", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/", root.join("host")).unwrap();
        let rootfs = Rootfs::attached(
            &AttachInfo {
                rootfs: root.clone(),
                spec_mounts: vec![tmpfs_spec_mount(Path::new("/scratch"), &[])],
                ..AttachInfo::default()
            },
            dir.path().to_path_buf(),
        );
        let me = UserIdentity::current_real().unwrap();
        let check = |p: &str| check(&rootfs, &me, p, Path::new(p));
        for ok in [
            "/", "/a", "/a/b", "/link/b", "/scratch", "/dev/shm", "/proc",
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
        for (bad, errno) in [
            ("/missing", libc::ENOENT),
            ("/a/missing", libc::ENOENT),
            ("/f", libc::ENOTDIR),
            ("/host/tmp", libc::ENOENT),
            ("/scratch/below", libc::ENOENT),
        ] {
            match check(bad) {
                Err(WorkdirError::Chdir { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(errno), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(!root.join("missing").exists(), "nothing is created");
    }

    #[test]
    fn the_message_has_pyxis_words_and_no_os_error_number() {
        let e = WorkdirError::Chdir {
            value: "rel".into(),
            path: PathBuf::from("/rel"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "--container-workdir=rel: couldn't chdir to /rel: No such file or directory (the directory must exist in the container)"
        );
    }
}
