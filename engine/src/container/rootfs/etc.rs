//! The host files a container gets in its `/etc`: `passwd` and `group` (so `id`, `whoami` and
//! `ls -l` show names), `hosts` and `resolv.conf` (so name resolution works as on the node).
//!
//! Users known only through NSS (LDAP, sssd) are missing from the host's `/etc/passwd`: their own
//! entry, and their groups', are appended.

use std::path::Path;

use nix::unistd::{Gid, Group};

use crate::container::user::UserIdentity;
use crate::sys::in_root;

use super::BundleError;

pub const FILES: &[&str] = &["passwd", "group", "hosts", "resolv.conf"];

/// Writes the container's `/etc` files into `rootfs`, from `host_etc` (normally `/etc`), owned
/// by root or, where the image is the user's (remapped root), by `owner`.
pub fn install(
    rootfs: &Path,
    host_etc: &Path,
    user: &UserIdentity,
    owner: Option<(u32, u32)>,
) -> Result<(), BundleError> {
    for name in FILES {
        let host = host_etc.join(name);
        let mut content = match std::fs::read(&host) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BundleError::HostFile { path: host, source }),
        };
        match *name {
            "passwd" => add_user(&mut content, user),
            "group" => add_groups(&mut content, user, |g| {
                Group::from_gid(Gid::from_raw(g))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            }),
            _ => {}
        }
        in_root::replace_file_in_root_owned(
            rootfs,
            &Path::new("/etc").join(name),
            &content,
            0o644,
            owner,
        )?;
    }
    if owner.is_some() {
        apt_without_sandbox(rootfs, owner)?;
    }
    Ok(())
}

/// apt drops to its `_apt` user to download; a remapped root has no other uid to become, so
/// every `apt-get update` would fail. Where the image has apt, it downloads as root instead
/// (what Docker's rootless images and enroot's root mode do too).
const APT_CONF_DIR: &str = "/etc/apt/apt.conf.d";
const APT_CONF_NAME: &str = "99-egret-remap-root";
const APT_CONF: &str = "// Written by egret for --container-remap-root: one uid, no sandbox user.\nAPT::Sandbox::User \"root\";\n";

fn apt_without_sandbox(rootfs: &Path, owner: Option<(u32, u32)>) -> Result<(), BundleError> {
    let dir = match in_root::ContainerDir::open(rootfs, Path::new(APT_CONF_DIR)) {
        Ok(d) => d,
        // No apt in this image (or no such directory of the image's own): nothing to do.
        Err(_) => return Ok(()),
    };
    dir.replace_owned(
        std::ffi::OsStr::new(APT_CONF_NAME),
        APT_CONF.as_bytes(),
        0o644,
        owner,
    )?;
    Ok(())
}

/// True when a `name:x:ID:...` line with this id (third field) is in `db`.
fn has_id(db: &[u8], id: u32) -> bool {
    let id = id.to_string();
    String::from_utf8_lossy(db)
        .lines()
        .any(|l| l.split(':').nth(2) == Some(id.as_str()))
}

fn push_line(db: &mut Vec<u8>, line: &str) {
    if !db.is_empty() && !db.ends_with(b"\n") {
        db.push(b'\n');
    }
    db.extend_from_slice(line.as_bytes());
    db.push(b'\n');
}

fn add_user(passwd: &mut Vec<u8>, user: &UserIdentity) {
    if !has_id(passwd, user.uid) {
        let line = format!(
            "{}:x:{}:{}::{}:/bin/sh",
            user.name,
            user.uid,
            user.gid,
            user.home.display()
        );
        push_line(passwd, &line);
    }
}

fn add_groups(group: &mut Vec<u8>, user: &UserIdentity, name_of: impl Fn(u32) -> Option<String>) {
    let mut gids = vec![user.gid];
    gids.extend(user.groups.iter().copied().filter(|g| *g != user.gid));
    for gid in gids {
        if has_id(group, gid) {
            continue;
        }
        // A group unknown to the node stays a bare number inside too.
        if let Some(name) = name_of(gid) {
            push_line(group, &format!("{name}:x:{gid}:{}", user.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserIdentity {
        UserIdentity {
            uid: 4242,
            gid: 4242,
            groups: vec![4242, 100, 7000],
            name: "ldapuser".into(),
            home: "/home/ldapuser".into(),
        }
    }

    #[test]
    fn missing_user_and_groups_are_appended() {
        let mut passwd = b"root:x:0:0:root:/root:/bin/bash".to_vec();
        add_user(&mut passwd, &user());
        assert_eq!(
            String::from_utf8(passwd.clone()).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\nldapuser:x:4242:4242::/home/ldapuser:/bin/sh\n"
        );
        add_user(&mut passwd, &user());
        assert_eq!(
            passwd.iter().filter(|b| **b == b'\n').count(),
            2,
            "added once"
        );

        let mut group = b"root:x:0:\nusers:x:100:\n".to_vec();
        add_groups(&mut group, &user(), |g| {
            (g == 4242).then(|| "ldapgroup".to_string())
        });
        assert_eq!(
            String::from_utf8(group).unwrap(),
            "root:x:0:\nusers:x:100:\nldapgroup:x:4242:ldapuser\n",
            "known groups kept, unknown 7000 left out"
        );
    }

    #[test]
    fn install_writes_into_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(host.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nowhere", root.path().join("etc")).unwrap();
        install(root.path(), host.path(), &user(), None).unwrap();
        // /etc -> /nowhere was followed inside the rootfs.
        let passwd = std::fs::read_to_string(root.path().join("nowhere/passwd")).unwrap();
        assert!(passwd.contains("ldapuser:x:4242"), "{passwd}");
        assert!(root.path().join("nowhere/hosts").is_file());
        assert!(
            !root.path().join("nowhere/resolv.conf").exists(),
            "missing on the host: skipped"
        );
        assert!(
            !root.path().join("nowhere/apt").exists(),
            "not remapped: no apt file"
        );
    }

    #[test]
    fn remapped_root_gets_an_apt_without_sandbox_where_the_image_has_apt() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        install(root.path(), host.path(), &user(), Some(me)).unwrap();
        assert!(
            !root.path().join("etc/apt").exists(),
            "no apt: nothing created"
        );
        std::fs::create_dir_all(root.path().join("etc/apt/apt.conf.d")).unwrap();
        install(root.path(), host.path(), &user(), Some(me)).unwrap();
        let conf =
            std::fs::read_to_string(root.path().join("etc/apt/apt.conf.d").join(APT_CONF_NAME))
                .unwrap();
        assert!(conf.contains("APT::Sandbox::User \"root\";"), "{conf}");
    }
}
