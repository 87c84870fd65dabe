//! The container's root filesystem, assembled by root inside a private mount namespace.
//!
//! Layout of a bundle directory (an in-memory filesystem mounted on `bundle_dir`):
//!
//! ```text
//! bundle_dir/            tmpfs or ramfs, nosuid,nodev
//!   lower/               the image: squashfs on a loop device, ro,nosuid,nodev
//!   lower-mapped/        with --container-remap-root: lower/ idmapped, its root's files the user's
//!   upper/ work/         the overlay's writable layer (upper belongs to the user)
//!   rootfs/              overlay of upper on lower, nosuid,nodev: the container's /
//!   devices/N            device nodes staged for runc to bind into the container's /dev
//!   config.json          written by the caller (spec::write_spec)
//! ```
//!
//! Everything lives in the mount namespace of the caller, which must be private
//! ([`enter_private_mount_namespace`]): when the last process in it exits, the mounts, the loop
//! device (autoclear) and the in-memory files disappear with it. [`Rootfs::teardown`] does the
//! same eagerly.

mod etc;
mod syscall;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{fstat, SFlag};
use oci_spec::runtime::{Mount, MountBuilder};

pub use syscall::{current_namespace, BindFlags, LinuxSyscall, LoopHandle, Syscall};

use crate::config::{Config, UserMountRules};
use crate::container::mounts::pyxis::MountExtras;
use crate::container::mounts::{self, BindMount, DeviceRequest, MountError};
use crate::container::user::{UserError, UserIdentity};
use crate::image::metadata::ImageMeta;
use crate::sys;
use crate::sys::in_root::{self, InRootError, TargetKind};
use crate::sys::mount::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

const LOWER: &str = "lower";
const LOWER_MAPPED: &str = "lower-mapped";
const UPPER: &str = "upper";
const WORK: &str = "work";
const ROOTFS: &str = "rootfs";
const DEVICES: &str = "devices";

/// Top-level directories of the rootfs that runc mounts onto for every container.
const RUNC_MOUNT_POINTS: &[&str] = &["proc", "dev", "sys"];

/// Where `--init` puts the init binary inside the container (runc's /dev is per container).
pub const INIT_PATH: &str = "/dev/init";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot create a private mount namespace: {0}")]
    Unshare(#[source] nix::Error),
    #[error("cannot make the mount namespace a slave of the host's: {0}")]
    MakeSlave(#[source] nix::Error),
    #[error("cannot identify the mount namespace: {0}")]
    Namespace(#[source] io::Error),
    #[error("refusing to assemble a container in {}: not in a private mount namespace", path.display())]
    NotPrivate { path: PathBuf },
    #[error("bundle directory {}: {reason}", path.display())]
    BadBundleDir { path: PathBuf, reason: String },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {what} on {}: {source}", target.display())]
    Mount {
        what: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot bind a mount onto {} with its flags: {source}", path.display())]
    MountFlags {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot change the owner of {}: {source}", path.display())]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot show the image's files as owned by the remapped root (idmapped mount of {}): {source}; this kernel or filesystem does not support idmapped mounts, run without --container-remap-root", path.display())]
    Idmap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach image {} to a loop device: {source}", path.display())]
    Loop {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read host file {}: {source}", path.display())]
    HostFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount source {}: {source}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Source path {} is not a device file (not a character or block device)", path.display())]
    NotADevice { path: PathBuf },
    #[error("init binary {}: {source}", path.display())]
    Init {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Mounts(#[from] MountError),
    #[error(transparent)]
    InRoot(#[from] InRootError),
    #[error(transparent)]
    User(UserError),
    #[error("cannot unmount {}: {source}", path.display())]
    Umount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl From<UserError> for BundleError {
    fn from(e: UserError) -> BundleError {
        match e {
            UserError::Access { path, source } => BundleError::Source { path, source },
            other => BundleError::User(other),
        }
    }
}

/// What a container is made of.
#[derive(Debug, Clone)]
pub struct ContainerRequest {
    /// A squashfs built by egret (the only kind of file root loop-mounts).
    pub image_file: PathBuf,
    pub meta: ImageMeta,
    pub user: UserIdentity,
    /// The user's bind mounts: sources opened as the user, destinations checked against the
    /// site's deny lists.
    pub mounts: Vec<BindMount>,
    /// pyxis flags of `mounts`, by position (missing: the defaults).
    pub mount_extras: Vec<crate::container::mounts::pyxis::MountExtras>,
    /// The user's devices (opened as the user).
    pub devices: Vec<DeviceRequest>,
    /// Read-only container root (applied per container by runc, see `spec`).
    pub readonly: bool,
    /// Provide the init binary at [`INIT_PATH`].
    pub init: bool,
    /// Trusted bind mounts added by egret itself (e.g. the batch script): opened as root, no
    /// deny lists.
    pub extra_binds: Vec<BindMount>,
    /// A host directory (root-owned, on disk) holding the overlay's `upper`/`work` so that the
    /// container's changes outlive this bundle (named containers). None: in-memory.
    pub persistent: Option<PathBuf>,
    /// The image's files owned by uid/gid 0 are shown as the user's (an idmapped mount of the
    /// image), so that `--container-remap-root` is a root that owns the image, as with pyxis.
    pub image_owned_by_user: bool,
}

/// `c` or `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    Char,
    Block,
}

/// An allow rule for the device cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: i64,
    pub minor: i64,
    pub access: String,
}

/// An assembled root filesystem and what the container spec needs to know about it.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub bundle_dir: PathBuf,
    /// Absolute path of the container's `/`.
    pub rootfs: PathBuf,
    /// Device cgroup allow rules for the devices made available.
    pub device_rules: Vec<DeviceRule>,
    /// Mounts runc must make inside the container (devices in its /dev, the init binary).
    pub spec_mounts: Vec<Mount>,
    /// Bind mounts made into the rootfs (site, egret's own and the user's), with the container
    /// path each resolved to.
    pub binds: Vec<BindMount>,
    pub readonly: bool,
    /// The init binary is available at [`INIT_PATH`].
    pub init: bool,
    /// The image's root-owned files are shown as the user's (see [`ContainerRequest`]).
    pub image_owned_by_user: bool,
    /// Things the user should hear about that did not stop the container.
    pub warnings: Vec<String>,
    /// Mount points, in the order they were mounted.
    mounted: Vec<PathBuf>,
}

/// What another launcher needs to run containers on an assembled rootfs it did not build
/// (a named container joined by a second step, see `launcher::named`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    pub rootfs: PathBuf,
    pub device_rules: Vec<DeviceRule>,
    pub spec_mounts: Vec<Mount>,
    pub readonly: bool,
    pub init: bool,
    pub has_bind_mounts: bool,
    #[serde(default)]
    pub image_owned_by_user: bool,
}

impl Rootfs {
    pub fn attach_info(&self) -> AttachInfo {
        AttachInfo {
            rootfs: self.rootfs.clone(),
            device_rules: self.device_rules.clone(),
            spec_mounts: self.spec_mounts.clone(),
            readonly: self.readonly,
            init: self.init,
            has_bind_mounts: self.has_bind_mounts(),
            image_owned_by_user: self.image_owned_by_user,
        }
    }

    /// The rootfs another launcher assembled, used from `bundle_dir` (this launcher's own
    /// directory for its tasks' bundles). Tearing it down unmounts nothing: it is not ours.
    pub fn attached(info: &AttachInfo, bundle_dir: PathBuf) -> Rootfs {
        // Only whether there are bind mounts matters here (hooks.d `hasBindMounts`).
        let binds = if info.has_bind_mounts {
            vec![BindMount {
                source: info.rootfs.clone(),
                destination: PathBuf::from("/"),
                readonly: true,
            }]
        } else {
            Vec::new()
        };
        Rootfs {
            bundle_dir,
            rootfs: info.rootfs.clone(),
            device_rules: info.device_rules.clone(),
            spec_mounts: info.spec_mounts.clone(),
            binds,
            readonly: info.readonly,
            init: info.init,
            image_owned_by_user: info.image_owned_by_user,
            warnings: Vec::new(),
            mounted: Vec::new(),
        }
    }
}

/// Moves the calling thread into a new mount namespace in which host mount events still arrive
/// but none of ours leave. Everything assembled afterwards disappears with the last process in
/// the namespace.
///
/// Call it in a single-threaded process (then the whole process moves), or on a thread dedicated
/// to the container: threads and processes it starts afterwards inherit the namespace, the
/// process's other threads do not.
pub fn enter_private_mount_namespace() -> Result<(), BundleError> {
    // A mount table of our own.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(BundleError::Unshare)?;
    // Receive the host's mount events (automounts), never send ours.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(BundleError::MakeSlave)?;
    // prepare_rootfs refuses to mount anywhere else.
    syscall::remember_private_namespace().map_err(BundleError::Namespace)
}

/// Assembles the container root filesystem in `bundle_dir` (see the module docs). The caller
/// must be in a private mount namespace.
pub fn prepare_rootfs(
    cfg: &Config,
    bundle_dir: &Path,
    req: &ContainerRequest,
) -> Result<Rootfs, BundleError> {
    prepare_rootfs_with(&LinuxSyscall, cfg, Path::new("/etc"), bundle_dir, req)
}

/// [`prepare_rootfs`] with the privileged operations and the host's `/etc` supplied.
pub fn prepare_rootfs_with(
    sys: &dyn Syscall,
    cfg: &Config,
    host_etc: &Path,
    bundle_dir: &Path,
    req: &ContainerRequest,
) -> Result<Rootfs, BundleError> {
    check_bundle_dir(bundle_dir)?;
    let not_private = || BundleError::NotPrivate {
        path: bundle_dir.to_path_buf(),
    };
    if !sys.in_private_namespace().map_err(|_| not_private())? {
        return Err(not_private());
    }
    mkdir(bundle_dir, true)?;
    let fstype = cfg.ram_filesystem_type.as_str();
    // In-memory bundle: the writable layer and staging vanish with the namespace.
    mount(
        sys,
        fstype,
        Some(Path::new(fstype)),
        bundle_dir,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    let mut rootfs = Rootfs {
        bundle_dir: bundle_dir.to_path_buf(),
        rootfs: bundle_dir.join(ROOTFS),
        device_rules: Vec::new(),
        spec_mounts: Vec::new(),
        binds: Vec::new(),
        readonly: req.readonly,
        init: false,
        image_owned_by_user: req.image_owned_by_user,
        warnings: Vec::new(),
        mounted: vec![bundle_dir.to_path_buf()],
    };
    match assemble(sys, cfg, host_etc, req, &mut rootfs) {
        Ok(()) => Ok(rootfs),
        Err(e) => {
            let _ = rootfs.teardown_with(sys);
            Err(e)
        }
    }
}

/// The overlay options are a comma- and colon-separated list.
fn check_bundle_dir(dir: &Path) -> Result<(), BundleError> {
    let bad = |reason: &str| BundleError::BadBundleDir {
        path: dir.to_path_buf(),
        reason: reason.into(),
    };
    if !dir.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    let s = dir.to_str().ok_or_else(|| bad("must be valid UTF-8"))?;
    if s.contains([',', ':', '\\']) || s.chars().any(char::is_control) {
        return Err(bad("must not contain ',', ':', '\\' or control characters"));
    }
    Ok(())
}

fn assemble(
    sys: &dyn Syscall,
    cfg: &Config,
    host_etc: &Path,
    req: &ContainerRequest,
    rootfs: &mut Rootfs,
) -> Result<(), BundleError> {
    let b = rootfs.bundle_dir.clone();
    let layers = req.persistent.clone().unwrap_or_else(|| b.clone());
    let (lower, upper, work, root) = (
        b.join(LOWER),
        layers.join(UPPER),
        layers.join(WORK),
        rootfs.rootfs.clone(),
    );

    // One-way propagation for everything below, even in a namespace that was made shared.
    mount(
        sys,
        "bundle propagation",
        None,
        &b,
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;

    // Overlay directories. The upper layer's top is the container's `/`: root's and sticky
    // (1777), so users create files anywhere the image lets them, but no task can rename or
    // replace the image's own top-level entries (`/etc`, `/dev`, `/proc`, ...) under runc while
    // it sets up the step's next container (the precondition of runc's 2025 mount races).
    for d in [&lower, &upper, &work, &root] {
        mkdir(d, false)?;
    }
    sys.chown(&upper, 0, 0)
        .map_err(|source| BundleError::Chown {
            path: upper.clone(),
            source,
        })?;
    std::fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(|source| BundleError::Chown {
            path: upper.clone(),
            source,
        })?;

    // The image, read-only; nosuid,nodev because squashfs keeps setuid bits and device nodes.
    let image = File::open(&req.image_file).map_err(|source| BundleError::Image {
        path: req.image_file.clone(),
        source,
    })?;
    let lo = sys
        .attach_loop(&image, &req.image_file)
        .map_err(|source| BundleError::Loop {
            path: req.image_file.clone(),
            source,
        })?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        sys,
        "image",
        Some(&lo.device),
        &lower,
        Some("squashfs"),
        ro,
        None,
    )?;
    rootfs.mounted.push(lower.clone());
    // The mount holds the loop device now; autoclear detaches it when the mount goes.
    drop(lo);

    // Remapped root owns the image, as pyxis's does: the overlay's lower layer is an idmapped
    // view of the image in which owner 0 is the user. Root never mounts the user's own data
    // this way; the image stays read-only and the shared squashfs unchanged.
    let owner = req
        .image_owned_by_user
        .then_some((req.user.uid, req.user.gid));
    let lower_view = match owner {
        None => lower.clone(),
        Some((uid, gid)) => {
            let mapped = b.join(LOWER_MAPPED);
            mkdir(&mapped, false)?;
            sys.bind_idmapped(&lower, &mapped, uid, gid)
                .map_err(|source| BundleError::Idmap {
                    path: req.image_file.clone(),
                    source,
                })?;
            rootfs.mounted.push(mapped.clone());
            // The image's /proc, /dev and /sys are the user's in that view, and the top is
            // sticky: left so, the step's tasks could rename them while runc mounts onto them
            // for the next container. Root-owned directories in the upper layer take their
            // place (a merged directory has the upper one's owner).
            for d in RUNC_MOUNT_POINTS {
                mkdir(&upper.join(d), false)?;
            }
            mapped
        }
    };

    // The container's /: writes land in the in-memory upper layer. nosuid,nodev from the start,
    // so no setuid bit or device node of the image is ever effective.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower_view.display(),
        upper.display(),
        work.display()
    );
    // The overlay writes its upper layer with its mounter's credentials: a mounter without
    // CAP_SYS_RESOURCE keeps the user's writes within quotas and out of reserved blocks.
    sys::creds::without_resource_override(|| {
        mount(
            sys,
            "overlay",
            Some(Path::new("overlay")),
            &root,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&opts),
        )
    })
    .map_err(BundleError::Namespace)??;
    rootfs.mounted.push(root.clone());

    // Host identity and name resolution, written by root inside the rootfs.
    etc::install(&root, host_etc, &req.user, owner)?;

    // Trusted mounts first (the site's, then egret's own), then the user's, which may cover them.
    // Staging for what runc binds into the container's /dev (devices, mounts below /dev).
    mkdir(&b.join(DEVICES), false)?;
    for m in &cfg.site_mounts {
        let bm = BindMount {
            source: m.source.clone(),
            destination: m.destination.clone(),
            readonly: m.flags.readonly,
        };
        match mounts::is_under_dev(&bm.destination) {
            true => bind_into_dev(sys, rootfs, &bm, None)?,
            false => bind(sys, rootfs, &bm, None)?,
        }
    }
    for bm in &req.extra_binds {
        bind(sys, rootfs, bm, None)?;
    }
    for (i, bm) in req.mounts.iter().enumerate() {
        mounts::check_destination(&bm.destination, &cfg.user_mounts)?;
        if mounts::is_under_dev(&bm.destination) {
            bind_into_dev(sys, rootfs, bm, Some(&req.user))?;
            continue;
        }
        let extras = req.mount_extras.get(i).copied().unwrap_or_default();
        bind_with(sys, rootfs, bm, Some((&req.user, &cfg.user_mounts)), extras)?;
    }

    // Devices: the site's, then the user's; the site's access rights win for the same node.
    let site: Vec<DeviceRequest> = cfg
        .site_devices
        .iter()
        .map(DeviceRequest::from_site)
        .collect();
    for d in &site {
        add_device(sys, rootfs, d, None)?;
    }
    for d in &req.devices {
        if site
            .iter()
            .any(|s| mounts::normalize(&s.host) == mounts::normalize(&d.host))
        {
            rootfs.warnings.push(format!(
                "--device {}: already provided by the site configuration, its access rights apply",
                d.host.display()
            ));
            continue;
        }
        add_device(sys, rootfs, d, Some(&req.user))?;
    }

    // The init binary (trusted, root-owned), bound by runc into the container's own /dev.
    if req.init {
        let meta = std::fs::metadata(&cfg.init_path).map_err(|source| BundleError::Init {
            path: cfg.init_path.clone(),
            source,
        })?;
        if !meta.is_file() {
            let source = io::Error::other("not a regular file");
            return Err(BundleError::Init {
                path: cfg.init_path.clone(),
                source,
            });
        }
        rootfs.spec_mounts.push(bind_spec_mount(
            &cfg.init_path,
            Path::new(INIT_PATH),
            &["ro", "nosuid", "nodev"],
        ));
        rootfs.init = true;
    }
    Ok(())
}

/// One bind mount into the rootfs. `user` is `None` for trusted mounts; for a user's mount it
/// brings the identity the source is opened with and the deny lists the resolved destination is
/// checked against.
fn bind(
    sys: &dyn Syscall,
    rootfs: &mut Rootfs,
    m: &BindMount,
    user: Option<(&UserIdentity, &UserMountRules)>,
) -> Result<(), BundleError> {
    bind_with(sys, rootfs, m, user, MountExtras::default())
}

/// [`bind`] with pyxis's flags: recursive or not, unbindable, noexec, what to create.
fn bind_with(
    sys: &dyn Syscall,
    rootfs: &mut Rootfs,
    m: &BindMount,
    user: Option<(&UserIdentity, &UserMountRules)>,
    extras: MountExtras,
) -> Result<(), BundleError> {
    // The source, opened with the rights of whoever asked for it; must exist.
    let src = sys.open_as(user.map(|u| u.0), &m.source)?;
    let st = fstat(src.as_raw_fd()).map_err(|e| BundleError::Source {
        path: m.source.clone(),
        source: e.into(),
    })?;
    let kind = extras.create.unwrap_or(
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
            TargetKind::Dir
        } else {
            TargetKind::File
        },
    );
    // The destination as the container will see it: image symlinks resolved inside the rootfs,
    // then checked again, so a link cannot lead a user mount onto a denied path.
    let rel = in_root::resolve_in_root(&rootfs.rootfs, &m.destination)?;
    let resolved = Path::new("/").join(&rel);
    if let Some((_, rules)) = user {
        mounts::check_destination(&resolved, rules)?;
    }
    let target = in_root::open_in_root(&rootfs.rootfs, &rel, kind)?;
    // A bind keeps the source's flags: ours are added on top, on every mount below it too,
    // before the copy is attached (no window without them, no path resolved again).
    let mut attrs = MOUNT_ATTR_NOSUID;
    if user.is_some() {
        attrs |= MOUNT_ATTR_NODEV;
    }
    if m.readonly {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    if extras.noexec {
        attrs |= MOUNT_ATTR_NOEXEC;
    }
    let path = rootfs.rootfs.join(&rel);
    let flags = BindFlags {
        recursive: extras.recursive,
        attrs,
        unbindable: extras.unbindable,
    };
    sys.bind_fd(&src, &target, &path, flags)
        .map_err(|source| BundleError::MountFlags {
            path: resolved.clone(),
            source,
        })?;
    rootfs.mounted.push(path);
    if extras.unbindable {
        // runc makes every mount of the rootfs a slave before the container starts, which
        // clears the flag: runc binds the source once more on top, unbindable, after that.
        let staged = next_staged_mount(rootfs);
        let dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
        let mut ms = MsFlags::MS_BIND;
        if extras.recursive {
            ms |= MsFlags::MS_REC;
        }
        stage(sys, rootfs, &src, &m.source, &staged, dir, ms)?;
        let mut options = vec!["nosuid", "unbindable"];
        for (on, opt) in [
            (extras.recursive, "rbind"),
            (user.is_some(), "nodev"),
            (m.readonly, "ro"),
            (extras.noexec, "noexec"),
        ] {
            if on {
                options.push(opt);
            }
        }
        rootfs
            .spec_mounts
            .push(bind_spec_mount(&staged, &resolved, &options));
    }
    rootfs.binds.push(BindMount {
        source: m.source.clone(),
        destination: resolved,
        readonly: m.readonly,
    });
    Ok(())
}

/// A device node made available at `d.container`: the node (opened as `user`, or root for the
/// site's) is bound onto a staging file in the bundle, which runc binds into the container's
/// /dev; the allow rule goes to the device cgroup.
fn add_device(
    sys: &dyn Syscall,
    rootfs: &mut Rootfs,
    d: &DeviceRequest,
    user: Option<&UserIdentity>,
) -> Result<(), BundleError> {
    let (node, st) = open_source(sys, user, &d.host)?;
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFCHR => DeviceKind::Char,
        SFlag::S_IFBLK => DeviceKind::Block,
        _ => {
            return Err(BundleError::NotADevice {
                path: d.host.clone(),
            })
        }
    };
    // Staged under a name of our own: nothing can swap the node between now and runc's bind.
    let staged = rootfs
        .bundle_dir
        .join(DEVICES)
        .join(rootfs.device_rules.len().to_string());
    stage(
        sys,
        rootfs,
        &node,
        &d.host,
        &staged,
        false,
        MsFlags::MS_BIND,
    )?;
    rootfs.spec_mounts.push(bind_spec_mount(
        &staged,
        &d.container,
        &["nosuid", "noexec"],
    ));
    rootfs.device_rules.push(DeviceRule {
        kind,
        major: nix::sys::stat::major(st.st_rdev) as i64,
        minor: nix::sys::stat::minor(st.st_rdev) as i64,
        access: d.access.clone(),
    });
    Ok(())
}

/// A mount below the container's `/dev`, which runc makes (a tmpfs) after egret's mounts: the
/// source (opened as `user`, or root for the site's) is bound onto a staging entry of the
/// bundle, which runc binds at the destination. A device node becomes a device, with its rule
/// in the device cgroup (read-write, read-only for a `readonly` mount), as `--device` does.
fn bind_into_dev(
    sys: &dyn Syscall,
    rootfs: &mut Rootfs,
    m: &BindMount,
    user: Option<&UserIdentity>,
) -> Result<(), BundleError> {
    let (src, st) = open_source(sys, user, &m.source)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK {
        drop(src);
        let device = DeviceRequest {
            host: m.source.clone(),
            container: m.destination.clone(),
            access: if m.readonly { "r" } else { "rw" }.to_string(),
        };
        return add_device(sys, rootfs, &device, user);
    }
    // Staged under a name of our own: nothing can swap the source between now and runc's bind.
    let staged = next_staged_mount(rootfs);
    let dir = kind == SFlag::S_IFDIR;
    stage(
        sys,
        rootfs,
        &src,
        &m.source,
        &staged,
        dir,
        MsFlags::MS_BIND | MsFlags::MS_REC,
    )?;
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if m.readonly {
        options.push("ro");
    }
    rootfs
        .spec_mounts
        .push(bind_spec_mount(&staged, &m.destination, &options));
    Ok(())
}

/// `path`, opened with the rights of `user` (root's for `None`), and what it is.
fn open_source(
    sys: &dyn Syscall,
    user: Option<&UserIdentity>,
    path: &Path,
) -> Result<(OwnedFd, nix::sys::stat::FileStat), BundleError> {
    let fd = sys.open_as(user, path)?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| BundleError::Source {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok((fd, st))
}

/// A fresh staging entry of the bundle for a mount runc makes (one per spec mount).
fn next_staged_mount(rootfs: &Rootfs) -> PathBuf {
    rootfs
        .bundle_dir
        .join(DEVICES)
        .join(format!("mount-{}", rootfs.spec_mounts.len()))
}

/// Binds the open `source` (named `name` in errors) onto `staged`, a new directory (`dir`) or
/// file of the bundle, for runc to bind into the container.
fn stage(
    sys: &dyn Syscall,
    rootfs: &mut Rootfs,
    source: &OwnedFd,
    name: &Path,
    staged: &Path,
    dir: bool,
    flags: MsFlags,
) -> Result<(), BundleError> {
    if dir {
        mkdir(staged, false)?;
    } else {
        File::create(staged).map_err(|source| BundleError::CreateDir {
            path: staged.to_path_buf(),
            source,
        })?;
    }
    mount(
        sys,
        &name.display().to_string(),
        Some(&sys::fs::proc_path(source)),
        staged,
        None,
        flags,
        None,
    )?;
    rootfs.mounted.push(staged.to_path_buf());
    Ok(())
}

/// A tmpfs runc mounts in the container (`--container-mounts=tmpfs:DST[:FLAGS]`), always
/// `nosuid,nodev`.
pub fn tmpfs_spec_mount(destination: &Path, options: &[String]) -> Mount {
    let mut all = vec!["nosuid".to_string(), "nodev".to_string()];
    all.extend(options.iter().cloned());
    MountBuilder::default()
        .destination(destination)
        .typ("tmpfs")
        .source("tmpfs")
        .options(all)
        .build()
        .expect("all fields set")
}

fn bind_spec_mount(source: &Path, destination: &Path, extra: &[&str]) -> Mount {
    let mut options = vec!["bind".to_string()];
    options.extend(extra.iter().map(|s| s.to_string()));
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .expect("all fields set")
}

fn mkdir(path: &Path, parents: bool) -> Result<(), BundleError> {
    use std::os::unix::fs::DirBuilderExt;
    let r = std::fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o755)
        .create(path);
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !parents => Ok(()),
        other => other.map_err(|source| BundleError::CreateDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn mount(
    sys: &dyn Syscall,
    what: &str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), BundleError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|source| BundleError::Mount {
            what: what.to_string(),
            target: target.to_path_buf(),
            source,
        })
}

impl Rootfs {
    /// An empty description of a rootfs at `bundle_dir/rootfs`, for unit tests elsewhere.
    #[cfg(test)]
    pub(crate) fn for_tests(bundle_dir: &Path) -> Rootfs {
        Rootfs {
            bundle_dir: bundle_dir.to_path_buf(),
            rootfs: bundle_dir.join(ROOTFS),
            device_rules: Vec::new(),
            spec_mounts: Vec::new(),
            binds: Vec::new(),
            readonly: false,
            init: false,
            image_owned_by_user: false,
            warnings: Vec::new(),
            mounted: Vec::new(),
        }
    }

    /// Whether bind mounts were requested (hooks.d `hasBindMounts`).
    pub fn has_bind_mounts(&self) -> bool {
        !self.binds.is_empty()
    }

    /// Unmounts everything, lazily and in reverse order (the namespace's end does the same).
    pub fn teardown(&self) -> Result<(), BundleError> {
        self.teardown_with(&LinuxSyscall)
    }

    pub fn teardown_with(&self, sys: &dyn Syscall) -> Result<(), BundleError> {
        let mut first = None;
        for path in self.mounted.iter().rev() {
            match sys.umount(path, MntFlags::MNT_DETACH) {
                // Already gone with a parent.
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(source) => {
                    first.get_or_insert(BundleError::Umount {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
