//! `--container-image=./file.sqsh`: a squashfs file the user made (e.g. `enroot import`).
//!
//! Root never kernel-mounts a filesystem image a user could have crafted. The file is opened and
//! read **as the user** (`sqfs2tar` runs with the user's ids and only gets the open file), its
//! tree streams through egret's own flattener (which rejects `..`, absolute paths and the like)
//! into mksquashfs, and the result is stored like any image. The store key is derived from the
//! file's identity (device, inode, size, mtime) and the user, so the conversion happens once
//! per version of the file.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::config::{Config, UserSquashfsPolicy};
use crate::container::user::UserIdentity;
use crate::image::flatten::{flatten, FlattenEvent, LayerInput};
use crate::image::metadata::ImageMeta;
use crate::image::squash::Mksquashfs;
use crate::image::store::{LockMode, Store};

/// Returns the stored image for the user's squashfs file at `path`.
pub fn import(
    cfg: &Config,
    store: &Store,
    user: &UserIdentity,
    path: &Path,
) -> Result<(PathBuf, ImageMeta), String> {
    let shown = path.display();
    if cfg.user_squashfs == UserSquashfsPolicy::Deny {
        return Err(format!(
            "egret: --container-image={shown}: this site does not run squashfs files; use a registry image"
        ));
    }
    let opened = user
        .run_as(|| File::open(path))
        .map_err(|e| format!("egret: --container-image={shown}: {e}"))?
        .map_err(|e| {
            format!(
                "egret: --container-image={shown}: cannot read it as {}: {e}",
                user.name
            )
        })?;
    let st = opened
        .metadata()
        .map_err(|e| format!("egret: {shown}: {e}"))?;
    if !st.is_file() {
        return Err(format!(
            "egret: --container-image={shown}: not a regular file"
        ));
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
    let err = |e: &dyn std::fmt::Display| format!("egret: --container-image={shown}: {e}");
    if let Some(img) = store.lookup_digest(&digest).map_err(|e| err(&e))? {
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
        .map_err(|e| err(&e))?;
    if let Some(img) = store.lookup_digest(&digest).map_err(|e| err(&e))? {
        return Ok((img.squashfs, img.meta));
    }
    let work = store.work_dir().map_err(|e| err(&e))?;
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
    let mut child = cmd
        .spawn()
        .map_err(|e| err(&format!("cannot run {}: {e}", cfg.sqfs2tar_path.display())))?;
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
    let status = child.wait_with_output().map_err(|e| err(&e))?;
    if !status.status.success() {
        let msg = String::from_utf8_lossy(&status.stderr);
        let line = msg
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unreadable squashfs");
        return Err(err(&format!("not a usable squashfs file: {line}")));
    }
    built.map_err(|e| err(&e))?;
    let meta = ImageMeta::default();
    let img = store
        .install(&lock, &digest, &out, &meta)
        .map_err(|e| err(&e))?;
    drop(lock);
    // The conversion of this path's previous version is garbage now (no index names it).
    if let Some(old) = store.replace_user_file_copy(path, &digest) {
        if let Err(e) = store.collect(&old) {
            eprintln!("egret-launcher: the previous copy of {shown}: {e}");
        }
    }
    Ok((img.squashfs, img.meta))
}
