//! The devices a container gets ([`plan`]) and their edits written into its OCI spec
//! ([`apply`]).
//!
//! Device nodes go to `linux.devices` (runc creates them in the container's own `/dev`, with
//! the host node's numbers, mode and owner unless the spec says otherwise) with an allow rule
//! in the device cgroup; mounts and hooks are added after egret's own, hooks at the stage the
//! spec names. A variable of the edits replaces the container's of the same name.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    HookBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxIntelRdtBuilder, MountBuilder, Spec,
};

use super::registry::{self, Registry};
use super::select::{self, GPU_KINDS};
use super::spec::{ContainerEdits, DeviceNode};
use super::{nvidia, CdiError};
use crate::config::Config;

/// What a container gets, decided before its spec is built (the annotations that select the
/// site's GPU hooks depend on it).
#[derive(Debug, Clone, Default)]
pub struct GpuPlan {
    /// The edits, each with where it comes from (a spec file, or egret's NVIDIA support).
    pub edits: Vec<(String, ContainerEdits)>,
    /// Variables egret sets after the edits' (the task's GPU variables, renumbered).
    pub env: Vec<(String, String)>,
    /// `(variable, directory)` put first in a `:` list.
    pub prepend: Vec<(String, String)>,
    /// egret brings NVIDIA (AMD) devices itself: the site's NVIDIA (AMD) hook must not run too.
    pub nvidia: bool,
    pub amd: bool,
    /// Check the programs of CDI hooks as root's (`securityChecks`).
    pub check_hooks: bool,
}

impl GpuPlan {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty() && self.env.is_empty()
    }
}

/// The devices of a container whose caller's (task's) environment is `host_env`, plus the CDI
/// devices `requested` by name (each checked against `cdi.allowedDevices`). The specs are read
/// only when there is something to look up.
pub fn plan(
    cfg: &Config,
    host_env: &[(String, String)],
    requested: &[String],
) -> Result<GpuPlan, CdiError> {
    for name in requested {
        select::check_allowed(name, &cfg.cdi.allowed_devices)?;
    }
    let task = select::task(host_env, cfg.cdi.slurm_gpu_indices)?;
    let mut plan = GpuPlan {
        check_hooks: cfg.security_checks,
        ..GpuPlan::default()
    };
    if task.ids.is_empty() && requested.is_empty() {
        return Ok(plan);
    }
    let reg = Registry::load(&cfg.cdi.spec_dirs, cfg.security_checks)?;
    let mut names: Vec<String> = requested.to_vec();
    let mut brought = false;
    for kind in task.kinds.iter().filter(|k| reg.has_kind(k)) {
        names.extend(task.ids.iter().map(|id| format!("{kind}={id}")));
        brought = true;
    }
    for n in &names {
        plan.nvidia |= n.starts_with("nvidia.com/");
        plan.amd |= n.starts_with("amd.com/");
    }
    for s in reg.resolve(&names)? {
        plan.edits
            .push((s.file.path.display().to_string(), s.edits.clone()));
    }
    let nvidia_task = task.kinds.contains(&GPU_KINDS[0]) && !reg.has_kind(GPU_KINDS[0]);
    if nvidia_task && cfg.nvidia.fallback {
        if let Some(e) = nvidia::edits(&cfg.nvidia, &task.ids)? {
            plan.edits.push(("egret's NVIDIA support".into(), e));
            plan.prepend
                .push(("LD_LIBRARY_PATH".into(), nvidia::LIB_DIR.into()));
            plan.nvidia = true;
            brought = true;
        }
    }
    if brought {
        let value = select::renumbered(&task.ids);
        for var in &task.vars {
            plan.env.push((var.to_string(), value.clone()));
        }
    }
    Ok(plan)
}

/// Sets `name=value` in `env`, replacing any earlier value.
fn set_var(env: &mut Vec<String>, name: &str, value: &str) {
    let prefix = format!("{name}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{name}={value}"));
}

/// Writes `plan` into `spec`.
pub fn apply(spec: &mut Spec, plan: &GpuPlan) -> Result<(), CdiError> {
    if plan.is_empty() {
        return Ok(());
    }
    for (from, e) in &plan.edits {
        apply_edits(spec, Path::new(from), e, plan.check_hooks)?;
    }
    if let Some(p) = spec.process_mut() {
        let env = p.env_mut().get_or_insert_with(Vec::new);
        for (k, v) in &plan.env {
            set_var(env, k, v);
        }
        for (k, dir) in &plan.prepend {
            let prefix = format!("{k}=");
            let old = env
                .iter()
                .rev()
                .find_map(|e| e.strip_prefix(&prefix))
                .filter(|o| !o.is_empty())
                .map(String::from);
            let value = match old {
                Some(o) if o.split(':').any(|d| d == dir) => o,
                Some(o) => format!("{dir}:{o}"),
                None => dir.clone(),
            };
            set_var(env, k, &value);
        }
    }
    Ok(())
}

fn apply_edits(
    spec: &mut Spec,
    from: &Path,
    e: &ContainerEdits,
    check_hooks: bool,
) -> Result<(), CdiError> {
    if let Some(p) = spec.process_mut() {
        let env = p.env_mut().get_or_insert_with(Vec::new);
        for kv in &e.env {
            if let Some((k, v)) = kv.split_once('=') {
                set_var(env, k, v);
            }
        }
        let gids: Vec<u32> = e
            .additional_gids
            .iter()
            .copied()
            .filter(|g| *g != 0)
            .collect();
        if !gids.is_empty() {
            let mut user = p.user().clone();
            let mut all = user.additional_gids().clone().unwrap_or_default();
            for g in gids {
                if !all.contains(&g) {
                    all.push(g);
                }
            }
            user.set_additional_gids(Some(all));
            p.set_user(user);
        }
    }
    for n in &e.device_nodes {
        add_node(spec, n)?;
    }
    if !e.mounts.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for m in &e.mounts {
            let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
            let mut options = m.options.clone();
            if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.push("rbind".into());
            }
            mounts.push(
                MountBuilder::default()
                    .destination(&m.container_path)
                    .source(&m.host_path)
                    .typ(typ)
                    .options(options)
                    .build()?,
            );
        }
        spec.set_mounts(Some(mounts));
    }
    if !e.hooks.is_empty() {
        let mut hooks = spec.hooks().clone().unwrap_or_default();
        for h in &e.hooks {
            if check_hooks {
                registry::trusted(Path::new(&h.path)).map_err(|err| match err {
                    CdiError::Untrusted { path, rule } => CdiError::Untrusted {
                        path: from.to_path_buf(),
                        rule: format!("its hook {}: {rule}", path.display()),
                    },
                    other => other,
                })?;
            }
            let mut b = HookBuilder::default().path(&h.path);
            if !h.args.is_empty() {
                b = b.args(h.args.clone());
            }
            if !h.env.is_empty() {
                b = b.env(h.env.clone());
            }
            if let Some(t) = h.timeout {
                b = b.timeout(t);
            }
            let hook = b.build()?;
            let push = |v: &Option<Vec<oci_spec::runtime::Hook>>| {
                let mut v = v.clone().unwrap_or_default();
                v.push(hook.clone());
                Some(v)
            };
            #[allow(deprecated)] // prestart: still a stage runc 1.1 runs.
            match h.hook_name.as_str() {
                "prestart" => hooks.set_prestart(push(hooks.prestart())),
                "createRuntime" => hooks.set_create_runtime(push(hooks.create_runtime())),
                "createContainer" => hooks.set_create_container(push(hooks.create_container())),
                "startContainer" => hooks.set_start_container(push(hooks.start_container())),
                "poststart" => hooks.set_poststart(push(hooks.poststart())),
                _ => hooks.set_poststop(push(hooks.poststop())),
            };
        }
        spec.set_hooks(Some(hooks));
    }
    if let Some(rdt) = &e.intel_rdt {
        let mut b = LinuxIntelRdtBuilder::default();
        if let Some(v) = &rdt.clos_id {
            b = b.clos_id(v);
        }
        if let Some(v) = &rdt.l3_cache_schema {
            b = b.l3_cache_schema(v);
        }
        if let Some(v) = &rdt.mem_bw_schema {
            b = b.mem_bw_schema(v);
        }
        if let Some(v) = rdt.enable_cmt {
            b = b.enable_cmt(v);
        }
        if let Some(v) = rdt.enable_mbm {
            b = b.enable_mbm(v);
        }
        let rdt = b.build()?;
        if let Some(l) = spec.linux_mut() {
            l.set_intel_rdt(Some(rdt));
        }
    }
    Ok(())
}

/// The node's type and numbers: the spec's, or the host node's (then also its mode and owner).
fn add_node(spec: &mut Spec, n: &DeviceNode) -> Result<(), CdiError> {
    let host = PathBuf::from(n.host());
    let given = match (&n.typ, n.major, n.minor) {
        (Some(t), Some(ma), Some(mi)) => Some((t.clone(), ma, mi)),
        _ => None,
    };
    let (typ, major, minor, mode, uid, gid) = match given {
        Some((t, ma, mi)) => (t, ma, mi, None, None, None),
        None => {
            let md = std::fs::metadata(&host).map_err(|source| CdiError::Host {
                path: host.clone(),
                source,
            })?;
            let ft = md.file_type();
            let t = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                return Err(CdiError::Host {
                    path: host.clone(),
                    source: std::io::Error::other("not a device node"),
                });
            };
            let rdev = md.rdev();
            (
                t.to_string(),
                nix::sys::stat::major(rdev) as i64,
                nix::sys::stat::minor(rdev) as i64,
                Some(md.mode() & 0o777),
                Some(md.uid()),
                Some(md.gid()),
            )
        }
    };
    let dtype = match typ.as_str() {
        "b" => LinuxDeviceType::B,
        "u" => LinuxDeviceType::U,
        "p" => LinuxDeviceType::P,
        _ => LinuxDeviceType::C,
    };
    let mut b = LinuxDeviceBuilder::default()
        .path(&n.path)
        .typ(dtype)
        .major(major)
        .minor(minor);
    if let Some(m) = n.file_mode.or(mode) {
        b = b.file_mode(m);
    }
    if let Some(u) = n.uid.or(uid) {
        b = b.uid(u);
    }
    if let Some(g) = n.gid.or(gid) {
        b = b.gid(g);
    }
    let device = b.build()?;
    let access = n
        .permissions
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "rwm".into());
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(if dtype == LinuxDeviceType::B {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        })
        .major(major)
        .minor(minor)
        .access(access)
        .build()?;
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let mut devices = linux.devices().clone().unwrap_or_default();
    devices.retain(|d| d.path() != device.path());
    devices.push(device);
    linux.set_devices(Some(devices));
    if dtype != LinuxDeviceType::P {
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        rules.push(rule);
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
