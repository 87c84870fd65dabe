//! From the step's options to what every task's container is built from, once per step: the
//! checks (trust, MPI hook, mounts, devices, save destination), then the image (imported only
//! once the options are known good), then the rootfs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::security::SecurityError;
use crate::config::Config;
use crate::container::mounts::{self, BindMount};
use crate::container::rootfs::{self, BundleError, ContainerRequest, Rootfs};
use crate::container::user::{UserError, UserIdentity};
use crate::hooks::mpi::MpiRequestError;
use crate::hooks::schema::HooksError;
use crate::image::metadata::ImageMeta;

use crate::sys::in_root;

use super::named::{self, NamedError};
use super::named_step::NamedStep;
use super::plan::{self, MountPlan, PlanError};
use super::protocol::StepRequest;
use super::save::{self, SaveError};
use super::step_image::{self, StepImageError};
use super::task_progress::TaskProgress;
use super::unshare::Holder;

/// Why the step cannot be prepared; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Untrusted(#[from] SecurityError),
    #[error("{0}")]
    HooksDir(#[from] HooksError),
    #[error("{0}")]
    MpiHook(#[from] MpiRequestError),
    #[error("{0}")]
    User(#[from] UserError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Save(#[from] SaveError),
    /// pyxis's words, which scripts may grep.
    #[error("--container-mounts: source path does not exist: {}", path.display())]
    MissingSource { path: PathBuf },
    #[error("no --container-image")]
    NoImage,
    #[error("{0}")]
    Named(#[from] NamedError),
    #[error("{0}")]
    Image(#[from] StepImageError),
    #[error("{0}")]
    Rootfs(#[from] BundleError),
    #[error("{0}")]
    AllRoot(#[from] crate::image::all_root::AllRootError),
    #[error("--container-remap-root: {} (mode {mode:04o}) is not searchable by users, so runc in the user namespace cannot reach the bundle below it; the admin must make it 0711 or 0755", path.display())]
    BundleNotSearchable { path: PathBuf, mode: u32 },
    #[error("{}: {source}", path.display())]
    JoinBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything prepared once per step that each task's container is built from.
pub struct PreparedStep {
    pub cfg: Config,
    pub req: StepRequest,
    pub user: UserIdentity,
    pub meta: ImageMeta,
    pub rootfs: Rootfs,
    /// Marks the named container as running while this launcher lives.
    pub _named_hold: Option<fs::File>,
    /// `--container-unshare`: the process holding the step's namespaces.
    pub unshare: Option<Holder>,
}

/// Imports the image and assembles the rootfs.
pub fn prepare(
    cfg: &Config,
    req: &StepRequest,
    progress: &TaskProgress,
    named: Option<NamedStep>,
) -> Result<PreparedStep, PrepareError> {
    check_trust(cfg, req)?;
    let opts = &req.options;
    if let Some(mpi) = &opts.mpi_hook {
        check_mpi_hook(cfg, mpi)?;
    }
    let user = UserIdentity::from_uid(req.uid, req.gid)?;
    // A join uses the running step's rootfs as it is: this step's mounts are not made (nor
    // checked: they are ignored, and said to be).
    if let Some(n) = &named {
        if let named::Plan::Join(running) = &n.plan {
            return join_prepared(cfg, req, user, n, running);
        }
    }
    let mut mount_plan = plan_user_mounts(cfg, req)?;
    check_sources(&user, &mount_plan.binds)?;
    if let Some(destination) = plan::mounted_home(opts, &user.home) {
        mount_plan.binds.push(BindMount {
            source: user.home.clone(),
            destination,
            readonly: false,
        });
    }
    let devices = plan::plan_devices(opts.devices.as_deref())?;
    if let Some(value) = plan::save_here(opts, req.node_id) {
        let dest = save::destination(value, &plan::job_cwd(&req.job_env))?;
        save::check_writable(&dest, &user)?;
    }
    // The options are all checked: only now is the image imported (minutes, maybe), so that a
    // refused mount or device is the step's one line, not the last line after an import.
    let resolve = |image: &str| {
        step_image::resolve(cfg, req, &user, image, progress).map_err(PrepareError::from)
    };
    let (image_file, meta, persistent) = match named.as_ref().filter(|n| !n.unnamed) {
        Some(n) => {
            let (f, m, dir) =
                named::open_or_create(&n.dir, req.job_id, &n.name, opts.image.as_deref(), resolve)?;
            (f, m, Some(dir))
        }
        None => {
            let image = opts.image.as_deref().ok_or(PrepareError::NoImage)?;
            let (f, m) = resolve(image)?;
            (f, m, None)
        }
    };
    // Remapped root owns all of the image: its all-root copy, shown as the user's (see rootfs).
    let remap = opts.remap_root == Some(true);
    if remap {
        check_searchable(&cfg.oci_bundle_dir)?;
    }
    let image_file = match remap {
        true => {
            use crate::image::progress::Progress;
            crate::image::all_root::ensure(cfg, &image_file, &|m: &str| progress.phase(m))?
        }
        false => image_file,
    };
    let site_cfg = Config {
        site_mounts: mount_plan.site_mounts,
        ..cfg.clone()
    };
    let creq = ContainerRequest {
        image_file,
        meta: meta.clone(),
        user: user.clone(),
        mounts: mount_plan.binds,
        mount_extras: mount_plan.extras,
        devices,
        readonly: opts.writable == Some(false),
        init: opts.init,
        extra_binds: batch_script_bind(req),
        persistent,
        image_owned_by_user: remap,
    };
    let mut rootfs = rootfs::prepare_rootfs(&site_cfg, &cfg.oci_bundle_dir, &creq)?;
    add_tmpfs_mounts(cfg, &mut rootfs, mount_plan.tmpfs)?;
    let named_hold = match named {
        Some(n) => Some(record_running(n, &rootfs, &meta)?),
        None => None,
    };
    Ok(PreparedStep {
        cfg: cfg.clone(),
        req: req.clone(),
        user,
        meta,
        rootfs,
        _named_hold: named_hold,
        unshare: None,
    })
}

/// Nothing runs as root from files someone other than root could have changed.
fn check_trust(cfg: &Config, req: &StepRequest) -> Result<(), PrepareError> {
    let mut me: Vec<PathBuf> = std::env::current_exe().into_iter().collect();
    // The programs of the image hand-over between nodes, when it may happen.
    if super::fanout::may_apply(cfg, req) {
        me.extend(super::fanout::Fanout::programs(cfg));
    }
    Ok(crate::config::security::enforce(cfg, &req.config, &me)?)
}

/// `--mpi-hook[=TYPE]` that no hook in `hooksDir` serves is refused (once per node, before any
/// container starts) instead of running without the host's MPI.
fn check_mpi_hook(cfg: &Config, requested: &str) -> Result<(), PrepareError> {
    let hooks = match cfg.hooks_dir.as_deref() {
        Some(dir) if dir.exists() => crate::hooks::schema::load_dir(dir)?,
        _ => Vec::new(),
    };
    Ok(crate::hooks::mpi::check_mpi_request(
        &hooks,
        requested,
        cfg.default_mpi_type.as_deref(),
        "--mpi-hook",
    )?)
}

/// `--container-mounts`, parsed (relative sources from the job's directory) and checked.
fn plan_user_mounts(cfg: &Config, req: &StepRequest) -> Result<MountPlan, PrepareError> {
    let site_mounts = cfg.site_mounts.clone();
    let Some(spec) = &req.options.mounts else {
        return Ok(MountPlan {
            site_mounts,
            ..MountPlan::default()
        });
    };
    let entries =
        mounts::pyxis::parse(spec, &plan::job_cwd(&req.job_env)).map_err(PlanError::Mounts)?;
    Ok(plan::plan_mounts(entries, &cfg.user_mounts, site_mounts)?)
}

/// A `--container-mounts` source missing on this node is the step's one line, before the image
/// is imported (the bind would fail later anyway). Looked up as the user, as the bind opens it:
/// other errors (a source the user may not reach) are left to the bind, which names them.
fn check_sources(user: &UserIdentity, binds: &[BindMount]) -> Result<(), PrepareError> {
    for b in binds {
        if let Err(UserError::Access { source, .. }) = user.open_path(&b.source) {
            if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
                return Err(PrepareError::MissingSource {
                    path: b.source.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The batch script (batch step only), read-only at its own path.
fn batch_script_bind(req: &StepRequest) -> Vec<BindMount> {
    req.batch_script
        .iter()
        .map(|script| BindMount {
            source: script.clone(),
            destination: script.clone(),
            readonly: true,
        })
        .collect()
}

/// tmpfs entries: made by runc in each container, at the destination resolved inside the
/// rootfs (and checked again there against the site's deny lists).
fn add_tmpfs_mounts(
    cfg: &Config,
    rootfs: &mut Rootfs,
    tmpfs: Vec<(PathBuf, Vec<String>)>,
) -> Result<(), PrepareError> {
    for (destination, options) in tmpfs {
        let rel =
            in_root::resolve_in_root(&rootfs.rootfs, &destination).map_err(PlanError::InRoot)?;
        let resolved = Path::new("/").join(rel);
        mounts::check_destination(&resolved, &cfg.user_mounts).map_err(PlanError::Mounts)?;
        rootfs
            .spec_mounts
            .push(rootfs::tmpfs_spec_mount(&resolved, &options));
    }
    Ok(())
}

/// Records this launcher as running the named container (whose plan lock is then released).
fn record_running(
    n: NamedStep,
    rootfs: &Rootfs,
    meta: &ImageMeta,
) -> Result<fs::File, PrepareError> {
    let record = named::Running {
        meta: Some(Box::new(meta.clone())),
        mount_ns: None,
        pids: Vec::new(),
        attach: rootfs.attach_info(),
    };
    let held = named::hold(&n.dir, record)?;
    drop(n.plan_lock);
    Ok(held)
}

/// What a joining step says about its `--container-mounts` (pyxis says the same when it attaches
/// to a running container): the rootfs is the running step's, its mounts are made already, and
/// mounting more into it would change that step's files too.
pub const IGNORED_MOUNTS: &str =
    "ignoring --container-mounts when attaching to a running container";

/// A step joining a running named container: its tasks run on the rootfs the other step
/// assembled, with their bundles in a directory of their own on its bundle filesystem.
fn join_prepared(
    cfg: &Config,
    req: &StepRequest,
    user: UserIdentity,
    n: &NamedStep,
    running: &named::Running,
) -> Result<PreparedStep, PrepareError> {
    // An unnamed step's container has no origin.json; its record carries the metadata.
    let meta = match &running.meta {
        Some(m) => (**m).clone(),
        None => named::origin(&n.dir, &n.name)?.1,
    };
    let bundle_dir = cfg.oci_bundle_dir.join(format!(
        "join-{}.{}.{}",
        req.job_id, req.step_id, req.node_id
    ));
    fs::create_dir_all(&bundle_dir).map_err(|source| PrepareError::JoinBundle {
        path: bundle_dir.clone(),
        source,
    })?;
    let held = named::hold(&n.dir, running.clone())?;
    let mut rootfs = Rootfs::attached(&running.attach, bundle_dir);
    if req.options.mounts.is_some() {
        rootfs.warnings.push(IGNORED_MOUNTS.to_string());
    }
    Ok(PreparedStep {
        cfg: cfg.clone(),
        req: req.clone(),
        user,
        meta,
        rootfs,
        _named_hold: Some(held),
        unshare: None,
    })
}

/// runc starts a remapped root's container from inside its user namespace (as the user, for the
/// kernel): every directory above the bundle must let others search it.
fn check_searchable(bundle_dir: &Path) -> Result<(), PrepareError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in bundle_dir.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Err(PrepareError::BundleNotSearchable {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod searchable_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_parent_of_the_bundle_is_named() {
        let top = tempfile::tempdir().unwrap();
        let bundle = top.path().join("egret/bundle");
        fs::create_dir_all(&bundle).unwrap();
        fs::set_permissions(top.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_searchable(&bundle).is_ok());
        let private = top.path().join("egret");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        match check_searchable(&bundle) {
            Err(PrepareError::BundleNotSearchable { path, mode }) => {
                assert_eq!((path, mode), (private, 0o700));
            }
            other => panic!("{other:?}"),
        }
    }
}
