//! The timestamp hook: appends `[<monotonic s.ns>] [<host>-<pid>] [hook] [INFO] Timestamp hook:
//! <message>` to the file named by the container's `TIMESTAMP_HOOK_LOGFILE`, so that copies of
//! it interleaved between other hooks measure what each costs.
//!
//! Does nothing when the container has no `TIMESTAMP_HOOK_LOGFILE`. The message is the hook's
//! first argument after its name, else the hook's `TIMESTAMP_HOOK_MESSAGE` (its JSON `env`).
//!
//! The log file is a host path chosen by the user: it is opened (and created, mode 0644) by a
//! thread that has only the container user's credentials, so it can only be a file the user
//! could write anyway, and a new file belongs to the user.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use egret_engine::sys::creds;
use nix::time::{clock_gettime, ClockId};

use crate::HookContext;

pub const LOGFILE_VAR: &str = "TIMESTAMP_HOOK_LOGFILE";
pub const MESSAGE_VAR: &str = "TIMESTAMP_HOOK_MESSAGE";

#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    #[error("{LOGFILE_VAR}={}: must be an absolute path", path.display())]
    Relative { path: PathBuf },
    #[error("cannot write the timestamp to {} as uid {uid}: {source}", path.display())]
    Write {
        path: PathBuf,
        uid: u32,
        #[source]
        source: io::Error,
    },
}

/// The line for one timestamp (with its newline).
pub fn format_line(secs: i64, nanos: i64, host: &str, pid: u32, message: &str) -> String {
    format!("[{secs}.{nanos:09}] [{host}-{pid}] [hook] [INFO] Timestamp hook: {message}\n")
}

/// The hook: see the module documentation.
pub fn run(ctx: &HookContext) -> Result<(), TimestampError> {
    let Some(file) = ctx.env(LOGFILE_VAR).filter(|f| !f.is_empty()) else {
        crate::debug!("{LOGFILE_VAR} is not set in the container: nothing to do");
        return Ok(());
    };
    let message = std::env::args()
        .nth(1)
        .or_else(|| crate::hook_env(MESSAGE_VAR))
        .unwrap_or_default();
    // Taken first: what is measured is when the hook ran, not how long the file took.
    let now =
        clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let line = format_line(
        now.tv_sec(),
        now.tv_nsec(),
        &host,
        std::process::id(),
        &message,
    );
    append_as(Path::new(&file), &line, ctx.uid(), ctx.gid(), &ctx.groups())
}

/// Appends `line` to `path` with the user's credentials only.
pub fn append_as(
    path: &Path,
    line: &str,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<(), TimestampError> {
    if !path.is_absolute() {
        return Err(TimestampError::Relative {
            path: path.to_path_buf(),
        });
    }
    let write_err = |source| TimestampError::Write {
        path: path.to_path_buf(),
        uid,
        source,
    };
    creds::run_as(uid, gid, groups, || -> io::Result<()> {
        let mut f = std::fs::File::options()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        // One write: concurrent tasks appending to one file do not interleave within a line.
        f.write_all(line.as_bytes())
    })
    .and_then(|r| r)
    .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(775589, 671527655, "n1", 12385, "After-runtime"),
            "[775589.671527655] [n1-12385] [hook] [INFO] Timestamp hook: After-runtime\n"
        );
        assert_eq!(
            format_line(1, 5, "h", 2, ""),
            "[1.000000005] [h-2] [hook] [INFO] Timestamp hook: \n"
        );
    }

    #[test]
    fn relative_log_file_is_refused() {
        assert!(matches!(
            append_as(Path::new("log"), "x\n", 0, 0, &[0]),
            Err(TimestampError::Relative { .. })
        ));
    }

    #[test]
    fn the_file_is_written_with_the_users_credentials() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (it switches to uid 65534)");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let log = dir.path().join("ts.log");
        append_as(&log, "one\n", 65534, 65534, &[65534]).unwrap();
        append_as(&log, "two\n", 65534, 65534, &[65534]).unwrap();
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&log).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        // A root-only file is out of the user's reach even though the hook runs as root.
        let secret = dir.path().join("root-only");
        std::fs::write(&secret, "").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let err = append_as(&secret, "x\n", 65534, 65534, &[65534]).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "");
    }
}
