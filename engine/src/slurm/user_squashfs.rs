//! `--container-image=./file.sqsh`: a squashfs file the user made (e.g. `enroot import`).
//!
//! Root never kernel-mounts a filesystem image a user could have crafted. The file is opened and
//! read **as the user** (`sqfs2tar` runs with the user's ids and only gets the open file), its
//! tree streams through egret's own flattener (which rejects `..`, absolute paths and the like)
//! into mksquashfs, and the result is stored like any image. The store key is derived from the
//! file's identity (device, inode, size, mtime) and the user, so the conversion happens once
//! per version of the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::config::{Config, UserSquashfsPolicy};
use crate::container::user::{UserError, UserIdentity};
use crate::image::flatten::{flatten, FlattenEvent, LayerInput};
use crate::image::metadata::ImageMeta;
use crate::image::squash::{Mksquashfs, SquashError};
use crate::image::store::{LockMode, Store, StoreError};

/// Why a user's squashfs file cannot be run; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum UserSquashfsError {
    #[error("--container-image={}: this site does not run squashfs files; use a registry image", path.display())]
    Denied { path: PathBuf },
    #[error("--container-image={}: {source}", path.display())]
    SwitchUser {
        path: PathBuf,
        #[source]
        source: UserError,
    },
    #[error("--container-image={}: cannot read it as {user}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-image={}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("--container-image={}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("--container-image={}: cannot run {}: {source}", path.display(), program.display())]
    Sqfs2tar {
        path: PathBuf,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-image={}: {source}", path.display())]
    Wait {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--container-image={}: not a usable squashfs file: {line}", path.display())]
    NotSquashfs { path: PathBuf, line: String },
    #[error("--container-image={}: {source}", path.display())]
    Squash {
        path: PathBuf,
        #[source]
        source: SquashError,
    },
}

/// Returns the stored image for the user's squashfs file at `path`.
pub fn import(
    cfg: &Config,
    store: &Store,
    user: &UserIdentity,
    path: &Path,
) -> Result<(PathBuf, ImageMeta), UserSquashfsError> {
    let shown = path.display();
    let at = || path.to_path_buf();
    if cfg.user_squashfs == UserSquashfsPolicy::Deny {
        return Err(UserSquashfsError::Denied { path: at() });
    }
    let opened = user
        .run_as(|| File::open(path))
        .map_err(|source| UserSquashfsError::SwitchUser { path: at(), source })?
        .map_err(|source| UserSquashfsError::Unreadable {
            path: at(),
            user: user.name.clone(),
            source,
        })?;
    let st = opened
        .metadata()
        .map_err(|source| UserSquashfsError::Stat { path: at(), source })?;
    if !st.is_file() {
        return Err(UserSquashfsError::NotAFile { path: at() });
    }
    let key = format!(
        "user-sqsh\0{}\0{}\0{}\0{}\0{}\0{}",
        user.uid,
        st.dev(),
        st.ino(),
        st.size(),
        st.mtime(),
        st.mtime_nsec()
    );
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())));
    let store_err = |source| UserSquashfsError::Store { path: at(), source };
    if let Some(img) = store.lookup_digest(&digest).map_err(store_err)? {
        return Ok((img.squashfs, img.meta));
    }
    let what = format!("the import of {shown}");
    let lock = store
        .lock_digest(
            &digest,
            LockMode::Exclusive,
            &what,
            &cfg.repository_metadata_lock_timings,
        )
        .map_err(store_err)?;
    if let Some(img) = store.lookup_digest(&digest).map_err(store_err)? {
        return Ok((img.squashfs, img.meta));
    }
    let work = store.work_dir().map_err(store_err)?;
    let out = work.path().join("image.squashfs");

    // sqfs2tar parses the untrusted file: with the user's ids, and only the file we opened.
    let mut cmd = Command::new(&cfg.sqfs2tar_path);
    cmd.arg("--no-skip")
        .arg("/dev/stdin")
        .stdin(Stdio::from(opened))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(user.uid)
        .gid(user.gid);
    let mut child = cmd.spawn().map_err(|source| UserSquashfsError::Sqfs2tar {
        path: at(),
        program: cfg.sqfs2tar_path.clone(),
        source,
    })?;
    let tar = child.stdout.take().expect("piped stdout");
    let built = Mksquashfs::from_config(cfg).build(&out, |stdin| {
        flatten(
            vec![LayerInput {
                name: path.display().to_string(),
                reader: Box::new(tar),
            }],
            stdin,
            &mut |_ev: FlattenEvent| {},
        )
    });
    let status = child
        .wait_with_output()
        .map_err(|source| UserSquashfsError::Wait { path: at(), source })?;
    if !status.status.success() {
        let msg = String::from_utf8_lossy(&status.stderr);
        let line = msg
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unreadable squashfs");
        return Err(UserSquashfsError::NotSquashfs {
            path: at(),
            line: line.to_string(),
        });
    }
    built.map_err(|source| UserSquashfsError::Squash { path: at(), source })?;
    let meta = ImageMeta::default();
    let img = store
        .install(&lock, &digest, &out, &meta)
        .map_err(store_err)?;
    drop(lock);
    // The conversion of this path's previous version is garbage now (no index names it).
    if let Some(old) = store.replace_user_file_copy(path, &digest) {
        if let Err(e) = store.collect(&old) {
            eprintln!("egret-launcher: the previous copy of {shown}: {e}");
        }
    }
    Ok((img.squashfs, img.meta))
}
