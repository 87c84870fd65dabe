//! The per-node, per-step root helper behind `srun --container-image` (design R, see
//! `docs/design.md`).
//!
//! slurmstepd spawns one `egret-launcher` per node and step (from the SPANK `user_init`
//! callback). It enters a private mount namespace, imports the image once, assembles the rootfs
//! once, and then serves every local task: the task process (in SPANK `task_init`, as the user,
//! with its final environment and real stdio) connects to the launcher's socket and hands over
//! its argv, env and stdio descriptors; the launcher runs `runc run` for it inside the task's
//! cgroup and reports the exit status back.

pub mod cgroup;
pub mod client;
pub mod multiprog;
pub mod named;
pub mod options;
mod pmix;
pub mod protocol;
mod runc_fds;
pub mod save;
pub mod server;
mod step_image;
pub mod store_bound;
pub mod task_env;
mod task_progress;
pub mod unshare;
mod user_squashfs;
