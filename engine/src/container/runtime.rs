//! runc, run in the foreground: the container's exit code becomes ours, the signals we get are
//! passed on (runc hands them to the container), and runc's state is removed on every way out.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::Config;
use crate::sys;

/// What a user or Slurm sends to stop or notify a job step.
pub const FORWARDED_SIGNALS: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long to sleep between checks where `pidfd_open` is missing (Linux < 5.3).
const POLL_FALLBACK_MS: u16 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up signal forwarding: {0}")]
    Signals(#[source] nix::Error),
    #[error("cannot wait for process {pid}: {source}")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}

/// The runc binary and its state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runc {
    pub path: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    pub fn from_config(cfg: &Config) -> Runc {
        // runc makes a missing state directory's parents 0700: runDir (usually runcRoot's
        // parent) would then hide the launchers' sockets from users' tasks.
        if let Some(parent) = cfg.runc_root.parent() {
            if !parent.exists() {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                let made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent);
                if made.is_ok() {
                    let _ =
                        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
                }
            }
        }
        Runc {
            path: cfg.runc_path.clone(),
            root: cfg.runc_root.clone(),
        }
    }

    /// `runc --root ROOT run --bundle BUNDLE [--preserve-fds N] ID`, stdio inherited, started
    /// with no signal blocked (whatever the caller blocks to forward them).
    pub fn command(&self, id: &str, bundle: &Path, preserve_fds: u32) -> Command {
        let mut c = Command::new(&self.path);
        sys::process::unblock_signals_on_exec(&mut c);
        c.arg("--root")
            .arg(&self.root)
            .arg("run")
            .arg("--bundle")
            .arg(bundle);
        if preserve_fds > 0 {
            c.arg("--preserve-fds").arg(preserve_fds.to_string());
        }
        c.arg(id);
        c
    }

    /// Like [`Runc::command`], with runc's own messages written as JSON lines to `log` instead of
    /// the container's stderr; [`runc_failure`] turns them into one line for the user.
    pub fn command_logged(
        &self,
        id: &str,
        bundle: &Path,
        preserve_fds: u32,
        log: &Path,
    ) -> Command {
        let inner = self.command(id, bundle, preserve_fds);
        let mut c = Command::new(&self.path);
        sys::process::unblock_signals_on_exec(&mut c);
        c.arg("--log")
            .arg(log)
            .args(["--log-format", "json"])
            .args(inner.get_args());
        c
    }

    /// Runs the container with our stdio and returns its exit code (128 + N when killed by
    /// signal N), forwarding [`FORWARDED_SIGNALS`]. runc's state for `id` is deleted afterwards,
    /// whatever happened.
    pub fn run_foreground(&self, id: &str, bundle: &Path) -> Result<i32, RuntimeError> {
        self.run_foreground_passing(id, bundle, &[])
    }

    /// [`Runc::run_foreground`], the container also getting `extra` as its descriptors 3, 4, ...
    /// (an MPI launcher's `PMI_FD`, say).
    pub fn run_foreground_passing(
        &self,
        id: &str,
        bundle: &Path,
        extra: &[OwnedFd],
    ) -> Result<i32, RuntimeError> {
        let result = (|| {
            // Blocked before the start so none is lost or fatal in between (the child unblocks).
            let signals = SignalForwarder::new()?;
            let mut cmd = self.command(id, bundle, extra.len() as u32);
            if !extra.is_empty() {
                let layout: Vec<RawFd> = [0, 1, 2]
                    .into_iter()
                    .chain(extra.iter().map(|f| f.as_raw_fd()))
                    .collect();
                sys::fd::map_fds_on_exec(&mut cmd, &layout);
            }
            let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
                path: self.path.clone(),
                source,
            })?;
            signals.wait(Pid::from_raw(child.id() as i32))
        })();
        self.delete_force(id);
        result
    }

    /// `runc delete --force ID`: stops what is left of the container and removes its state.
    /// Best effort and quiet. Skipped when runc keeps no state for `id` (`ROOT/ID`), the usual
    /// case after `runc run`, which saves starting runc once more.
    pub fn delete_force(&self, id: &str) {
        if !self.root.join(id).exists() {
            return;
        }
        let _ = Command::new(&self.path)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh container id: `egret-<pid>-<16 hex digits>`.
pub fn container_id() -> String {
    format!("egret-{}-{}", std::process::id(), random_hex())
}

/// 16 hex digits from the kernel's random pool (never fails in practice; the time is the fallback).
pub fn random_hex() -> String {
    let mut buf = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf));
    if ok.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(buf)
}

/// Holds [`FORWARDED_SIGNALS`] blocked on the calling thread (restored on drop) and reads them
/// from a signalfd, so they can be passed on instead of killing us.
pub struct SignalForwarder {
    fd: SignalFd,
    old: SigSet,
}

impl SignalForwarder {
    pub fn new() -> Result<SignalForwarder, RuntimeError> {
        let mut set = SigSet::empty();
        for s in FORWARDED_SIGNALS {
            set.add(s);
        }
        let old = set
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(RuntimeError::Signals)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| {
                let _ = old.thread_set_mask();
                RuntimeError::Signals(e)
            })?;
        Ok(SignalForwarder { fd, old })
    }

    /// Waits for our child `pid`, passing it every forwarded signal we receive meanwhile, and
    /// returns its exit code (128 + N when killed by signal N).
    pub fn wait(&self, pid: Pid) -> Result<i32, RuntimeError> {
        let wait_err = |source| RuntimeError::Wait {
            pid: pid.as_raw(),
            source,
        };
        // Readable when the child exits; without it (old kernels) we poll. Signals go by pidfd
        // where there is one; by number otherwise, sound only because this loop is the one that
        // reaps the child, after the last signal.
        let pidfd = sys::process::PidFd::open(pid).ok();
        loop {
            while let Some(info) = self.fd.read_signal().map_err(RuntimeError::Signals)? {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = match &pidfd {
                        Some(p) => p.signal(sig).map_err(|_| nix::Error::ESRCH),
                        None => kill(pid, sig),
                    };
                }
            }
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)).map_err(wait_err)? {
                WaitStatus::Exited(_, code) => return Ok(code),
                WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                _ => {}
            }
            let mut fds = vec![PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let timeout = match &pidfd {
                Some(p) => {
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                    PollTimeout::NONE
                }
                None => PollTimeout::from(POLL_FALLBACK_MS),
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(RuntimeError::Signals(e)),
            }
        }
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        // Signals still pending are delivered now, with their usual effect.
        let _ = self.old.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_command_line() {
        let r = Runc {
            path: "/usr/bin/runc".into(),
            root: "/run/egret/runc".into(),
        };
        let args = |c: &Command| {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let c = r.command("egret-1-ab", Path::new("/b"), 0);
        assert_eq!(c.get_program(), "/usr/bin/runc");
        assert_eq!(
            args(&c),
            [
                "--root",
                "/run/egret/runc",
                "run",
                "--bundle",
                "/b",
                "egret-1-ab"
            ]
        );
        let c = r.command("id", Path::new("/b"), 2);
        assert_eq!(
            args(&c),
            [
                "--root",
                "/run/egret/runc",
                "run",
                "--bundle",
                "/b",
                "--preserve-fds",
                "2",
                "id"
            ]
        );
        assert_eq!(
            Runc::from_config(&Config::default()).path,
            PathBuf::from("/usr/bin/runc")
        );
    }

    #[test]
    fn ids_are_unique() {
        let (a, b) = (container_id(), container_id());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("egret-{}-", std::process::id())));
        assert_eq!(a.rsplit('-').next().unwrap().len(), 16);
    }

    /// Runs on its own thread: the signal mask and the thread-directed signal stay there.
    #[test]
    #[allow(clippy::zombie_processes)] // reaped by `SignalForwarder::wait`
    fn exit_codes_and_forwarded_signals() {
        std::thread::spawn(|| {
            let fwd = SignalForwarder::new().unwrap();
            let child = Command::new("/bin/sh")
                .args(["-c", "exit 7"])
                .spawn()
                .unwrap();
            assert_eq!(fwd.wait(Pid::from_raw(child.id() as i32)).unwrap(), 7);

            let mut sleep = Command::new("/bin/sleep");
            sleep.arg("30");
            sys::process::unblock_signals_on_exec(&mut sleep);
            let child = sleep.spawn().unwrap();
            // A signal to this thread only (the test harness must not get it).
            nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), Signal::SIGTERM)
                .unwrap();
            let start = std::time::Instant::now();
            assert_eq!(
                fwd.wait(Pid::from_raw(child.id() as i32)).unwrap(),
                128 + 15
            );
            assert!(start.elapsed().as_secs() < 10);
        })
        .join()
        .unwrap();
    }
}

/// Why runc itself failed (not the container), from a `--log-format json` log: the exit code a
/// shell would give (127 command not found, 126 not executable) and one line for the user.
pub fn runc_failure(log: &str) -> Option<(i32, String)> {
    let msg = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_string))?;
    if let Some(line) = hook_failure(&msg) {
        return Some((1, line));
    }
    // runc: `... exec: "CMD": stat CMD: no such file or directory` or `executable file not found`.
    let cmd = msg
        .split("exec: \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_string);
    match cmd {
        Some(c) if msg.contains("no such file") || msg.contains("not found in $PATH") => Some((
            127,
            format!("egret: {c}: command not found in the container"),
        )),
        Some(c) if msg.contains("permission denied") => Some((
            126,
            format!("egret: {c}: permission denied in the container"),
        )),
        _ => Some((
            1,
            format!(
                "egret: runc: {}",
                msg.trim_start_matches("runc run failed: ")
            ),
        )),
    }
}

/// A failed OCI hook: runc says `error running hook #N: error running hook: exit status S,
/// stdout: ..., stderr: ...`. egret's hooks end their stderr with one line `egret NAME: error:
/// WHY`, which is the line to show; another hook's last stderr line is shown after the runc
/// context.
fn hook_failure(msg: &str) -> Option<String> {
    let at = msg.find("error running hook")?;
    let (_, stderr) = msg[at..].rsplit_once(", stderr: ")?;
    let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    if last.starts_with("egret ") {
        Some(last.to_string())
    } else {
        let context = msg[at..].split(", stdout: ").next().unwrap_or_default();
        Some(format!("egret: runc: {context}: {last}"))
    }
}

#[cfg(test)]
mod hook_failure_tests {
    use super::runc_failure;

    #[test]
    fn a_failed_hook_is_its_own_last_line() {
        let log = r#"{"level":"error","msg":"runc run failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: egret mpi: error: the image has no MPI library\n","time":"t"}"#;
        assert_eq!(
            runc_failure(log),
            Some((1, "egret mpi: error: the image has no MPI library".into()))
        );
        let log = r#"{"level":"error","msg":"runc run failed: error running hook #1: error running hook: exit status 3, stdout: x, stderr: warming up\nvendor hook: no GPU\n"}"#;
        assert_eq!(
            runc_failure(log),
            Some((
                1,
                "egret: runc: error running hook #1: error running hook: exit status 3: vendor hook: no GPU".into()
            ))
        );
    }
}

#[cfg(test)]
mod runc_log_tests {
    use super::runc_failure;

    #[test]
    fn missing_command_is_127_in_one_line() {
        let log = r#"{"level":"warning","msg":"cannot toggle freezer","time":"t"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"/nonexistent\": stat /nonexistent: no such file or directory","time":"t"}"#;
        assert_eq!(
            runc_failure(log),
            Some((
                127,
                "egret: /nonexistent: command not found in the container".into()
            ))
        );
        let log = r#"{"level":"error","msg":"runc run failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH"}"#;
        assert_eq!(runc_failure(log).unwrap().0, 127);
        assert_eq!(runc_failure(r#"{"level":"warning","msg":"x"}"#), None);
    }
}

#[cfg(test)]
mod run_dir_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn runcs_state_parent_is_made_searchable_before_runc_makes_it_private() {
        let top = tempfile::tempdir().unwrap();
        let cfg = Config {
            runc_root: top.path().join("run/egret/runc"),
            ..Config::default()
        };
        let _ = Runc::from_config(&cfg);
        let mode = std::fs::metadata(top.path().join("run/egret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            !cfg.runc_root.exists(),
            "runc's own directory is runc's to make"
        );
    }
}
