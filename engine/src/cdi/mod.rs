//! GPUs and other vendor devices through CDI (the Container Device Interface), and the built-in
//! NVIDIA support for nodes without a CDI spec.
//!
//! - [`spec`] reads one CDI spec file (JSON or YAML, `cdiVersion` 0.3.0 to 0.8.0 and 1.0.0) and
//!   checks it, naming the file and the field of every error;
//! - [`registry`] loads the site's spec directories (`cdi.specDirs`, default `/etc/cdi` then
//!   `/var/run/cdi`): a device defined again in a later file replaces the earlier definition.
//!   Spec files are root's configuration: with `securityChecks` a file (or a directory above
//!   it) that someone else could change is refused;
//! - [`select`] turns a task's GPU variables (Slurm's gres binding) into CDI device names and
//!   checks the names a user asked for against `cdi.allowedDevices`;
//! - [`nvidia`] builds the same kind of edits from the node itself when no CDI spec describes
//!   its NVIDIA GPUs (device nodes, driver libraries from the linker cache, `nvidia-smi`);
//! - [`apply`] writes the edits into the container's OCI spec: environment, device nodes and
//!   their device cgroup rules, mounts, hooks, additional groups, Intel RDT.
//!
//! Everything here runs as root on trusted input only: the specs, the node's `/dev` and its
//! linker cache are the admin's; a user only chooses names, which must be allowed.

pub mod apply;
pub mod nvidia;
pub mod registry;
pub mod select;
pub mod spec;

use std::path::PathBuf;

pub use apply::{apply, GpuPlan};
pub use registry::Registry;

/// Why a container cannot get its devices; each is one line for the user or the admin.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    #[error("CDI spec {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CDI spec {}: {msg}", path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("CDI spec {}: field {field}: {msg}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("CDI spec {}: refused, {rule} (spec files are root's configuration)", path.display())]
    Untrusted { path: PathBuf, rule: String },
    #[error("CDI device '{name}' is not defined by any spec in {dirs}")]
    UnknownDevice { name: String, dirs: String },
    #[error(
        "CDI device '{name}' is not allowed here (the site's cdi.allowedDevices does not list it)"
    )]
    NotAllowed { name: String },
    #[error(
        "'{name}' is not a CDI device name (expected VENDOR/CLASS=NAME, e.g. nvidia.com/gpu=0)"
    )]
    BadName { name: String },
    #[error("the task's GPU '{id}' ({var}): {msg}")]
    TaskGpu {
        id: String,
        var: &'static str,
        msg: String,
    },
    #[error("{}: {source}", path.display())]
    Host {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NVIDIA GPUs: {msg}")]
    Nvidia { msg: String },
    #[error("cannot edit the container spec for CDI: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}
