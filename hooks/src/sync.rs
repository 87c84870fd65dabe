//! The Slurm global sync hook: an arrival/departure barrier across every task of a job step,
//! so that no task's application starts before every task's container exists (with
//! `--container-ssh`, before every node's SSH daemon listens).
//!
//! Each task's hook writes `arrival/<procid>` in a directory per user and job step on a
//! filesystem all nodes share, waits until all `SLURM_NTASKS` files are there, writes
//! `departure/<procid>` and leaves; task 0 waits for every departure and removes the directory
//! (departing first means nobody is still counting arrivals when the files go).
//!
//! Unlike Sarus's hook it gives up after a timeout with one line saying how many tasks arrived,
//! and it tells the files of this run from those a crashed earlier run of the same job step left
//! behind (after `scontrol requeue` the step ids repeat): every file holds a token that is the
//! same for all tasks of one run (srun's address and port, the restart count) and files with
//! another token are stale and removed. All file work is done with the user's credentials.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The annotation that selects the hook (egret sets it with `--container-ssh`).
pub const ENABLED_ANNOTATION: &str = egret_engine::hooks::annotations::SLURM_GLOBAL_SYNC_ENABLED;
/// Seconds to wait for every task when the hook's JSON gives no `SYNC_TIMEOUT_S`.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// At most this many missing task ids are named in the timeout message.
const MAX_NAMED: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{name}={value:?} is not {what}")]
    BadVariable {
        name: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("SLURM_PROCID={procid} is not below SLURM_NTASKS={ntasks}")]
    ProcidOutOfRange { procid: u32, ntasks: u32 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "timed out after {waited_s} s waiting for the tasks of step {step} to start: \
         {arrived} of {ntasks} tasks arrived (missing: {missing})"
    )]
    Timeout {
        step: String,
        waited_s: u64,
        arrived: usize,
        ntasks: u32,
        missing: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who this task is within its step, from the container's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTask {
    pub job: u64,
    pub step: u64,
    pub ntasks: u32,
    pub procid: u32,
    /// The same for every task of one run of the step, different for another run.
    pub token: String,
}

impl StepTask {
    /// Reads `SLURM_JOB_ID`, `SLURM_STEP_ID` (or `SLURM_STEPID`), `SLURM_NTASKS` and
    /// `SLURM_PROCID`. `None` when the container does not run as a task of a numbered step
    /// (no Slurm, or the batch script's container): there is nothing to wait for.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<StepTask>, SyncError> {
        let job = get("SLURM_JOB_ID");
        let step = get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID"));
        let ntasks = get("SLURM_NTASKS");
        let procid = get("SLURM_PROCID");
        let (Some(job), Some(step), Some(ntasks), Some(procid)) = (job, step, ntasks, procid)
        else {
            return Ok(None);
        };
        // Only numbered steps synchronise (the batch and extern steps have names or huge ids).
        let Ok(step) = step.parse::<u64>() else {
            return Ok(None);
        };
        let number = |name: &'static str, value: String| {
            value.parse::<u64>().map_err(|_| SyncError::BadVariable {
                name,
                value,
                what: "a number",
            })
        };
        let job = number("SLURM_JOB_ID", job)?;
        let ntasks = match number("SLURM_NTASKS", ntasks.clone())? {
            n @ 1..=1_000_000 => n as u32,
            _ => {
                return Err(SyncError::BadVariable {
                    name: "SLURM_NTASKS",
                    value: ntasks,
                    what: "a task count between 1 and 1000000",
                })
            }
        };
        let procid = number("SLURM_PROCID", procid)? as u32;
        if procid >= ntasks {
            return Err(SyncError::ProcidOutOfRange { procid, ntasks });
        }
        let part = |name: &str| {
            get(name)
                .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()))
                .unwrap_or_else(|| "-".into())
        };
        let token = format!(
            "{} {} {}",
            part("SLURM_SRUN_COMM_HOST"),
            part("SLURM_SRUN_COMM_PORT"),
            part("SLURM_RESTART_COUNT")
        );
        Ok(Some(StepTask {
            job,
            step,
            ntasks,
            procid,
            token,
        }))
    }

    /// `JOB.STEP`, as Slurm writes a step.
    pub fn step_name(&self) -> String {
        format!("{}.{}", self.job, self.step)
    }
}

/// The directory of one job step under the user's sync directory.
pub fn step_dir(base: &Path, task: &StepTask) -> PathBuf {
    base.join(format!("job-{}.step-{}", task.job, task.step))
}

/// The user's sync directory: `<HOOK_BASE_DIR>/<user>/.oci-hooks/slurm-global-sync` (Sarus's
/// layout) when the hook's JSON sets `HOOK_BASE_DIR`, else `<home>/.oci-hooks/slurm-global-sync`.
pub fn user_base(hook_base_dir: Option<&Path>, user: &str, home: &Path) -> PathBuf {
    match hook_base_dir {
        Some(b) => b.join(user).join(".oci-hooks/slurm-global-sync"),
        None => home.join(".oci-hooks/slurm-global-sync"),
    }
}

/// One task's side of the barrier. Call with the user's credentials.
pub struct Barrier {
    pub dir: PathBuf,
    pub task: StepTask,
    pub timeout: Duration,
    pub poll: Duration,
}

impl Barrier {
    /// Arrives, waits for everybody, departs; task 0 also cleans up. On a timeout this task's
    /// files are removed again (and the directories, when nobody else has files in them).
    pub fn run(&self) -> Result<(), SyncError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let arrival = self.dir.join("arrival");
        let departure = self.dir.join("departure");
        self.announce(&arrival)?;
        crate::debug!(
            "task {} of step {} arrived in {}",
            self.task.procid,
            self.task.step_name(),
            self.dir.display()
        );
        let mut seen = BTreeSet::new();
        loop {
            self.count(&arrival, &mut seen)?;
            if seen.len() as u32 == self.task.ntasks {
                break;
            }
            if Instant::now() >= deadline {
                // A last look: the missing task may have arrived while we slept.
                self.count(&arrival, &mut seen)?;
                if seen.len() as u32 == self.task.ntasks {
                    break;
                }
                self.give_up(&arrival, &departure);
                let missing: Vec<String> = (0..self.task.ntasks)
                    .filter(|p| !seen.contains(p))
                    .map(|p| p.to_string())
                    .collect();
                let mut named = missing[..missing.len().min(MAX_NAMED)].join(",");
                if missing.len() > MAX_NAMED {
                    named.push_str(",...");
                }
                return Err(SyncError::Timeout {
                    step: self.task.step_name(),
                    waited_s: start.elapsed().as_secs(),
                    arrived: seen.len(),
                    ntasks: self.task.ntasks,
                    missing: named,
                });
            }
            std::thread::sleep(self.poll);
        }
        // Everybody is here; from now on a problem only costs the cleanup, never the step.
        if let Err(e) = self.announce(&departure) {
            crate::warn!("cannot record the departure: {e}");
            return Ok(());
        }
        if self.task.procid == 0 {
            let mut left = BTreeSet::new();
            loop {
                if let Err(e) = self.count(&departure, &mut left) {
                    crate::warn!("{e}");
                    break;
                }
                if left.len() as u32 == self.task.ntasks {
                    break;
                }
                if Instant::now() >= deadline + self.timeout {
                    crate::warn!(
                        "only {} of {} tasks departed; removing {} anyway",
                        left.len(),
                        self.task.ntasks,
                        self.dir.display()
                    );
                    break;
                }
                std::thread::sleep(self.poll);
            }
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                crate::warn!("cannot remove {}: {e}", self.dir.display());
            }
        }
        Ok(())
    }

    /// Writes `<dir>/<procid>` holding the token, replacing a stale one, atomically (a reader
    /// never sees a half-written token). A task that times out may remove the directories
    /// meanwhile, so they are re-created when the rename finds them gone.
    fn announce(&self, dir: &Path) -> Result<(), SyncError> {
        let name = self.task.procid.to_string();
        let tmp = dir.join(format!(".{name}.tmp"));
        let dst = dir.join(&name);
        let mut tries = 0;
        loop {
            let res = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))
                .and_then(|_| {
                    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
                    f.write_all(self.task.token.as_bytes())
                        .map_err(io_err(&tmp))?;
                    fs::rename(&tmp, &dst).map_err(io_err(&dst))
                });
            match res {
                Err(SyncError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && tries < 10 =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Adds to `seen` the tasks with a file of this run in `dir`; removes files of other runs.
    fn count(&self, dir: &Path, seen: &mut BTreeSet<u32>) -> Result<(), SyncError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            // Removed by a task that gave up; `announce` of the others re-creates it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(procid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if procid >= self.task.ntasks || seen.contains(&procid) {
                continue;
            }
            match fs::read(entry.path()) {
                Ok(t) if t == self.task.token.as_bytes() => {
                    seen.insert(procid);
                }
                Ok(_) => {
                    // Left by an earlier run of this job step: its task never comes back.
                    crate::debug!("removing stale {}", entry.path().display());
                    let _ = fs::remove_file(entry.path());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&entry.path())(e)),
            }
        }
        Ok(())
    }

    /// Undoes this task's arrival; the last one out removes the (then empty) directories.
    fn give_up(&self, arrival: &Path, departure: &Path) {
        let _ = fs::remove_file(arrival.join(self.task.procid.to_string()));
        for d in [arrival, departure, self.dir.as_path()] {
            let _ = fs::remove_dir(d);
        }
    }
}

/// The hook: finds the task's step in the container's environment, drops root for good (all its
/// file work is the user's) and runs the barrier. Hook environment: `HOOK_BASE_DIR` (optional),
/// `SYNC_TIMEOUT_S` (optional).
pub fn hook(ctx: &crate::HookContext) -> Result<(), HookError> {
    let Some(task) = StepTask::from_env(|k| ctx.env(k))? else {
        crate::debug!("not a task of a Slurm job step: nothing to synchronise");
        return Ok(());
    };
    let timeout = timeout_from(crate::hook_env("SYNC_TIMEOUT_S").as_deref())?;
    let hook_base = crate::hook_env("HOOK_BASE_DIR").map(PathBuf::from);
    if let Some(b) = &hook_base {
        if !b.is_absolute() {
            return Err(HookError::RelativeBase { path: b.clone() });
        }
    }
    let user = egret_engine::container::user::UserIdentity::from_uid(ctx.uid(), ctx.gid())?;
    let dir = step_dir(
        &user_base(hook_base.as_deref(), &user.name, &user.home),
        &task,
    );
    drop_privileges(&user)?;
    Barrier {
        dir,
        task,
        timeout,
        poll: POLL,
    }
    .run()?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    User(#[from] egret_engine::container::user::UserError),
    #[error("HOOK_BASE_DIR={} must be an absolute path", path.display())]
    RelativeBase { path: PathBuf },
    #[error("cannot switch to uid {uid}: {source}")]
    Drop {
        uid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Becomes the user for the rest of the process (the hook is single-threaded): groups, gid,
/// uid, and no way back through set-id programs.
fn drop_privileges(user: &egret_engine::container::user::UserIdentity) -> Result<(), HookError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let err = |source| HookError::Drop {
        uid: user.uid,
        source,
    };
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(err)?;
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).map_err(err)?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).map_err(err)?;
    nix::sys::prctl::set_no_new_privs().map_err(err)
}

/// `SYNC_TIMEOUT_S` from the hook's JSON (seconds, at least 1).
pub fn timeout_from(value: Option<&str>) -> Result<Duration, SyncError> {
    match value {
        None => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
            _ => Err(SyncError::BadVariable {
                name: "SYNC_TIMEOUT_S",
                value: v.to_string(),
                what: "a number of seconds (at least 1)",
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn task(procid: u32, ntasks: u32, port: &str) -> StepTask {
        StepTask::from_env(env(&[
            ("SLURM_JOB_ID", "77"),
            ("SLURM_STEPID", "3"),
            ("SLURM_NTASKS", &ntasks.to_string()),
            ("SLURM_PROCID", &procid.to_string()),
            ("SLURM_SRUN_COMM_HOST", "10.0.0.1"),
            ("SLURM_SRUN_COMM_PORT", port),
        ]))
        .unwrap()
        .unwrap()
    }

    fn barrier(dir: &Path, t: StepTask, timeout_ms: u64) -> Barrier {
        Barrier {
            dir: dir.to_path_buf(),
            task: t,
            timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_millis(10),
        }
    }

    #[test]
    fn environment() {
        let t = task(1, 4, "4000");
        assert_eq!((t.job, t.step, t.ntasks, t.procid), (77, 3, 4, 1));
        assert_eq!(t.token, "10.0.0.1 4000 -");
        assert_eq!(t.step_name(), "77.3");
        // Not a numbered step: nothing to do.
        assert_eq!(StepTask::from_env(env(&[])).unwrap(), None);
        let batch = env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_STEP_ID", "batch"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_PROCID", "0"),
        ]);
        assert_eq!(StepTask::from_env(batch).unwrap(), None);
        for (k, v, needle) in [
            ("SLURM_NTASKS", "0", "SLURM_NTASKS"),
            ("SLURM_NTASKS", "x", "SLURM_NTASKS"),
            ("SLURM_PROCID", "5", "not below"),
            ("SLURM_JOB_ID", "../x", "SLURM_JOB_ID"),
        ] {
            let mut pairs = vec![
                ("SLURM_JOB_ID", "1"),
                ("SLURM_STEP_ID", "0"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_PROCID", "0"),
            ];
            pairs.retain(|(pk, _)| *pk != k);
            pairs.push((k, v));
            let e = StepTask::from_env(env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(timeout_from(None).unwrap().as_secs(), DEFAULT_TIMEOUT_S);
        assert_eq!(timeout_from(Some("7")).unwrap().as_secs(), 7);
        assert!(timeout_from(Some("0")).is_err());
        assert!(user_base(Some(Path::new("/b")), "u", Path::new("/home/u"))
            .starts_with("/b/u/.oci-hooks"));
    }

    #[test]
    fn everybody_waits_for_the_late_task_and_task_0_cleans_up() {
        let base = tempfile::tempdir().unwrap();
        let dir = step_dir(base.path(), &task(0, 3, "1"));
        let done: Vec<_> = (0..3u32)
            .map(|p| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    if p == 2 {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    barrier(&dir, task(p, 3, "1"), 5000).run().unwrap();
                    Instant::now()
                })
            })
            .collect();
        let late_arrival = Instant::now() + Duration::from_millis(300);
        for d in done {
            assert!(d.join().unwrap() >= late_arrival);
        }
        assert!(!dir.exists(), "task 0 removes the step directory");
    }

    #[test]
    fn timeout_names_the_count_and_leaves_nothing() {
        let base = tempfile::tempdir().unwrap();
        let dir = step_dir(base.path(), &task(0, 3, "1"));
        let others: Vec<_> = (0..2u32)
            .map(|p| {
                let dir = dir.clone();
                std::thread::spawn(move || barrier(&dir, task(p, 3, "1"), 300).run())
            })
            .collect();
        for o in others {
            let e = o.join().unwrap().unwrap_err().to_string();
            assert!(
                e.contains("2 of 3 tasks arrived") && e.contains("missing: 2"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
        assert!(!dir.exists(), "left: {:?}", fs::read_dir(base.path()));
    }

    #[test]
    fn stale_files_of_an_earlier_run_neither_count_nor_remain() {
        let base = tempfile::tempdir().unwrap();
        let dir = step_dir(base.path(), &task(0, 2, "1"));
        fs::create_dir_all(dir.join("arrival")).unwrap();
        fs::create_dir_all(dir.join("departure")).unwrap();
        // A crashed earlier run left both tasks' files (another srun port).
        for p in ["0", "1"] {
            fs::write(dir.join("arrival").join(p), "10.0.0.1 999 -").unwrap();
            fs::write(dir.join("departure").join(p), "10.0.0.1 999 -").unwrap();
        }
        // Task 0 alone must not pass: task 1's stale file is not an arrival.
        let e = barrier(&dir, task(0, 2, "1"), 300)
            .run()
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 of 2 tasks arrived"), "{e}");
        let d2 = dir.clone();
        let t1 = std::thread::spawn(move || barrier(&d2, task(1, 2, "1"), 5000).run());
        barrier(&dir, task(0, 2, "1"), 5000).run().unwrap();
        t1.join().unwrap().unwrap();
        assert!(!dir.exists());
    }
}
