//! Named containers (`--container-name=NAME[:MODE]`): the writable layer of a container kept on
//! disk for the rest of the job, so later steps find the files earlier steps wrote.
//!
//! Layout: `containersDir/UID/JOB/NODE/NAME/{origin.json,upper,work,running.lock,running.json}`,
//! root-owned (the `upper` layer belongs to the user). `origin.json` remembers the image the
//! container was created from, so a later step can name the container without
//! `--container-image`. The job epilog removes `containersDir/UID/JOB`. NODE is the Slurm node
//! name: several slurmd may share a host (and its disk).
//!
//! A container is *running* while a step uses it: every launcher using it holds a shared flock
//! on `running.lock` and is listed in `running.json`. Two overlays must never share one upper
//! layer, so a step that finds the container running either joins it (enters the mount
//! namespace of a launcher already using it and runs its tasks, fresh containers, on the same
//! root filesystem: modes `auto`, `exec` and `no_exec`) or fails (`create`). pyxis's
//! `no_exec` starts a fresh container on the running one's files, never its namespaces; an
//! egret join is exactly that, so `no_exec` joins too.
//!
//! A step without `--container-name` is registered under the name `JOBID.STEPID` (the name
//! pyxis gives unnamed containers) while it runs, so `srun --overlap --container-name=J.S`
//! joins it; it never gets an `origin.json`, so nothing of it outlives the step.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::image::metadata::ImageMeta;

/// Why a named container cannot be used; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum NamedError {
    #[error(
        "--container-name={value}: use up to 64 letters, digits, '.', '_' or '-' for the name"
    )]
    BadName { value: String },
    #[error("--container-name={value}: the mode must be auto, create, exec or no_exec")]
    BadMode { value: String },
    #[error(
        "container '{name}' already exists (mode create); pick another name or drop ':create'"
    )]
    AlreadyExists { name: String },
    #[error("container '{name}' is not running (mode exec); start it in another step first")]
    NotRunning { name: String },
    #[error("no container named '{name}' in job {job}; create it with --container-image")]
    NoSuchContainer { name: String, job: u32 },
    #[error("container '{name}': its image was removed from the store; create it again under another name")]
    ImageRemoved { name: String },
    #[error("container '{name}': {source}")]
    OriginUnreadable {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("container '{name}': {}: {source}", path.display())]
    OriginCorrupt {
        name: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    RecordCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
}

/// `map_err` for an I/O error on `path`.
fn io_at(path: &Path) -> impl FnOnce(io::Error) -> NamedError + '_ {
    move |source| NamedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct Origin {
    image_file: PathBuf,
    meta: ImageMeta,
}

/// `--container-name=NAME:MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Join the running container, else reuse its saved state, else create it.
    Auto,
    /// Create it; fail if it exists.
    Create,
    /// Join the running container; fail if it does not run.
    Exec,
    /// Reuse the saved state or create it; while it runs, share its files (as a join does:
    /// egret never enters a running container's own namespaces).
    NoExec,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "" | "auto" => Some(Mode::Auto),
            "create" => Some(Mode::Create),
            "exec" => Some(Mode::Exec),
            "no_exec" => Some(Mode::NoExec),
            _ => None,
        }
    }
}

/// Splits `NAME[:MODE]`, checking both.
pub fn parse_name(value: &str) -> Result<(String, Mode), NamedError> {
    let (name, mode) = value.split_once(':').unwrap_or((value, ""));
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || name.starts_with('.')
    {
        return Err(NamedError::BadName {
            value: value.to_string(),
        });
    }
    let mode = Mode::parse(mode).ok_or_else(|| NamedError::BadMode {
        value: value.to_string(),
    })?;
    Ok((name.to_string(), mode))
}

/// What a step does with a named container.
#[derive(Debug)]
pub enum Plan {
    /// Use the saved state, or create it (the usual path through [`open_or_create`]).
    Own,
    /// Enter the mount namespace of launcher `pid`, which runs the container.
    Join(Running),
}

/// A launcher using a container, as `running.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub pids: Vec<i32>,
    pub attach: crate::container::rootfs::AttachInfo,
    /// The inode of the mount namespace the holders share (set by [`hold`]): a join enters a
    /// namespace only if it is this one, whatever process now has a recorded number.
    #[serde(default)]
    pub mount_ns: Option<u64>,
    /// The image's metadata, for a joiner of a container without `origin.json` (an unnamed
    /// step's, see [`step_name`]).
    #[serde(default)]
    pub meta: Option<Box<ImageMeta>>,
}

/// The name an unnamed step's container is known by while it runs: `JOBID.STEPID`, as pyxis
/// names it.
pub fn step_name(job: u32, step: u32) -> String {
    format!("{job}.{step}")
}

/// Whether `name` is the [`step_name`] of a step of `job`: such a container lives in the job's
/// directory whatever the site's scope (unnamed steps are never global).
pub fn is_step_of(name: &str, job: u32) -> bool {
    name.split_once('.').is_some_and(|(j, s)| {
        j == job.to_string() && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The directory of named container `name` of a job on node `node`; with the site's
/// `container_scope=global`, of the user on that node, whatever the job.
pub fn container_dir(cfg: &Config, uid: u32, job: Option<u32>, node: &str, name: &str) -> PathBuf {
    let scope = match job {
        Some(job) => job_dir(cfg, uid, job),
        None => cfg.containers_dir.join(uid.to_string()).join("global"),
    };
    scope.join(node).join(name)
}

/// Serializes the steps deciding about one container: held from [`plan`] until [`hold`] has
/// recorded the decision, so two steps never both assemble an overlay on the same upper layer.
pub fn lock_plan(dir: &Path) -> Result<File, NamedError> {
    create_private_dir(dir)?;
    let path = dir.join("plan.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_at(&path))?;
    f.lock().map_err(io_at(&path))?;
    Ok(f)
}

/// Decides, from `mode` and the container's state, whether this step owns or joins it.
pub fn plan(dir: &Path, name: &str, mode: Mode) -> Result<Plan, NamedError> {
    let exists = dir.join("origin.json").exists();
    let running = running(dir)?;
    let name = name.to_string();
    match (mode, running, exists) {
        (Mode::Create, _, true) => Err(NamedError::AlreadyExists { name }),
        (Mode::Exec, None, _) => Err(NamedError::NotRunning { name }),
        (Mode::Auto | Mode::Exec | Mode::NoExec, Some(r), _) => Ok(Plan::Join(r)),
        _ => Ok(Plan::Own),
    }
}

/// The record of the launchers using the container, when one is.
fn running(dir: &Path) -> Result<Option<Running>, NamedError> {
    let lock_path = dir.join("running.lock");
    let lock = match File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&lock_path)(e)),
    };
    match lock.try_lock() {
        // Nobody holds it: not running (the record, if any, is stale).
        Ok(()) => return Ok(None),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
    }
    let path = dir.join("running.json");
    let text = fs::read(&path).map_err(io_at(&path))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| NamedError::RecordCorrupt { path, source })
}

/// Marks the container as used by this launcher until the returned file is closed (at exit).
pub fn hold(dir: &Path, mut record: Running) -> Result<File, NamedError> {
    let lock_path = dir.join("running.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_at(&lock_path))?;
    lock.lock_shared().map_err(io_at(&lock_path))?;
    record.pids.retain(|&p| p != std::process::id() as i32);
    record.pids.insert(0, std::process::id() as i32);
    record.mount_ns = Some(
        crate::container::rootfs::current_namespace()
            .map_err(io_at(Path::new("/proc/thread-self/ns/mnt")))?,
    );
    let path = dir.join("running.json");
    let tmp = dir.join(format!("running.json.{}", std::process::id()));
    let body = serde_json::to_vec(&record).map_err(NamedError::Encode)?;
    fs::write(&tmp, body)
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(io_at(&path))?;
    Ok(lock)
}

/// The image files named containers on this node were created from
/// (`containersDir/UID/JOB-or-global/NODE/NAME/origin.json`): the store's size bound keeps them.
pub fn images_in_use(cfg: &Config) -> std::collections::HashSet<PathBuf> {
    let mut found = std::collections::HashSet::new();
    let children = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for user in children(&cfg.containers_dir) {
        for scope in children(&user) {
            for node in children(&scope) {
                for container in children(&node) {
                    let Ok(text) = fs::read(container.join("origin.json")) else {
                        continue;
                    };
                    if let Ok(o) = serde_json::from_slice::<Origin>(&text) {
                        found.insert(o.image_file);
                    }
                }
            }
        }
    }
    found
}

/// The directory of a job's named containers for one user.
pub fn job_dir(cfg: &Config, uid: u32, job: u32) -> PathBuf {
    cfg.containers_dir
        .join(uid.to_string())
        .join(job.to_string())
}

/// The image file and metadata a container was created from.
pub fn origin(dir: &Path, name: &str) -> Result<(PathBuf, ImageMeta), NamedError> {
    let origin_path = dir.join("origin.json");
    let text = fs::read(&origin_path).map_err(|source| NamedError::OriginUnreadable {
        name: name.to_string(),
        source,
    })?;
    let o = parse_origin(&text, name, origin_path)?;
    Ok((o.image_file, o.meta))
}

fn parse_origin(text: &[u8], name: &str, path: PathBuf) -> Result<Origin, NamedError> {
    serde_json::from_slice(text).map_err(|source| NamedError::OriginCorrupt {
        name: name.to_string(),
        path,
        source,
    })
}

/// Finds container `name` in `dir`, or creates it from `image` (resolved by `resolve`).
/// Returns the image file, its metadata and the directory holding the writable layer. The
/// error is the caller's (`resolve`'s) type, so an import failure passes through unchanged.
pub fn open_or_create<E: From<NamedError>>(
    dir: &Path,
    job: u32,
    name: &str,
    image: Option<&str>,
    resolve: impl FnOnce(&str) -> Result<(PathBuf, ImageMeta), E>,
) -> Result<(PathBuf, ImageMeta, PathBuf), E> {
    let dir = dir.to_path_buf();
    let origin_path = dir.join("origin.json");
    if let Ok(text) = fs::read(&origin_path) {
        let o = parse_origin(&text, name, origin_path.clone())?;
        if !o.image_file.exists() {
            return Err(NamedError::ImageRemoved {
                name: name.to_string(),
            }
            .into());
        }
        return Ok((o.image_file, o.meta, dir));
    }
    let Some(image) = image else {
        return Err(NamedError::NoSuchContainer {
            name: name.to_string(),
            job,
        }
        .into());
    };
    let (image_file, meta) = resolve(image)?;
    create_private_dir(&dir)?;
    let origin = Origin {
        image_file: image_file.clone(),
        meta: meta.clone(),
    };
    let tmp = dir.join("origin.json.tmp");
    let body = serde_json::to_vec(&origin).map_err(NamedError::Encode)?;
    fs::write(&tmp, body)
        .and_then(|_| fs::rename(&tmp, &origin_path))
        .map_err(io_at(&origin_path))?;
    Ok((image_file, meta, dir))
}

/// Creates `dir` root-only (0700), and its missing parents searchable but not listable (0711):
/// a parent made here may be `/var/lib/egret` itself on a fresh node, which a remapped root's
/// runc must still traverse to reach its bundle.
fn create_private_dir(dir: &Path) -> Result<(), NamedError> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(io_at(parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other.map_err(io_at(dir)),
    }
}

/// Removes every named container of a job (job epilog, root).
pub fn remove_job(cfg: &Config, uid: u32, job: u32) -> std::io::Result<()> {
    match fs::remove_dir_all(job_dir(cfg, uid, job)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        Config {
            containers_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn created_once_then_found_without_image() {
        let t = tempfile::tempdir().unwrap();
        let c = cfg(t.path());
        let img = t.path().join("img.sqsh");
        fs::write(&img, b"x").unwrap();
        let resolved = img.clone();
        let cdir = container_dir(&c, 5, Some(7), "n1", "dev");
        assert!(container_dir(&c, 5, None, "n1", "dev").ends_with("5/global/n1/dev"));
        let (f, _, dir) = open_or_create::<NamedError>(&cdir, 7, "dev", Some("busybox"), |_| {
            Ok((resolved, ImageMeta::default()))
        })
        .unwrap();
        assert_eq!(f, img);
        assert!(dir.join("origin.json").exists());
        let none = |_: &str| -> Result<_, NamedError> { panic!("no import") };
        let (f2, _, _) = open_or_create(&cdir, 7, "dev", None, none).unwrap();
        assert_eq!(f2, img);
        remove_job(&c, 5, 7).unwrap();
        let e = open_or_create(&cdir, 7, "dev", None, none)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no container named 'dev' in job 7; create it with --container-image"
        );
    }

    #[test]
    fn unnamed_steps_are_named_as_pyxis_does() {
        assert_eq!(step_name(12, 3), "12.3");
        assert!(parse_name(&step_name(12, 3)).is_ok());
        assert!(is_step_of("12.3", 12));
        assert!(!is_step_of("12.3", 13));
        assert!(!is_step_of("12.", 12));
        assert!(!is_step_of("12.x", 12));
        assert!(!is_step_of("dev", 12));
    }

    #[test]
    fn names_and_modes() {
        assert_eq!(parse_name("dev").unwrap(), ("dev".into(), Mode::Auto));
        assert_eq!(
            parse_name("dev:no_exec").unwrap(),
            ("dev".into(), Mode::NoExec)
        );
        assert_eq!(
            parse_name("dev:sometimes").unwrap_err().to_string(),
            "--container-name=dev:sometimes: the mode must be auto, create, exec or no_exec"
        );
        assert!(parse_name("../x").is_err());
        assert!(parse_name(":exec").is_err());
    }

    #[test]
    fn plans_follow_the_mode_and_the_state() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        // Not there: exec fails, the rest create.
        assert!(plan(dir, "c", Mode::Exec)
            .unwrap_err()
            .to_string()
            .contains("not running"));
        assert!(matches!(plan(dir, "c", Mode::Auto), Ok(Plan::Own)));
        fs::write(dir.join("origin.json"), b"{}").unwrap();
        assert!(plan(dir, "c", Mode::Create)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(matches!(plan(dir, "c", Mode::NoExec), Ok(Plan::Own)));
        // Running: a held lock and a record.
        let record = Running {
            meta: None,
            mount_ns: None,
            pids: vec![],
            attach: crate::container::rootfs::AttachInfo::default(),
        };
        let held = hold(dir, record).unwrap();
        assert!(matches!(plan(dir, "c", Mode::Exec), Ok(Plan::Join(_))));
        // no_exec shares the running container's files (pyxis: a fresh container on them).
        assert!(matches!(plan(dir, "c", Mode::NoExec), Ok(Plan::Join(_))));
        assert!(plan(dir, "c", Mode::Create).is_err());
        drop(held);
        assert!(matches!(plan(dir, "c", Mode::Auto), Ok(Plan::Own)));
    }
}
