//! One digest per step: srun (as the user) resolves the step's tag while Slurm creates the
//! step, and hands `REF@sha256:...` to every node in the job's environment ([`VAR`]), so all
//! nodes of a step run the same image even when the tag moves during the launch, and a node
//! that has the image runs no skopeo at all.
//!
//! srun asks the registry itself (`egret-launcher inspect-tag`, see [`manifest_get`]) where
//! skopeo's configuration would change nothing about the request, and runs skopeo otherwise
//! or when that fails: srun launches the step only once it has the answer, and skopeo's own
//! start-up (a Go program) was most of that wait.
//!
//! The handed digest is the user's word, nothing more: the launcher uses it only as the name
//! of what to fetch (see `image::import::pull_for_step`), so a forged or stale value can at
//! worst name another image the user may read. Whatever goes wrong in srun (no registry from
//! the submit node, a slow answer), nothing is handed over and each node resolves the tag
//! itself, as without this.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::image::import::oci;
use crate::image::reference::{ImageRef, ImageSource};
use crate::image::registry::{host_arch, FetchError, Running, Skopeo};

/// The job environment variable that carries the step's resolved reference.
pub const VAR: &str = "EGRET_STEP_IMAGE";

/// How long srun waits for the registry before leaving the resolution to the nodes.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// slurm.h's step id of the batch script step (which srun did not launch).
const BATCH_STEP: u32 = 0xffff_fffb;

#[derive(Debug, thiserror::Error)]
pub enum StepDigestError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Manifest(#[from] oci::OciError),
}

/// A tag resolution running in srun.
#[derive(Debug)]
pub struct Pending {
    reference: ImageRef,
    how: How,
    skopeo: Skopeo,
    deadline: Instant,
}

#[derive(Debug)]
enum How {
    /// `egret-launcher inspect-tag`.
    Direct(Running),
    Skopeo(Running),
}

/// Starts resolving `image` (the step's `--container-image`) as this process's user, or
/// returns `None` when there is nothing to resolve: a squashfs file, a reference pinned by
/// digest, or a value the option table refuses anyway. `launcher` answers for skopeo where it
/// can (a submit host without it runs skopeo).
pub fn start(
    cfg: &Config,
    launcher: &Path,
    image: &str,
) -> Option<Result<Pending, StepDigestError>> {
    let ImageSource::Registry(r) = ImageSource::parse(image).ok()? else {
        return None;
    };
    if r.digest.is_some() {
        return None;
    }
    let mut skopeo = Skopeo::new(cfg);
    skopeo.inspect_timeout = SUBMIT_TIMEOUT;
    let deadline = Instant::now() + SUBMIT_TIMEOUT + Duration::from_secs(2);
    let mut direct = Command::new(launcher);
    direct
        .arg("inspect-tag")
        .arg(r.display())
        .stdin(Stdio::null());
    let how = match Running::spawn(direct, &r.display(), Some(&r)) {
        Ok(running) => Ok(How::Direct(running)),
        Err(_) => skopeo.start_inspect(&r).map(How::Skopeo),
    };
    Some(
        how.map(|how| Pending {
            reference: r,
            how,
            skopeo,
            deadline,
        })
        .map_err(StepDigestError::from),
    )
}

impl Pending {
    /// Waits for the answer; returns the value of [`VAR`] (`REF@sha256:...`, the digest of the
    /// manifest for this host's platform, as the nodes would choose it).
    pub fn finish(self) -> Result<String, StepDigestError> {
        let raw = match self.how {
            How::Skopeo(running) => running.finish(Some(self.deadline), || {})?,
            How::Direct(running) => match running.finish(Some(self.deadline), || {}) {
                Ok(raw) => raw,
                // Whatever the direct request could not do, skopeo may (its configuration,
                // its TLS settings), within what is left of the deadline.
                Err(_) => self
                    .skopeo
                    .start_inspect(&self.reference)?
                    .finish(Some(self.deadline), || {})?,
            },
        };
        let display = self.reference.display();
        let resolved = oci::resolve(&raw, &display, "linux", host_arch())?;
        Ok(self.reference.with_digest(&resolved.digest).display())
    }
}

/// The digest srun resolved for `r` in this step, if it handed one over: only for the step
/// srun launched (not the batch script, whose environment is the submitter's), and only if
/// the value names the very repository and tag of `r`.
pub fn handed(job_env: &[String], step_id: u32, r: &ImageRef) -> Option<String> {
    if step_id == BATCH_STEP || r.digest.is_some() {
        return None;
    }
    let value = job_env
        .iter()
        .find_map(|kv| kv.strip_prefix(VAR)?.strip_prefix('='))?;
    let pinned = ImageRef::parse(value).ok()?;
    let digest = pinned.digest.clone()?;
    (pinned.registry == r.registry && pinned.repository == r.repository && pinned.tag == r.tag)
        .then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn env(v: &str) -> Vec<String> {
        vec!["HOME=/h".into(), format!("{VAR}={v}")]
    }

    #[test]
    fn only_a_value_for_the_same_repository_and_tag_is_taken() {
        let r = ImageRef::parse("127.0.0.1:5000/egret/busybox").unwrap();
        let ok = format!("127.0.0.1:5000/egret/busybox:latest@{D}");
        assert_eq!(handed(&env(&ok), 7, &r).as_deref(), Some(D));
        // Another tag, another repository, no digest, garbage, the batch step: nothing.
        for v in [
            format!("127.0.0.1:5000/egret/busybox:old@{D}"),
            format!("127.0.0.1:5000/egret/glibc:latest@{D}"),
            "127.0.0.1:5000/egret/busybox:latest".to_string(),
            "not a reference".to_string(),
        ] {
            assert_eq!(handed(&env(&v), 7, &r), None, "{v}");
        }
        assert_eq!(handed(&env(&ok), BATCH_STEP, &r), None);
        assert_eq!(handed(&[], 7, &r), None);
        // A reference the user pinned themselves stays theirs.
        let pinned = ImageRef::parse(&format!("127.0.0.1:5000/egret/busybox@{D}")).unwrap();
        assert_eq!(handed(&env(&ok), 7, &pinned), None);
    }

    #[test]
    fn nothing_to_resolve_for_files_and_pinned_references() {
        let cfg = Config::default();
        let l = Path::new("/nonexistent/egret-launcher");
        assert!(start(&cfg, l, "/tmp/x.sqsh").is_none());
        assert!(start(&cfg, l, &format!("busybox@{D}")).is_none());
        assert!(start(&cfg, l, "UPPER::case").is_none());
    }
}
