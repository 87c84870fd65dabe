//! The mount sequence, checked with the recording fake (no root needed). The real sequence runs
//! in `engine/tests/run_*.rs`.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::syscall::{Call, RecordingSyscall};
use super::*;
use crate::config::{MountFlags, SiteDevice, SiteMount};

struct Fixture {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    etc: PathBuf,
    data: PathBuf,
    req: ContainerRequest,
}

fn user() -> UserIdentity {
    UserIdentity {
        uid: 4242,
        gid: 4343,
        groups: vec![4343],
        name: "u".into(),
        home: "/home/u".into(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let etc = dir.path().join("etc");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    let image = dir.path().join("image.sqsh");
    std::fs::write(&image, b"not really squashfs").unwrap();
    let req = ContainerRequest {
        image_file: image,
        meta: ImageMeta::default(),
        user: user(),
        mounts: vec![],
        mount_extras: Vec::new(),
        devices: vec![],
        readonly: false,
        init: false,
        extra_binds: vec![],
        persistent: None,
        image_owned_by_user: false,
    };
    Fixture {
        _dir: dir,
        bundle,
        etc,
        data,
        req,
    }
}

fn prepare(f: &Fixture, cfg: &Config) -> (RecordingSyscall, Result<Rootfs, BundleError>) {
    let sys = RecordingSyscall::default();
    let r = prepare_rootfs_with(&sys, cfg, &f.etc, &f.bundle, &f.req);
    (sys, r)
}

fn mount_call(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Call {
    Call::Mount {
        source: source.map(Path::to_path_buf),
        target: target.to_path_buf(),
        fstype: fstype.map(String::from),
        flags,
        data: data.map(String::from),
    }
}

#[test]
fn the_base_sequence() {
    let f = fixture();
    let (sys, r) = prepare(&f, &Config::default());
    let rootfs = r.unwrap();
    let b = &f.bundle;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    assert_eq!(
        sys.calls(),
        vec![
            mount_call(
                Some(Path::new("tmpfs")),
                b,
                Some("tmpfs"),
                nosuid_nodev,
                Some("mode=0755")
            ),
            mount_call(None, b, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None),
            Call::Chown {
                path: b.join("upper"),
                uid: 0,
                gid: 0
            },
            Call::AttachLoop {
                image: f.req.image_file.clone()
            },
            mount_call(
                Some(Path::new("/dev/loop-fake")),
                &b.join("lower"),
                Some("squashfs"),
                MsFlags::MS_RDONLY | nosuid_nodev,
                None
            ),
            mount_call(
                Some(Path::new("overlay")),
                &b.join("rootfs"),
                Some("overlay"),
                nosuid_nodev,
                Some(&format!(
                    "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
                    b.display()
                )),
            ),
        ]
    );
    assert_eq!(rootfs.rootfs, b.join("rootfs"));
    assert!(rootfs.rootfs.is_absolute());
    // /etc files were written into the (here unmounted) rootfs directory.
    let passwd = std::fs::read_to_string(b.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("u:x:4242:4343"), "{passwd}");
    assert!(b.join("rootfs/etc/hosts").is_file());
    assert!(!rootfs.has_bind_mounts());

    let sys = RecordingSyscall::default();
    rootfs.teardown_with(&sys).unwrap();
    let unmounted: Vec<PathBuf> = sys
        .calls()
        .into_iter()
        .map(|c| match c {
            Call::Umount { target } => target,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        unmounted,
        vec![b.join("rootfs"), b.join("lower"), b.clone()]
    );
}

#[test]
fn site_extra_and_user_mounts_devices_and_init() {
    let mut f = fixture();
    let site_src = f.data.join("site");
    let user_src = f.data.join("mine");
    let script = f.data.join("script.sh");
    std::fs::create_dir_all(&site_src).unwrap();
    std::fs::create_dir_all(&user_src).unwrap();
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let init = f.data.join("tini");
    std::fs::write(&init, b"").unwrap();
    let cfg = Config {
        site_mounts: vec![SiteMount {
            kind: "bind".into(),
            source: site_src.clone(),
            destination: "/scratch".into(),
            flags: MountFlags { readonly: true },
        }],
        site_devices: vec![SiteDevice {
            source: "/dev/null".into(),
            destination: Some("/dev/site-null".into()),
            access: Some("rw".into()),
        }],
        init_path: init.clone(),
        ..Config::default()
    };
    f.req.extra_binds = vec![BindMount {
        source: script.clone(),
        destination: script.clone(),
        readonly: true,
    }];
    f.req.mounts = vec![BindMount {
        source: user_src.clone(),
        destination: "/data/in".into(),
        readonly: true,
    }];
    f.req.devices = vec![
        DeviceRequest {
            host: "/dev/zero".into(),
            container: "/dev/zero".into(),
            access: "r".into(),
        },
        DeviceRequest {
            host: "/dev/null".into(),
            container: "/dev/null".into(),
            access: "rwm".into(),
        },
    ];
    f.req.init = true;
    let (sys, r) = prepare(&f, &cfg);
    let rootfs = r.unwrap();
    let root = f.bundle.join("rootfs");
    let calls = sys.calls();
    let after_overlay = &calls[6..];
    let nosuid = sys::mount::MOUNT_ATTR_NOSUID;
    let nodev = sys::mount::MOUNT_ATTR_NODEV;
    let rdonly = sys::mount::MOUNT_ATTR_RDONLY;
    let script_in_root = root.join(script.strip_prefix("/").unwrap());
    assert_eq!(
        after_overlay,
        &[
            Call::OpenAs {
                uid: None,
                path: site_src.clone()
            },
            Call::BindFd {
                source: site_src.clone(),
                target: root.join("scratch"),
                flags: BindFlags {
                    recursive: true,
                    attrs: nosuid | rdonly,
                    unbindable: false
                }
            },
            Call::OpenAs {
                uid: None,
                path: script.clone()
            },
            Call::BindFd {
                source: script.clone(),
                target: script_in_root.clone(),
                flags: BindFlags {
                    recursive: true,
                    attrs: nosuid | rdonly,
                    unbindable: false
                }
            },
            Call::OpenAs {
                uid: Some(4242),
                path: user_src.clone()
            },
            Call::BindFd {
                source: user_src.clone(),
                target: root.join("data/in"),
                flags: BindFlags {
                    recursive: true,
                    attrs: nosuid | nodev | rdonly,
                    unbindable: false
                }
            },
            Call::OpenAs {
                uid: None,
                path: "/dev/null".into()
            },
            mount_call(
                Some(Path::new("/dev/null")),
                &f.bundle.join("devices/0"),
                None,
                MsFlags::MS_BIND,
                None
            ),
            Call::OpenAs {
                uid: Some(4242),
                path: "/dev/zero".into()
            },
            mount_call(
                Some(Path::new("/dev/zero")),
                &f.bundle.join("devices/1"),
                None,
                MsFlags::MS_BIND,
                None
            ),
        ]
    );
    assert!(root.join("scratch").is_dir() && root.join("data/in").is_dir());
    assert!(script_in_root.is_file(), "a file source gets a file target");
    assert_eq!(
        rootfs.device_rules,
        vec![
            DeviceRule {
                kind: DeviceKind::Char,
                major: 1,
                minor: 3,
                access: "rw".into()
            },
            DeviceRule {
                kind: DeviceKind::Char,
                major: 1,
                minor: 5,
                access: "r".into()
            },
        ]
    );
    assert_eq!(
        rootfs.warnings.len(),
        1,
        "the user's /dev/null is the site's"
    );
    assert!(rootfs.warnings[0].contains("/dev/null"));
    let dests: Vec<(String, String)> = rootfs
        .spec_mounts
        .iter()
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.source().as_ref().unwrap().display().to_string(),
            )
        })
        .collect();
    assert_eq!(
        dests,
        vec![
            (
                "/dev/site-null".into(),
                f.bundle.join("devices/0").display().to_string()
            ),
            (
                "/dev/zero".into(),
                f.bundle.join("devices/1").display().to_string()
            ),
            (INIT_PATH.into(), init.display().to_string()),
        ]
    );
    assert!(rootfs.init && rootfs.has_bind_mounts());
    assert_eq!(rootfs.binds[2].destination, PathBuf::from("/data/in"));
}

#[test]
fn user_destinations_are_checked_before_and_after_symlinks() {
    let mut f = fixture();
    let src = f.data.clone();
    let cfg = Config {
        user_mounts: crate::config::UserMountRules {
            not_allowed_prefixes_of_path: vec!["/etc".into()],
            not_allowed_paths: vec![],
        },
        ..Config::default()
    };
    // Direct: refused before anything is opened as the user.
    f.req.mounts = vec![BindMount {
        source: src.clone(),
        destination: "/etc/x".into(),
        readonly: false,
    }];
    let (sys, r) = prepare(&f, &cfg);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("/etc/x") && e.contains("not allowed"), "{e}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::OpenAs { .. })));
    assert!(
        matches!(sys.calls().last(), Some(Call::Umount { target }) if target == &f.bundle),
        "torn down on error"
    );

    // Through an image symlink: /mnt/cfg -> /etc is resolved in the rootfs, then refused.
    let f = fixture();
    std::fs::create_dir_all(f.bundle.join("rootfs/mnt")).unwrap();
    std::os::unix::fs::symlink("/etc", f.bundle.join("rootfs/mnt/cfg")).unwrap();
    let mut f = f;
    f.req.mounts = vec![BindMount {
        source: src,
        destination: "/mnt/cfg".into(),
        readonly: false,
    }];
    let (_, r) = prepare(&f, &cfg);
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("destination /etc ") && e.contains("not allowed"),
        "{e}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let mut f = fixture();
    f.req.mounts = vec![BindMount {
        source: "/nonexistent/src".into(),
        destination: "/x".into(),
        readonly: false,
    }];
    let e = prepare(&f, &Config::default()).1.unwrap_err().to_string();
    assert!(e.starts_with("mount source /nonexistent/src:"), "{e}");

    let mut f = fixture();
    f.req.devices = vec![DeviceRequest {
        host: "/etc/hostname".into(),
        container: "/dev/h".into(),
        access: "r".into(),
    }];
    let e = prepare(&f, &Config::default()).1.unwrap_err().to_string();
    assert!(
        e.contains("/etc/hostname") && e.contains("not a character or block device"),
        "{e}"
    );

    let mut f = fixture();
    f.req.init = true;
    let cfg = Config {
        init_path: "/nonexistent/tini".into(),
        ..Config::default()
    };
    let e = prepare(&f, &cfg).1.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/tini"), "{e}");

    let f = fixture();
    let sys = RecordingSyscall::default();
    let e = prepare_rootfs_with(
        &sys,
        &Config::default(),
        &f.etc,
        Path::new("/tmp/a,b"),
        &f.req,
    )
    .unwrap_err();
    assert!(e.to_string().contains("','"), "{e}");
    assert!(sys.calls().is_empty());
}

#[test]
fn mounts_below_dev_are_staged_for_runc_and_device_nodes_get_their_rule() {
    let mut f = fixture();
    let dir_src = f.data.join("ib");
    std::fs::create_dir_all(&dir_src).unwrap();
    f.req.mounts = vec![
        BindMount {
            source: dir_src.clone(),
            destination: "/dev/infiniband".into(),
            readonly: false,
        },
        BindMount {
            source: "/dev/null".into(),
            destination: "/dev/mynull".into(),
            readonly: true,
        },
    ];
    let (sys, r) = prepare(&f, &Config::default());
    let rootfs = r.unwrap();
    let calls = sys.calls();
    let staged_dir = f.bundle.join("devices/mount-0");
    assert_eq!(
        &calls[6..],
        &[
            Call::OpenAs {
                uid: Some(4242),
                path: dir_src.clone()
            },
            mount_call(
                Some(&dir_src),
                &staged_dir,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None
            ),
            // The node is opened as the user once to see what it is, then as a device.
            Call::OpenAs {
                uid: Some(4242),
                path: "/dev/null".into()
            },
            Call::OpenAs {
                uid: Some(4242),
                path: "/dev/null".into()
            },
            mount_call(
                Some(Path::new("/dev/null")),
                &f.bundle.join("devices/0"),
                None,
                MsFlags::MS_BIND,
                None
            ),
        ]
    );
    assert!(staged_dir.is_dir(), "a directory source gets a directory");
    assert!(
        !f.bundle.join("rootfs/dev/infiniband").exists(),
        "nothing is mounted by egret under the container's /dev"
    );
    let mounts: Vec<(String, String, Vec<String>)> = rootfs
        .spec_mounts
        .iter()
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.source().as_ref().unwrap().display().to_string(),
                m.options().clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        vec![
            (
                "/dev/infiniband".into(),
                staged_dir.display().to_string(),
                vec![
                    "bind".into(),
                    "rbind".into(),
                    "nosuid".into(),
                    "nodev".into()
                ]
            ),
            (
                "/dev/mynull".into(),
                f.bundle.join("devices/0").display().to_string(),
                vec!["bind".into(), "nosuid".into(), "noexec".into()]
            ),
        ]
    );
    assert_eq!(
        rootfs.device_rules,
        vec![DeviceRule {
            kind: DeviceKind::Char,
            major: 1,
            minor: 3,
            access: "r".into()
        }]
    );
}

#[test]
fn remapped_root_gets_an_idmapped_image_and_root_owned_mount_points() {
    let mut f = fixture();
    // The /etc files are chowned to the user: the test's own ids, so it runs without root too.
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    f.req.user.uid = uid;
    f.req.user.gid = gid;
    f.req.image_owned_by_user = true;
    let (sys, r) = prepare(&f, &Config::default());
    let rootfs = r.unwrap();
    let b = &f.bundle;
    let calls = sys.calls();
    let idmap = calls
        .iter()
        .position(|c| {
            *c == Call::BindIdmapped {
                source: b.join("lower"),
                target: b.join("lower-mapped"),
                uid,
                gid,
            }
        })
        .expect("the image is idmapped");
    let overlay = calls
        .iter()
        .position(|c| {
            matches!(c, Call::Mount { fstype: Some(t), data: Some(d), .. }
            if t == "overlay" && d.starts_with(&format!("lowerdir={}/lower-mapped,", b.display())))
        })
        .expect("the overlay's lower layer is the idmapped view");
    assert!(idmap < overlay);
    for d in ["proc", "dev", "sys"] {
        assert!(b.join("upper").join(d).is_dir(), "{d} in the upper layer");
    }
    assert!(rootfs.image_owned_by_user);
    assert!(rootfs.attach_info().image_owned_by_user);
    use std::os::unix::fs::MetadataExt;
    let passwd = std::fs::metadata(b.join("rootfs/etc/passwd")).unwrap();
    assert_eq!(
        (passwd.uid(), passwd.gid()),
        (uid, gid),
        "the remapped root's file"
    );
}
