//! The launcher itself: one process per node and step, root, started by slurmstepd.
//!
//! Sequence: private mount namespace → socket (so tasks can queue up at once) → image (import at
//! most once, shared store) → rootfs (once, shared by the node's tasks, as pyxis does) → one
//! `runc run` per task inside that task's cgroup → teardown when the last local task ends.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc};

use crate::config::Config;
use crate::container::mounts::pyxis::PyxisMount;
use crate::container::mounts::{self, BindMount};
use crate::container::rootfs::{self, ContainerRequest, Rootfs};
use crate::container::runtime::Runc;
use crate::container::spec::{self, EntrypointChoice, EnvRequest, ProcessRequest, SpecOptions};
use crate::container::user::UserIdentity;
use crate::image::metadata::ImageMeta;
use crate::sys::process::PidFd;

use super::named;
use super::protocol::{self, Hello, StepRequest, ToLauncher, ToTask};
use super::runc_fds;
use super::task_env;
use super::task_progress::TaskProgress;

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

/// Everything prepared once per step that each task's container is built from.
struct Prepared {
    cfg: Config,
    req: StepRequest,
    user: UserIdentity,
    meta: ImageMeta,
    rootfs: Rootfs,
    /// Marks the named container as running while this launcher lives.
    _named_hold: Option<fs::File>,
    /// `--container-unshare`: the process holding the step's namespaces.
    unshare: Option<super::unshare::Holder>,
}

/// Runs the launcher; returns the process exit code.
pub fn serve(req: StepRequest) -> i32 {
    let cfg = match Config::load(&req.config) {
        Ok(c) => c,
        Err(e) => return log_failure(&req, &e.to_string()),
    };
    // A named container another step runs is joined: its mount namespace, its rootfs. The
    // decision must come first: a mount namespace can only be entered before threads exist.
    let mut named_step = plan_named(&cfg, &req);
    let joined = match &named_step {
        Ok(Some(n)) => match &n.plan {
            named::Plan::Join(r) => Some(join_namespace(r)),
            named::Plan::Own => None,
        },
        _ => None,
    };
    match joined {
        Some(Ok(())) => {}
        Some(Err(e)) => named_step = Err(e),
        None => {
            // The rootfs, loop device and overlay must be invisible to the host and vanish
            // with us.
            if let Err(e) = rootfs::enter_private_mount_namespace() {
                return log_failure(&req, &e.to_string());
            }
        }
    }
    runc_fds::ignore_job_signals();
    watch_slurmstepd(&cfg, &req);
    let listener = match listen(&req) {
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
    std::thread::spawn(move || accept_loop(listener, accept_req, tx, accept_progress));

    // The namespaces of --container-unshare, held from this (long-lived) thread.
    let holder = match &req.options.unshare {
        Some(v) => super::unshare::parse(v)
            .map_err(|e| format!("egret: {e}"))
            .and_then(super::unshare::Holder::start)
            .map(Some),
        None => Ok(None),
    };
    let prepared = named_step
        .and_then(|n| prepare(&cfg, &req, &progress, n))
        .and_then(|mut p| {
            p.unshare = holder?;
            if p.unshare.as_ref().is_some_and(|h| h.unshare.ipc) {
                super::unshare::make_shm(&p.rootfs.bundle_dir)?;
            }
            Ok(p)
        });
    progress.detach();
    let result = match prepared {
        Ok(p) => {
            // A joining step's bundles live on the other step's filesystem: remove them.
            let joined_bundles =
                (p.rootfs.bundle_dir != cfg.oci_bundle_dir).then(|| p.rootfs.bundle_dir.clone());
            let code = serve_tasks(Arc::new(p), rx);
            if let Some(dir) = joined_bundles {
                let _ = fs::remove_dir_all(dir);
            }
            code
        }
        Err(msg) => {
            for _ in 0..req.local_tasks {
                match rx.recv() {
                    Ok(mut c) => {
                        let _ = protocol::send(&mut c.stream, &ToTask::Error(msg.clone()));
                    }
                    Err(_) => break,
                }
            }
            1
        }
    };
    let _ = fs::remove_file(&req.socket);
    result
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
        std::thread::sleep(std::time::Duration::from_millis(500));
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
        std::thread::sleep(std::time::Duration::from_secs(5));
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

fn listen(req: &StepRequest) -> std::io::Result<UnixListener> {
    if let Some(dir) = req.socket.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(&req.socket);
    let listener = UnixListener::bind(&req.socket)?;
    // Only the job's user (and root) may hand tasks to this launcher.
    nix::unistd::chown(&req.socket, Some(req.uid.into()), Some(req.gid.into()))?;
    fs::set_permissions(&req.socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

struct Conn {
    stream: UnixStream,
    hello: Hello,
    fds: Vec<OwnedFd>,
    /// The task process that connected, named by pidfd (its number is recycled once it is gone).
    task: PidFd,
}

fn accept_loop(
    listener: UnixListener,
    req: StepRequest,
    tx: mpsc::Sender<Conn>,
    progress: TaskProgress,
) {
    let mut accepted = 0;
    let mut seen = std::collections::HashSet::new();
    while accepted < req.local_tasks {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let cred =
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            {
                Ok(c) => c,
                Err(_) => continue,
            };
        // The socket is 0600 and owned by the user; check anyway, the kernel's word is final.
        if cred.uid() != req.uid && cred.uid() != 0 {
            continue;
        }
        let Some(task) = peer_process(&stream, cred.pid(), cred.uid()) else {
            continue;
        };
        // A connection that never finishes its hello must not hold up the step's tasks.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let hello = protocol::recv_hello(&mut stream);
        let _ = stream.set_read_timeout(None);
        match hello {
            Ok((hello, _)) if hello.local_id >= req.local_tasks || !seen.insert(hello.local_id) => {
                let msg = format!(
                    "egret: task {} is not a task of this step, or already connected",
                    hello.local_id
                );
                eprintln!("egret-launcher: refused a hello: {msg}");
                let _ = protocol::send(&mut stream, &ToTask::Error(msg));
            }
            Ok((hello, fds)) => {
                accepted += 1;
                if hello.local_id == 0 {
                    progress.attach(&stream);
                }
                if tx
                    .send(Conn {
                        stream,
                        hello,
                        fds,
                        task,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => eprintln!("egret-launcher: bad hello: {e}"),
        }
    }
}

/// The process at the other end of `stream`: the kernel's pidfd of the connecting process, or
/// (before Linux 6.5) a pidfd opened now for the `SO_PEERCRED` pid and accepted only if that
/// process still has the peer's uid, so a recycled number can at worst name one of the user's
/// own processes.
fn peer_process(stream: &UnixStream, pid: i32, uid: u32) -> Option<PidFd> {
    match PidFd::of_peer(stream) {
        Ok(p) => return Some(p),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(e) => {
            eprintln!("egret-launcher: SO_PEERPIDFD: {e}");
            return None;
        }
    }
    let p = PidFd::open(nix::unistd::Pid::from_raw(pid)).ok()?;
    let same_user = p.with_pid(|n| process_uid(n) == Some(uid)).unwrap_or(false);
    same_user.then_some(p)
}

/// The real uid of process `pid` (`/proc/PID/status`).
fn process_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A step's named container: where it lives and what this step does with it.
struct NamedStep {
    dir: PathBuf,
    name: String,
    plan: named::Plan,
    /// Held until the decision is recorded (see `named::lock_plan`).
    plan_lock: fs::File,
}

fn plan_named(cfg: &Config, req: &StepRequest) -> Result<Option<NamedStep>, String> {
    let Some(value) = &req.options.name else {
        return Ok(None);
    };
    let (name, mode) = named::parse_name(value).map_err(|e| format!("egret: {e}"))?;
    // The node's Slurm name (several slurmd may share a host and its disk).
    let env = |k: &str| {
        req.job_env
            .iter()
            .find_map(|e| e.strip_prefix(k)?.strip_prefix('='))
    };
    // srun passes on its own SLURMD_NODENAME (a batch script's node): the step's node list
    // comes first.
    let node = env("SLURM_STEP_NODELIST")
        .and_then(|l| task_env::nth_host(l, req.node_id as usize))
        .or_else(|| env("SLURMD_NODENAME").map(str::to_string))
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'))
        .unwrap_or_else(|| "local".to_string());
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
fn join_namespace(r: &named::Running) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::env::current_exe().map_err(|e| format!("egret: {e}"))?;
    let Some(want) = r.mount_ns else {
        return Err("egret: the named container's record predates this egret; run it again".into());
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
            .map_err(|e| format!("egret: cannot join the running named container: {e}"));
    }
    Err("egret: the named container's step ended while this one started; run it again".into())
}

/// Imports the image and assembles the rootfs; the error is the user's one line.
fn prepare(
    cfg: &Config,
    req: &StepRequest,
    progress: &TaskProgress,
    named: Option<NamedStep>,
) -> Result<Prepared, String> {
    // Nothing runs as root from files someone other than root could have changed.
    let me: Vec<PathBuf> = std::env::current_exe().into_iter().collect();
    crate::config::security::enforce(cfg, &req.config, &me).map_err(|e| format!("egret: {e}"))?;
    let opts = &req.options;
    if let Some(mpi) = &opts.mpi_hook {
        check_mpi_hook(cfg, mpi)?;
    }
    let user = UserIdentity::from_uid(req.uid, req.gid).map_err(|e| format!("egret: {e}"))?;
    let resolve = |image: &str| super::step_image::resolve(cfg, req, &user, image, progress);
    let mut binds: Vec<BindMount> = Vec::new();
    let mut mount_extras = Vec::new();
    let mut tmpfs_mounts = Vec::new();
    let mut site_cfg = cfg.clone();
    if let Some(spec) = &opts.mounts {
        let cwd = job_cwd(req);
        let entries = crate::container::mounts::pyxis::parse(spec, &cwd)
            .map_err(|e| format!("egret: --container-mounts: {e}"))?;
        for entry in entries {
            match entry {
                PyxisMount::Bind(b, x) => {
                    // Checked again where it resolves inside the rootfs (bundle).
                    mounts::check_destination(&b.destination, &cfg.user_mounts)
                        .map_err(|e| format!("egret: --container-mounts: {e}"))?;
                    binds.push(b);
                    mount_extras.push(x);
                }
                PyxisMount::Tmpfs {
                    destination,
                    options,
                } => {
                    mounts::check_destination(&destination, &cfg.user_mounts)
                        .map_err(|e| format!("egret: --container-mounts: {e}"))?;
                    tmpfs_mounts.push((destination, options));
                }
                PyxisMount::Umount(destination) => {
                    // Only the site's mounts may be taken away, never the image's files.
                    let before = site_cfg.site_mounts.len();
                    site_cfg
                        .site_mounts
                        .retain(|m| mounts::normalize(&m.destination) != destination);
                    if site_cfg.site_mounts.len() == before {
                        return Err(format!(
                            "egret: --container-mounts: umount:{}: the site mounts nothing there",
                            destination.display()
                        ));
                    }
                }
            }
        }
    }
    if opts.mount_home == Some(true) {
        binds.push(BindMount {
            source: user.home.clone(),
            destination: user.home.clone(),
            readonly: false,
        });
    }
    let mut devices = Vec::new();
    if let Some(spec) = &opts.devices {
        for d in spec.split(',') {
            devices.push(
                mounts::parse_device(d)
                    .map_err(|e| format!("egret: --container-device={d}: {e}"))?,
            );
        }
    }
    if let Some(value) = opts.save.as_deref().filter(|_| req.node_id == 0) {
        super::save::destination(value, &job_cwd(req))
            .and_then(|dest| super::save::check_writable(&dest, &user))
            .map_err(|e| format!("egret: {e}"))?;
    }
    // The options are all checked: only now is the image imported (minutes, maybe), so that a
    // refused mount or device is the step's one line, not the last line after an import.
    let (image_file, meta, persistent) = match &named {
        Some(n) => {
            if let named::Plan::Join(running) = &n.plan {
                return join_prepared(cfg, req, user, n, running);
            }
            let (f, m, dir) =
                named::open_or_create(&n.dir, req.job_id, &n.name, opts.image.as_deref(), resolve)?;
            (f, m, Some(dir))
        }
        None => {
            let image = opts.image.as_deref().ok_or("egret: no --container-image")?;
            let (f, m) = resolve(image)?;
            (f, m, None)
        }
    };
    let mut extra_binds = Vec::new();
    if let Some(script) = &req.batch_script {
        extra_binds.push(BindMount {
            source: script.clone(),
            destination: script.clone(),
            readonly: true,
        });
    }
    let creq = ContainerRequest {
        image_file,
        meta: meta.clone(),
        user: user.clone(),
        mounts: binds,
        mount_extras,
        devices,
        readonly: opts.writable == Some(false),
        init: opts.init,
        extra_binds,
        persistent,
    };
    let mut rootfs = rootfs::prepare_rootfs(&site_cfg, &cfg.oci_bundle_dir, &creq)
        .map_err(|e| format!("egret: {e}"))?;
    // tmpfs entries: made by runc in each container, at the destination resolved inside the
    // rootfs (and checked again there against the site's deny lists).
    for (destination, options) in tmpfs_mounts {
        let rel = mounts::resolve_in_root(&rootfs.rootfs, &destination)
            .map_err(|e| format!("egret: --container-mounts: {e}"))?;
        let resolved = Path::new("/").join(rel);
        mounts::check_destination(&resolved, &cfg.user_mounts)
            .map_err(|e| format!("egret: --container-mounts: {e}"))?;
        rootfs
            .spec_mounts
            .push(rootfs::tmpfs_spec_mount(&resolved, &options));
    }
    let named_hold = match named {
        Some(n) => {
            let record = named::Running {
                mount_ns: None,
                pids: Vec::new(),
                attach: rootfs.attach_info(),
            };
            let held = named::hold(&n.dir, record)?;
            drop(n.plan_lock);
            Some(held)
        }
        None => None,
    };
    Ok(Prepared {
        cfg: cfg.clone(),
        req: req.clone(),
        user,
        meta,
        rootfs,
        _named_hold: named_hold,
        unshare: None,
    })
}

/// `--mpi-hook[=TYPE]` that no hook in `hooksDir` serves is refused (once per node, before any
/// container starts) instead of running without the host's MPI.
fn check_mpi_hook(cfg: &Config, requested: &str) -> Result<(), String> {
    let hooks = match cfg.hooks_dir.as_deref() {
        Some(dir) if dir.exists() => {
            crate::hooks::load_dir(dir).map_err(|e| format!("egret: {e}"))?
        }
        _ => Vec::new(),
    };
    crate::hooks::check_mpi_request(&hooks, requested, cfg.default_mpi_type.as_deref())
        .map_err(|e| format!("egret: {e}"))
}

/// A step joining a running named container: its tasks run on the rootfs the other step
/// assembled, with their bundles in a directory of their own on its bundle filesystem.
fn join_prepared(
    cfg: &Config,
    req: &StepRequest,
    user: UserIdentity,
    n: &NamedStep,
    running: &named::Running,
) -> Result<Prepared, String> {
    let (_, meta) = named::origin(&n.dir, &n.name)?;
    let bundle_dir = cfg.oci_bundle_dir.join(format!(
        "join-{}.{}.{}",
        req.job_id, req.step_id, req.node_id
    ));
    fs::create_dir_all(&bundle_dir).map_err(|e| format!("egret: {}: {e}", bundle_dir.display()))?;
    let held = named::hold(&n.dir, running.clone())?;
    Ok(Prepared {
        cfg: cfg.clone(),
        req: req.clone(),
        user,
        meta,
        rootfs: Rootfs::attached(&running.attach, bundle_dir),
        _named_hold: Some(held),
        unshare: None,
    })
}

/// The directory the job was submitted from (relative mount sources are resolved against it).
pub(super) fn job_cwd(req: &StepRequest) -> PathBuf {
    req.job_env
        .iter()
        .find_map(|e| e.strip_prefix("SLURM_SUBMIT_DIR=").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn serve_tasks(p: Arc<Prepared>, rx: mpsc::Receiver<Conn>) -> i32 {
    // With --container-save the tasks hear their end only once the file is written, so the
    // next step of the job script finds it (node 0 saves; the other nodes' changes are not kept).
    let save = p.req.options.save.clone().filter(|_| p.req.node_id == 0);
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
        let saved = super::save::destination(&value, &job_cwd(&p.req)).and_then(|dest| {
            super::save::save(
                &p.cfg,
                &p.rootfs.rootfs,
                &p.rootfs.bundle_dir,
                &dest,
                &p.user,
            )
        });
        if let Err(e) = saved {
            // One line, on one task; a step whose file is missing must not look successful.
            if let Some((stream, end)) = ends.first_mut() {
                let _ = protocol::send(stream, &ToTask::Message(format!("egret: {e}")));
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

/// Runs one task's container and reports its end to the task, or with `defer` returns the
/// report for the caller to send.
fn run_one(p: &Prepared, mut conn: Conn, defer: bool) -> Option<(UnixStream, ToTask)> {
    let id = container_id(
        p.req.job_id,
        p.req.step_id,
        p.req.node_id,
        conn.hello.local_id,
    );
    if conn.hello.local_id == 0 {
        for w in &p.rootfs.warnings {
            let _ = protocol::send(
                &mut conn.stream,
                &ToTask::Message(format!("egret: warning: {w}")),
            );
        }
    }
    let outcome =
        start_container(p, &conn, &id).map(|(child, _pmix)| watch(p, &mut conn, child, &id));
    // When runc itself failed (not the command), say why in one line, with a shell's exit code.
    let outcome = outcome.map(|code| {
        let log = p
            .rootfs
            .bundle_dir
            .join(format!("task-{}/runc.log", conn.hello.local_id));
        let text = fs::read_to_string(log).unwrap_or_default();
        match crate::container::runtime::runc_failure(&text) {
            Some((shell_code, line)) if code != 0 => {
                let _ = protocol::send(&mut conn.stream, &ToTask::Message(line));
                shell_code
            }
            _ => code,
        }
    });
    let msg = match outcome {
        Ok(code) => ToTask::Exit(code),
        Err(e) => ToTask::Error(e),
    };
    if defer {
        return Some((conn.stream, msg));
    }
    let _ = protocol::send(&mut conn.stream, &msg);
    None
}

/// Starts runc for one task; the staged PMIx mount (if any) must live until the container ends.
fn start_container(
    p: &Prepared,
    conn: &Conn,
    id: &str,
) -> Result<(std::process::Child, Option<super::pmix::StagedMount>), String> {
    let opts = &p.req.options;
    let hello = &conn.hello;
    let bundle_dir = p.rootfs.bundle_dir.join(format!("task-{}", hello.local_id));
    fs::create_dir_all(&bundle_dir).map_err(|e| format!("egret: {}: {e}", bundle_dir.display()))?;

    // Descriptors beyond stdio (e.g. PMI_FD) keep their order from 3 upwards in the container.
    let mut env = env_of(hello);
    for (i, orig) in hello.fds.iter().enumerate().skip(3) {
        let new = (i as i32).to_string();
        for (_, v) in env
            .iter_mut()
            .filter(|(k, _)| k == "PMI_FD" || k == "PMIX_FD")
        {
            if *v == orig.to_string() {
                *v = new.clone();
            }
        }
    }
    task_env::drop_locale(&mut env, &opts.env_names);
    let task_vars = env.clone();
    // The container's files get the step's umask, as a plain task's do.
    let umask = task_env::umask(&env);
    let process = ProcessRequest {
        args: hello.argv.clone(),
        entrypoint: if opts.entrypoint == Some(true) {
            EntrypointChoice::Image
        } else {
            EntrypointChoice::Skip
        },
        host_env: env,
        user_env: opts
            .env_names
            .iter()
            .map(|n| EnvRequest::FromHost(n.clone()))
            .collect(),
        cwd: opts.workdir.as_ref().map(PathBuf::from),
        terminal: hello.tty,
        umask,
    };
    let mut annotations: BTreeMap<String, String> = opts.annotations.iter().cloned().collect();
    if let Some(mpi) = &opts.mpi_hook {
        annotations.insert("com.hooks.mpi.enabled".into(), "true".into());
        let t = if mpi.is_empty() {
            p.cfg.default_mpi_type.clone().unwrap_or_default()
        } else {
            mpi.clone()
        };
        if !t.is_empty() {
            annotations.insert("com.hooks.mpi.type".into(), t);
        }
        annotations.insert("com.hooks.glibc.enabled".into(), "true".into());
    }
    if opts.ssh {
        // The sync hook holds every task until all containers (and their daemons) exist.
        annotations.insert("com.hooks.ssh.enabled".into(), "true".into());
        annotations.insert("com.hooks.slurm-global-sync.enabled".into(), "true".into());
    }
    crate::hooks::add_automatic_annotations(&mut annotations, &task_vars);
    annotations.insert(
        "com.egret.job".into(),
        format!("{}.{}", p.req.job_id, p.req.step_id),
    );
    let sopts = SpecOptions {
        annotations,
        pid_host: opts.pid_private != Some(true) && !opts.ssh,
        cgroups_path: Some(id.to_string()),
        readonly_root: opts.writable == Some(false),
        init: opts.init,
        hostname: None,
    };
    let mut spec = spec::build_spec(&p.cfg, &p.rootfs, &p.meta, &p.user, &process, &sopts)
        .map_err(|e| format!("egret: {e}"))?;
    if let Some(process) = spec.process_mut() {
        let env = process.env_mut().get_or_insert_with(Vec::new);
        let extra = task_env::pytorch_vars(&p.meta.env, env, &task_vars);
        env.extend(extra);
    }
    if opts.remap_root == Some(true) {
        crate::container::remap_root::apply(&mut spec, p.user.uid, p.user.gid)
            .map_err(|e| format!("egret: {e}"))?;
    }
    if let Some(h) = &p.unshare {
        h.apply(&mut spec, &p.rootfs.bundle_dir.join("shm"))?;
    }
    let pmix = super::pmix::mounts(
        &task_vars,
        p.user.uid,
        p.req.job_id,
        p.req.step_id,
        &bundle_dir,
    )
    .map_err(|e| format!("egret: {e}"))?;
    if !pmix.binds.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (source, destination, opts) in &pmix.binds {
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination(destination)
                    .typ("bind")
                    .source(source)
                    .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                    .build()
                    .map_err(|e| format!("egret: {e}"))?,
            );
        }
        spec.set_mounts(Some(mounts));
    }
    // runc's new cpuset cgroup would reset the affinity Slurm gave the task (--cpu-bind).
    let gone =
        |e: std::io::Error| format!("egret: the task exited before its container started ({e})");
    conn.task
        .with_pid(|pid| spec::keep_affinity(&mut spec, pid))
        .map_err(gone)?
        .map_err(|e| format!("egret: {e}"))?;
    spec::write_spec(&bundle_dir, &spec).map_err(|e| format!("egret: {e}"))?;

    let runc = Runc {
        path: p.cfg.runc_path.clone(),
        root: p.cfg.runc_root.clone(),
    };
    let extra = conn.fds.len().saturating_sub(3) as u32;
    let inner = runc.command_logged(id, &bundle_dir, extra, &bundle_dir.join("runc.log"));
    let mut cmd = conn
        .task
        .with_pid(|pid| super::cgroup::join_then_exec(pid, &inner))
        .map_err(gone)?
        .map_err(|e| format!("egret: {e}"))?;
    let raw: Vec<i32> = conn.fds.iter().map(|f| f.as_raw_fd()).collect();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The launcher blocks SIGTERM/SIGINT for its own threads; runc and the container must not.
    crate::sys::process::unblock_signals_on_exec(&mut cmd);
    super::runc_fds::map_fds_on_exec(&mut cmd, raw);
    let child = cmd
        .spawn()
        .map_err(|e| format!("egret: cannot start runc: {e}"))?;
    Ok((child, pmix.staged))
}

fn env_of(hello: &Hello) -> Vec<(String, String)> {
    hello
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Waits for the container while forwarding the task's signals to runc (which forwards them to
/// the container). A task that disappears (SIGKILL) takes its container with it.
fn watch(p: &Prepared, conn: &mut Conn, mut child: std::process::Child, id: &str) -> i32 {
    // Our child, not yet waited for: its number cannot have been recycled yet. Signals go by
    // pidfd, so none reaches another process once runc is reaped.
    let runc_process = PidFd::open(nix::unistd::Pid::from_raw(child.id() as i32));
    let reader = conn.stream.try_clone();
    let runc = Runc {
        path: p.cfg.runc_path.clone(),
        root: p.cfg.runc_root.clone(),
    };
    let id_owned = id.to_string();
    if let Ok(mut reader) = reader {
        std::thread::spawn(move || loop {
            match protocol::recv::<ToLauncher>(&mut reader) {
                Ok(ToLauncher::Signal(sig)) => {
                    // Only what a task forwards: no SIGSTOP or SIGKILL for root's runc.
                    let forwarded = nix::sys::signal::Signal::try_from(sig)
                        .ok()
                        .filter(|s| super::client::FORWARDED.contains(s));
                    if let (Some(s), Ok(p)) = (forwarded, &runc_process) {
                        let _ = p.signal(s);
                    }
                }
                Ok(ToLauncher::Hello(_)) => {}
                Err(_) => {
                    // The task is gone: nobody will read the result, so stop the container.
                    runc.delete_force(&id_owned);
                    return;
                }
            }
        });
    }
    let code = match child.wait() {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => 1,
    };
    // runc run removes its state on a normal exit; make sure of it on every path.
    Runc {
        path: p.cfg.runc_path.clone(),
        root: p.cfg.runc_root.clone(),
    }
    .delete_force(id);
    code
}
