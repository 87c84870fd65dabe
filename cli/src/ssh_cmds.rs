//! `egret ssh-keygen [--overwrite]`: the user's keys for `--container-ssh`.
//!
//! The keys are made by the SSH hook's own program (`egret-ssh-hook keygen`), run as the caller
//! with the environment the site gave the hook in its hooks.d JSON (`HOOK_BASE_DIR`,
//! `DROPBEAR_DIR`), so the keys land exactly where the hook looks for them.

use std::process::{Command, ExitCode};

use egret_engine::hooks;

use crate::image_cmds::Context;

/// The annotation that selects the SSH hook.
const SSH_ANNOTATION: &str = "com.hooks.ssh.enabled";

#[derive(clap::Args)]
pub struct SshKeygenArgs {
    /// Replace existing keys (containers started afterwards use the new ones).
    #[arg(long)]
    overwrite: bool,
}

pub fn ssh_keygen(c: &Context, a: SshKeygenArgs) -> Result<ExitCode, String> {
    let dir = c
        .config
        .hooks_dir
        .as_deref()
        .filter(|d| d.exists())
        .ok_or("no hooksDir is configured: the SSH hook is not installed")?;
    let hooks = hooks::load_dir(dir).map_err(|e| e.to_string())?;
    let hook = hooks
        .iter()
        .find(|h| {
            h.when
                .annotations
                .iter()
                .any(|(_, _, k, _)| k.is_match(SSH_ANNOTATION))
        })
        .ok_or_else(|| {
            format!(
                "no SSH hook in {} (a hook selected by {SSH_ANNOTATION})",
                dir.display()
            )
        })?;
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
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", hook.hook.path().display()))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
