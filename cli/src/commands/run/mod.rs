//! `egret run`: Sarus' verb over the engine's bundle, spec, runtime and hooks.d.
//!
//! `egret run` parses and checks everything first ([`options`]), looks the image up as the user
//! ([`image`]), then forks a child (the process is still single-threaded) that enters a private
//! mount namespace, assembles the container in `OCIBundleDir/<random>` and runs runc in the
//! foreground ([`child`]). The parent waits, passing signals on, and cleans up: runc state, the
//! bundle directory. The mounts and the loop device vanish with the child's namespace.

mod child;
mod image;
mod options;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use egret_engine::config::security::SecurityError;
use egret_engine::container::rootfs::ContainerRequest;
use egret_engine::container::runtime::{self, Runc, RuntimeError, SignalForwarder};
use egret_engine::container::spec::{ProcessRequest, SpecOptions};
use egret_engine::container::user::UserError;
use egret_engine::hooks::annotations;
use egret_engine::sys;

pub use self::image::ImageError;
pub use self::options::{OptionError, RunArgs};
use super::containers::{self, NameError};
use super::usage_line;
use crate::context::Context;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("'egret run' needs root privileges (install egret setuid root, or use sudo)")]
    NotRoot,
    /// The config's security checks (`securityChecks`) failed.
    #[error("run: {0}")]
    Security(#[from] SecurityError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("missing IMAGE, see 'egret run --help'")]
    MissingImage,
    #[error("{}", usage_line("run", .0))]
    Name(#[from] NameError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot create bundle directory {}: {source}", .dir.display())]
    BundleDir { dir: PathBuf, source: io::Error },
    /// Blocking, forwarding or waiting: the parent's side of the container's signals.
    #[error(transparent)]
    Signals(#[from] RuntimeError),
    #[error("cannot start the container process: {0}")]
    Fork(#[source] io::Error),
    #[error(transparent)]
    HooksDir(#[from] egret_engine::hooks::schema::HooksError),
    #[error(transparent)]
    Mpi(#[from] egret_engine::hooks::mpi::MpiRequestError),
    #[error(transparent)]
    Privilege(#[from] crate::privilege::PrivilegeError),
}

/// Everything `run` decided before touching the system.
pub struct Plan {
    req: ContainerRequest,
    process: ProcessRequest,
    opts: SpecOptions,
    /// The container's descriptors 3, 4, ... (`PMI_FD`'s under `srun egret run`).
    pass_fds: Vec<std::os::fd::OwnedFd>,
}

/// Runs the container; the exit code is the container's.
pub fn run(c: &Context, a: RunArgs) -> Result<ExitCode, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    let cfg = &c.config;
    // A user's setuid egret ran them (and on itself) before it became root.
    if !c.caller.is_setuid() {
        egret_engine::config::security::enforce(cfg, &c.config_path, &[])?;
    }
    let user = c.caller.identity.clone();
    let (image, command) = a.args.split_first().ok_or(RunError::MissingImage)?;
    let id = match &a.name {
        Some(n) => containers::check_new_name(cfg, n, c.uid)?,
        None => runtime::container_id(),
    };
    let mut parsed = options::parse(&a, command, &id, &c.caller)?;
    // What `egret ps` shows.
    parsed
        .opts
        .annotations
        .insert(containers::IMAGE_ANNOTATION.into(), image.clone());
    // Whose container it is, for `egret ps` and `egret kill` (over any value the user gave).
    parsed
        .opts
        .annotations
        .insert(containers::OWNER_ANNOTATION.into(), c.uid.to_string());
    // Sarus's hook flags; an explicit --annotation of the same key wins.
    let annotations = &mut parsed.opts.annotations;
    if let Some(requested) = a.mpi_request() {
        let hooks = match cfg.hooks_dir.as_deref() {
            Some(dir) if dir.exists() => egret_engine::hooks::schema::load_dir(dir)?,
            _ => Vec::new(),
        };
        let default = cfg.default_mpi_type.as_deref();
        egret_engine::hooks::mpi::check_mpi_request(&hooks, requested, default, "--mpi")?;
        annotations
            .entry(annotations::MPI_ENABLED.into())
            .or_insert_with(|| "true".into());
        let mpi_type = Some(requested).filter(|t| !t.is_empty()).or(default);
        if let Some(t) = mpi_type {
            annotations
                .entry(annotations::MPI_TYPE.into())
                .or_insert_with(|| t.to_string());
        }
    }
    for (on, key) in [
        (a.ssh, annotations::SSH_ENABLED),
        (a.glibc, annotations::GLIBC_ENABLED),
    ] {
        if on {
            annotations
                .entry(key.into())
                .or_insert_with(|| "true".into());
        }
    }
    // The hooks log as verbosely as egret was asked to; an explicit --annotation wins.
    if c.debug || c.verbose {
        parsed
            .opts
            .annotations
            .entry(egret_engine::hooks::annotations::LOGGING_LEVEL.into())
            .or_insert_with(|| if c.debug { "debug" } else { "info" }.into());
    }
    let (image_file, meta) = image::find_image(cfg, &user, image, a.centralized_repository)?;
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
            image_owned_by_user: false,
        },
        process: parsed.process,
        opts: parsed.opts,
        pass_fds: parsed.pass_fds,
    };

    let runc = Runc::from_config(cfg);
    let bundle_dir = cfg.oci_bundle_dir.join(runtime::random_hex());
    make_bundle_dir(&bundle_dir)?;
    // Blocked before the fork: a Ctrl-C is passed on to the container rather than killing us.
    let signals = SignalForwarder::new()?;
    let parent = nix::unistd::getpid();
    let forked =
        sys::process::fork_child(|| child::container(cfg, &plan, &runc, &id, &bundle_dir, parent));
    let result = forked.map_err(RunError::Fork).and_then(|child| {
        // The user may signal their own `egret run` while it waits, as with Sarus's.
        c.caller.signalable_by_user()?;
        let code = signals.wait(child);
        c.caller.root_again()?;
        Ok(code?)
    });
    drop(signals);
    // Whatever happened in the child: no runc state, no bundle directory.
    runc.delete_force(&id);
    let _ = std::fs::remove_dir(&bundle_dir);
    result.map(|code| ExitCode::from(code.clamp(0, 255) as u8))
}

/// `dir` (root-only) in its parent (created world-readable if missing).
fn make_bundle_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source: io::Error| RunError::BundleDir {
        dir: dir.to_path_buf(),
        source,
    };
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
