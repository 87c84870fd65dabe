//! The SSH hook (`--container-ssh`): a dropbear daemon in the container of each node's first
//! task, an `ssh` client wrapper in every container, the user's own keys, and the container's
//! environment replayed in every session.
//!
//! At `createRuntime` (root, runc's mount namespace, `state.pid` = the container's init as a host
//! pid, before `pivot_root`) the hook:
//! 1. reads the user's keys as the user (`egret ssh-keygen` made them; none: a clear error);
//! 2. enters the container's mount namespace and builds, on a tmpfs in the (root-owned) bundle,
//!    `/opt/egret/ssh` (Debian's dropbear and dbclient with the host's loader and libraries:
//!    they run in any image, glibc, musl or none, because they never use the image's) and the
//!    user's `~/.ssh` (keys, `authorized_keys`), then binds both, and the `ssh` wrapper over
//!    `/usr/bin/ssh`, into the rootfs (targets resolved inside the rootfs, never through an
//!    image's link). The user's real home is never written: `~/.ssh` is a tmpfs;
//! 3. on the node's first task only (`SLURM_LOCALID=0`: one daemon per node and port), adds
//!    `/etc/profile.d/egret-ssh.sh`, makes the user's login shell one dropbear accepts, and
//!    starts dropbear in the container's pid namespace, chrooted into the rootfs, as the user,
//!    with `no_new_privs`; it returns once the port answers, so the sync hook after it releases
//!    the tasks only when every node's daemon listens.
//!
//! At `poststop` it stops the daemon it recorded in the bundle (the private pid namespace that
//! `--container-ssh` implies already takes it down with the container; this is for certainty).

mod daemon;
mod error;
pub mod files;
pub mod keygen;
pub mod keys;
mod payload;
mod rootfs;
pub mod settings;
mod stage;
mod start;

use egret_engine::hooks::annotations;

use crate::HookContext;

pub use error::SshError;
pub use keygen::keygen_main;
pub use settings::{port_for, Settings, DEFAULT_PORT};

/// Where the hook's files appear in the container.
pub const CONTAINER_DIR: &str = "/opt/egret/ssh";
pub const ENABLED_ANNOTATION: &str = annotations::SSH_ENABLED;
/// A user's choice of port for the step (1024-65535).
pub const PORT_ANNOTATION: &str = annotations::SSH_PORT;
/// A public key file (read as the user) that may log in as well, e.g. from a laptop.
pub const AUTHORIZE_KEY_ANNOTATION: &str = annotations::SSH_AUTHORIZE_KEY;

/// The hook, for both of its stages.
pub fn hook(ctx: &HookContext) -> Result<(), SshError> {
    if !ctx.annotation_enabled(ENABLED_ANNOTATION) {
        return Ok(());
    }
    if ctx.state().status == "stopped" {
        daemon::stop(ctx.bundle());
        return Ok(());
    }
    start::start(ctx)
}
