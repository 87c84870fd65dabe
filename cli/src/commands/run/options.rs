//! `egret run`'s options, and what they mean for the container: mounts, devices, the process
//! and the spec options. Checked before anything touches the system.

use std::os::fd::OwnedFd;

use crate::privilege::Caller;
use egret_engine::sys;
use std::collections::BTreeMap;
use std::path::PathBuf;

use egret_engine::container::env::{EnvError, EnvRequest};
use egret_engine::container::mounts::{self, BindMount, DeviceRequest, MountError};
use egret_engine::container::spec::{EntrypointChoice, ProcessRequest, SpecOptions};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Bind mount a host path (repeatable): type=bind,src=HOST,dst=CONTAINER[,readonly].
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Make a host device available (repeatable): HOST[:CONTAINER][:ACCESS], ACCESS ⊆ rwm, or a
    /// CDI device by name (VENDOR/CLASS=NAME, e.g. nvidia.com/gpu=0) the site allows.
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Vec<String>,
    /// Working directory inside the container (absolute; created if missing).
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Set NAME to VALUE, or NAME to its value here (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Replace the image's ENTRYPOINT (split on whitespace; "" removes it). The image's CMD is
    /// then not used.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// PID namespace: the host's, or a private one.
    #[arg(long, value_name = "host|private", default_value = "host")]
    pid: String,
    /// Run an init process (tini) as the parent of the command.
    #[arg(long)]
    pub init: bool,
    /// Add an OCI annotation (repeatable): KEY=VALUE.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Enable the site's MPI hook (Sarus's `--mpi`); `--mpi=TYPE` picks the hook of that MPI
    /// type, bare `--mpi` the site's defaultMPIType.
    #[arg(short = 'm', long, value_name = "TYPE", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    pub mpi: Option<String>,
    /// Sarus's spelling of `--mpi=TYPE`.
    #[arg(long = "mpi-type", value_name = "TYPE")]
    pub mpi_type: Option<String>,
    /// Enable the SSH hook (keys from `egret ssh-keygen`).
    #[arg(long)]
    pub ssh: bool,
    /// Enable the glibc hook (the host's glibc when the image's is older).
    #[arg(long)]
    pub glibc: bool,
    /// Take the image from the centralized repository.
    #[arg(long)]
    pub centralized_repository: bool,
    /// Name the container (for `egret ps` and `egret kill`); unique among running ones.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The image, then the command and its arguments (options end at the image).
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl RunArgs {
    /// The MPI type asked for with `--mpi[=TYPE]` or `--mpi-type=TYPE` ("" for the site's
    /// default), or `None` without MPI.
    pub fn mpi_request(&self) -> Option<&str> {
        self.mpi_type.as_deref().or(self.mpi.as_deref())
    }
}

/// An option `egret run` cannot use; each ends with where to read more.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("bad --mount {0}, see 'egret run --help'")]
    Mount(#[source] MountError),
    #[error("bad --device {0}, see 'egret run --help'")]
    Device(#[source] MountError),
    #[error("bad --device: {0}, see 'egret run --help'")]
    CdiDevice(#[source] egret_engine::cdi::CdiError),
    #[error("bad --env '{}': {source}, see 'egret run --help'", .input.escape_debug())]
    Env { input: String, source: EnvError },
    #[error("bad --annotation '{}': expected KEY=VALUE, see 'egret run --help'", .0.escape_debug())]
    Annotation(String),
    #[error("bad --workdir '{}': must be an absolute path, see 'egret run --help'", .0.display())]
    Workdir(PathBuf),
    #[error("bad --pid '{0}': expected 'host' or 'private', see 'egret run --help'")]
    Pid(String),
}

/// What the options ask of the container.
pub struct Parsed {
    pub mounts: Vec<BindMount>,
    pub devices: Vec<DeviceRequest>,
    pub process: ProcessRequest,
    pub opts: SpecOptions,
    /// The descriptors the container gets as 3, 4, ...: those `PMI_FD`/`PMIX_FD` name (an MPI
    /// launcher's, under `srun egret run`).
    pub pass_fds: Vec<OwnedFd>,
}

/// The descriptors that `PMI_FD`/`PMIX_FD` in `env` name and that are open, each duplicated,
/// with the variables renumbered to where the container finds them (3, 4, ... in this order).
pub fn pmi_fds(env: &mut [(String, String)]) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    for (_, value) in env
        .iter_mut()
        .filter(|(k, _)| k == "PMI_FD" || k == "PMIX_FD")
    {
        let Some(fd) = value.parse().ok().and_then(sys::fd::dup_inherited) else {
            continue;
        };
        *value = (3 + fds.len()).to_string();
        fds.push(fd);
    }
    fds
}

/// Checks every option; `command` runs in the container with runc id `id`.
pub fn parse(
    a: &RunArgs,
    command: &[String],
    id: &str,
    caller: &Caller,
) -> Result<Parsed, OptionError> {
    let mounts = a
        .mounts
        .iter()
        .map(|m| mounts::parse_sarus_mount(m).map_err(OptionError::Mount))
        .collect::<Result<Vec<_>, _>>()?;
    // `--device` takes a host path or a CDI name (`nvidia.com/gpu=0`), as podman's does.
    let (cdi_devices, paths): (Vec<String>, Vec<String>) = a
        .devices
        .iter()
        .cloned()
        .partition(|d| egret_engine::cdi::select::is_cdi_name(d));
    for d in &cdi_devices {
        egret_engine::cdi::select::check_allowed(d, &["*".to_string()])
            .map_err(OptionError::CdiDevice)?;
    }
    let devices = paths
        .iter()
        .map(|d| mounts::parse_device(d).map_err(OptionError::Device))
        .collect::<Result<Vec<_>, _>>()?;
    let user_env = a
        .env
        .iter()
        .map(|e| {
            EnvRequest::parse(e).map_err(|source| OptionError::Env {
                input: e.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                annotations.insert(k.to_string(), v.to_string());
            }
            _ => return Err(OptionError::Annotation(kv.clone())),
        }
    }
    if let Some(w) = &a.workdir {
        if !w.is_absolute() {
            return Err(OptionError::Workdir(w.clone()));
        }
    }
    let pid_host = match a.pid.as_str() {
        "host" => true,
        "private" => false,
        other => return Err(OptionError::Pid(other.to_string())),
    };
    let entrypoint = match a.entrypoint.as_deref() {
        None => EntrypointChoice::Image,
        Some(s) if s.trim().is_empty() => EntrypointChoice::Clear,
        Some(s) => EntrypointChoice::Override(s.split_whitespace().map(String::from).collect()),
    };
    // The caller's environment as they started egret (a setuid egret runs with a clean one).
    let mut host_env = caller.env_pairs();
    let pass_fds = pmi_fds(&mut host_env);
    // The hooks' automatic annotations see the environment the container will have.
    let mut hook_env = host_env.clone();
    hook_env.extend(user_env.iter().filter_map(|r| match r {
        EnvRequest::Set(k, v) => Some((k.clone(), v.clone())),
        EnvRequest::FromHost(_) | EnvRequest::Unset(_) => None,
    }));
    egret_engine::hooks::select::add_automatic_annotations(&mut annotations, &hook_env);
    Ok(Parsed {
        mounts,
        devices,
        process: ProcessRequest {
            args: command.to_vec(),
            entrypoint,
            host_env,
            user_env,
            cwd: a.workdir.clone(),
            terminal: a.tty,
            // Files the container makes get the caller's umask, as their own processes' do.
            umask: Some(caller.umask),
        },
        opts: SpecOptions {
            annotations,
            pid_host,
            // Relative: below egret's own cgroup (a Slurm job's, under srun), never at the root.
            cgroups_path: Some(id.to_string()),
            readonly_root: false,
            init: a.init,
            hostname: None,
            cdi_devices,
        },
        pass_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn pmi_descriptors_are_renumbered_from_3_in_order() {
        let a = std::fs::File::open("/dev/null").unwrap();
        let b = std::fs::File::open("/dev/null").unwrap();
        let mut env = vec![
            ("PMIX_FD".to_string(), b.as_raw_fd().to_string()),
            ("HOME".to_string(), "/h".to_string()),
            ("PMI_FD".to_string(), a.as_raw_fd().to_string()),
        ];
        let fds = pmi_fds(&mut env);
        assert_eq!(fds.len(), 2);
        assert_eq!(env[0], ("PMIX_FD".to_string(), "3".to_string()));
        assert_eq!(env[1], ("HOME".to_string(), "/h".to_string()));
        assert_eq!(env[2], ("PMI_FD".to_string(), "4".to_string()));
        // A number that names no open descriptor is left as it is.
        let mut env = vec![("PMI_FD".to_string(), "987".to_string())];
        assert!(pmi_fds(&mut env).is_empty());
        assert_eq!(env[0].1, "987");
    }
}
