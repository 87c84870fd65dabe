//! The only module allowed `unsafe`: thin, safe wrappers over the system calls that `nix` does not
//! cover (loop devices, per-thread credentials, `mount_setattr`, `pidfd_open`, `openat` returning
//! an owned descriptor, `fork`, `SCM_RIGHTS`, `sigaction`). Every `unsafe` block carries a `// SAFETY:` line.
//!
//! [`in_root`] holds the path-safety primitives: resolving, creating and rewriting paths inside
//! a container's root filesystem without ever leaving it.
//!
//! Everything here is policy-free: what to mount where, and as whom, is decided by `bundle`,
//! `mounts` and `user`.

pub mod creds;
pub mod enter_cgroups;
pub mod fd;
pub mod fs;
pub mod in_root;
pub mod loopdev;
pub mod mount;
pub mod mounttree;
pub mod process;
pub mod signal;
pub mod userns;
