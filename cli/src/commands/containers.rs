//! ps, kill, and the names of `egret run --name`: Sarus's verbs over runc's state in egret's
//! `runcRoot`. Only containers of `egret run` are listed (those of Slurm steps belong to their
//! step, which srun and scancel manage).
//!
//! Names are per user: `--name NAME` is runc's `u<UID>_NAME`, shown as `NAME`. So no user can
//! take or block another's name, and `egret kill NAME` can only ever reach a container of the
//! caller's (a name freed and taken again by someone else between the check and the signal is
//! a different runc id).

use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use egret_engine::config::Config;

use crate::context::Context;

/// The annotation `egret run` puts the image reference in, for `egret ps`.
pub const IMAGE_ANNOTATION: &str = egret_engine::hooks::annotations::IMAGE;
/// The annotation `egret run` puts the caller's uid in.
pub const OWNER_ANNOTATION: &str = egret_engine::hooks::annotations::OWNER;

#[derive(clap::Args)]
pub struct KillArgs {
    /// The container's name (`egret run --name`), as `egret ps` shows it.
    #[arg(value_name = "NAME")]
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("needs root (containers are run by root)")]
    NeedsRoot,
    #[error("{}: {source}", .runc.display())]
    RuncSpawn { runc: PathBuf, source: io::Error },
    /// `runc list` failed: what it said on stderr.
    #[error("{0}")]
    RuncList(String),
    #[error("runc list: {0}")]
    RuncListOutput(#[source] serde_json::Error),
    #[error("{0}: no such running container (see 'egret ps')")]
    NoSuchContainer(String),
    #[error("{0}: still running after SIGKILL")]
    StillRunning(String),
    #[error("{name}: several users' containers have this name ({ids}); kill one by its id")]
    Ambiguous { name: String, ids: String },
}

/// A name `egret run --name` cannot use.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(
        "--name {0}: use up to 64 letters, digits, '.', '_' or '-', not starting with 'egret-'"
    )]
    Invalid(String),
    #[error("--name {0}: a container of that name is running (see 'egret ps')")]
    Running(String),
}

/// A container as `runc list --format json` describes it.
#[derive(serde::Deserialize)]
struct Listed {
    id: String,
    pid: i64,
    status: String,
    created: String,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

fn need_root() -> Result<(), ContainersError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(ContainersError::NeedsRoot)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && !n.starts_with(['.', '-'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The runc id for `egret run --name NAME` by user `uid`: `u<UID>_NAME`, if the name is valid
/// and not running. (`egret-` is reserved to the ids of Slurm steps' containers.)
pub fn check_new_name(cfg: &Config, name: &str, uid: u32) -> Result<String, NameError> {
    if !valid_name(name) || name.starts_with("egret-") {
        return Err(NameError::Invalid(name.to_string()));
    }
    let id = runc_id(name, uid);
    if cfg.runc_root.join(&id).exists() {
        return Err(NameError::Running(name.to_string()));
    }
    Ok(id)
}

fn runc_id(name: &str, uid: u32) -> String {
    format!("u{uid}_{name}")
}

impl Listed {
    /// The name `egret ps` shows: the `--name` given (the runc id without its owner's prefix), or
    /// the generated id of an unnamed container.
    fn name(&self) -> &str {
        let owner = self
            .annotations
            .as_ref()
            .and_then(|a| a.get(OWNER_ANNOTATION));
        owner
            .and_then(|uid| self.id.strip_prefix(&format!("u{uid}_")))
            .unwrap_or(&self.id)
    }
}

/// The running containers of `egret run` (those carrying [`IMAGE_ANNOTATION`]).
fn list(cfg: &Config) -> Result<Vec<Listed>, ContainersError> {
    if !cfg.runc_root.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new(&cfg.runc_path)
        .arg("--root")
        .arg(&cfg.runc_root)
        .args(["list", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ContainersError::RuncSpawn {
            runc: cfg.runc_path.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ContainersError::RuncList(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim() == "null" || text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let all: Vec<Listed> = serde_json::from_str(&text).map_err(ContainersError::RuncListOutput)?;
    Ok(all
        .into_iter()
        .filter(|c| {
            c.annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(IMAGE_ANNOTATION))
        })
        .collect())
}

/// The containers this caller may see and stop: root's are all; a user's, those run for them.
fn visible(c: &Context) -> Result<Vec<Listed>, ContainersError> {
    let all = list(&c.config)?;
    if !c.caller.is_setuid() {
        return Ok(all);
    }
    let me = c.uid.to_string();
    Ok(all
        .into_iter()
        .filter(|k| {
            k.annotations
                .as_ref()
                .and_then(|a| a.get(OWNER_ANNOTATION))
                .is_some_and(|owner| *owner == me)
        })
        .collect())
}

pub fn ps(c: &Context) -> Result<ExitCode, ContainersError> {
    need_root()?;
    let all = visible(c)?;
    println!(
        "{:<36} {:<40} {:>8} {:<8} CREATED",
        "NAME", "IMAGE", "PID", "STATUS"
    );
    for k in all {
        let image = k
            .annotations
            .as_ref()
            .and_then(|a| a.get(IMAGE_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let created = k.created.split('.').next().unwrap_or("").to_string();
        println!(
            "{:<36} {:<40} {:>8} {:<8} {created}",
            k.name(),
            image,
            k.pid,
            k.status
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, then SIGKILL after 10 s; done when runc's state of it is gone.
pub fn kill(c: &Context, a: KillArgs) -> Result<ExitCode, ContainersError> {
    need_root()?;
    let cfg = &c.config;
    // The caller's own container of that name first; root may also name anyone's, by name when
    // only one has it, or by its runc id.
    let visible = visible(c)?;
    let own = runc_id(&a.name, c.uid);
    let id = if visible.iter().any(|k| k.id == own) {
        own
    } else {
        let matching: Vec<&Listed> = visible
            .iter()
            .filter(|k| k.name() == a.name || k.id == a.name)
            .collect();
        match matching.as_slice() {
            [] => return Err(ContainersError::NoSuchContainer(a.name)),
            [one] => one.id.clone(),
            several => {
                return Err(ContainersError::Ambiguous {
                    name: a.name.clone(),
                    ids: several
                        .iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    };
    let signal = |sig: &str| {
        Command::new(&cfg.runc_path)
            .arg("--root")
            .arg(&cfg.runc_root)
            .args(["kill", "--all", &id, sig])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let gone = || !cfg.runc_root.join(&id).exists();
    signal("TERM");
    let start = Instant::now();
    while !gone() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !gone() {
        signal("KILL");
        let start = Instant::now();
        while !gone() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if !gone() {
        return Err(ContainersError::StillRunning(a.name));
    }
    Ok(ExitCode::SUCCESS)
}
