//! Shared by the root integration tests `run_*.rs`: a busybox image built on the spot, a
//! throw-away configuration, and one container run on a thread of its own that enters a private
//! mount namespace (so the rest of the test process stays in the host's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use egret_engine::config::Config;
use egret_engine::container::rootfs::{self, ContainerRequest, Rootfs};
use egret_engine::container::runtime::{self, Runc};
use egret_engine::container::spec::{self, EntrypointChoice, ProcessRequest, SpecOptions};
use egret_engine::container::user::UserIdentity;
use egret_engine::image::metadata::ImageMeta;

pub const UID: u32 = 4242;
pub const GID: u32 = 4242;

const APPLETS: &[&str] = &[
    "sh", "id", "cat", "echo", "ls", "env", "pwd", "true", "false", "sleep", "touch", "mkdir",
    "grep", "stat", "head", "wc", "readlink",
];

/// Panics unless root: these tests exist to run the privileged path for real.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the run_* integration tests need root (loop devices, mounts, runc); run `cargo test` as root"
    );
}

/// The user containers run as in these tests (no passwd entry needed).
pub fn user() -> UserIdentity {
    UserIdentity {
        uid: UID,
        gid: GID,
        groups: vec![GID],
        name: "egrettest".into(),
        home: "/home/egrettest".into(),
    }
}

/// A test's private world: temp dir, config pointing into it, the image.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub cfg: Config,
    pub image: PathBuf,
}

impl World {
    /// A busybox image; `customize` may add to its root directory before it is squashed.
    pub fn new(customize: impl FnOnce(&Path)) -> World {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("egret-run-test")
            .tempdir()
            .unwrap();
        let src = tmp.path().join("image-src");
        for d in ["bin", "etc", "tmp", "srv"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::set_permissions(
            src.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        std::fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(a)).unwrap();
        }
        customize(&src);
        let image = tmp.path().join("image.sqsh");
        let out = Command::new("mksquashfs")
            .arg(&src)
            .arg(&image)
            .args(["-root-mode", "0755", "-noappend", "-quiet", "-no-progress"])
            .output()
            .expect("mksquashfs (squashfs-tools) is needed");
        assert!(
            out.status.success(),
            "mksquashfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = Config {
            oci_bundle_dir: tmp.path().join("bundles"),
            runc_root: tmp.path().join("runc"),
            runc_path: "/usr/bin/runc".into(),
            hooks_dir: None,
            ..Config::default()
        };
        World { tmp, cfg, image }
    }

    pub fn request(&self) -> ContainerRequest {
        ContainerRequest {
            image_file: self.image.clone(),
            meta: ImageMeta {
                env: vec!["PATH=/bin".into()],
                ..ImageMeta::default()
            },
            user: user(),
            mounts: vec![],
            mount_extras: Vec::new(),
            devices: vec![],
            readonly: false,
            init: false,
            extra_binds: vec![],
            persistent: None,
            image_owned_by_user: false,
        }
    }

    /// Asserts that nothing of a run is left: no mount under our temp dir (in the host's
    /// namespace), no loop device on our image, no runc state.
    pub fn assert_clean(&self) {
        let needle = self.tmp.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&needle), "mounts left:\n{mounts}");
        // Autoclear happens when the last reference goes, which can lag the thread's exit a bit.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("losetup")
                .arg("-j")
                .arg(&self.image)
                .output()
                .unwrap();
            if out.stdout.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "loop device left: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let state: Vec<_> = std::fs::read_dir(&self.cfg.runc_root)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(state.is_empty(), "runc state left: {state:?}");
    }
}

/// A process request with no host environment (tests add what they check).
pub fn process(args: &[&str]) -> ProcessRequest {
    ProcessRequest {
        args: args.iter().map(|s| s.to_string()).collect(),
        entrypoint: EntrypointChoice::Image,
        host_env: vec![],
        user_env: vec![],
        cwd: None,
        terminal: false,
        umask: None,
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `f` on a new thread that first enters a private mount namespace, and returns its result.
/// The namespace, and everything mounted in it, dies with the thread.
pub fn in_private_ns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            rootfs::enter_private_mount_namespace().expect("private mount namespace");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Assembles the container in `world`, runs it with its output captured, and tears everything
/// down. `inspect` sees the rootfs while it is mounted (in the private namespace).
pub fn run_with(
    world: &World,
    req: &ContainerRequest,
    proc_: &ProcessRequest,
    opts: &SpecOptions,
    inspect: impl FnOnce(&Rootfs) + Send,
) -> Result<Outcome, String> {
    in_private_ns(|| {
        let bundle_dir = world.cfg.oci_bundle_dir.join(runtime::random_hex());
        let rootfs =
            rootfs::prepare_rootfs(&world.cfg, &bundle_dir, req).map_err(|e| e.to_string())?;
        let result = (|| {
            let spec = spec::build_spec(&world.cfg, &rootfs, &req.meta, &req.user, proc_, opts)
                .map_err(|e| e.to_string())?;
            spec::write_spec(&bundle_dir, &spec).map_err(|e| e.to_string())?;
            inspect(&rootfs);
            let runc = Runc::from_config(&world.cfg);
            let id = runtime::container_id();
            let out = runc.command(&id, &bundle_dir, 0).output();
            runc.delete_force(&id);
            let out = out.map_err(|e| e.to_string())?;
            Ok(Outcome {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })();
        rootfs.teardown().map_err(|e| e.to_string())?;
        result
    })
}

/// [`run_with`] with default options and no inspection.
pub fn run(world: &World, req: &ContainerRequest, proc_: &ProcessRequest) -> Outcome {
    run_with(world, req, proc_, &SpecOptions::default(), |_| {})
        .unwrap_or_else(|e| panic!("run failed: {e}"))
}

pub fn env_map(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
