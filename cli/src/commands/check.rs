//! `egret check`: every security check, whatever `securityChecks` says; one line per problem,
//! and a line about the runc CVEs the installed runc may predate.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use egret_engine::config::security::{self, RuncCveStatus, Violation};

use crate::context::Context;

/// Where the install puts the SPANK plugin, which root-run slurmstepd loads.
const PLUGIN_PATH: &str = "/usr/local/lib/egret/spank_egret.so";

/// Why `runc --version` gave no version: the check's warning says so.
#[derive(Debug, thiserror::Error)]
enum RuncVersionError {
    #[error("{0}")]
    Wait(#[source] io::Error),
    #[error("did not exit within 10 s")]
    Timeout,
}

/// Prints every problem; fails when there is one (the runc version line is only a warning).
pub fn check(c: &Context) -> ExitCode {
    let launcher = PathBuf::from(egret_engine::slurm::step::DEFAULT_LAUNCHER);
    let plugin = PathBuf::from(PLUGIN_PATH);
    let found = security::check_install(&c.config, &c.config_path, &[launcher, plugin]);
    for v in &found {
        println!("{v}");
    }
    // A warning, not a problem: the exit status is the other checks'.
    println!("{}", runc_version_warning(&c.config.runc_path, &found));
    if found.is_empty() {
        println!(
            "egret check: no problems found ({})",
            c.config_path.display()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("egret check: {} problem(s) found", found.len());
        ExitCode::FAILURE
    }
}

/// `egret check`'s line about the runc CVEs `runc --version` predates (see
/// [`RuncCveStatus`]): a warning, or that it is recent enough. runc is not run when the checks
/// above found it (or a directory above it) tamperable.
fn runc_version_warning(runc: &Path, found: &[Violation]) -> String {
    let warn = |msg: String| format!("egret check: warning: {}: {msg}", runc.display());
    if found.iter().any(|v| runc.starts_with(&v.path)) {
        return warn("not running it for its version: fix the problems above first".into());
    }
    let mut child = match Command::new(runc)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return warn(format!("cannot run '{} --version': {e}", runc.display())),
    };
    match wait_briefly(&mut child) {
        Ok(s) if s.success() => {}
        Ok(s) => return warn(format!("'{} --version' failed ({s})", runc.display())),
        Err(e) => return warn(format!("'{} --version' {e}", runc.display())),
    }
    // Read only once it has exited (a killed one's pipe may still be held by its children).
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    match RuncCveStatus::of_version_output(&out) {
        RuncCveStatus::Fixed { version } => format!(
            "egret check: {}: runc version {version} has the upstream fixes for \
             CVE-2024-21626, CVE-2025-31133, CVE-2025-52565 and CVE-2025-52881",
            runc.display()
        ),
        other => warn(other.warning().unwrap_or_default()),
    }
}

/// `runc --version` prints a few lines and exits; do not hang on a runc that does not (10 s,
/// then it is killed).
fn wait_briefly(child: &mut std::process::Child) -> Result<ExitStatus, RuncVersionError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuncVersionError::Timeout);
            }
            Err(e) => return Err(RuncVersionError::Wait(e)),
        }
    }
}
