//! `--container-remap-root` (pyxis): the command runs as uid/gid 0 inside a user namespace that
//! maps 0 to the user and nothing else. It is never real root: outside the namespace every
//! process and file is the user's, and the image's root-owned files stay unwritable (they
//! belong to an unmapped uid, shown as `nobody`).
//!
//! Like pyxis's, it is a root that can install packages: the image's root-owned files are the
//! user's (the rootfs shows them through an idmapped mount, see `rootfs`), the process has every
//! capability *of its namespace* (they reach only what the namespace owns: its mounts, the
//! files mapped to the user), the seccomp profile lets it mount (a mount namespace it owns, as
//! `unshare -rm` gives any user on the host) and the `chown` family succeeds without effect
//! where it names an id the namespace cannot hold (dpkg giving files to `_apt` or `man`).
//!
//! A user namespace changes what runc may mount: a new procfs needs a PID namespace the user
//! namespace owns, sysfs and cgroupfs a network namespace it owns, mqueue an IPC namespace. So
//! with the host's PID namespace `/proc` is a bind of the host's (what sharing it means
//! anyway), `/sys` is a read-only bind, and cgroupfs and mqueue are left out; devpts loses
//! `gid=5`, a group the namespace does not map.

use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
    Mount, Spec,
};

use crate::container::spec::SpecError;

/// Turns a built spec into its remapped-root form for the user `uid`/`gid`.
pub fn apply(spec: &mut Spec, uid: u32, gid: u32) -> Result<(), SpecError> {
    // Hooks runc starts inside the container's namespaces would run as the user there: they
    // could neither read the bundle nor mount anything. Refuse rather than fail half-way.
    if let Some(hooks) = spec.hooks() {
        let inside: Vec<String> = hooks
            .create_container()
            .iter()
            .chain(hooks.start_container().iter())
            .flatten()
            .map(|h| h.path().display().to_string())
            .collect();
        if !inside.is_empty() {
            return Err(SpecError::Build(format!(
                "--container-remap-root cannot be combined with hooks that run inside the container ({}); drop one of them",
                inside.join(", ")
            )));
        }
    }
    let process = spec.process_mut().as_mut().ok_or(SpecError::Build(
        "remap-root: the spec has no process".into(),
    ))?;
    let mut user = process.user().clone();
    user.set_uid(0);
    user.set_gid(0);
    user.set_additional_gids(None);
    process.set_user(user);
    let all: HashSet<Capability> = NAMESPACE_CAPABILITIES.iter().copied().collect();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(all.clone())
            .effective(all.clone())
            .inheritable(HashSet::new())
            .permitted(all)
            .ambient(HashSet::new())
            .build()?,
    ));

    let linux = spec.linux_mut().as_mut().ok_or(SpecError::Build(
        "remap-root: the spec has no linux section".into(),
    ))?;
    let map = |host| {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(1u32)
            .build()
    };
    linux.set_uid_mappings(Some(vec![map(uid)?]));
    linux.set_gid_mappings(Some(vec![map(gid)?]));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let owns = |t| namespaces.iter().any(|n| n.typ() == t);
    let private_pid = owns(LinuxNamespaceType::Pid);
    let private_ipc = owns(LinuxNamespaceType::Ipc);
    let private_net = owns(LinuxNamespaceType::Network);
    if !owns(LinuxNamespaceType::User) {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
    }
    linux.set_namespaces(Some(namespaces));
    let seccomp = root_seccomp(linux.seccomp().clone())?;
    linux.set_seccomp(Some(seccomp));

    let mounts = spec.mounts().clone().unwrap_or_default();
    let mounts = mounts
        .into_iter()
        .filter_map(|m| adapt_mount(m, private_pid, private_ipc, private_net))
        .collect();
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Every capability runc knows; in a user namespace each acts only on what that namespace owns.
const NAMESPACE_CAPABILITIES: &[Capability] = &[
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// Mounting inside the container's own mount namespace: what the site profile refuses to a
/// container without privilege, and what a namespace root needs (`mount -t tmpfs`).
const MOUNT_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

/// Ownership changes that succeed without effect (the namespace holds one id: any other would
/// fail with EINVAL and stop package installs).
const CHOWN_SYSCALLS: &[&str] = &["chown", "fchown", "lchown", "fchownat"];

/// The site's profile (or none) for a namespace root: the mount system calls allowed, the
/// `chown` family answered with success.
fn root_seccomp(site: Option<LinuxSeccomp>) -> Result<LinuxSeccomp, SpecError> {
    let mut profile = match site {
        Some(p) => p,
        None => LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .build()?,
    };
    let mut rules: Vec<_> = profile
        .syscalls()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut rule| {
            if rule.action() != LinuxSeccompAction::ScmpActAllow {
                let names = rule
                    .names()
                    .iter()
                    .filter(|n| !MOUNT_SYSCALLS.contains(&n.as_str()))
                    .cloned()
                    .collect::<Vec<_>>();
                if names.is_empty() {
                    return None;
                }
                rule.set_names(names);
            }
            Some(rule)
        })
        .collect();
    rules.push(
        LinuxSyscallBuilder::default()
            .names(
                CHOWN_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(0u32)
            .build()?,
    );
    if profile.default_action() != LinuxSeccompAction::ScmpActAllow {
        // A deny-by-default profile must allow the mount calls explicitly.
        rules.push(
            LinuxSyscallBuilder::default()
                .names(
                    MOUNT_SYSCALLS
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()?,
        );
    }
    profile.set_syscalls(Some(rules));
    Ok(profile)
}

/// One of the spec's mounts as it can be made inside the user namespace (None: left out).
fn adapt_mount(m: Mount, private_pid: bool, private_ipc: bool, private_net: bool) -> Option<Mount> {
    let typ = m.typ().clone().unwrap_or_default();
    let host_bind = |source: &str, ro: bool| {
        let mut options = vec!["rbind", "nosuid", "nodev", "noexec"];
        if ro {
            options.push("ro");
        }
        let mut b = m.clone();
        b.set_typ(Some("bind".into()));
        b.set_source(Some(source.into()));
        b.set_options(Some(options.into_iter().map(String::from).collect()));
        b
    };
    match typ.as_str() {
        "proc" if !private_pid => Some(host_bind("/proc", false)),
        "sysfs" if !private_net => Some(host_bind("/sys", true)),
        "cgroup" | "cgroup2" if !private_net => None,
        "mqueue" if !private_ipc => None,
        "devpts" => {
            let mut d = m.clone();
            let options = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| !o.starts_with("gid="))
                .collect();
            d.set_options(Some(options));
            Some(d)
        }
        _ => Some(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, MountBuilder, ProcessBuilder, SpecBuilder, UserBuilder};

    fn mount(dst: &str, typ: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dst)
            .typ(typ)
            .source(typ)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn maps_root_to_the_user_and_adapts_the_mounts() {
        let mut spec = SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .user(
                        UserBuilder::default()
                            .uid(4242u32)
                            .gid(4242u32)
                            .additional_gids(vec![4242u32, 27])
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .linux(LinuxBuilder::default().namespaces(vec![]).build().unwrap())
            .mounts(vec![
                mount("/proc", "proc", &["nosuid"]),
                mount("/dev/pts", "devpts", &["newinstance", "gid=5", "mode=0620"]),
                mount("/dev/mqueue", "mqueue", &[]),
                mount("/sys", "sysfs", &["ro"]),
                mount("/sys/fs/cgroup", "cgroup", &["ro"]),
            ])
            .build()
            .unwrap();
        apply(&mut spec, 4242, 4243).unwrap();
        let user = spec.process().as_ref().unwrap().user();
        assert_eq!((user.uid(), user.gid()), (0, 0));
        assert!(user.additional_gids().is_none());
        let linux = spec.linux().as_ref().unwrap();
        let m = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!((m.container_id(), m.host_id(), m.size()), (0, 4242, 1));
        assert_eq!(linux.gid_mappings().as_ref().unwrap()[0].host_id(), 4243);
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User));
        let mounts = spec.mounts().as_ref().unwrap();
        let dsts: Vec<String> = mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(dsts, ["/proc", "/dev/pts", "/sys"]);
        assert_eq!(mounts[0].typ().as_deref(), Some("bind"));
        assert!(!mounts[1]
            .options()
            .as_ref()
            .unwrap()
            .iter()
            .any(|o| o == "gid=5"));
        assert!(mounts[2]
            .options()
            .as_ref()
            .unwrap()
            .iter()
            .any(|o| o == "ro"));
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let effective = caps.effective().as_ref().unwrap();
        assert!(
            effective.contains(&Capability::SysAdmin) && effective.contains(&Capability::Chown)
        );
        let seccomp = linux.seccomp().as_ref().expect("a profile of its own");
        let chown = seccomp
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.names().contains(&"fchownat".to_string()))
            .unwrap();
        assert_eq!(
            (chown.action(), chown.errno_ret()),
            (LinuxSeccompAction::ScmpActErrno, Some(0))
        );
    }

    #[test]
    fn the_site_profile_keeps_its_rules_but_lets_namespace_root_mount() {
        let site = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec![
                    "mount".to_string(),
                    "reboot".to_string(),
                    "umount2".to_string(),
                ])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(1u32)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let p = root_seccomp(Some(site)).unwrap();
        let rules = p.syscalls().as_ref().unwrap();
        assert_eq!(
            rules[0].names(),
            &vec!["reboot".to_string()],
            "still refused"
        );
        assert!(!rules
            .iter()
            .any(|r| r.action() != LinuxSeccompAction::ScmpActAllow
                && r.names().contains(&"mount".to_string())));

        let deny_all = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .build()
            .unwrap();
        let p = root_seccomp(Some(deny_all)).unwrap();
        assert!(p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow
                && r.names().contains(&"mount".to_string())));
    }
}
