//! Root integration tests: user and site bind mounts, deny lists, destinations that are image
//! symlinks, setuid binaries in the image, devices.

use egret_test_support::engine_run as run_support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use egret_engine::config::{MountFlags, SiteMount};
use egret_engine::container::mounts::{parse_device, parse_sarus_mount, BindMount};
use egret_engine::container::spec::SpecOptions;
use run_support::*;

fn host_dir(w: &World, name: &str, uid: u32) -> std::path::PathBuf {
    let d = w.tmp.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
    d
}

#[test]
fn user_mounts_readonly_and_writable() {
    let w = World::new(|_| {});
    let input = host_dir(&w, "input", UID);
    let output = host_dir(&w, "output", UID);
    std::fs::write(input.join("data.txt"), "payload\n").unwrap();
    let mut req = w.request();
    req.mounts = vec![
        parse_sarus_mount(&format!(
            "type=bind,src={},dst=/in,readonly",
            input.display()
        ))
        .unwrap(),
        BindMount {
            source: output.clone(),
            destination: "/deep/out".into(),
            readonly: false,
        },
    ];
    let script =
        "cat /in/data.txt; touch /in/new 2>/dev/null || echo ro; touch /deep/out/made && echo rw";
    let out = run(&w, &req, &process(&["sh", "-c", script]));
    assert_eq!(out.stdout, "payload\nro\nrw\n", "{out:?}");
    let made = output.join("made").metadata().unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&made),
        UID,
        "written as the user"
    );
    assert!(!input.join("new").exists());
    w.assert_clean();
}

#[test]
fn site_mounts_are_trusted_and_users_cannot_use_what_they_cannot_reach() {
    let mut w = World::new(|_| {});
    let site = host_dir(&w, "site", 0);
    std::fs::write(site.join("motd"), "site\n").unwrap();
    std::fs::set_permissions(&site, PermissionsExt::from_mode(0o755)).unwrap();
    w.cfg.site_mounts = vec![SiteMount {
        kind: "bind".into(),
        source: site.clone(),
        destination: "/etc/site".into(),
        flags: MountFlags { readonly: true },
    }];
    w.cfg.user_mounts.not_allowed_prefixes_of_path = vec!["/etc".into()];
    let out = run(&w, &w.request(), &process(&["cat", "/etc/site/motd"]));
    assert_eq!(
        out.stdout, "site\n",
        "site mounts ignore the users' deny list: {out:?}"
    );

    // A root-only directory: root could bind it, the user may not.
    let secret = host_dir(&w, "secret", 0);
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o700)).unwrap();
    let mut req = w.request();
    req.mounts = vec![BindMount {
        source: secret.join("inner"),
        destination: "/s".into(),
        readonly: true,
    }];
    std::fs::create_dir(secret.join("inner")).unwrap();
    let e = run_with(
        &w,
        &req,
        &process(&["true"]),
        &SpecOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(
        e.contains("mount source") && e.contains("Permission denied"),
        "{e}"
    );
    w.assert_clean();
}

#[test]
fn denied_destinations_are_refused() {
    let mut w = World::new(|root| {
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        symlink("/etc", root.join("mnt/cfg")).unwrap();
    });
    w.cfg.user_mounts.not_allowed_prefixes_of_path = vec!["/etc".into(), "/var".into()];
    let data = host_dir(&w, "data", UID);
    for dst in ["/etc/x", "/var", "/mnt/cfg", "/mnt/cfg/sub", "/proc/x", "/"] {
        let mut req = w.request();
        req.mounts = vec![BindMount {
            source: data.clone(),
            destination: dst.into(),
            readonly: false,
        }];
        let e = run_with(
            &w,
            &req,
            &process(&["true"]),
            &SpecOptions::default(),
            |_| {},
        )
        .unwrap_err();
        assert!(
            e.contains("not allowed") || e.contains("reserved"),
            "{dst}: {e}"
        );
    }
    w.assert_clean();
}

#[test]
fn symlink_destinations_stay_inside_the_rootfs() {
    let w = World::new(|root| {
        std::fs::create_dir_all(root.join("mnt")).unwrap();
        symlink("/etc", root.join("mnt/abs")).unwrap();
        symlink("../../../../../etc/sub", root.join("mnt/rel")).unwrap();
    });
    let data = host_dir(&w, "data", UID);
    std::fs::write(data.join("marker"), "inside\n").unwrap();
    let mut req = w.request();
    req.mounts = vec![
        BindMount {
            source: data.clone(),
            destination: "/mnt/abs/bound".into(),
            readonly: true,
        },
        BindMount {
            source: data.clone(),
            destination: "/mnt/rel".into(),
            readonly: true,
        },
    ];
    let out = run_with(
        &w,
        &req,
        &process(&["sh", "-c", "cat /etc/bound/marker /etc/sub/marker"]),
        &SpecOptions::default(),
        |rootfs| {
            // Seen from the private namespace, before runc: the host's /etc is untouched.
            assert!(!Path::new("/etc/bound").exists() && !Path::new("/etc/sub").exists());
            assert!(rootfs.rootfs.join("etc/bound/marker").exists());
            let dests: Vec<_> = rootfs
                .binds
                .iter()
                .map(|b| b.destination.display().to_string())
                .collect();
            assert_eq!(dests, ["/etc/bound", "/etc/sub"]);
        },
    )
    .unwrap();
    assert_eq!(out.stdout, "inside\ninside\n", "{out:?}");
    assert!(!Path::new("/etc/bound").exists() && !Path::new("/etc/sub").exists());
    w.assert_clean();
}

/// A static program printing its effective uid, made setuid-root in the image.
fn setuid_euid_binary(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("euid.c");
    std::fs::write(&src, "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"%d\\n\",(int)geteuid());return 0;}\n").unwrap();
    let bin = dir.join("euid");
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc is needed to build the setuid test program");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&bin, PermissionsExt::from_mode(0o4755)).unwrap();
    bin
}

#[test]
fn setuid_binaries_in_the_image_are_not_effective() {
    let build = tempfile::tempdir().unwrap();
    let bin = setuid_euid_binary(build.path());
    // Control: on the host the same file does give root, so the check below means something.
    let host = Command::new(&bin)
        .uid(UID_FOR_CONTROL)
        .gid(UID_FOR_CONTROL)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&host.stdout),
        "0\n",
        "setuid must work on the host for this test to mean anything"
    );
    let w = World::new(|root| {
        std::fs::copy(&bin, root.join("bin/euid")).unwrap();
        std::fs::set_permissions(root.join("bin/euid"), PermissionsExt::from_mode(0o4755)).unwrap();
    });
    let out = run(&w, &w.request(), &process(&["/bin/euid"]));
    assert_eq!(out.stdout, "4242\n", "{out:?}");
    w.assert_clean();
}

use std::os::unix::process::CommandExt;
const UID_FOR_CONTROL: u32 = 4242;

#[test]
fn devices_and_their_access_rules() {
    let w = World::new(|_| {});
    // Two numbers: rules are per device number.
    let (n0, n1) = (
        egret_test_support::driverless_char_device(w.tmp.path(), 0),
        egret_test_support::driverless_char_device(w.tmp.path(), 1),
    );
    let mut req = w.request();
    req.devices = vec![
        parse_device("/dev/null:/dev/mynull:rw").unwrap(),
        parse_device(&format!("{}:/dev/dev_rw:rw", n0.display())).unwrap(),
        parse_device(&format!("{}:/dev/dev_r:r", n1.display())).unwrap(),
    ];
    let script = "stat -c '%t:%T' /dev/mynull; echo x > /dev/mynull && echo wrote; echo x > /dev/dev_rw; echo x > /dev/dev_r; cat /dev/dev_r";
    let out = run(&w, &req, &process(&["sh", "-c", script]));
    assert_eq!(out.stdout, "1:3\nwrote\n", "{out:?}");
    let errs: Vec<&str> = out.stderr.lines().collect();
    assert!(
        errs[0].contains("/dev/dev_rw") && errs[0].contains("No such device or address"),
        "allowed, no driver: {errs:?}"
    );
    assert!(
        errs[1].contains("/dev/dev_r") && errs[1].contains("Operation not permitted"),
        "write not allowed: {errs:?}"
    );
    assert!(
        errs[2].contains("/dev/dev_r") && errs[2].contains("No such device or address"),
        "read allowed: {errs:?}"
    );

    let mut req = w.request();
    req.devices = vec![parse_device("/etc/hostname").unwrap()];
    let e = run_with(
        &w,
        &req,
        &process(&["true"]),
        &SpecOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(e.contains("not a character or block device"), "{e}");
    w.assert_clean();
}

#[test]
fn user_mounts_never_create_anything_inside_other_mounts() {
    let mut w = World::new(|_| {});
    let scratch = host_dir(&w, "scratch", UID);
    std::fs::create_dir(scratch.join("exists")).unwrap();
    w.cfg.site_mounts = vec![SiteMount {
        kind: "bind".into(),
        source: scratch.clone(),
        destination: "/scratch".into(),
        flags: MountFlags { readonly: false },
    }];
    let mine = host_dir(&w, "mine", UID);
    std::fs::write(mine.join("f"), "mine\n").unwrap();

    let mut req = w.request();
    req.mounts = vec![BindMount {
        source: mine.clone(),
        destination: "/scratch/new/dir".into(),
        readonly: false,
    }];
    let e = run_with(
        &w,
        &req,
        &process(&["true"]),
        &SpecOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(
        e.contains("/scratch/new") && e.contains("another mount"),
        "{e}"
    );
    assert!(!scratch.join("new").exists(), "nothing created on the host");

    // Covering an existing directory of the site mount is fine: only the container sees it.
    req.mounts[0].destination = "/scratch/exists".into();
    let out = run(&w, &req, &process(&["cat", "/scratch/exists/f"]));
    assert_eq!(out.stdout, "mine\n", "{out:?}");
    assert!(!scratch.join("exists/f").exists());
    w.assert_clean();
}
