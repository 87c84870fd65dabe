//! egret's engine: everything the SPANK plugin, the `egret` CLI and the hooks share.
//!
//! Image side: `reference` (names) → `import` (skopeo fetch, `flatten` layers, `squash` with
//! mksquashfs) → `store` (content-addressed squashfs files plus per-user Sarus-style indexes).
//! Run side: `user` (who runs) → `bundle` (private mount namespace, tmpfs, loop squashfs, overlay,
//! mounts, devices) → `spec` + `env` (config.json) → `runtime` (runc). `sys` is the only module
//! allowed `unsafe`.

pub mod config;
pub mod imagemeta;
pub mod reference;

pub mod flatten;
pub mod import;
pub mod progress;
pub mod skopeo;
pub mod squash;
pub mod store;

pub mod bundle;
pub mod env;
pub mod hookdevices;
pub mod hooksd;
pub mod mounts;
pub mod pyxis_mounts;
pub mod remap_root;
pub mod runtime;
pub mod spec;
pub mod sys;
pub mod user;

pub mod launcher;
pub mod security;
