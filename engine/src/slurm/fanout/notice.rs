//! What the first node of a step tells the others about the step's image, signed by root
//! through munge: the others read it from a file the user could have written (sbcast runs as
//! the user), so only munge's word that root (uid 0) encoded it makes it worth anything.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::image::metadata::ImageMeta;

use super::FanoutError;

/// The largest notice accepted (a munge credential of the JSON below, base64).
pub const MAX_NOTICE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub job: u32,
    pub step: u32,
    pub uid: u32,
    /// The manifest digest the step runs.
    pub digest: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Outcome {
    /// The squashfs follows (already broadcast when this arrives): its sha256 and size as the
    /// first node's root computed them from its own store file, and the image's metadata.
    Ready {
        sha256: String,
        size: u64,
        meta: ImageMeta,
    },
    /// The first node had the image already: no broadcast; a node without it imports it.
    Skip,
    /// The first node could not have the image: this is why (the same for every node).
    Failed { reason: String },
}

impl Notice {
    /// The notice is about this step, user and image.
    pub fn is_for(&self, job: u32, step: u32, uid: u32, digest: &str) -> bool {
        self.job == job && self.step == step && self.uid == uid && self.digest == digest
    }
}

/// `munge` (as root): the signed credential carrying `notice`.
pub fn encode(munge: &Path, notice: &Notice) -> Result<Vec<u8>, FanoutError> {
    let body = serde_json::to_vec(notice).expect("notice serializes");
    let out = run_with_input(munge, &[], &body)?;
    Ok(out)
}

/// `unmunge` (as root): the notice a credential carries, if root encoded it. A replayed
/// credential is accepted: on a host with several slurmd every node decodes the same one, and
/// its payload still is what root signed (it names its job, step, user and image).
pub fn decode(unmunge: &Path, credential: &[u8]) -> Result<Notice, FanoutError> {
    let out = run_with_input(unmunge, &["--numeric"], credential)?;
    let text = String::from_utf8_lossy(&out);
    let (meta, payload) = text
        .split_once("\n\n")
        .ok_or_else(|| FanoutError::BadNotice("unmunge printed no payload".into()))?;
    let field = |name: &str| {
        meta.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    // --numeric: 0 is EMUNGE_SUCCESS, 17 EMUNGE_CRED_REPLAYED.
    let status = field("STATUS:").unwrap_or_default();
    if status != "0" && status != "17" {
        return Err(FanoutError::BadNotice(format!(
            "munge credential: {status}"
        )));
    }
    if field("UID:").as_deref() != Some("0") {
        return Err(FanoutError::BadNotice(
            "the notice was not encoded by root".into(),
        ));
    }
    serde_json::from_str(payload.trim_end_matches('\n'))
        .map_err(|e| FanoutError::BadNotice(format!("payload: {e}")))
}

fn run_with_input(program: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, FanoutError> {
    let spawn_err = |source| FanoutError::Run {
        program: program.to_path_buf(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // The credential is small (well below a pipe's buffer), so writing it all before reading
    // cannot deadlock.
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input).map_err(spawn_err)?;
    drop(stdin);
    let out = child.wait_with_output().map_err(spawn_err)?;
    // unmunge exits non-zero for a replayed credential yet prints it: the caller looks at
    // STATUS. munge's output is used only when it succeeded.
    if !out.status.success() && out.stdout.is_empty() {
        return Err(FanoutError::Failed {
            program: program.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_as_json_and_refuse_unknown_fields() {
        let n = Notice {
            job: 7,
            step: 1,
            uid: 4242,
            digest: "sha256:ab".into(),
            outcome: Outcome::Ready {
                sha256: "cd".into(),
                size: 3,
                meta: ImageMeta::default(),
            },
        };
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Notice>(&text).unwrap(), n);
        assert!(n.is_for(7, 1, 4242, "sha256:ab"));
        assert!(!n.is_for(7, 2, 4242, "sha256:ab"));
        assert!(!n.is_for(7, 1, 0, "sha256:ab"));
        let extra = text.replacen('{', "{\"x\":1,", 1);
        assert!(serde_json::from_str::<Notice>(&extra).is_err());
    }
}
