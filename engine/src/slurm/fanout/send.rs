//! The first node's side: after its own import, broadcast the squashfs and a signed notice.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::image::progress::Progress;
use crate::image::store::StoredImage;

use super::notice::{self, Notice, Outcome};
use super::{Fanout, FanoutError};

/// Tells the step's other nodes how to have the image: broadcast when this node imported it in
/// this step (`imported`), otherwise `Skip`. Once per job, image and node set. A failure is a
/// warning: the other nodes then import the image themselves.
pub fn send(f: &Fanout, image: &StoredImage, imported: bool, progress: &dyn Progress) {
    if f.sent_before() {
        return;
    }
    let staging = match Staging::new(f) {
        Ok(s) => s,
        Err(e) => return progress.warn(&format!("cannot hand the image to the other nodes: {e}")),
    };
    let outcome = if imported {
        progress.phase("handing the image to the step's other nodes");
        match broadcast_image(f, &staging, image) {
            Ok((sha256, size)) => Outcome::Ready {
                sha256,
                size,
                meta: image.meta.clone(),
            },
            Err(e) => {
                progress.warn(&format!(
                    "cannot broadcast the image ({e}): the other nodes import it themselves"
                ));
                Outcome::Skip
            }
        }
    } else {
        Outcome::Skip
    };
    match broadcast_notice(f, &staging, outcome) {
        Ok(()) => f.mark_sent(),
        Err(e) => progress.warn(&format!(
            "cannot tell the step's other nodes about the image: {e}"
        )),
    }
}

/// The first node could not have the image: the others fail at once with the same reason
/// instead of waiting for a broadcast that will not come.
pub fn send_failure(f: &Fanout, reason: &str) {
    if f.sent_before() {
        return;
    }
    if let Ok(staging) = Staging::new(f) {
        let failed = Outcome::Failed {
            reason: reason.to_string(),
        };
        if broadcast_notice(f, &staging, failed).is_ok() {
            f.mark_sent();
        }
    }
}

/// A root-owned directory in `tempDir` the user can read (sbcast reads its source as the
/// user) but not change; removed when dropped.
struct Staging(tempfile::TempDir);

impl Staging {
    fn new(f: &Fanout) -> Result<Staging, FanoutError> {
        let io = |source| FanoutError::Io {
            path: f.drop_dir.clone(),
            source,
        };
        // Named after the job: the job epilog removes what a killed launcher left.
        let dir = tempfile::Builder::new()
            .prefix(&format!("egret-bcast-{}.{}-src-", f.job, f.step))
            .tempdir_in(&f.drop_dir)
            .map_err(io)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(Staging(dir))
    }

    /// A new read-only-for-others file `name` in it, written by `fill`.
    fn file(
        &self,
        name: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<std::path::PathBuf, FanoutError> {
        let path = self.0.path().join(name);
        let io = |source| FanoutError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        fill(&mut file).map_err(io)?;
        Ok(path)
    }
}

/// Copies the store's squashfs into the staging directory, hashing the bytes read from root's
/// own file, and broadcasts the copy. Returns the hex sha256 and the size.
fn broadcast_image(
    f: &Fanout,
    staging: &Staging,
    image: &StoredImage,
) -> Result<(String, u64), FanoutError> {
    let io = |source| FanoutError::Io {
        path: image.squashfs.clone(),
        source,
    };
    let mut src = File::open(&image.squashfs).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let copy = staging.file("image.sqsh", |dst| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n])?;
            size += n as u64;
        }
    })?;
    sbcast(f, &copy, &f.data_name())?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn broadcast_notice(f: &Fanout, staging: &Staging, outcome: Outcome) -> Result<(), FanoutError> {
    let n = Notice {
        job: f.job,
        step: f.step,
        uid: f.user.uid,
        digest: f.digest.clone(),
        outcome,
    };
    let credential = notice::encode(&f.munge, &n)?;
    let path = staging.file("notice", |file| file.write_all(&credential))?;
    sbcast(f, &path, &f.notice_name())
}

/// `sbcast --jobid=JOB.STEP --force SRC tempDir/NAME` as the job's user (slurmd takes a
/// broadcast only from the job's owner), with nothing of root's environment.
fn sbcast(f: &Fanout, src: &Path, name: &str) -> Result<(), FanoutError> {
    let mut cmd = Command::new(&f.sbcast);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &f.user.home);
    if let Some(conf) = &f.slurm_conf {
        cmd.env("SLURM_CONF", conf);
    }
    cmd.arg(format!("--jobid={}.{}", f.job, f.step))
        .arg("--force")
        .arg(src)
        .arg(f.drop_dir.join(name))
        .stdin(Stdio::null());
    crate::sys::process::run_as_user_on_exec(
        &mut cmd,
        f.user.uid,
        f.user.gid,
        &f.user.groups,
        &f.user.home,
    );
    let out = cmd.output().map_err(|source| FanoutError::Run {
        program: f.sbcast.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(FanoutError::Failed {
            program: f.sbcast.clone(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
