//! The forked child of `egret run`: a private mount namespace, the rootfs, config.json, runc in
//! the foreground. Its mounts and loop device vanish with its namespace.

use std::path::Path;

use egret_engine::config::Config;
use egret_engine::container::rootfs::{self, BundleError};
use egret_engine::container::runtime::{Runc, RuntimeError};
use egret_engine::container::spec::{self, SpecError};

use super::Plan;

/// Why the child could not run the container. The child reports it itself (it exits with 1).
#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The child's body: returns the container's exit code (1 when it could not run).
pub fn container(
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
    run_container(cfg, plan, runc, id, bundle_dir).unwrap_or_else(|e| {
        // The child's own exit: its error leaves the program here.
        eprintln!("egret: {e}");
        1
    })
}

fn run_container(
    cfg: &Config,
    plan: &Plan,
    runc: &Runc,
    id: &str,
    bundle_dir: &Path,
) -> Result<i32, ChildError> {
    rootfs::enter_private_mount_namespace()?;
    let rootfs = rootfs::prepare_rootfs(cfg, bundle_dir, &plan.req)?;
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
    )?;
    // Bound by srun --cpu-bind? The container stays on the same CPUs.
    spec::keep_affinity(&mut spec, 0)?;
    spec::write_spec(bundle_dir, &spec)?;
    let code = runc.run_foreground_passing(id, bundle_dir, &plan.pass_fds);
    // Also done by the parent; here too in case the parent was killed.
    if rootfs.teardown().is_ok() {
        let _ = std::fs::remove_dir(bundle_dir);
    }
    Ok(code?)
}
