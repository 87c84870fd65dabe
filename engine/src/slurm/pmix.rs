//! `srun --mpi=pmix`: the PMIx client in the container needs the step's PMIx server directory
//! (shared-memory data store, sockets) and munge (PMIx authentication).
//!
//! The directory's path comes from the task's environment (`PMIX_SERVER_TMPDIR`), which the user
//! controls, so root resolves it once and then works on descriptors: the parent must be a
//! directory only root can change (Slurm's spool directory), reached without following any
//! symbolic link; the directory itself must be `pmix.JOB.STEP` of this step and owned by the
//! job's user, as slurmstepd makes it. It is then bound by descriptor onto a staging directory of
//! root's in the task's bundle, and runc binds that path, which no user can change.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::fstat;

use crate::sys;

/// What the container gets for PMIx: bind mounts (source, destination, options) for the spec,
/// and the staging mount that must outlive runc's setup.
pub struct PmixMounts {
    pub binds: Vec<(PathBuf, PathBuf, Vec<&'static str>)>,
    pub staged: Option<StagedMount>,
}

/// A bind of the user's PMIx directory onto a directory of root's; unmounted (and the staging
/// directory removed) when dropped, so nothing later walks into the user's files.
pub struct StagedMount {
    path: PathBuf,
}

impl Drop for StagedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.path);
    }
}

/// Why a `PMIX_SERVER_TMPDIR` is refused (the user sees it in one line).
#[derive(Debug, thiserror::Error)]
pub enum PmixError {
    #[error("PMIX_SERVER_TMPDIR={}: {reason}", path.display())]
    Untrusted {
        path: PathBuf,
        #[source]
        reason: UntrustedReason,
    },
    #[error("PMIX_SERVER_TMPDIR={}: cannot stage it: {source}", path.display())]
    Stage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the directory `PMIX_SERVER_TMPDIR` names is not the step's own, in root's spool.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedReason {
    #[error("not an absolute, normalized path")]
    NotNormalized,
    #[error("not this step's PMIx directory ({expected})")]
    NotThisStep { expected: String },
    /// The parent cannot be opened without following a link (or at all).
    #[error("{}: {source}", parent.display())]
    OpenParent {
        parent: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", parent.display())]
    StatParent {
        parent: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{} is not a directory only root can change (Slurm's spool directory)", parent.display())]
    ParentNotRoots { parent: PathBuf },
    #[error("{name}: {source}")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    Stat {
        name: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("not owned by the job's user (uid {uid})")]
    NotOwned { uid: u32 },
}

/// The mounts for the task's environment `env`, staged under `task_bundle`. Without
/// `PMIX_SERVER_TMPDIR` there are none.
pub fn mounts(
    env: &[(String, String)],
    uid: u32,
    job: u32,
    step: u32,
    task_bundle: &Path,
) -> Result<PmixMounts, PmixError> {
    let Some((_, value)) = env.iter().find(|(k, _)| k == "PMIX_SERVER_TMPDIR") else {
        return Ok(PmixMounts {
            binds: Vec::new(),
            staged: None,
        });
    };
    let dir = PathBuf::from(value.trim_end_matches('/'));
    let untrusted = |reason| PmixError::Untrusted {
        path: dir.clone(),
        reason,
    };
    let expected = format!("pmix.{job}.{step}");
    check_shape(&dir, &expected).map_err(untrusted)?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let fd = open_step_dir(parent, &expected, uid).map_err(untrusted)?;

    let staging = task_bundle.join("pmix");
    let stage_err = |source| PmixError::Stage {
        path: dir.clone(),
        source,
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(stage_err)?;
    let staged = StagedMount {
        path: staging.clone(),
    };
    let target = sys::fs::open_dir(&staging).map_err(stage_err)?;
    // A detached copy of the user's directory, its flags set, attached onto root's directory.
    let tree = sys::mounttree::clone_tree(&fd, false).map_err(stage_err)?;
    sys::mount::set_attrs(
        &tree,
        sys::mount::MOUNT_ATTR_NOSUID | sys::mount::MOUNT_ATTR_NODEV,
        true,
    )
    .map_err(stage_err)?;
    sys::mounttree::attach(&tree, &target).map_err(stage_err)?;

    // As enroot's Slurm PMI hook binds it: the client's sockets and shared memory, no programs.
    let mut binds = vec![(staging, dir, vec!["bind", "nosuid", "nodev", "noexec"])];
    // Root's own directory: nothing of the user's on its path.
    let munge = PathBuf::from("/run/munge");
    if munge.is_dir() {
        binds.push((munge.clone(), munge, vec!["rbind", "nosuid", "nodev", "ro"]));
    }
    Ok(PmixMounts {
        binds,
        staged: Some(staged),
    })
}

/// An absolute, normalized path whose last component is this step's `pmix.JOB.STEP`.
fn check_shape(dir: &Path, expected: &str) -> Result<(), UntrustedReason> {
    if !dir.is_absolute() || crate::container::mounts::normalize(dir) != dir {
        return Err(UntrustedReason::NotNormalized);
    }
    if dir.file_name().and_then(|n| n.to_str()) != Some(expected) {
        return Err(UntrustedReason::NotThisStep {
            expected: expected.to_string(),
        });
    }
    Ok(())
}

/// Opens `parent` (no symbolic link anywhere on the path; root's, writable by root alone) and
/// then `name` in it (a directory owned by `uid`), with no second resolution between the two.
fn open_step_dir(parent: &Path, name: &str, uid: u32) -> Result<OwnedFd, UntrustedReason> {
    let pfd = sys::fs::open_no_symlinks(parent, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(
        |source| UntrustedReason::OpenParent {
            parent: parent.to_path_buf(),
            source,
        },
    )?;
    let pst = fstat(pfd.as_raw_fd()).map_err(|source| UntrustedReason::StatParent {
        parent: parent.to_path_buf(),
        source,
    })?;
    if pst.st_uid != 0 || pst.st_mode & 0o022 != 0 {
        return Err(UntrustedReason::ParentNotRoots {
            parent: parent.to_path_buf(),
        });
    }
    let fd = sys::fs::openat(
        &pfd,
        Path::new(name),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| UntrustedReason::Open {
        name: name.to_string(),
        source,
    })?;
    let st = fstat(fd.as_raw_fd()).map_err(|source| UntrustedReason::Stat {
        name: name.to_string(),
        source,
    })?;
    if st.st_uid != uid {
        return Err(UntrustedReason::NotOwned { uid });
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn owner(path: &Path) -> u32 {
        fs::metadata(path).unwrap().uid()
    }

    // The task prints these after `PMIX_SERVER_TMPDIR=DIR: `: each text is pinned.
    #[test]
    fn every_reason_has_its_exact_text() {
        let spool = PathBuf::from("/var/spool/slurmd");
        let io = || std::io::Error::from_raw_os_error(13);
        let cases = [
            (
                UntrustedReason::NotNormalized,
                "not an absolute, normalized path".to_string(),
            ),
            (
                UntrustedReason::NotThisStep {
                    expected: "pmix.7.0".into(),
                },
                "not this step's PMIx directory (pmix.7.0)".into(),
            ),
            (
                UntrustedReason::OpenParent {
                    parent: spool.clone(),
                    source: io(),
                },
                format!("/var/spool/slurmd: {}", io()),
            ),
            (
                UntrustedReason::StatParent {
                    parent: spool.clone(),
                    source: nix::errno::Errno::EACCES,
                },
                format!("/var/spool/slurmd: {}", nix::errno::Errno::EACCES),
            ),
            (
                UntrustedReason::ParentNotRoots { parent: spool },
                "/var/spool/slurmd is not a directory only root can change (Slurm's spool directory)"
                    .into(),
            ),
            (
                UntrustedReason::Open {
                    name: "pmix.7.0".into(),
                    source: io(),
                },
                format!("pmix.7.0: {}", io()),
            ),
            (
                UntrustedReason::Stat {
                    name: "pmix.7.0".into(),
                    source: nix::errno::Errno::EACCES,
                },
                format!("pmix.7.0: {}", nix::errno::Errno::EACCES),
            ),
            (
                UntrustedReason::NotOwned { uid: 4242 },
                "not owned by the job's user (uid 4242)".into(),
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.to_string(), want);
        }
        let e = PmixError::Untrusted {
            path: PathBuf::from("/tmp/x"),
            reason: UntrustedReason::NotNormalized,
        };
        assert_eq!(
            e.to_string(),
            "PMIX_SERVER_TMPDIR=/tmp/x: not an absolute, normalized path"
        );
    }

    #[test]
    fn only_this_steps_directory_name_is_accepted() {
        assert!(check_shape(Path::new("/var/spool/slurmd/pmix.7.0"), "pmix.7.0").is_ok());
        for bad in [
            "/var/spool/slurmd/pmix.7.1",
            "/var/spool/slurmd/pmix.8.0",
            "var/spool/pmix.7.0",
            "/var/spool/../tmp/pmix.7.0",
            "/tmp/pmix.evil",
        ] {
            assert!(check_shape(Path::new(bad), "pmix.7.0").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_parent_the_user_can_write_or_a_link_on_the_way_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let me = owner(t.path());
        let spool = t.path().join("spool");
        fs::create_dir(&spool).unwrap();
        fs::create_dir(spool.join("pmix.1.0")).unwrap();
        // Root's tempdir parent here is root-owned and 0755 only when running as root.
        if me == 0 {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&spool, fs::Permissions::from_mode(0o755)).unwrap();
            assert!(open_step_dir(&spool, "pmix.1.0", 0).is_ok());
            assert!(open_step_dir(&spool, "pmix.1.0", 4242)
                .unwrap_err()
                .to_string()
                .contains("not owned"));
            fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).unwrap();
            assert!(open_step_dir(&spool, "pmix.1.0", 0)
                .unwrap_err()
                .to_string()
                .contains("only root"));
        }
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&spool, &link).unwrap();
        let e = open_step_dir(&link, "pmix.1.0", me)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{}: ", link.display())), "{e}");
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&spool, &link).unwrap();
        assert!(
            open_step_dir(&link, "pmix.1.0", me).is_err(),
            "a link is never followed"
        );
    }
}
