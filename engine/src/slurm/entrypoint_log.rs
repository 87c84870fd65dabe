//! The launcher's side of a wrapped ENTRYPOINT (see `container::spec::entrypoint`): the
//! descriptors it passes into the container, the entrypoint's output kept while the log is off,
//! and what the user is told when the entrypoint never ran the command.
//!
//! As with pyxis: with `--container-entrypoint-log` the entrypoint's output goes to the task's
//! stderr as it comes; without it the output is kept and shown (as `egret:` lines) only when the
//! entrypoint fails, that is when it did not get as far as the command.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::container::spec::EntrypointWrap;

/// Most of the entrypoint's output kept for the user (its beginning: where it went wrong).
const KEPT: usize = 64 * 1024;
/// How long to wait, after the container ended, for the rest of the output.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EntrypointLogError {
    #[error("--container-entrypoint: cannot set up the entrypoint's descriptors: {0}")]
    Setup(#[source] std::io::Error),
}

impl From<nix::Error> for EntrypointLogError {
    fn from(e: nix::Error) -> EntrypointLogError {
        EntrypointLogError::Setup(e.into())
    }
}

/// The descriptors of one wrapped entrypoint while its container runs.
pub struct EntrypointFds {
    /// Passed to runc, in the order of the container's numbers (log, ready, env).
    pub passed: Vec<OwnedFd>,
    ready: OwnedFd,
    kept: Option<Kept>,
}

struct Kept {
    text: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

/// What the user is told once the container has ended with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
    /// The task's exit code: the container's, or 1 where the entrypoint ended well without
    /// running the command.
    pub code: i32,
}

impl EntrypointFds {
    /// The pipes and the variables' file for `wrap`, `script` written to the latter.
    pub fn new(wrap: &EntrypointWrap, script: &str) -> Result<EntrypointFds, EntrypointLogError> {
        let mut passed = Vec::new();
        let kept = match wrap.log {
            Some(_) => {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                passed.push(w);
                Some(keep(r))
            }
            None => None,
        };
        let (ready, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        passed.push(ready_w);
        let env = nix::sys::memfd::memfd_create(
            c"egret-entrypoint-env",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        std::fs::File::from(env.try_clone().map_err(EntrypointLogError::Setup)?)
            .write_all(script.as_bytes())
            .map_err(EntrypointLogError::Setup)?;
        passed.push(env);
        Ok(EntrypointFds {
            passed,
            ready,
            kept,
        })
    }

    /// After the container ended with `code`: nothing to say when the entrypoint ran the
    /// command; otherwise its output (when kept) and pyxis's hint.
    pub fn report(self, code: i32) -> Option<Report> {
        let mut byte = [0u8; 1];
        // Non-blocking: a byte is there or the entrypoint never wrote it.
        let reached = matches!(std::fs::File::from(self.ready).read(&mut byte), Ok(1));
        if reached {
            return None;
        }
        let output = self.kept.map(|k| {
            let _ = k.done.recv_timeout(DRAIN);
            let text = k.text.lock().map(|t| t.clone()).unwrap_or_default();
            String::from_utf8_lossy(&text).into_owned()
        });
        Some(failure(code, output.as_deref()))
    }
}

/// The lines for an entrypoint that ended with `code` before the command, with its `output`
/// (None: it went to the task's stderr already).
pub fn failure(code: i32, output: Option<&str>) -> Report {
    let mut lines = vec![if code == 0 {
        "the image's entrypoint exited without running the command".to_string()
    } else {
        format!("the image's entrypoint failed (exit code {code})")
    }];
    if let Some(out) = output.filter(|o| !o.trim().is_empty()) {
        lines.push("the entrypoint's output:".into());
        lines.extend(out.lines().map(|l| format!("    {l}")));
    }
    lines.push("if the image has an unusual entrypoint, try --no-container-entrypoint".into());
    Report {
        lines,
        code: if code == 0 { 1 } else { code },
    }
}

/// Reads the log pipe until every writer is gone, keeping the first [`KEPT`] bytes (the pipe is
/// always drained, so the entrypoint never blocks on it).
fn keep(read: OwnedFd) -> Kept {
    let text = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read);
        let mut buf = [0u8; 8192];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = sink.lock() {
                let room = KEPT.saturating_sub(t.len());
                t.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        let _ = tx.send(());
    });
    Kept { text, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_carry_the_output_and_the_hint() {
        let r = failure(3, Some("boom\nsecond\n"));
        assert_eq!(r.code, 3);
        assert_eq!(
            r.lines,
            [
                "the image's entrypoint failed (exit code 3)",
                "the entrypoint's output:",
                "    boom",
                "    second",
                "if the image has an unusual entrypoint, try --no-container-entrypoint",
            ]
        );
        let r = failure(0, None);
        assert_eq!(
            r.code, 1,
            "a step whose command never ran must not look successful"
        );
        assert_eq!(r.lines.len(), 2);
        assert!(r.lines[0].contains("without running the command"));
    }

    #[test]
    fn a_ready_byte_means_nothing_to_report_and_output_is_kept_otherwise() {
        let wrap = EntrypointWrap::after(3, false).unwrap();
        let fds = EntrypointFds::new(&wrap, "export A='1'\n").unwrap();
        // What the container would do: write output, then the ready byte.
        std::fs::File::from(fds.passed[0].try_clone().unwrap())
            .write_all(b"hidden\n")
            .unwrap();
        std::fs::File::from(fds.passed[1].try_clone().unwrap())
            .write_all(b"\n")
            .unwrap();
        assert_eq!(fds.report(0), None);

        let fds = EntrypointFds::new(&wrap, "").unwrap();
        let EntrypointFds {
            passed,
            ready,
            kept,
        } = fds;
        std::fs::File::from(passed[0].try_clone().unwrap())
            .write_all(b"went wrong\n")
            .unwrap();
        drop(passed);
        let r = EntrypointFds {
            passed: Vec::new(),
            ready,
            kept,
        }
        .report(2)
        .unwrap();
        assert!(
            r.lines.contains(&"    went wrong".to_string()),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn the_script_is_readable_through_proc() {
        let wrap = EntrypointWrap::after(3, true).unwrap();
        let fds = EntrypointFds::new(&wrap, "export A='1'\n").unwrap();
        assert_eq!(fds.passed.len(), 2);
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", fds.passed[1].as_raw_fd());
        assert_eq!(std::fs::read_to_string(path).unwrap(), "export A='1'\n");
    }
}
