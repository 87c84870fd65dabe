//! egret's engine: everything the SPANK plugin, the `egret` CLI, the launcher and the hooks share.
//!
//! The folders are the layers (see the map at the top of `docs/design.md`):
//! - [`image`]: from a reference to a verified squashfs file in the store (names, the registry
//!   fetch as the user, layer flattening, mksquashfs, the content-addressed store).
//! - [`container`]: from a squashfs file to a running container (the rootfs in a private mount
//!   namespace, mounts and their user syntaxes, the OCI spec and environment, runc).
//! - [`hooks`]: which OCI hooks a container gets (`hooks.d`) and the devices they need.
//! - [`cdi`]: GPUs and other vendor devices from CDI specs, per Slurm task, and the built-in
//!   NVIDIA support for nodes without a spec.
//! - [`config`]: the admin's `egret.json` and the security checks of every path root trusts.
//! - [`edf`]: CSCS's environment definition files (`--environment`), read as the user before
//!   the job is queued.
//! - [`slurm`]: the per-step root launcher behind `srun --container-image`, the task client,
//!   their protocol and the option table.
//! - [`sys`]: the only module allowed `unsafe`: thin safe wrappers over system calls.
//!
//! Dependencies point down the list: `slurm` uses `container`, `hooks` and `image`; `container`
//! uses `image` only for image metadata; everything may use `config` and `sys`.

pub mod cdi;
pub mod config;
pub mod container;
pub mod edf;
pub mod hooks;
pub mod image;
pub mod slurm;
#[allow(unsafe_code)] // the one module allowed `unsafe`; every block has a `// SAFETY:` line
pub mod sys;
