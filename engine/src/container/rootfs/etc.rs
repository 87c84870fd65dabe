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

/// Writes the container's `/etc` files into `rootfs`, from `host_etc` (normally `/etc`).
pub fn install(rootfs: &Path, host_etc: &Path, user: &UserIdentity) -> Result<(), BundleError> {
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
        in_root::replace_file_in_root(rootfs, &Path::new("/etc").join(name), &content, 0o644)?;
    }
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
        install(root.path(), host.path(), &user()).unwrap();
        // /etc -> /nowhere was followed inside the rootfs.
        let passwd = std::fs::read_to_string(root.path().join("nowhere/passwd")).unwrap();
        assert!(passwd.contains("ldapuser:x:4242"), "{passwd}");
        assert!(root.path().join("nowhere/hosts").is_file());
        assert!(
            !root.path().join("nowhere/resolv.conf").exists(),
            "missing on the host: skipped"
        );
    }
}
