//! The launcher's step lifecycle: one process per node and step, root, started by slurmstepd.
//!
//! Sequence: named container decided (joining one enters its mount namespace) or a private
//! mount namespace → socket (so tasks can queue up at once) → image (import at most once, shared
//! store) → rootfs (once, shared by the node's tasks, as pyxis does) → one `runc run` per task
//! inside that task's cgroup → teardown when the last local task ends.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sys::signal::SigSet;

use crate::config::Config;
use crate::container::rootfs;
use crate::container::runtime::{Runc, FORWARDED_SIGNALS};

use super::accept::{self, TaskConn};
use super::named;
use super::named_step::{self, NamedStep, NamedStepError};
use super::prepare::{self, PrepareError, PreparedStep};
use super::protocol::{self, StepRequest, ToTask};
use super::task;
use super::task_progress::TaskProgress;
use super::unshare::{self, Holder, UnshareError};

/// Where the launcher binary is installed; the plugin's `launcher=` argument overrides it.
pub const DEFAULT_LAUNCHER: &str = "/usr/local/libexec/egret/egret-launcher";

/// The socket a step's tasks connect to. Includes the node id: several slurmd may share a host.
pub fn socket_path(run_dir: &Path, job: u32, step: u32, node: u32) -> PathBuf {
    run_dir.join(format!("step-{job}.{step}.{node}.sock"))
}

/// The runc container id of one task (unique per node, for leak checks by prefix).
pub fn container_id(job: u32, step: u32, node: u32, task: u32) -> String {
    format!("egret-{job}.{step}.{node}.{task}")
}

/// Prefix of every container id of a step on a node (for cleanup after a crash).
pub fn container_prefix(job: u32, step: u32, node: u32) -> String {
    format!("egret-{job}.{step}.{node}.")
}

/// Why the step's containers cannot run; each is the user's one line (without `egret: `),
/// sent to every task of the step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Named(#[from] NamedStepError),
    #[error("{0}")]
    Unshare(#[from] UnshareError),
    #[error("{0}")]
    Prepare(#[from] PrepareError),
}

/// Runs the launcher; returns the process exit code.
pub fn serve(req: StepRequest) -> i32 {
    // First: the inherited listener must be closed before anything could start a child.
    let inherited = inherited_listener(&req);
    let node = crate::slurm::plan::node_name(&req.job_env, req.node_id);
    let cfg = match Config::load_on(&req.config, &node) {
        Ok(c) => c,
        Err(e) => return log_failure(&req, &e.to_string()),
    };
    for warning in cfg.warnings(&req.config) {
        eprintln!("egret-launcher {}.{}: {warning}", req.job_id, req.step_id);
    }
    // A named container another step runs is joined: its mount namespace, its rootfs. The
    // decision must come first: a mount namespace can only be entered before threads exist.
    let named_step = match enter_namespace(&cfg, &req) {
        Ok(n) => n,
        Err(code) => return code,
    };
    ignore_job_signals();
    watch_slurmstepd(&cfg, &req);
    let listener = match inherited.map_or_else(|| bind_socket(&req.socket, req.uid, req.gid), Ok) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("egret-launcher: {e}");
            return 1;
        }
    };
    let (tx, rx) = mpsc::channel();
    let accept_req = req.clone();
    let progress = TaskProgress::default();
    let accept_progress = progress.clone();
    std::thread::spawn(move || accept::accept_tasks(listener, accept_req, tx, accept_progress));

    // The namespaces of --container-unshare, held from this (long-lived) thread.
    let holder = start_unshare_holder(&req);
    let prepared = named_step
        .map_err(StepError::from)
        .and_then(|n| Ok(prepare::prepare(&cfg, &req, &progress, n)?))
        .and_then(|mut p| {
            p.unshare = holder?;
            if p.unshare.as_ref().is_some_and(|h| h.unshare.ipc) {
                unshare::make_shm(&p.rootfs.bundle_dir)?;
            }
            Ok(p)
        });
    progress.detach();
    let result = match prepared {
        Ok(p) => run_tasks(&cfg, p, rx),
        Err(e) => fail_tasks(&req, &rx, &protocol::user_line(e)),
    };
    let _ = fs::remove_file(&req.socket);
    result
}

/// Joins the running named container's mount namespace, or enters a private one. The error of
/// the named container is the tasks' to hear (Ok(Err)); Err is the exit code of a failure only
/// the launcher's log can tell.
fn enter_namespace(
    cfg: &Config,
    req: &StepRequest,
) -> Result<Result<Option<NamedStep>, NamedStepError>, i32> {
    let named_step = named_step::decide(cfg, req);
    let joined = matches!(
        &named_step,
        Ok(Some(NamedStep {
            plan: named::Plan::Join(_),
            ..
        }))
    );
    if !joined {
        // The rootfs, loop device and overlay must be invisible to the host and vanish
        // with us.
        if let Err(e) = rootfs::enter_private_mount_namespace() {
            return Err(log_failure(req, &e.to_string()));
        }
    }
    Ok(named_step)
}

/// `--container-unshare`: the holder of the step's namespaces (None without the option).
fn start_unshare_holder(req: &StepRequest) -> Result<Option<Holder>, UnshareError> {
    match &req.options.unshare {
        Some(v) => Holder::start(unshare::parse(v)?).map(Some),
        None => Ok(None),
    }
}

/// Serves the step's tasks on the prepared rootfs; returns the launcher's exit code.
fn run_tasks(cfg: &Config, p: PreparedStep, rx: mpsc::Receiver<TaskConn>) -> i32 {
    // A joining step's bundles live on the other step's filesystem: remove them.
    let joined_bundles =
        (p.rootfs.bundle_dir != cfg.oci_bundle_dir).then(|| p.rootfs.bundle_dir.clone());
    let code = task::serve_tasks(Arc::new(p), rx);
    if let Some(dir) = joined_bundles {
        let _ = fs::remove_dir_all(dir);
    }
    code
}

/// The step cannot run: every task that connects hears `line`.
fn fail_tasks(req: &StepRequest, rx: &mpsc::Receiver<TaskConn>, line: &str) -> i32 {
    for _ in 0..req.local_tasks {
        match rx.recv() {
            Ok(mut c) => {
                let _ = protocol::send(&mut c.stream, &ToTask::Error(line.to_string()));
            }
            Err(_) => break,
        }
    }
    1
}

/// Makes the launcher deaf to the signals Slurm sends to every process of a step (Ctrl-C,
/// `scancel`, time limit). Containers get them from their task (forwarded) and from Slurm
/// directly; the launcher must outlive them to clean up, and is stopped by `slurm_spank_exit`.
/// The signals are blocked in every thread and drained by one waiting thread.
fn ignore_job_signals() {
    let mut set = SigSet::empty();
    for s in FORWARDED_SIGNALS {
        set.add(s);
    }
    // Threads started later inherit the mask; children get a clean one (unblock_signals_on_exec).
    let _ = set.thread_block();
    std::thread::spawn(move || loop {
        let _ = set.wait();
    });
}

/// If slurmstepd dies (killed with SIGKILL, say), nobody would end this step's containers
/// before their commands do: a thread notices (our parent changes) and kills them, after which
/// the launcher ends and its mounts go with its namespace.
fn watch_slurmstepd(cfg: &Config, req: &StepRequest) {
    let parent = nix::unistd::getppid();
    let runc = Runc::from_config(cfg);
    let prefix = container_prefix(req.job_id, req.step_id, req.node_id);
    let root = cfg.runc_root.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        if nix::unistd::getppid() == parent {
            continue;
        }
        eprintln!("egret-launcher: slurmstepd (pid {parent}) is gone: stopping {prefix}*");
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with(&prefix) {
                runc.delete_force(&id);
            }
        }
        std::thread::sleep(Duration::from_secs(5));
        // Whatever still holds the step (a task that never connected): end the launcher.
        std::process::exit(1);
    });
}

/// An error before the socket exists: tasks then see the launcher gone and say so, so the
/// specific reason goes to the launcher's log.
fn log_failure(req: &StepRequest, msg: &str) -> i32 {
    eprintln!("egret-launcher {}.{}: {msg}", req.job_id, req.step_id);
    1
}

/// The step's socket at `path`, listening; only the job's user (`uid`, `gid`) and root may
/// connect. slurmstepd's plugin binds it before it starts the launcher, so a task connects at
/// once, however far the launcher has got, and its hello waits in the socket.
pub fn bind_socket(path: &Path, uid: u32, gid: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Only the job's user (and root) may hand tasks to this launcher.
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The listening socket the plugin passed (`req.listener_fd`), if that descriptor is a Unix
/// socket bound to the step's path. The inherited number itself is closed either way: no
/// child of the launcher may inherit the listener in turn.
fn inherited_listener(req: &StepRequest) -> Option<UnixListener> {
    let n = req.listener_fd.filter(|n| *n > 2)?;
    let fd = crate::sys::fd::dup_inherited(n)?;
    let _ = nix::unistd::close(n);
    let stat = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    let listener = UnixListener::from(fd);
    let addr = listener.local_addr().ok()?;
    (addr.as_pathname() == Some(req.socket.as_path())).then_some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_step_on_a_node() {
        assert_eq!(
            socket_path(Path::new("/run/egret"), 7, 0, 2),
            Path::new("/run/egret/step-7.0.2.sock")
        );
        let id = container_id(7, 0, 2, 3);
        assert_eq!(id, "egret-7.0.2.3");
        assert!(id.starts_with(&container_prefix(7, 0, 2)));
        assert!(!container_id(7, 0, 21, 3).starts_with(&container_prefix(7, 0, 2)));
    }
}
