//! Device cgroup rules for the devices the selected hooks bind into the container.
//!
//! A hook can bind a device node into the container, but the container can only open it when its
//! device cgroup allows it, and the cgroup is set up by runc from `linux.resources.devices`.
//! So for every selected hook the engine adds an allow rule for each host character or block
//! device the hook's JSON declares:
//! - each `--device=HOST[:CONTAINER][:ACCESS]` argument (with its ACCESS, default `rwm`);
//! - each device node in the colon list of its env `BIND_MOUNTS` (`rwm`);
//! - each path in the colon list of its env `DEVICES` (`rwm`): a device node, or a directory
//!   whose device nodes (recursively, links not followed) are all allowed (`/dev/kfd:/dev/dri`).
//!
//! Paths that do not exist or are not devices are ignored: a site's hook JSON may name devices
//! some nodes lack. The paths come from the admin's hooks directory, never from the user.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};

use crate::container::mounts;

/// Directory levels looked into below a `DEVICES` directory.
const MAX_DEPTH: usize = 8;

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDeviceRule {
    pub typ: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub access: String,
}

/// The (host path, access) pairs a hook declares, before looking at the filesystem.
pub fn declared(hook: &Hook) -> Vec<(PathBuf, String, bool)> {
    let mut out = Vec::new();
    for arg in hook.args().iter().flatten() {
        if let Some(d) = arg.strip_prefix("--device=") {
            if let Ok(req) = mounts::parse_device(d) {
                out.push((req.host, req.access, false));
            }
        }
    }
    for kv in hook.env().iter().flatten() {
        let (recurse, list) = match kv.split_once('=') {
            Some(("BIND_MOUNTS", v)) => (false, v),
            Some(("DEVICES", v)) => (true, v),
            _ => continue,
        };
        for p in list.split(':').filter(|p| p.starts_with('/')) {
            out.push((PathBuf::from(p), "rwm".to_string(), recurse));
        }
    }
    out
}

fn device_rule(path: &Path, access: &str, follow: bool) -> Option<HookDeviceRule> {
    let md = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .ok()?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = md.rdev();
    Some(HookDeviceRule {
        typ,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        access: access.to_string(),
    })
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<HookDeviceRule>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth < MAX_DEPTH {
                walk(&e.path(), depth + 1, out);
            }
        } else if let Some(r) = device_rule(&e.path(), "rwm", false) {
            out.push(r);
        }
    }
}

/// The rules for the devices `hooks` declare, without duplicates.
pub fn rules<'a>(hooks: impl IntoIterator<Item = &'a Hook>) -> Vec<HookDeviceRule> {
    let mut found = Vec::new();
    for hook in hooks {
        for (path, access, recurse) in declared(hook) {
            if recurse && path.is_dir() {
                walk(&path, 0, &mut found);
            } else if let Some(r) = device_rule(&path, &access, true) {
                found.push(r);
            }
        }
    }
    let mut out: Vec<HookDeviceRule> = Vec::new();
    for r in found {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Adds to `spec`'s device cgroup the rules for the devices of the hooks it already has.
pub fn allow_hook_devices(spec: &mut Spec) -> Result<(), oci_spec::OciSpecError> {
    let Some(hooks) = spec.hooks().clone() else {
        return Ok(());
    };
    #[allow(deprecated)] // prestart: still a stage runc 1.1 runs.
    let stages = [
        hooks.prestart(),
        hooks.create_runtime(),
        hooks.create_container(),
        hooks.start_container(),
        hooks.poststart(),
        hooks.poststop(),
    ];
    let found = rules(stages.into_iter().flatten().flatten());
    if found.is_empty() {
        return Ok(());
    }
    let mut new = Vec::new();
    for r in found {
        new.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(r.typ)
                .major(r.major)
                .minor(r.minor)
                .access(r.access)
                .build()?,
        );
    }
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut devices: Vec<LinuxDeviceCgroup> = resources.devices().clone().unwrap_or_default();
    devices.extend(new);
    resources.set_devices(Some(devices));
    linux.set_resources(Some(resources));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn hook(args: &[&str], env: &[&str]) -> Hook {
        HookBuilder::default()
            .path("/usr/local/libexec/egret/hooks/egret-mount-hook")
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn declared_devices_from_args_and_env() {
        let h = hook(
            &[
                "egret-mount-hook",
                "--device=/dev/fuse:r",
                "--mount=type=bind,src=/a,dst=/b",
                "--device=bad",
            ],
            &[
                "BIND_MOUNTS=/dev/null:/etc/x:rel",
                "DEVICES=/dev/dri",
                "OTHER=/dev/zero",
            ],
        );
        let d = declared(&h);
        assert_eq!(
            d,
            vec![
                (PathBuf::from("/dev/fuse"), "r".to_string(), false),
                (PathBuf::from("/dev/null"), "rwm".to_string(), false),
                (PathBuf::from("/etc/x"), "rwm".to_string(), false),
                (PathBuf::from("/dev/dri"), "rwm".to_string(), true),
            ]
        );
    }

    #[test]
    fn rules_for_existing_device_nodes_only() {
        let h = hook(
            &["x", "--device=/dev/null:/dev/n2:rw"],
            &[
                "BIND_MOUNTS=/dev/zero:/etc/hostname:/nonexistent",
                "DEVICES=/dev/null",
            ],
        );
        let r = rules([&h, &h]);
        let c = |major, minor, access: &str| HookDeviceRule {
            typ: LinuxDeviceType::C,
            major,
            minor,
            access: access.into(),
        };
        assert_eq!(r, vec![c(1, 3, "rw"), c(1, 5, "rwm"), c(1, 3, "rwm")]);
    }

    #[test]
    fn directories_are_walked_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("sub/link")).unwrap();
        std::fs::write(d.path().join("file"), "").unwrap();
        let h = hook(&["x"], &[&format!("DEVICES={}", d.path().display())]);
        assert!(rules([&h]).is_empty());
        if nix::unistd::geteuid().is_root() {
            use nix::sys::stat::{makedev, mknod, Mode, SFlag};
            mknod(
                &d.path().join("sub/fuse"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                makedev(10, 229),
            )
            .unwrap();
            let r = rules([&h]);
            assert_eq!(r.len(), 1);
            assert_eq!((r[0].major, r[0].minor), (10, 229));
        }
    }
}
