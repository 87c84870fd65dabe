//! One import per multi-node step with node-local stores: the step's first node imports the
//! image (as for a one-node step); every other node that lacks it waits for the first node to
//! hand over the finished squashfs through Slurm's own tree broadcast (`sbcast`, which runs as
//! the user), instead of downloading and squashing it again. Registry traffic and squashing
//! are then independent of the node count.
//!
//! Trust: the broadcast file passed through the user's hands, so a node installs it only when
//! its bytes hash to what the first node's root computed from its own store file, as told in a
//! notice root signed with munge (munge says who encoded a credential; only uid 0 is believed).
//! The notice names the job, step, user and image, so none can be reused for another.
//!
//! Once per job, image and node set: the first node records what it sent, every other node
//! that it waited, so later steps of the job (whose nodes now have the image) cost nothing, and
//! a node that lost the image again (evicted) imports it itself. The first node broadcasts only
//! an image it imported in this step; when it had the image already it says so (`Skip`) and a
//! node without it imports it itself. A store every node sees (`localRepositoryShared`) needs
//! none of this: the store's import lock already makes one node import.

mod notice;
mod receive;
mod record;
mod send;

use std::path::PathBuf;
use std::time::Duration;

pub use notice::{Notice, Outcome};

use crate::config::Config;
use crate::container::user::UserIdentity;

use super::plan::job_var;
use super::protocol::StepRequest;

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("cannot run {}: {source}", .program.display())]
    Run {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} failed: {stderr}", .program.display())]
    Failed { program: PathBuf, stderr: String },
    #[error("the first node's notice is not usable: {0}")]
    BadNotice(String),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the broadcast image does not match the first node's: {0}")]
    Mismatch(String),
}

/// The step may hand its image between nodes: node-local stores and more than one node.
pub fn may_apply(cfg: &Config, req: &StepRequest) -> bool {
    !cfg.local_repository_shared
        && job_var(&req.job_env, "SLURM_STEP_NUM_NODES")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 1)
}

/// The image hand-over of one step on one node.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub job: u32,
    pub step: u32,
    /// This node's index in the step (0: the first node, which imports).
    pub node_id: u32,
    pub user: UserIdentity,
    /// The manifest digest every node of the step runs.
    pub digest: String,
    /// Where sbcast delivers the files (the same path on every node): `tempDir`.
    pub drop_dir: PathBuf,
    /// Root's per-job records (`runDir/fanout/JOB/`).
    pub record_dir: PathBuf,
    /// The step's node list, naming the node set a broadcast reached.
    pub nodes: String,
    /// The job's SLURM_CONF, if it has one (sbcast must reach the job's controller).
    pub slurm_conf: Option<String>,
    pub sbcast: PathBuf,
    pub munge: PathBuf,
    pub unmunge: PathBuf,
    /// How long a node waits for the first node's notice before importing itself.
    pub wait: Duration,
}

impl Fanout {
    /// The hand-over for `req` on this node, when one applies: node-local stores, a step on
    /// more than one node, and a digest the step's nodes share (srun resolved the tag).
    pub fn for_step(
        cfg: &Config,
        req: &StepRequest,
        user: &UserIdentity,
        digest: Option<&str>,
    ) -> Option<Fanout> {
        if !may_apply(cfg, req) {
            return None;
        }
        let digest = digest?;
        let nodes = job_var(&req.job_env, "SLURM_STEP_NODELIST")?.to_string();
        if nodes.is_empty() {
            return None;
        }
        Some(Fanout {
            job: req.job_id,
            step: req.step_id,
            node_id: req.node_id,
            user: user.clone(),
            digest: digest.to_string(),
            drop_dir: cfg.temp_dir.clone(),
            record_dir: cfg.run_dir.join("fanout").join(req.job_id.to_string()),
            nodes,
            slurm_conf: job_var(&req.job_env, "SLURM_CONF").map(str::to_string),
            sbcast: cfg.sbcast_path.clone(),
            munge: cfg.munge_path.clone(),
            unmunge: cfg.unmunge_path.clone(),
            // As long as a node waits for another's import of the same image in one store.
            wait: crate::image::import::PullOptions::default().import_wait,
        })
    }

    pub fn is_first(&self) -> bool {
        self.node_id == 0
    }

    /// The programs the hand-over runs as root or hands the user's files to.
    pub fn programs(cfg: &Config) -> Vec<PathBuf> {
        vec![
            cfg.sbcast_path.clone(),
            cfg.munge_path.clone(),
            cfg.unmunge_path.clone(),
        ]
    }

    /// `egret-bcast-JOB.STEP-HEX`: the stem of the files sbcast delivers for this step.
    fn drop_stem(&self) -> String {
        let hex = self.digest.rsplit(':').next().unwrap_or_default();
        format!("egret-bcast-{}.{}-{hex}", self.job, self.step)
    }

    fn data_name(&self) -> String {
        format!("{}.sqsh", self.drop_stem())
    }

    fn notice_name(&self) -> String {
        format!("{}.notice", self.drop_stem())
    }
}

pub use receive::receive;
pub use send::{send, send_failure};

/// Removes what the broadcasts of job `job` left (root's records in `runDir`, the delivered
/// files in `tempDir`); the job epilog calls it on every node.
pub fn remove_job(cfg: &Config, job: u32) {
    let _ = std::fs::remove_dir_all(cfg.run_dir.join("fanout").join(job.to_string()));
    let prefix = format!("egret-bcast-{job}.");
    let Ok(entries) = std::fs::read_dir(&cfg.temp_dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            // Only root's own staging directories (a user's directory of that name stays).
            if std::os::unix::fs::MetadataExt::uid(&meta) == 0 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        } else {
            // unlink never follows a symlink: whatever the user made of the name goes.
            let _ = std::fs::remove_file(e.path());
        }
    }
}
