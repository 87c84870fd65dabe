//! What the forged-task tests (`pid_reuse.rs`, `signal_after_exit.rs`) share: an allocation
//! whose job id names the step's socket before the step starts, children killed on drop, and
//! the forger's notes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate as common;
use crate::TEST_USER;

/// The launchers' run directory (egret.json `runDir`).
pub fn run_dir() -> PathBuf {
    let text = fs::read_to_string(common::EGRET_CONFIG).expect("read egret.json");
    let cfg: serde_json::Value = serde_json::from_str(&text).expect("parse egret.json");
    PathBuf::from(cfg["runDir"].as_str().unwrap_or("/run/egret"))
}

/// `salloc --no-shell` as the user: a job whose id names the step's socket before the step
/// starts. Cancelled on drop.
pub struct Allocation(pub u32);

impl Allocation {
    pub fn new(name: &str) -> Allocation {
        let o = common::run_as_user(
            TEST_USER.name,
            &[
                "timeout",
                "60",
                "salloc",
                "-N1",
                "-n2",
                "-w",
                common::NODES[0],
                "-t",
                "5",
                "--no-shell",
                "-J",
                name,
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let id = text
            .split("Granted job allocation ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("salloc gave no job id\n{}", common::describe(&o)));
        Allocation(id)
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(self.0.to_string()).status();
    }
}

/// Kills a child left running when the test gives up.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the forger's report `name`; its `fail` note instead is an error. Panics after
/// `limit`.
pub fn note(
    dir: &Path,
    name: &str,
    limit: Duration,
    context: &dyn Fn() -> String,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = fs::read_to_string(dir.join(name)) {
            return Ok(text);
        }
        if let Ok(why) = fs::read_to_string(dir.join("fail")) {
            return Err(why);
        }
        assert!(
            Instant::now() < deadline,
            "no '{name}' from the forger after {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Raises a process's scheduling priority to the highest (-20): on two CPUs with busy
/// neighbours, a forger polling for the step's socket must not lose the CPU at the moment the
/// socket appears (only the odds of the race change, nothing the launcher sees).
#[allow(unsafe_code)] // nix has no setpriority
pub fn boost_priority(pid: i32) {
    // SAFETY: plain integer arguments; no memory is passed.
    // Best effort: a failure changes the odds of the race, not what the test asserts.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, -20) };
}
