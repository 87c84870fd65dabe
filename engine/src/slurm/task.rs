//! The step's tasks: one `runc run` per connected task, inside the task's cgroup, with the
//! task's signals forwarded to it; the ends reported back, after `--container-save` when asked.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc};

use oci_spec::runtime::{MountBuilder, Spec};

use crate::container::runtime::{self, Runc};
use crate::container::spec::{self, SpecError};
use crate::sys::process::PidFd;

use super::accept::TaskConn;
use super::cgroup::{self, CgroupError};
use super::client::FORWARDED;
use super::entrypoint_log::{EntrypointFds, EntrypointLogError};
use super::plan;
use super::pmix::{self, PmixError, StagedMount};
use super::prepare::PreparedStep;
use super::protocol::{self, ToLauncher, ToTask};
use super::save;
use super::step::container_id;
use super::task_env;
use super::unshare::UnshareError;
use super::workdir::{self, WorkdirError};

/// Why a task's container cannot start; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{}: {source}", path.display())]
    BundleDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Unshare(#[from] UnshareError),
    #[error("{0}")]
    Pmix(#[from] PmixError),
    #[error("{0}")]
    PmixMount(#[from] oci_spec::OciSpecError),
    #[error("{0}")]
    Entrypoint(#[from] EntrypointLogError),
    #[error("the task exited before its container started ({0})")]
    TaskGone(#[source] std::io::Error),
    #[error("{0}")]
    Cgroup(#[from] CgroupError),
    #[error("{0}")]
    Workdir(#[from] WorkdirError),
    #[error("cannot start runc in the task's cgroups: {0}")]
    SpawnRunc(#[source] std::io::Error),
}

/// Runs the containers of the `local_tasks` tasks that `rx` delivers; returns the launcher's
/// exit code.
pub fn serve_tasks(p: Arc<PreparedStep>, rx: mpsc::Receiver<TaskConn>) -> i32 {
    // With --container-save the tasks hear their end only once the file is written, so the
    // next step of the job script finds it.
    let save = plan::save_here(&p.req.options, p.req.node_id).map(str::to_string);
    let mut workers = Vec::new();
    for _ in 0..p.req.local_tasks {
        let Ok(conn) = rx.recv() else { break };
        let p = p.clone();
        let defer = save.is_some();
        workers.push(std::thread::spawn(move || run_one(&p, conn, defer)));
    }
    let mut ends: Vec<(UnixStream, ToTask)> = workers
        .into_iter()
        .filter_map(|w| w.join().ok().flatten())
        .collect();
    if let Some(value) = save {
        if let Err(e) = save_rootfs(&p, &value) {
            // One line, on one task; a step whose file is missing must not look successful.
            if let Some((stream, end)) = ends.first_mut() {
                let _ = protocol::send(stream, &ToTask::Message(protocol::user_line(&e)));
                if matches!(end, ToTask::Exit(0)) {
                    *end = ToTask::Exit(1);
                }
            }
        }
    }
    for (mut stream, end) in ends {
        let _ = protocol::send(&mut stream, &end);
    }
    0
}

/// `--container-save=value`: the rootfs as the user's squashfs file.
fn save_rootfs(p: &PreparedStep, value: &str) -> Result<(), save::SaveError> {
    let dest = save::destination(value, &plan::job_cwd(&p.req.job_env))?;
    save::save(
        &p.cfg,
        &p.rootfs.rootfs,
        &p.rootfs.bundle_dir,
        &dest,
        &p.user,
        p.rootfs.image_owned_by_user,
    )
}

/// Runs one task's container and reports its end to the task, or with `defer` returns the
/// report for the caller to send.
fn run_one(p: &PreparedStep, mut conn: TaskConn, defer: bool) -> Option<(UnixStream, ToTask)> {
    let local_id = conn.hello.local_id;
    let id = container_id(p.req.job_id, p.req.step_id, p.req.node_id, local_id);
    if local_id == 0 {
        for w in &p.rootfs.warnings {
            let line = protocol::user_line(format_args!("warning: {w}"));
            let _ = protocol::send(&mut conn.stream, &ToTask::Message(line));
        }
    }
    let outcome = start_container(p, &conn, &id)
        .map(|(child, _pmix, entry)| (watch(p, &mut conn, child, &id), entry));
    // When runc itself failed (not the command), say why in one line, with a shell's exit code;
    // when the image's entrypoint never ran the command, its output and pyxis's hint.
    let outcome = outcome.map(|(code, entry)| {
        let log = task_bundle_dir(p, local_id).join("runc.log");
        let text = fs::read_to_string(log).unwrap_or_default();
        match runtime::runc_failure(&text) {
            Some((shell_code, line)) if code != 0 => {
                let _ = protocol::send(&mut conn.stream, &ToTask::Message(line));
                shell_code
            }
            _ => match entry.and_then(|e| e.report(code)) {
                Some(report) => {
                    for line in &report.lines {
                        let line = protocol::user_line(line);
                        let _ = protocol::send(&mut conn.stream, &ToTask::Message(line));
                    }
                    report.code
                }
                None => code,
            },
        }
    });
    let msg = match outcome {
        Ok(code) => ToTask::Exit(code),
        Err(e) => ToTask::Error(protocol::user_line(e)),
    };
    if defer {
        return Some((conn.stream, msg));
    }
    let _ = protocol::send(&mut conn.stream, &msg);
    None
}

/// The bundle directory of task `local_id`.
fn task_bundle_dir(p: &PreparedStep, local_id: u32) -> PathBuf {
    p.rootfs.bundle_dir.join(format!("task-{local_id}"))
}

/// Starts runc for one task; the staged PMIx mount (if any) must live until the container ends,
/// and the entrypoint's descriptors (if it runs) tell afterwards how it went.
fn start_container(
    p: &PreparedStep,
    conn: &TaskConn,
    id: &str,
) -> Result<(Child, Option<StagedMount>, Option<EntrypointFds>), TaskError> {
    if let (Some(value), Some(path)) = (&p.req.options.workdir, plan::workdir(&p.req.options)) {
        workdir::check(&p.rootfs, &p.user, value, &path)?;
    }
    let bundle_dir = task_bundle_dir(p, conn.hello.local_id);
    fs::create_dir_all(&bundle_dir).map_err(|source| TaskError::BundleDir {
        path: bundle_dir.clone(),
        source,
    })?;
    let mut task_vars = plan::task_vars(&conn.hello);
    task_env::drop_locale(&mut task_vars, &p.req.options.env_names);
    let (mut spec, entry) = build_spec(p, conn, id, &task_vars)?;
    let pmix = pmix::mounts(
        &task_vars,
        p.user.uid,
        p.req.job_id,
        p.req.step_id,
        &bundle_dir,
    )?;
    add_bind_mounts(&mut spec, &pmix.binds)?;
    // No cpuset in the spec: the container stays in the task's cpuset cgroup, with the task's
    // affinity (Slurm's --cpu-bind), see cgroup.rs; runc has no cpuset group to write it to.
    spec::write_spec(&bundle_dir, &spec)?;
    let passed = entry.as_ref().map(|e| &e.passed[..]).unwrap_or_default();
    let child = spawn_runc(p, conn, id, &bundle_dir, passed)?;
    Ok((child, pmix.staged, entry))
}

/// The task's OCI spec: its process in the task's environment `task_vars`, the hooks'
/// annotations, `--container-remap-root` and `--container-unshare`; with
/// `--container-entrypoint`, the descriptors of the entrypoint's wrapper.
fn build_spec(
    p: &PreparedStep,
    conn: &TaskConn,
    id: &str,
    task_vars: &[(String, String)],
) -> Result<(Spec, Option<EntrypointFds>), TaskError> {
    let opts = &p.req.options;
    let mut host_env = task_vars.to_vec();
    if let Some(home) = plan::mounted_home(opts, &p.user.home) {
        // pyxis's rule: the mounted home is $HOME (at /root for remapped root).
        host_env.retain(|(k, _)| k != "HOME");
        host_env.push(("HOME".into(), home.display().to_string()));
    }
    let process = plan::process_request(&conn.hello, opts, host_env);
    let annotations = plan::annotations(
        opts,
        p.cfg.default_mpi_type.as_deref(),
        task_vars,
        p.req.job_id,
        p.req.step_id,
    );
    let sopts = plan::spec_options(opts, id, annotations);
    let wrap = if opts.entrypoint == Some(true) {
        Some(
            spec::EntrypointWrap::after(conn.fds.len() as u32, opts.entrypoint_log)
                .map_err(SpecError::from)?,
        )
    } else {
        None
    };
    let (mut spec, script) = spec::build_spec_wrapped(
        &p.cfg,
        &p.rootfs,
        &p.meta,
        &p.user,
        &process,
        &sopts,
        wrap.as_ref(),
    )?;
    let entry = match (&wrap, script) {
        (Some(w), Some(script)) => Some(EntrypointFds::new(w, &script)?),
        _ => None,
    };
    if let Some(process) = spec.process_mut() {
        let env = process.env_mut().get_or_insert_with(Vec::new);
        let extra = task_env::pytorch_vars(&p.meta.env, env, task_vars);
        env.extend(extra);
    }
    if opts.remap_root == Some(true) {
        crate::container::remap_root::apply(&mut spec, p.user.uid, p.user.gid)?;
    }
    if let Some(h) = &p.unshare {
        h.apply(&mut spec, &p.rootfs.bundle_dir.join("shm"))?;
    }
    Ok((spec, entry))
}

/// Adds bind mounts `(source, destination, options)` to the spec.
fn add_bind_mounts(
    spec: &mut Spec,
    binds: &[(PathBuf, PathBuf, Vec<&'static str>)],
) -> Result<(), TaskError> {
    if binds.is_empty() {
        return Ok(());
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (source, destination, opts) in binds {
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Spawns `runc run` in the task's cgroups with the task's descriptors as its own, then
/// `passed` (the entrypoint's) after them.
fn spawn_runc(
    p: &PreparedStep,
    conn: &TaskConn,
    id: &str,
    bundle_dir: &Path,
    passed: &[OwnedFd],
) -> Result<Child, TaskError> {
    let runc = Runc::from_config(&p.cfg);
    let extra = (conn.fds.len() + passed.len()).saturating_sub(3) as u32;
    let mut cmd = runc.command_logged(id, bundle_dir, extra, &bundle_dir.join("runc.log"));
    // runc starts in the task's cgroups, entered by its own process before the exec, and only
    // while the task is alive and still in them (cgroup.rs has the sequence). First, before the
    // descriptor shuffle below reuses numbers.
    let entry = conn
        .task
        .with_pid(|pid| cgroup::entry(pid, &conn.task))
        .map_err(TaskError::TaskGone)??;
    crate::sys::enter_cgroups::enter_on_exec(&mut cmd, entry);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The launcher blocks the job's signals for its own threads; runc and the container must not.
    crate::sys::process::unblock_signals_on_exec(&mut cmd);
    let fds: Vec<RawFd> = conn
        .fds
        .iter()
        .chain(passed)
        .map(|f| f.as_raw_fd())
        .collect();
    crate::sys::fd::map_fds_on_exec(&mut cmd, &fds);
    cmd.spawn().map_err(|e| match e.raw_os_error() {
        Some(crate::sys::enter_cgroups::GONE) => TaskError::TaskGone(e),
        _ => TaskError::SpawnRunc(e),
    })
}

/// Waits for the container while forwarding the task's signals to runc (which forwards them to
/// the container). A task that disappears (SIGKILL) takes its container with it.
fn watch(p: &PreparedStep, conn: &mut TaskConn, mut child: Child, id: &str) -> i32 {
    // Our child, not yet waited for: its number cannot have been recycled yet. Signals go by
    // pidfd, so none reaches another process once runc is reaped.
    let runc_process = PidFd::open(nix::unistd::Pid::from_raw(child.id() as i32));
    let runc = Runc::from_config(&p.cfg);
    if let Ok(reader) = conn.stream.try_clone() {
        let runc = runc.clone();
        let id = id.to_string();
        std::thread::spawn(move || forward_signals(reader, runc_process, &runc, &id));
    }
    let code = match child.wait() {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 1,
    };
    // runc run removes its state on a normal exit; make sure of it on every path.
    runc.delete_force(id);
    code
}

/// Passes the signals the task forwards on to runc until the task hangs up, then stops the
/// container (nobody will read its result).
fn forward_signals(
    mut reader: UnixStream,
    runc_process: std::io::Result<PidFd>,
    runc: &Runc,
    id: &str,
) {
    loop {
        match protocol::recv::<ToLauncher>(&mut reader) {
            Ok(ToLauncher::Signal(sig)) => {
                // Only what a task forwards: no SIGSTOP or SIGKILL for root's runc.
                let forwarded = nix::sys::signal::Signal::try_from(sig)
                    .ok()
                    .filter(|s| FORWARDED.contains(s));
                if let (Some(s), Ok(p)) = (forwarded, &runc_process) {
                    let _ = p.signal(s);
                }
            }
            Ok(ToLauncher::Hello(_)) => {}
            Err(_) => {
                runc.delete_force(id);
                return;
            }
        }
    }
}
