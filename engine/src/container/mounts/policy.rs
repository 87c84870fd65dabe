//! The site's rules for user mount destinations. They apply to where a mount lands in the
//! container, never to its source: a source is opened with the user's own rights, so any host
//! path the user can reach (`/var/lib/data`, `/scratch`) may be bound somewhere allowed.
//!
//! What a deny list is for (see the shipped `etc/egret.json`): container paths that egret, its
//! hooks or runc write or mount into as root, so that a user's mount never stands in their way
//! or under them: `/etc` (passwd, group, hosts, ld.so.cache, profile.d), `/opt/egret` (the SSH
//! hook's files), Slurm's spool below `/var/spool` (the PMIx directory, the batch script) and
//! the parents runc would create those below (`/opt`, `/var`, `/run` for `/run/munge`), as
//! exact paths only, so that `/var/lib/...` or `/run/user/...` stay allowed.

use std::path::Path;

use crate::config::UserMountRules;
use crate::container::mounts::{normalize, MountError};

/// Container paths the runtime mounts itself: a user bind mount there would be hidden or would
/// replace the container root. (Below `/dev`, runc's own tmpfs, mounts are handed to runc: see
/// [`is_under_dev`].)
const RESERVED: &[&str] = &["/proc", "/sys"];

/// A destination inside the container's `/dev` (not `/dev` itself), which runc mounts after
/// its own `/dev` rather than egret before it.
pub fn is_under_dev(destination: &Path) -> bool {
    let dst = normalize(destination);
    dst.starts_with("/dev") && dst != Path::new("/dev")
}

/// Checks a user mount destination against the site's deny lists (component-wise: `/etc` denies
/// `/etc/x` but not `/etcetera`) and the paths the runtime owns. Call it on the requested path
/// and again on the path it resolves to inside the rootfs.
pub fn check_destination(destination: &Path, rules: &UserMountRules) -> Result<(), MountError> {
    let dst = normalize(destination);
    if dst == Path::new("/")
        || dst == Path::new("/dev")
        || RESERVED.iter().any(|r| dst.starts_with(r))
    {
        return Err(MountError::Reserved { destination: dst });
    }
    for prefix in &rules.not_allowed_prefixes_of_path {
        if dst.starts_with(normalize(prefix)) {
            return Err(MountError::Denied {
                destination: dst,
                rule: prefix.clone(),
            });
        }
    }
    for path in &rules.not_allowed_paths {
        if dst == normalize(path) {
            return Err(MountError::Denied {
                destination: dst,
                rule: path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn deny_lists_are_component_wise() {
        let rules = UserMountRules {
            not_allowed_prefixes_of_path: vec![p("/etc"), p("/opt/egret")],
            not_allowed_paths: vec![p("/opt")],
        };
        assert!(check_destination(Path::new("/etc"), &rules).is_err());
        assert!(check_destination(Path::new("/etc/x/y"), &rules).is_err());
        assert!(check_destination(Path::new("/data/../etc/x"), &rules).is_err());
        assert!(check_destination(Path::new("/etcetera"), &rules).is_ok());
        assert!(check_destination(Path::new("/opt"), &rules).is_err());
        assert!(check_destination(Path::new("/opt/x"), &rules).is_ok());
        assert!(check_destination(Path::new("/opt/egret/x"), &rules).is_err());
        let e = check_destination(Path::new("/etc/x"), &rules)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/x") && e.contains("policy"), "{e}");
        for reserved in ["/", "/..", "/proc", "/sys/fs", "/dev", "/dev/"] {
            let e = check_destination(Path::new(reserved), &rules).unwrap_err();
            assert!(matches!(e, MountError::Reserved { .. }), "{reserved}: {e}");
        }
        // Inside the container's /dev, as in Sarus (runc mounts them after its own /dev).
        for inside in ["/dev/shm", "/dev/fuse", "/dev/infiniband/uverbs0"] {
            assert!(
                check_destination(Path::new(inside), &rules).is_ok(),
                "{inside}"
            );
            assert!(is_under_dev(Path::new(inside)), "{inside}");
        }
        assert!(!is_under_dev(Path::new("/dev")) && !is_under_dev(Path::new("/devices")));
    }

    #[test]
    fn the_shipped_config_refuses_what_root_writes_into_and_nothing_else() {
        let text = include_str!("../../../../etc/egret.json");
        let cfg = crate::config::Config::parse_str(text, Path::new("etc/egret.json")).unwrap();
        let rules = &cfg.user_mounts;
        // pyxis's `SRC` alone mounts at the source's own path: ordinary data paths must pass.
        for allowed in [
            "/var/lib/data",
            "/var/lib/egret-data/in",
            "/var/tmp/x",
            "/var/log/app",
            "/run/user/1000",
            "/opt/app",
            "/scratch",
            "/data",
            "/etcetera",
        ] {
            assert!(
                check_destination(Path::new(allowed), rules).is_ok(),
                "{allowed}"
            );
        }
        for denied in [
            "/etc",
            "/etc/passwd",
            "/opt",
            "/opt/egret/ssh",
            "/var",
            "/var/",
            "/var/spool",
            "/var/spool/slurmd-n1/pmix.7.0",
            "/run",
        ] {
            let e = check_destination(Path::new(denied), rules).unwrap_err();
            assert!(matches!(e, MountError::Denied { .. }), "{denied}: {e}");
        }
    }
}
