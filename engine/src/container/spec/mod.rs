//! The runc `config.json` of a container, built field by field.
//!
//! Every field is a decision written here rather than inherited from `oci-spec`'s defaults
//! (whose `Process` and `Linux` carry capabilities, rlimits and namespaces we do not want):
//!
//! - process: the user's uid/gid/groups, no capabilities at all, `noNewPrivileges`, rlimits
//!   inherited from the caller (Slurm sets them), command and environment with Sarus/Docker
//!   semantics (`env`), optional AppArmor profile;
//! - root: the assembled rootfs (absolute), read-only on request;
//! - mounts: /proc, a private /dev (tmpfs), devpts, the host's /dev/shm (MPI ranks in
//!   different containers of a node share memory through it), /dev/mqueue, /sys and the
//!   cgroup tree read-only, then the bundle's own (devices, init);
//! - namespaces: mount always; pid only when asked (`--pid private`); never network, IPC, UTS
//!   (unless a hostname is set) or user: HPC jobs use the host network and the host identity;
//! - devices: deny all, allow the standard character devices and the requested ones;
//! - masked/read-only paths as runc's own defaults; seccomp and AppArmor from the site config;
//! - hooks from `hooksDir`, selected by annotations (see `hooksd`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Hooks, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

pub use crate::container::env::EnvRequest;
pub use entrypoint::{EntrypointWrap, TooManyFds};

mod entrypoint;

use crate::config::Config;
use crate::container::env::{self, EnvError};
use crate::container::rootfs::{DeviceKind, Rootfs, INIT_PATH};
use crate::container::user::UserIdentity;
use crate::hooks::schema::{self, HooksError};
use crate::hooks::select;
use crate::image::metadata::ImageMeta;

/// The runtime-spec version written (what runc 1.1 implements).
pub const OCI_VERSION: &str = "1.0.2";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the image has no ENTRYPOINT or CMD and none was given")]
    NoCommand,
    #[error("working directory '{}' must be an absolute path", .0.display())]
    RelativeWorkdir(PathBuf),
    #[error("--init: the root filesystem was prepared without the init binary")]
    InitNotPrepared,
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Wrap(#[from] TooManyFds),
    #[error("seccomp profile {}: {msg}", path.display())]
    Seccomp { path: PathBuf, msg: String },
    #[error(transparent)]
    Hooks(#[from] HooksError),
    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),
    #[error("cannot build the container spec: {0}")]
    Build(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<oci_spec::OciSpecError> for SpecError {
    fn from(e: oci_spec::OciSpecError) -> SpecError {
        SpecError::Build(e.to_string())
    }
}

/// Which entrypoint runs before the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrypointChoice {
    /// The image's ENTRYPOINT; the image's CMD when no command is given (Docker, Sarus).
    Image,
    /// `--entrypoint "a b"`: replaces the image's, and the image's CMD is dropped.
    Override(Vec<String>),
    /// `--entrypoint ""`: no entrypoint, and the image's CMD is dropped.
    Clear,
    /// pyxis's default: no entrypoint; the image's CMD only when no command is given.
    Skip,
}

/// What to run, as whom it was asked, with what environment.
#[derive(Debug, Clone)]
pub struct ProcessRequest {
    /// The user's command; may be empty (then the image's CMD).
    pub args: Vec<String>,
    pub entrypoint: EntrypointChoice,
    /// The caller's (task's) environment.
    pub host_env: Vec<(String, String)>,
    pub user_env: Vec<EnvRequest>,
    /// Working directory; the image's WorkingDir, then `/`, when `None`.
    pub cwd: Option<PathBuf>,
    pub terminal: bool,
    /// The process's umask (a Slurm task's is the step's `SLURM_UMASK`); runc's 022 when `None`.
    pub umask: Option<u32>,
}

/// Container-level choices.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    pub annotations: BTreeMap<String, String>,
    /// Share the host's PID namespace (Sarus's default); `false` gives the container its own.
    pub pid_host: bool,
    /// `linux.cgroupsPath`; relative paths are relative to runc's own cgroup.
    pub cgroups_path: Option<String>,
    pub readonly_root: bool,
    /// Run the command under the init binary (see `bundle::INIT_PATH`).
    pub init: bool,
    /// Setting a hostname gives the container its own UTS namespace.
    pub hostname: Option<String>,
    /// CDI devices asked for by name (`--device`, `--container-device`), beside the task's GPUs.
    pub cdi_devices: Vec<String>,
}

impl Default for SpecOptions {
    fn default() -> Self {
        SpecOptions {
            annotations: BTreeMap::new(),
            pid_host: true,
            cgroups_path: None,
            readonly_root: false,
            init: false,
            hostname: None,
            cdi_devices: Vec::new(),
        }
    }
}

/// runc's own defaults (`runc spec`): kernel interfaces a container has no business reading or
/// writing.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices every container may use: (major, minor or any).
const STANDARD_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)), // null
    (1, Some(5)), // zero
    (1, Some(7)), // full
    (1, Some(8)), // random
    (1, Some(9)), // urandom
    (5, Some(0)), // tty
    (5, Some(2)), // ptmx
    (136, None),  // pts/*
];

/// The command line: entrypoint, then the command (see [`EntrypointChoice`]).
pub fn command_line(
    meta: &ImageMeta,
    args: &[String],
    entrypoint: &EntrypointChoice,
) -> Result<Vec<String>, SpecError> {
    let image_cmd = || meta.cmd.clone().unwrap_or_default();
    let or_image_cmd = || {
        if args.is_empty() {
            image_cmd()
        } else {
            args.to_vec()
        }
    };
    let mut argv = match entrypoint {
        EntrypointChoice::Image => meta.entrypoint.clone().unwrap_or_default(),
        EntrypointChoice::Override(ep) => ep.clone(),
        EntrypointChoice::Clear | EntrypointChoice::Skip => Vec::new(),
    };
    match entrypoint {
        EntrypointChoice::Image | EntrypointChoice::Skip => argv.extend(or_image_cmd()),
        EntrypointChoice::Override(_) | EntrypointChoice::Clear => {
            argv.extend(args.iter().cloned())
        }
    }
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// The working directory: explicit, else the image's (relative to `/`), else `/`.
pub fn working_dir(meta: &ImageMeta, cwd: Option<&Path>) -> Result<PathBuf, SpecError> {
    match cwd {
        Some(c) if c.is_absolute() => Ok(c.to_path_buf()),
        Some(c) => Err(SpecError::RelativeWorkdir(c.to_path_buf())),
        None => Ok(match meta.working_dir.as_deref() {
            Some(w) if !w.is_empty() => Path::new("/").join(w),
            _ => PathBuf::from("/"),
        }),
    }
}

/// Builds the container's `config.json` (see the module docs).
pub fn build_spec(
    cfg: &Config,
    rootfs: &Rootfs,
    meta: &ImageMeta,
    user: &UserIdentity,
    process: &ProcessRequest,
    opts: &SpecOptions,
) -> Result<Spec, SpecError> {
    Ok(build_spec_wrapped(cfg, rootfs, meta, user, process, opts, None)?.0)
}

/// [`build_spec`], with the image's ENTRYPOINT (when it runs and is not empty) run as pyxis runs
/// it through `wrap` (see [`entrypoint`]); then also returns the script of the variables to set
/// after it, which the caller passes on `wrap.env`.
pub fn build_spec_wrapped(
    cfg: &Config,
    rootfs: &Rootfs,
    meta: &ImageMeta,
    user: &UserIdentity,
    process: &ProcessRequest,
    opts: &SpecOptions,
    wrap: Option<&EntrypointWrap>,
) -> Result<(Spec, Option<String>), SpecError> {
    let image_entrypoint = meta.entrypoint.clone().unwrap_or_default();
    let wrap = wrap
        .filter(|_| process.entrypoint == EntrypointChoice::Image && !image_entrypoint.is_empty());
    // What hooks match on: the command as the image and the user give it, wrapped or not.
    let plain = command_line(meta, &process.args, &process.entrypoint)?;
    let command = match wrap {
        Some(w) => {
            let cmd = command_line(meta, &process.args, &EntrypointChoice::Skip)?;
            w.argv(&image_entrypoint, &cmd)
        }
        None => plain.clone(),
    };
    // The task's GPUs and the named CDI devices: egret brings them itself, so the site's GPU
    // hooks (selected by egret's annotations) must not bring them again.
    let gpus = crate::cdi::apply::plan(cfg, &process.host_env, &opts.cdi_devices)?;
    let mut annotations = opts.annotations.clone();
    if gpus.nvidia {
        annotations.remove(crate::hooks::annotations::NVIDIA_ENABLED);
    }
    if gpus.amd {
        annotations.remove(crate::hooks::annotations::AMDGPU_ENABLED);
    }
    let mut args = Vec::new();
    if opts.init {
        if !rootfs.init {
            return Err(SpecError::InitNotPrepared);
        }
        args.extend([INIT_PATH.to_string(), "--".to_string()]);
    }
    args.extend(command.iter().cloned());
    let (env, after) = match wrap {
        Some(_) => {
            let (entry, after) = env::entrypoint_env(
                &process.host_env,
                &meta.env_pairs(),
                &cfg.environment,
                &process.user_env,
                opts.init,
            )?;
            (entry, Some(entrypoint::env_script(&after)))
        }
        None => (
            env::container_env(
                &process.host_env,
                &meta.env_pairs(),
                &cfg.environment,
                &process.user_env,
                opts.init,
            )?,
            None,
        ),
    };

    let no_caps = LinuxCapabilitiesBuilder::default()
        .bounding(HashSet::new())
        .effective(HashSet::new())
        .inheritable(HashSet::new())
        .permitted(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let mut proc_ = ProcessBuilder::default()
        .terminal(process.terminal)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.groups.clone())
                .build()?,
        )
        .args(args)
        .env(
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(working_dir(meta, process.cwd.as_deref())?)
        .no_new_privileges(true)
        .build()?;
    // runc starts the process with umask 022 unless told.
    if let Some(mask) = process.umask {
        let mut u = proc_.user().clone();
        u.set_umask(Some(mask));
        proc_.set_user(u);
    }
    // The builder fills unset fields from oci-spec's defaults; these are ours.
    proc_.set_capabilities(Some(no_caps));
    proc_.set_rlimits(None);
    proc_.set_console_size(None);
    proc_.set_apparmor_profile(cfg.apparmor_profile.clone());
    proc_.set_selinux_label(None);
    proc_.set_oom_score_adj(None);

    let mut namespaces = vec![LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Mount)
        .build()?];
    if !opts.pid_host {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .build()?,
        );
    }
    if opts.hostname.is_some() {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Uts)
                .build()?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(device_rules(rootfs)?)
                .build()?,
        )
        .rootfs_propagation("rslave")
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()?;
    linux.set_cgroups_path(opts.cgroups_path.as_ref().map(PathBuf::from));
    linux.set_seccomp(
        cfg.seccomp_profile
            .as_deref()
            .map(load_seccomp)
            .transpose()?,
    );
    linux.set_devices(None);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(&rootfs.rootfs)
                .readonly(opts.readonly_root || rootfs.readonly)
                .build()?,
        )
        .mounts(mounts(rootfs)?)
        .process(proc_)
        .linux(linux)
        .build()?;
    spec.set_hostname(opts.hostname.clone());
    spec.set_domainname(None);
    spec.set_annotations(if annotations.is_empty() {
        None
    } else {
        Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
    });
    spec.set_hooks(hooks(
        cfg,
        rootfs,
        &annotations,
        plain.first().map(String::as_str),
    )?);
    // Devices the selected hooks bind in must be usable there.
    crate::hooks::devices::allow_hook_devices(&mut spec)?;
    crate::cdi::apply(&mut spec, &gpus)?;
    Ok((spec, after))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn mounts(rootfs: &Rootfs) -> Result<Vec<Mount>, SpecError> {
    let mut m = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "bind",
            "/dev/shm",
            &["rbind", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];
    m.extend(rootfs.spec_mounts.iter().cloned());
    Ok(m)
}

fn device_rules(rootfs: &Rootfs) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                allow: bool,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    let mut rules = vec![rule(None, None, None, false, "rwm")?];
    for (major, minor) in STANDARD_DEVICES {
        rules.push(rule(
            Some(LinuxDeviceType::C),
            Some(*major),
            *minor,
            true,
            "rwm",
        )?);
    }
    for d in &rootfs.device_rules {
        let typ = match d.kind {
            DeviceKind::Char => LinuxDeviceType::C,
            DeviceKind::Block => LinuxDeviceType::B,
        };
        rules.push(rule(
            Some(typ),
            Some(d.major),
            Some(d.minor),
            true,
            &d.access,
        )?);
    }
    Ok(rules)
}

fn load_seccomp(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    let err = |msg: String| SpecError::Seccomp {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

fn hooks(
    cfg: &Config,
    rootfs: &Rootfs,
    annotations: &BTreeMap<String, String>,
    command: Option<&str>,
) -> Result<Option<Hooks>, SpecError> {
    let Some(dir) = cfg.hooks_dir.as_deref() else {
        return Ok(None);
    };
    // An absent directory means no hooks are installed; an unreadable one is an error.
    if !dir.exists() {
        return Ok(None);
    }
    let all = schema::load_dir(dir)?;
    let selected = select::select(&all, annotations, command, rootfs.has_bind_mounts());
    Ok((selected != Hooks::default()).then_some(selected))
}

/// Keeps the container on these CPUs (`linux.resources.cpu.cpus`, e.g. `0-3,8`). Joining a new
/// cpuset cgroup resets a process's affinity to the whole cgroup, so without this runc would
/// undo Slurm's task binding; pass the task's own affinity (see [`cpu_list`]).
pub fn pin_cpus(spec: &mut Spec, cpus: &str) -> Result<(), SpecError> {
    let cpu = LinuxCpuBuilder::default().cpus(cpus).build()?;
    if let Some(resources) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.resources_mut().as_mut())
    {
        resources.set_cpu(Some(cpu));
    }
    Ok(())
}

/// Pins the container to the CPUs process `pid` (0: the calling thread) may run on, when that is
/// not every online CPU: a task bound by Slurm (`--cpu-bind`) stays bound inside.
pub fn keep_affinity(spec: &mut Spec, pid: i32) -> Result<(), SpecError> {
    let Ok(mine) = cpu_list(pid) else {
        return Ok(());
    };
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if mine != online.trim() {
        pin_cpus(spec, &mine)?;
    }
    Ok(())
}

/// The CPU affinity of process `pid` (0: the calling thread) as a cpuset list.
pub fn cpu_list(pid: i32) -> nix::Result<String> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(pid))?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap_or(false))
        .collect();
    Ok(ranges(&cpus))
}

fn ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        out.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    out.join(",")
}

/// Writes `dir/config.json` (mode 0600: it holds the user's environment).
pub fn write_spec(dir: &Path, spec: &Spec) -> Result<(), SpecError> {
    let path = dir.join("config.json");
    let err = |source| SpecError::Write {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec(spec).map_err(|e| err(e.into()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(&json).map_err(err)
}

#[cfg(test)]
mod tests;
