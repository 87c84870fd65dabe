//! run, hooks: Sarus' verbs over the engine's bundle, spec, runtime and hooks.d.
//!
//! `egret run` parses and checks everything first, looks the image up as the user, then forks a
//! child (the process is still single-threaded) that enters a private mount namespace, assembles
//! the container in `OCIBundleDir/<random>` and runs runc in the foreground. The parent waits,
//! passing signals on, and cleans up: runc state, the bundle directory. The mounts and the loop
//! device vanish with the child's namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use egret_engine::config::Config;
use egret_engine::container::env::EnvRequest;
use egret_engine::container::mounts::{self, BindMount, DeviceRequest};
use egret_engine::container::rootfs::{self, ContainerRequest};
use egret_engine::container::runtime::{self, Runc, SignalForwarder};
use egret_engine::container::spec::{self, EntrypointChoice, ProcessRequest, SpecOptions};
use egret_engine::container::user::UserIdentity;
use egret_engine::hooks;
use egret_engine::image::metadata::ImageMeta;
use egret_engine::image::reference::ImageSource;
use egret_engine::image::store::Store;
use egret_engine::sys;

use crate::image_cmds::Context;

const HELP: &str = "see 'egret run --help'";

#[derive(clap::Args)]
pub struct RunArgs {
    /// Bind mount a host path (repeatable): type=bind,src=HOST,dst=CONTAINER[,readonly].
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Make a host device available (repeatable): HOST[:CONTAINER][:ACCESS], ACCESS ⊆ rwm.
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Vec<String>,
    /// Working directory inside the container (absolute; created if missing).
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Set NAME to VALUE, or NAME to its value here (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Replace the image's ENTRYPOINT (split on whitespace; "" removes it). The image's CMD is
    /// then not used.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// PID namespace: the host's, or a private one.
    #[arg(long, value_name = "host|private", default_value = "host")]
    pid: String,
    /// Run an init process (tini) as the parent of the command.
    #[arg(long)]
    init: bool,
    /// Add an OCI annotation (repeatable): KEY=VALUE.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Take the image from the centralized repository.
    #[arg(long)]
    centralized_repository: bool,
    /// Name the container (for `egret ps` and `egret kill`); unique among running ones.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The image, then the command and its arguments (options end at the image).
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

#[derive(clap::Args)]
pub struct HooksArgs {
    /// List only the MPI hooks, with the MPI type each serves.
    #[arg(short = 'm', long)]
    mpi: bool,
}

/// Everything `run` decided before touching the system.
struct Plan {
    req: ContainerRequest,
    process: ProcessRequest,
    opts: SpecOptions,
}

pub fn run(c: &Context, a: RunArgs) -> Result<ExitCode, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "'egret run' needs root privileges (install egret setuid root, or use sudo)".into(),
        );
    }
    let cfg = &c.config;
    egret_engine::config::security::enforce(cfg, &c.config_path, &[])
        .map_err(|e| format!("run: {e}"))?;
    let user = UserIdentity::current_real().map_err(|e| e.to_string())?;
    let (image, command) = a
        .args
        .split_first()
        .ok_or_else(|| format!("missing IMAGE, {HELP}"))?;
    let id = match &a.name {
        Some(n) => crate::ps_cmds::check_new_name(cfg, n)?,
        None => runtime::container_id(),
    };
    let mut parsed = parse(&a, command, &id)?;
    // What `egret ps` shows.
    parsed
        .opts
        .annotations
        .insert(crate::ps_cmds::IMAGE_ANNOTATION.into(), image.clone());
    // The hooks log as verbosely as egret was asked to; an explicit --annotation wins.
    if c.debug || c.verbose {
        parsed
            .opts
            .annotations
            .entry("com.hooks.logging.level".into())
            .or_insert_with(|| if c.debug { "debug" } else { "info" }.into());
    }
    let (image_file, meta) = find_image(cfg, &user, image, a.centralized_repository)?;
    let plan = Plan {
        req: ContainerRequest {
            image_file,
            meta,
            user,
            mounts: parsed.mounts,
            mount_extras: Vec::new(),
            devices: parsed.devices,
            readonly: false,
            init: a.init,
            extra_binds: vec![],
            persistent: None,
        },
        process: parsed.process,
        opts: parsed.opts,
    };

    let runc = Runc::from_config(cfg);
    let bundle_dir = cfg.oci_bundle_dir.join(runtime::random_hex());
    make_bundle_dir(&bundle_dir)?;
    // Blocked before the fork: a Ctrl-C is passed on to the container rather than killing us.
    let signals = SignalForwarder::new().map_err(|e| e.to_string())?;
    let parent = nix::unistd::getpid();
    let forked =
        sys::process::fork_child(|| container(cfg, &plan, &runc, &id, &bundle_dir, parent));
    let result = forked
        .map_err(|e| format!("cannot start the container process: {e}"))
        .and_then(|child| signals.wait(child).map_err(|e| e.to_string()));
    drop(signals);
    // Whatever happened in the child: no runc state, no bundle directory.
    runc.delete_force(&id);
    let _ = std::fs::remove_dir(&bundle_dir);
    result.map(|code| ExitCode::from(code.clamp(0, 255) as u8))
}

/// The child: private mount namespace, rootfs, config.json, runc. Returns the exit code.
fn container(
    cfg: &Config,
    plan: &Plan,
    runc: &Runc,
    id: &str,
    bundle_dir: &Path,
    parent: nix::unistd::Pid,
) -> i32 {
    // If egret is killed, the container is told to stop (SIGTERM is forwarded to it).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if nix::unistd::getppid() != parent {
        return 1;
    }
    let result = (|| -> Result<i32, String> {
        rootfs::enter_private_mount_namespace().map_err(|e| e.to_string())?;
        let rootfs =
            rootfs::prepare_rootfs(cfg, bundle_dir, &plan.req).map_err(|e| e.to_string())?;
        for w in &rootfs.warnings {
            eprintln!("egret: warning: {w}");
        }
        let mut spec = spec::build_spec(
            cfg,
            &rootfs,
            &plan.req.meta,
            &plan.req.user,
            &plan.process,
            &plan.opts,
        )
        .map_err(|e| e.to_string())?;
        // Bound by srun --cpu-bind? The container stays on the same CPUs.
        spec::keep_affinity(&mut spec, 0).map_err(|e| e.to_string())?;
        spec::write_spec(bundle_dir, &spec).map_err(|e| e.to_string())?;
        let code = runc
            .run_foreground(id, bundle_dir)
            .map_err(|e| e.to_string());
        // Also done by the parent; here too in case the parent was killed.
        if rootfs.teardown().is_ok() {
            let _ = std::fs::remove_dir(bundle_dir);
        }
        code
    })();
    result.unwrap_or_else(|e| {
        eprintln!("egret: {e}");
        1
    })
}

struct Parsed {
    mounts: Vec<BindMount>,
    devices: Vec<DeviceRequest>,
    process: ProcessRequest,
    opts: SpecOptions,
}

fn parse(a: &RunArgs, command: &[String], id: &str) -> Result<Parsed, String> {
    let mounts = a
        .mounts
        .iter()
        .map(|m| mounts::parse_sarus_mount(m).map_err(|e| format!("bad --mount {e}, {HELP}")))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = a
        .devices
        .iter()
        .map(|d| mounts::parse_device(d).map_err(|e| format!("bad --device {e}, {HELP}")))
        .collect::<Result<Vec<_>, _>>()?;
    let user_env = a
        .env
        .iter()
        .map(|e| {
            EnvRequest::parse(e)
                .map_err(|err| format!("bad --env '{}': {err}, {HELP}", e.escape_debug()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                annotations.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "bad --annotation '{}': expected KEY=VALUE, {HELP}",
                    kv.escape_debug()
                ))
            }
        }
    }
    if let Some(w) = &a.workdir {
        if !w.is_absolute() {
            return Err(format!(
                "bad --workdir '{}': must be an absolute path, {HELP}",
                w.display()
            ));
        }
    }
    let pid_host = match a.pid.as_str() {
        "host" => true,
        "private" => false,
        other => {
            return Err(format!(
                "bad --pid '{other}': expected 'host' or 'private', {HELP}"
            ))
        }
    };
    let entrypoint = match a.entrypoint.as_deref() {
        None => EntrypointChoice::Image,
        Some(s) if s.trim().is_empty() => EntrypointChoice::Clear,
        Some(s) => EntrypointChoice::Override(s.split_whitespace().map(String::from).collect()),
    };
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut hook_env = host_env.clone();
    hook_env.extend(user_env.iter().filter_map(|r| match r {
        EnvRequest::Set(k, v) => Some((k.clone(), v.clone())),
        EnvRequest::FromHost(_) => None,
    }));
    egret_engine::hooks::add_automatic_annotations(&mut annotations, &hook_env);
    Ok(Parsed {
        mounts,
        devices,
        process: ProcessRequest {
            args: command.to_vec(),
            entrypoint,
            host_env,
            user_env,
            cwd: a.workdir.clone(),
            terminal: a.tty,
            umask: None,
        },
        opts: SpecOptions {
            annotations,
            pid_host,
            // Relative: below egret's own cgroup (a Slurm job's, under srun), never at the root.
            cgroups_path: Some(id.to_string()),
            readonly_root: false,
            init: a.init,
            hostname: None,
        },
    })
}

/// The squashfs and metadata of `image`, looked up with the user's rights (their index, their
/// file system permissions).
fn find_image(
    cfg: &Config,
    user: &UserIdentity,
    image: &str,
    centralized: bool,
) -> Result<(PathBuf, ImageMeta), String> {
    let source = ImageSource::parse(image).map_err(|e| format!("{e}, {HELP}"))?;
    let r = match source {
        ImageSource::Registry(r) => r,
        // Root's own file: kernel-mounting it is root's call. Users go through the store.
        ImageSource::SquashfsFile(p) if user.uid == 0 => {
            let p = std::path::absolute(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            return Ok((p, ImageMeta::default()));
        }
        ImageSource::SquashfsFile(p) => {
            return Err(format!(
                "{}: running a squashfs file directly is reserved to root; use 'egret load' or 'egret pull'",
                p.display()
            ))
        }
    };
    let timings = &cfg.repository_metadata_lock_timings;
    let store = if centralized {
        let dir = cfg
            .centralized_repository_dir
            .as_deref()
            .ok_or("--centralized-repository: no centralizedRepositoryDir in the configuration")?;
        Store::open_centralized_readonly(dir, timings)
    } else {
        Store::open_readonly(&cfg.local_repository_base_dir, user.uid, user.gid, timings)
    };
    let found = user
        .run_as(|| store.lookup(&r))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match found {
        Some(img) => Ok((img.squashfs, img.meta)),
        None => Err(format!(
            "image {} is not available; pull it first with 'egret pull {image}'",
            r.display()
        )),
    }
}

fn make_bundle_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |e: std::io::Error| format!("cannot create bundle directory {}: {e}", dir.display());
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(err)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(err)
}

pub fn hooks(c: &Context, a: HooksArgs) -> Result<ExitCode, String> {
    let cfg = &c.config;
    let hooks = match cfg.hooks_dir.as_deref() {
        Some(dir) if dir.exists() => hooks::load_dir(dir).map_err(|e| e.to_string())?,
        _ => Vec::new(),
    };
    if a.mpi {
        print!(
            "{}",
            hooks::format_mpi_list(&hooks::mpi_hooks(&hooks, cfg.default_mpi_type.as_deref()))
        );
    } else {
        print!("{}", hooks::format_list(&hooks));
    }
    Ok(ExitCode::SUCCESS)
}

/// `egret check`: every security check, whatever `securityChecks` says; one line per problem.
pub fn check(c: &Context) -> Result<ExitCode, String> {
    let launcher = std::path::PathBuf::from(egret_engine::slurm::step::DEFAULT_LAUNCHER);
    let plugin = std::path::PathBuf::from("/usr/local/lib/egret/spank_egret.so");
    let found = egret_engine::config::security::check_install(
        &c.config,
        &c.config_path,
        &[launcher, plugin],
    );
    for v in &found {
        println!("{v}");
    }
    // A warning, not a problem: the exit status is the other checks'.
    println!("{}", runc_version_warning(&c.config.runc_path, &found));
    if found.is_empty() {
        println!(
            "egret check: no problems found ({})",
            c.config_path.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("egret check: {} problem(s) found", found.len());
        Ok(ExitCode::FAILURE)
    }
}

/// `egret check`'s line about the runc CVEs `runc --version` predates (see
/// [`egret_engine::config::security::RuncCveStatus`]): a warning, or that it is recent enough. runc is
/// not run when the checks above found it (or a directory above it) tamperable.
fn runc_version_warning(
    runc: &Path,
    found: &[egret_engine::config::security::Violation],
) -> String {
    use egret_engine::config::security::RuncCveStatus;
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let warn = |msg: String| format!("egret check: warning: {}: {msg}", runc.display());
    if found.iter().any(|v| runc.starts_with(&v.path)) {
        return warn("not running it for its version: fix the problems above first".into());
    }
    let mut child = match Command::new(runc)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return warn(format!("cannot run '{} --version': {e}", runc.display())),
    };
    // `runc --version` prints a few lines and exits; do not hang on a runc that does not.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err("did not exit within 10 s".to_string());
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return warn(format!("'{} --version' failed ({s})", runc.display())),
        Err(e) => return warn(format!("'{} --version' {e}", runc.display())),
    }
    // Read only once it has exited (a killed one's pipe may still be held by its children).
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    match RuncCveStatus::of_version_output(&out) {
        RuncCveStatus::Fixed { version } => format!(
            "egret check: {}: runc version {version} has the upstream fixes for \
             CVE-2024-21626, CVE-2025-31133, CVE-2025-52565 and CVE-2025-52881",
            runc.display()
        ),
        other => warn(other.warning().unwrap_or_default()),
    }
}
