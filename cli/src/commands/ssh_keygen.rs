//! `egret ssh-keygen [--overwrite]`: the user's keys for `--container-ssh`.
//!
//! The keys are made by the SSH hook's own program (`egret-ssh-hook keygen`), run as the caller
//! with the environment the site gave the hook in its hooks.d JSON (`HOOK_BASE_DIR`,
//! `DROPBEAR_DIR`), so the keys land exactly where the hook looks for them.

use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use egret_engine::hooks::{self, schema::HooksError};

use crate::context::Context;

/// The annotation that selects the SSH hook (also in [`SshKeygenError::NoSshHook`]).
const SSH_ANNOTATION: &str = egret_engine::hooks::annotations::SSH_ENABLED;

#[derive(clap::Args)]
pub struct SshKeygenArgs {
    /// Replace existing keys (containers started afterwards use the new ones).
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SshKeygenError {
    #[error("no hooksDir is configured: the SSH hook is not installed")]
    NoHooksDir,
    #[error(transparent)]
    Hooks(#[from] HooksError),
    #[error("no SSH hook in {} (a hook selected by com.hooks.ssh.enabled)", .0.display())]
    NoSshHook(PathBuf),
    #[error("cannot run {}: {source}", .program.display())]
    Spawn { program: PathBuf, source: io::Error },
}

pub fn ssh_keygen(c: &Context, a: SshKeygenArgs) -> Result<ExitCode, SshKeygenError> {
    let dir = c
        .config
        .hooks_dir
        .as_deref()
        .filter(|d| d.exists())
        .ok_or(SshKeygenError::NoHooksDir)?;
    let hooks = hooks::schema::load_dir(dir)?;
    let hook = hooks
        .iter()
        .find(|h| {
            h.when
                .annotations
                .iter()
                .any(|(_, _, k, _)| k.is_match(SSH_ANNOTATION))
        })
        .ok_or_else(|| SshKeygenError::NoSshHook(dir.to_path_buf()))?;
    let mut cmd = Command::new(hook.hook.path());
    cmd.arg("keygen");
    if a.overwrite {
        cmd.arg("--overwrite");
    }
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for kv in hook.hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let status = cmd.status().map_err(|source| SshKeygenError::Spawn {
        program: hook.hook.path().to_path_buf(),
        source,
    })?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
