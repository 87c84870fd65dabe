//! What egret's system tests share (`use egret_test_support as common;`).
//!
//! - the crate root (`cluster.rs`): the machine `make up` sets up — Slurm nodes n1 and n2, the
//!   registry on 127.0.0.1:5000 with the test images, egret installed under /usr/local, the
//!   test users — and the helpers to drive it (srun, sbatch, leak snapshots);
//! - [`multi`]: the eight-node cluster `egret-multi` (node-local directories by `%n`) and the
//!   GlusterFS volume its nodes can share a store on;
//! - [`sandbox`]: a private egret configuration and store for CLI tests;
//! - [`forged_task`]: the hostile tests' forged task processes;
//! - [`engine_run`]: one container run in-process through the engine, without Slurm.
//!
//! The tests need root, and fail loudly when something is missing: a test never skips itself.

mod cluster;
pub use cluster::*;

pub mod engine_run;
pub mod forged_task;
pub mod multi;
pub mod sandbox;
