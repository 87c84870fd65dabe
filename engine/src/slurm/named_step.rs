//! The step's named container (`--container-name`): deciding, before any thread exists, whether
//! this step owns the container or joins the step that runs it, and entering that step's mount
//! namespace when it joins. A step without `--container-name` registers as `JOBID.STEPID` so
//! that an `--overlap` step can join it by that name, as with pyxis.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// A step without `--container-name`, registered as `JOBID.STEPID`: its rootfs is the
    /// usual private one (nothing on disk), only its running record is kept.
    pub unnamed: bool,
}

/// How long a join whose holders are all ending keeps deciding again: an ending launcher
/// releases the container a moment after it stops being joinable.
const REPLAN_FOR: Duration = Duration::from_secs(10);

/// Decides the step's container and, for a join, enters the running step's mount namespace
/// (None: no container name and nothing to register). A join that finds every holder gone (the
/// running steps ended between the decision and the join) decides again, still holding the
/// plan lock: the container is then about to be free, and is owned.
pub fn decide(cfg: &Config, req: &StepRequest) -> Result<Option<NamedStep>, NamedStepError> {
    let Some(mut n) = plan_named(cfg, req)? else {
        return Ok(None);
    };
    let started = Instant::now();
    loop {
        let named::Plan::Join(r) = &n.plan else {
            return Ok(Some(n));
        };
        match join_namespace(r) {
            Err(NamedStepError::OwnerGone) if started.elapsed() < REPLAN_FOR => {
                std::thread::sleep(Duration::from_millis(20));
                n.plan = named::plan(&n.dir, &n.name, mode_of(req)?)?;
            }
            other => return other.map(|()| Some(n)),
        }
    }
}

fn mode_of(req: &StepRequest) -> Result<named::Mode, NamedStepError> {
    Ok(match &req.options.name {
        Some(v) => named::parse_name(v)?.1,
        None => named::Mode::Create,
    })
}

/// The named container of the step's `--container-name`, its plan decided; without the option,
/// the step's registration as `JOBID.STEPID` (None if that name is taken).
pub fn plan_named(cfg: &Config, req: &StepRequest) -> Result<Option<NamedStep>, NamedStepError> {
    let node = plan::node_name(&req.job_env, req.node_id);
    let Some(value) = &req.options.name else {
        return Ok(register_unnamed(cfg, req, &node));
    };
    let (name, mode) = named::parse_name(value)?;
    // JOBID.STEPID of this job names an unnamed step's container, kept in the job's directory.
    let job = (!req.global_scope || named::is_step_of(&name, req.job_id)).then_some(req.job_id);
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
        unnamed: false,
    }))
}

/// An unnamed step's record as `JOBID.STEPID` in the job's directory. Best effort: the step
/// runs the same without it (only joining it by name fails), so any trouble is a log line.
fn register_unnamed(cfg: &Config, req: &StepRequest, node: &str) -> Option<NamedStep> {
    let name = named::step_name(req.job_id, req.step_id);
    let dir = named::container_dir(cfg, req.uid, Some(req.job_id), node, &name);
    let registered = named::lock_plan(&dir).and_then(|plan_lock| {
        // Taken already (a named container someone called JOBID.STEPID): leave it alone.
        named::plan(&dir, &name, named::Mode::Create).map(|plan| (plan_lock, plan))
    });
    match registered {
        Ok((plan_lock, plan @ named::Plan::Own)) => Some(NamedStep {
            dir,
            name,
            plan,
            plan_lock,
            unnamed: true,
        }),
        Ok(_) => None,
        Err(e) => {
            eprintln!(
                "egret-launcher {}.{}: not joinable as {name}: {e}",
                req.job_id, req.step_id
            );
            None
        }
    }
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
