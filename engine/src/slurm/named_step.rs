//! The step's named container (`--container-name`): deciding, before any thread exists, whether
//! this step owns the container or joins the step that runs it, and entering that step's mount
//! namespace when it joins.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::config::Config;
use crate::sys::process::PidFd;

use super::accept::process_uid;
use super::named::{self, NamedError};
use super::plan;
use super::protocol::StepRequest;

/// Why the step cannot use its named container; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum NamedStepError {
    #[error("{0}")]
    Named(#[from] NamedError),
    #[error("{0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("the named container's record predates this egret; run it again")]
    RecordTooOld,
    #[error("cannot join the running named container: {0}")]
    Join(#[source] nix::Error),
    #[error("the named container's step ended while this one started; run it again")]
    OwnerGone,
}

/// A step's named container: where it lives and what this step does with it.
pub struct NamedStep {
    pub dir: PathBuf,
    pub name: String,
    pub plan: named::Plan,
    /// Held until the decision is recorded (see `named::lock_plan`).
    pub plan_lock: fs::File,
}

/// The named container of the step's `--container-name`, its plan decided (None without it).
pub fn plan_named(cfg: &Config, req: &StepRequest) -> Result<Option<NamedStep>, NamedStepError> {
    let Some(value) = &req.options.name else {
        return Ok(None);
    };
    let (name, mode) = named::parse_name(value)?;
    let node = plan::node_name(&req.job_env, req.node_id);
    let job = (!req.global_scope).then_some(req.job_id);
    let dir = named::container_dir(cfg, req.uid, job, &node, &name);
    let plan_lock = named::lock_plan(&dir)?;
    let plan = named::plan(&dir, &name, mode)?;
    eprintln!(
        "egret-launcher {}.{}: container {}: {}",
        req.job_id,
        req.step_id,
        dir.display(),
        match &plan {
            named::Plan::Own => "own".to_string(),
            named::Plan::Join(r) => format!("join {:?}", r.pids),
        }
    );
    Ok(Some(NamedStep {
        dir,
        name,
        plan,
        plan_lock,
    }))
}

/// Enters the mount namespace of a launcher that runs the container: the first recorded process
/// that is still a root egret launcher in the recorded namespace. A recorded number may have
/// been recycled by then; the namespace file is opened while the pidfd proves the number still
/// names the process checked, and its inode must be the recorded one.
pub fn join_namespace(r: &named::Running) -> Result<(), NamedStepError> {
    let me = std::env::current_exe().map_err(NamedStepError::CurrentExe)?;
    let Some(want) = r.mount_ns else {
        return Err(NamedStepError::RecordTooOld);
    };
    for pid in &r.pids {
        let Ok(process) = PidFd::open(nix::unistd::Pid::from_raw(*pid)) else {
            continue;
        };
        let ns = process.with_pid(|n| {
            let proc_dir = PathBuf::from(format!("/proc/{n}"));
            if fs::read_link(proc_dir.join("exe")).ok().as_ref() != Some(&me)
                || process_uid(n) != Some(0)
            {
                return None;
            }
            let ns = fs::File::open(proc_dir.join("ns/mnt")).ok()?;
            (ns.metadata().ok()?.ino() == want).then_some(ns)
        });
        let Ok(Some(ns)) = ns else {
            continue;
        };
        return nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(NamedStepError::Join);
    }
    Err(NamedStepError::OwnerGone)
}
