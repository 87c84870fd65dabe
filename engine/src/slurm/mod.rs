//! The per-node, per-step root helper behind `srun --container-image` (design R, see
//! `docs/design.md`).
//!
//! slurmstepd spawns one `egret-launcher` per node and step (from the SPANK `user_init`
//! callback). It enters a private mount namespace, imports the image once, assembles the rootfs
//! once, and then serves every local task: the task process (in SPANK `task_init`, as the user,
//! with its final environment and real stdio) connects to the launcher's socket and hands over
//! its argv, env and stdio descriptors; the launcher runs `runc run` for it inside the task's
//! cgroup and reports the exit status back.

//!
//! The launcher's files, in the order of a step: [`step`] (lifecycle: serve, teardown),
//! `named_step` (the named container's decision, before any thread), `accept` (the tasks
//! connecting), `prepare` (options to the step's rootfs, with `step_image` and
//! `user_squashfs` for the image), `plan` (the pure rules from options to mounts, devices,
//! process and annotations), `task` (one container per task, signals forwarded; `workdir`
//! checks `--container-workdir` first). The task side
//! is [`client`]; both speak [`protocol`].

mod accept;
pub mod cgroup;
pub mod client;
mod entrypoint_log;
pub mod fanout;
pub mod multiprog;
pub mod named;
mod named_step;
pub mod options;
pub(crate) mod plan;
mod pmix;
mod prepare;
pub mod protocol;
pub mod save;
pub mod step;
pub mod step_digest;
mod step_image;
pub mod store_bound;
mod task;
pub mod task_env;
mod task_progress;
pub mod unshare;
mod user_squashfs;
mod workdir;

pub use plan::node_name;
