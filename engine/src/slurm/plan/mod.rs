//! The step's plan: pure functions from what Slurm and the task said (the step request, the
//! task's hello) to what the launcher does. No system call, no root, no Slurm: every rule of how
//! options become mounts, devices, annotations and a process is unit-tested here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{SiteMount, UserMountRules};
use crate::container::mounts::pyxis::{MountExtras, PyxisMount};
use crate::container::mounts::{self, BindMount, DeviceRequest, MountError};
use crate::container::spec::{EntrypointChoice, EnvRequest, ProcessRequest, SpecOptions};
use crate::hooks::annotations;
use crate::sys::in_root::InRootError;

use super::options::ContainerOptions;
use super::protocol::Hello;
use super::task_env;

#[cfg(test)]
mod tests;

/// Why the options cannot become a plan; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--container-mounts: {0}")]
    Mounts(#[source] MountError),
    #[error("--container-mounts: {0}")]
    InRoot(#[source] InRootError),
    #[error("--container-mounts: umount:{}: the site mounts nothing there", destination.display())]
    NothingToUmount { destination: PathBuf },
    #[error("--container-device={spec}: {source}")]
    Device {
        spec: String,
        #[source]
        source: MountError,
    },
}

/// `VALUE` of `NAME=VALUE` in the job's environment.
pub(crate) fn job_var<'a>(job_env: &'a [String], name: &str) -> Option<&'a str> {
    job_env
        .iter()
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
}

/// The directory the job was submitted from (relative mount sources are resolved against it).
pub fn job_cwd(job_env: &[String]) -> PathBuf {
    job_var(job_env, "SLURM_SUBMIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The node's Slurm name, for the directory of its named containers (several slurmd may share
/// a host and its disk); `local` when Slurm gives none that is a plain file name.
pub fn node_name(job_env: &[String], node_id: u32) -> String {
    // srun passes on its own SLURMD_NODENAME (a batch script's node): the step's node list
    // comes first.
    job_var(job_env, "SLURM_STEP_NODELIST")
        .and_then(|l| task_env::nth_host(l, node_id as usize))
        .or_else(|| job_var(job_env, "SLURMD_NODENAME").map(str::to_string))
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'))
        .unwrap_or_else(|| "local".to_string())
}

/// What `--container-mounts` asks for, checked against the site's rules.
#[derive(Debug, Default)]
pub struct MountPlan {
    pub binds: Vec<BindMount>,
    /// The extras of each bind, in the order of `binds`.
    pub extras: Vec<MountExtras>,
    /// `(destination, options)` of each tmpfs, made by runc in each container.
    pub tmpfs: Vec<(PathBuf, Vec<String>)>,
    /// The site's mounts less those `umount:` took away.
    pub site_mounts: Vec<SiteMount>,
}

/// Sorts the parsed `--container-mounts` entries into binds, tmpfs and removed site mounts.
/// Destinations are checked here and again where they resolve inside the rootfs.
pub fn plan_mounts(
    entries: Vec<PyxisMount>,
    rules: &UserMountRules,
    site_mounts: Vec<SiteMount>,
) -> Result<MountPlan, PlanError> {
    let check = |d: &Path| mounts::check_destination(d, rules).map_err(PlanError::Mounts);
    let mut plan = MountPlan {
        site_mounts,
        ..MountPlan::default()
    };
    for entry in entries {
        match entry {
            PyxisMount::Bind(b, x) => {
                check(&b.destination)?;
                plan.binds.push(b);
                plan.extras.push(x);
            }
            PyxisMount::Tmpfs {
                destination,
                options,
            } => {
                check(&destination)?;
                plan.tmpfs.push((destination, options));
            }
            PyxisMount::Umount(destination) => {
                // Only the site's mounts may be taken away, never the image's files.
                let before = plan.site_mounts.len();
                plan.site_mounts
                    .retain(|m| mounts::normalize(&m.destination) != destination);
                if plan.site_mounts.len() == before {
                    return Err(PlanError::NothingToUmount { destination });
                }
            }
        }
    }
    Ok(plan)
}

/// `--container-device=A,B,...` (none without the option).
pub fn plan_devices(spec: Option<&str>) -> Result<Vec<DeviceRequest>, PlanError> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    spec.split(',')
        .filter(|d| !crate::cdi::select::is_cdi_name(d))
        .map(|d| {
            mounts::parse_device(d).map_err(|e| PlanError::Device {
                spec: d.to_string(),
                source: e,
            })
        })
        .collect()
}

/// The `--container-save` value when this node saves (node 0; the other nodes' changes are not
/// kept).
pub fn save_here(opts: &ContainerOptions, node_id: u32) -> Option<&str> {
    opts.save.as_deref().filter(|_| node_id == 0)
}

/// The task's environment as pairs, with `PMI_FD`/`PMIX_FD` renumbered: the descriptors beyond
/// stdio keep their order from 3 upwards in the container.
pub fn task_vars(hello: &Hello) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = hello
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (i, orig) in hello.fds.iter().enumerate().skip(3) {
        let new = i.to_string();
        for (_, v) in env
            .iter_mut()
            .filter(|(k, _)| k == "PMI_FD" || k == "PMIX_FD")
        {
            if *v == orig.to_string() {
                *v = new.clone();
            }
        }
    }
    env
}

/// `--container-workdir` as a container path. pyxis changes directory after entering the
/// container's mount namespace, whose `/` is then the working directory: a relative value
/// starts at `/`, and `..` stops there.
pub fn workdir(opts: &ContainerOptions) -> Option<PathBuf> {
    opts.workdir
        .as_deref()
        .map(|w| mounts::normalize(Path::new(w)))
}

/// The container's process: the task's argv in the task's environment `env`.
pub fn process_request(
    hello: &Hello,
    opts: &ContainerOptions,
    env: Vec<(String, String)>,
) -> ProcessRequest {
    // The container's files get the step's umask, as a plain task's do.
    let umask = task_env::umask(&env);
    ProcessRequest {
        args: hello.argv.clone(),
        entrypoint: if opts.entrypoint == Some(true) {
            EntrypointChoice::Image
        } else {
            EntrypointChoice::Skip
        },
        host_env: env,
        user_env: user_env(opts),
        cwd: workdir(opts),
        terminal: hello.tty,
        umask,
    }
}

/// The EDF's `[env]` over the image's, then `--container-env` (the command line wins over the
/// EDF; the EDF's names were left out of a `PYXIS_CONTAINER_ENV` default, see `apply_env`).
pub fn user_env(opts: &ContainerOptions) -> Vec<EnvRequest> {
    let edf = opts
        .edf_env
        .iter()
        .filter(|(n, _)| !opts.env_names.contains(n))
        .map(|(n, v)| match v {
            Some(v) => EnvRequest::Set(n.clone(), v.clone()),
            None => EnvRequest::Unset(n.clone()),
        });
    let host = opts
        .env_names
        .iter()
        .map(|n| EnvRequest::FromHost(n.clone()));
    edf.chain(host).collect()
}

/// Where `--container-mount-home` puts the user's `home` in the container, as pyxis's enroot
/// does: at the same path, or at `/root` (remapped root's home) with `--container-remap-root`.
pub fn mounted_home(opts: &ContainerOptions, home: &Path) -> Option<PathBuf> {
    if opts.mount_home != Some(true) {
        return None;
    }
    Some(match opts.remap_root == Some(true) {
        true => PathBuf::from("/root"),
        false => home.to_path_buf(),
    })
}

/// The OCI annotations of a task's container: the user's, the hooks the options ask for, the
/// automatic ones of the task's environment, and the job.
pub fn annotations(
    opts: &ContainerOptions,
    default_mpi_type: Option<&str>,
    task_vars: &[(String, String)],
    job: u32,
    step: u32,
) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = opts.annotations.iter().cloned().collect();
    if let Some(mpi) = &opts.mpi_hook {
        annotations.insert(annotations::MPI_ENABLED.into(), "true".into());
        let t = if mpi.is_empty() {
            default_mpi_type.unwrap_or_default().to_string()
        } else {
            mpi.clone()
        };
        if !t.is_empty() {
            annotations.insert(annotations::MPI_TYPE.into(), t);
        }
        annotations.insert(annotations::GLIBC_ENABLED.into(), "true".into());
    }
    if opts.ssh {
        // The sync hook holds every task until all containers (and their daemons) exist.
        annotations.insert(annotations::SSH_ENABLED.into(), "true".into());
        annotations.insert(annotations::SLURM_GLOBAL_SYNC_ENABLED.into(), "true".into());
    }
    crate::hooks::select::add_automatic_annotations(&mut annotations, task_vars);
    annotations.insert(annotations::JOB.into(), format!("{job}.{step}"));
    annotations
}

/// The spec options of container `id`.
pub fn spec_options(
    opts: &ContainerOptions,
    id: &str,
    annotations: BTreeMap<String, String>,
) -> SpecOptions {
    SpecOptions {
        annotations,
        pid_host: opts.pid_private != Some(true) && !opts.ssh,
        cgroups_path: Some(id.to_string()),
        readonly_root: opts.writable == Some(false),
        init: opts.init,
        hostname: None,
        cdi_devices: cdi_devices(opts.devices.as_deref()),
    }
}

/// The CDI names of `--container-device=A,B,...` (its other entries are host device paths).
pub fn cdi_devices(spec: Option<&str>) -> Vec<String> {
    spec.into_iter()
        .flat_map(|s| s.split(','))
        .filter(|d| crate::cdi::select::is_cdi_name(d))
        .map(String::from)
        .collect()
}
