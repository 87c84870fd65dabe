//! Containers: from a squashfs image to a process under runc.
//!
//! [`user`] says who runs → [`rootfs`] assembles the root filesystem in a private mount namespace
//! (tmpfs, loop-mounted squashfs, overlay, `/etc` files, [`mounts`], devices, [`remap_root`]) →
//! [`spec`] and [`env`] write `config.json` → [`runtime`] runs runc.

pub mod env;
pub mod ldcache;
pub mod mounts;
pub mod remap_root;
pub mod rootfs;
pub mod runtime;
pub mod spec;
pub mod user;
