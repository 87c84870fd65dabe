//! The launcher must not trust a task's pid number after it was checked (docs/security.md,
//! "Hostile tests"). It reads the connecting task's cgroups and CPU affinity when it starts the
//! task's container, which may be long after `accept` (the image import comes first). An
//! ordinary user's process that connects, sends a valid `Hello` and exits leaves its pid number
//! free; root (here: the test) may get that number next. Had the launcher used the number then,
//! it would have read the cgroups of root's process and put runc, as root, into them.
//!
//! The scheme, deterministic up to one race:
//! 1. The test holds the image's digest lock (`locks/sha256-<hex>.lock`, exclusive, as an import
//!    of that image would), so the step's launcher waits in the image step (reusing a stored
//!    image takes that lock shared; importing it, exclusive) before it can start any container.
//!    The user's index is read without a lock, so holding that one would not hold the launcher.
//! 2. The user's forger F (`FORGER`, python) forks P, which connects to the step's launcher
//!    socket as soon as it accepts connections and sends a valid `Hello` for local task 5. The
//!    socket itself was made by F before the fork: F still holds it once P is gone and reads the
//!    launcher's answer for P. Only the connect is P's, so the launcher's peer is P.
//! 3. P exits; F waits until the launcher has read every byte of the hello (SIOCOUTQ is 0:
//!    its pidfd of P was taken while P was still unreaped), then reaps P and reports its number.
//! 4. The test makes a root-owned `sleep` get exactly that number (ns_last_pid) and puts it into
//!    cgroups of its own, then releases the digest lock.
//! 5. The launcher must answer P's slot with "the task exited before its container started" and
//!    nothing may ever appear in the sleep's cgroups (runc, its shim, a container or a cgroup
//!    runc made); runc never knows a container for task 5. The real tasks of the step run or
//!    fail cleanly, and the step leaves nothing behind.
//!
//! The race: the launcher accepts exactly `local_tasks` connections, so P must connect before
//! one of the step's two real tasks does. P polls without pause, the real tasks back off
//! (1 to 50 ms), so P nearly always wins; a lost race (both real tasks ran, P's connection was
//! dropped unanswered) is run again, up to `ATTEMPTS` times.

use egret_test_support as common;
use egret_test_support::forged_task;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TEST_USER;
use egret_engine::config::Config;
use egret_engine::image::store::{Lock, LockMode, Store};
use forged_task::{note, run_dir, Allocation, Running};

/// Any stored or importable test image does: its digest lock holds the launcher either way.
const IMAGE: &str = "busybox";
/// The local task id the forged hello claims: one of the step's (0 and 1; the launcher refuses
/// others and a second hello for one id), so the real task 1 is the one left without a slot.
const FORGED_LOCAL_ID: u32 = 1;
/// How often the whole scenario runs when P loses the race for a slot.
const ATTEMPTS: u32 = 3;
/// What each real task prints in its container.
const REAL_MARK: &str = "egret-real-task-ran";

/// The forged task client, run as the user: `forger.py SOCKET OUTDIR`. It reports through
/// files in OUTDIR: `ready` (P is polling), `pid` (P is reaped: its number), `reply` (what the
/// launcher answered P's connection, JSON), or `fail` (why it gave up).
const FORGER: &str = r#"from forger_lib import *

# Made before the fork: P connects it (the launcher's peer is P), F keeps it after P is gone.
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
child = os.fork()
if child == 0:
    def fail(why, code):
        note("pfail", why)
        os._exit(3)
    connect_and_hello(s, hello_frame(%LOCAL_ID%, ["sleep", "30"]), 20, fail)
    os._exit(0)
note("ready", str(child))
# P's end, without reaping it: until we do, its number is still its own.
info = os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
if info.si_status != 0:
    try:
        why = open(os.path.join(out, "pfail")).read()
    except OSError:
        why = "P exited with status %d" % info.si_status
    note("fail", why)
    sys.exit(1)
# Nothing we sent is left unread: the launcher accepted P's connection and read its hello.
deadline = time.monotonic() + 30
while True:
    queued = unread(s)
    if queued == 0:
        break
    if time.monotonic() > deadline:
        note("fail", "the launcher never read the hello (%d bytes unread)" % queued)
        sys.exit(1)
    time.sleep(0.001)
os.waitpid(child, 0)
note("pid", str(child))

frames, end = [], "eof"
s.settimeout(60)
try:
    while True:
        head = read_exact(s, 4)
        if head is None:
            break
        data = read_exact(s, struct.unpack(">I", head)[0])
        if data is None:
            break
        msg = json.loads(data)
        frames.append(msg)
        if "Message" not in msg:
            end = "frame"
            break
except socket.timeout:
    end = "timeout"
except ConnectionResetError:
    end = "reset"
note("reply", json.dumps({"frames": frames, "end": end}))
"#;

/// Holds the store's exclusive lock of `IMAGE`'s digest (egret.json's
/// `localRepositoryBaseDir`, opened as the launcher opens it, creating its layout on an empty
/// store): what an import holds exclusively and a reuse shared.
fn lock_image_digest() -> Lock {
    let cfg = Config::load(Path::new(common::EGRET_CONFIG)).expect("load egret.json");
    let timings = &cfg.repository_metadata_lock_timings;
    let store = Store::open(&cfg.local_repository_base_dir, 0, 0, timings).expect("open the store");
    let digest = common::registry_digest(IMAGE, "latest");
    store
        .lock_digest(&digest, LockMode::Exclusive, "the pid_reuse test", timings)
        .expect("lock the image's digest")
}

/// The test's own cgroups (one per hierarchy that has a pid number's worth of meaning to
/// runc) and the root process put there with the reused number. Removed on drop.
struct Trap {
    dirs: Vec<PathBuf>,
    name: String,
    sleep: Option<Child>,
}

impl Trap {
    fn create(attempt: u32) -> Trap {
        let name = format!("egret-pidreuse-test.{}.{attempt}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let v1: Vec<PathBuf> = ["pids", "freezer"]
            .iter()
            .map(|c| root.join(c))
            .filter(|p| p.join("cgroup.procs").exists())
            .collect();
        let hierarchies = if !v1.is_empty() {
            v1
        } else if root.join("cgroup.controllers").exists() {
            vec![root.to_path_buf()]
        } else {
            panic!("no cgroup hierarchy under /sys/fs/cgroup to set the trap in");
        };
        let mut dirs = Vec::new();
        for h in hierarchies {
            let d = h.join(&name);
            fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            dirs.push(d);
        }
        Trap {
            dirs,
            name,
            sleep: None,
        }
    }

    /// Makes a root `sleep` get pid number `pid` (free again: its owner was reaped) and puts
    /// it into the trap's cgroups. False when another process got the number first.
    fn reuse(&mut self, pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
            fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
                .expect("write /proc/sys/kernel/ns_last_pid");
            let mut child = Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sleep");
            if child.id() as i32 == pid {
                for d in &self.dirs {
                    fs::write(d.join("cgroup.procs"), pid.to_string())
                        .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", d.display()));
                }
                self.sleep = Some(child);
                return true;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        false
    }

    /// Every process in the trap's cgroups (or cgroups below them) but the sleep, and every
    /// cgroup made below them: what runc started for the forged task would be there.
    fn intruders(&self) -> Vec<String> {
        let sleep = self.sleep.as_ref().map(|c| c.id().to_string());
        let mut found = Vec::new();
        for top in &self.dirs {
            let mut todo = vec![top.clone()];
            while let Some(d) = todo.pop() {
                if &d != top {
                    found.push(format!("cgroup {}", d.display()));
                }
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for p in procs.split_whitespace() {
                    if Some(p) != sleep.as_deref() {
                        let cmd = fs::read(format!("/proc/{p}/cmdline"))
                            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                            .unwrap_or_default();
                        found.push(format!("pid {p} ({cmd}) in {}", d.display()));
                    }
                }
                for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        todo.push(e.path());
                    }
                }
            }
        }
        found
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        if let Some(mut c) = self.sleep.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for top in &self.dirs {
            // Deepest first: a cgroup is removed only once empty of cgroups.
            let mut all = vec![top.clone()];
            let mut i = 0;
            while i < all.len() {
                let below: Vec<PathBuf> = fs::read_dir(&all[i])
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path())
                    .collect();
                all.extend(below);
                i += 1;
            }
            for d in all.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// What one run of the scenario showed, when P got a slot.
enum Outcome {
    /// The forged slot was checked and refused as it must be.
    Refused,
    /// P's connection was dropped unanswered while both real tasks ran: P lost the race for a
    /// slot, nothing was tested.
    SlotLost,
}

/// Ends an attempt in which P lost the race for a slot (nothing was tested): frees the image's
/// digest lock so the real tasks run, waits for srun, then drops the forger, the trap and the job in
/// that order and checks that nothing leaked.
fn slot_lost(
    lock: Lock,
    mut srun: Running,
    rest: (Running, Trap, Allocation),
    before: &common::LeakSnapshot,
    context: &dyn Fn() -> String,
) -> Outcome {
    drop(lock);
    let ended = common::wait_for(Duration::from_secs(30), || {
        matches!(srun.0.try_wait(), Ok(Some(_)))
    });
    assert!(ended, "srun did not end\n{}", context());
    drop(srun);
    drop(rest);
    common::assert_no_leaks(before);
    Outcome::SlotLost
}

fn scenario(attempt: u32) -> Outcome {
    let before = common::leak_snapshot();
    let dir = common::scratch_dir(Some(TEST_USER));
    let forger = forged_task::write_forger(
        &dir,
        &FORGER.replace("%LOCAL_ID%", &FORGED_LOCAL_ID.to_string()),
    );
    let job = Allocation::new("egret-pidreuse");
    let socket = run_dir().join(format!("step-{}.0.0.sock", job.0));
    let forged_id = format!("egret-{}.0.0.{FORGED_LOCAL_ID}", job.0);
    let step_prefix = format!("egret-{}.0.0.", job.0);
    let mut trap = Trap::create(attempt);

    // 1. The launcher will wait for the image's digest lock before it can start anything.
    let lock = lock_image_digest();

    // 2. The forger polls for the socket; then the step starts.
    let log = |name: &str| fs::File::create(dir.join(name)).unwrap();
    let f = Running(
        Command::new("runuser")
            .args(["-u", TEST_USER.name, "--", "/usr/bin/python3"])
            .arg(&forger)
            .arg(&socket)
            .arg(&dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log("forger.out"))
            .stderr(log("forger.err"))
            .spawn()
            .expect("start the forger"),
    );
    let context = || {
        let read = |n: &str| fs::read_to_string(dir.join(n)).unwrap_or_default();
        let launcher_log = fs::read_to_string(run_dir().join("launcher.log")).unwrap_or_default();
        let tail: Vec<&str> = launcher_log.lines().rev().take(20).collect();
        format!(
            "--- forger: P connected {} ---\n--- forger stderr ---\n{}\n--- srun stdout ---\n{}\n--- srun stderr ---\n{}\n\
             --- launcher.log (last lines, newest first) ---\n{}",
            read("connected"),
            read("forger.err"),
            read("srun.out"),
            read("srun.err"),
            tail.join("\n")
        )
    };
    let p: i32 = note(&dir, "ready", Duration::from_secs(10), &context)
        .unwrap_or_else(|why| panic!("the forger gave up: {why}\n{}", context()))
        .trim()
        .parse()
        .expect("the forger's ready note");
    forged_task::boost_priority(p);
    let image = format!("--container-image={}", common::registry_image(IMAGE));
    let job_opt = format!("--jobid={}", job.0);
    let mut srun = Running(
        Command::new("runuser")
            .args([
                "-u",
                TEST_USER.name,
                "--",
                "timeout",
                "--kill-after=10",
                "60",
            ])
            .args([
                "srun",
                &job_opt,
                "-N1",
                "-n2",
                "-w",
                common::NODES[0],
                &image,
            ])
            .args(["sh", "-c", &format!("echo {REAL_MARK}")])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log("srun.out"))
            .stderr(log("srun.err"))
            .spawn()
            .expect("start srun"),
    );

    // 3. P connected, was accepted, exited and was reaped.
    let pid: i32 = match note(&dir, "pid", Duration::from_secs(30), &context) {
        Ok(text) => text.trim().parse().expect("the forger's pid note"),
        Err(why) if why.starts_with("slot lost") => {
            return slot_lost(lock, srun, (f, trap, job), &before, &context);
        }
        Err(why) => panic!("the forger gave up: {why}\n{}", context()),
    };

    // 4. Root's process gets P's number, in cgroups of its own, while the launcher waits.
    assert!(
        trap.reuse(pid),
        "could not get pid {pid} for a root process (another process took it)"
    );
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        cgroups.contains(&trap.name) && status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "the trap is not armed: pid {pid} is not root's sleep in {}\n{cgroups}\n{status}",
        trap.name
    );
    // The launcher must still hold P's slot unanswered well after the number was reused, or
    // this run would not test the window it is about.
    std::thread::sleep(Duration::from_millis(200));
    let answered = fs::read_to_string(dir.join("reply")).unwrap_or_default();
    if answered.contains("already connected") {
        // The real task 1 connected first: P's hello was refused at once.
        return slot_lost(lock, srun, (f, trap, job), &before, &context);
    }
    assert!(
        !answered.contains("\"frames\": [{"),
        "the launcher answered the forged task before its pid number was reused: it did not \
         wait for the image's digest lock where this test assumes\n{}",
        context()
    );
    let early: Vec<String> = common::runc_state_entries()
        .into_iter()
        .filter(|e| e.starts_with(&step_prefix))
        .collect();
    assert!(
        early.is_empty(),
        "the step started containers while its image's digest was locked: {early:?}: the \
         launcher did not wait where this test assumes\n{}",
        context()
    );
    drop(lock);

    // 5. Watch the trap and runc until the launcher has answered P's slot and the step ended.
    let mut intruders = Vec::new();
    let mut forged_state = false;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut srun_status = None;
    while Instant::now() < deadline {
        intruders.extend(trap.intruders());
        forged_state |= common::runc_state_entries().contains(&forged_id);
        if srun_status.is_none() {
            srun_status = srun.0.try_wait().expect("wait for srun");
        }
        if srun_status.is_some() && dir.join("reply").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    intruders.extend(trap.intruders());
    assert!(
        intruders.is_empty(),
        "the launcher put processes into the cgroups of root's process {pid}, which merely \
         reused the number of the user's exited process: {intruders:#?}\n{}",
        context()
    );
    let srun_status = srun_status.unwrap_or_else(|| panic!("srun did not end\n{}", context()));
    let reply = fs::read_to_string(dir.join("reply"))
        .unwrap_or_else(|_| panic!("the forger never heard from the launcher\n{}", context()));
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("the forger's reply");
    let out = fs::read_to_string(dir.join("srun.out")).unwrap_or_default();
    let ran = out.lines().filter(|l| l.trim() == REAL_MARK).count();
    assert_ne!(
        srun_status.code(),
        Some(124),
        "srun timed out\n{}",
        context()
    );
    drop(f);
    drop(srun);
    drop(trap);
    drop(job);
    common::assert_no_leaks(&before);

    let frames = reply["frames"].as_array().cloned().unwrap_or_default();
    if frames.is_empty() && reply["end"] != "frame" && ran == 2 {
        // Both real tasks ran, so the real task 1 had slot 1: a container of that id was its
        // own (one id per slot), not the forged task's.
        return Outcome::SlotLost;
    }
    assert!(
        !forged_state,
        "runc knew a container {forged_id} for the exited forged task\n{}",
        context()
    );
    let error = frames
        .last()
        .and_then(|m| m["Error"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("the task exited before its container started"),
        "the launcher's answer for the exited forged task is not the refusal: {reply}\n{}",
        context()
    );
    // The forged task took one of the two slots; the real task in the other one ran.
    assert_eq!(
        ran,
        1,
        "expected exactly one real task to run in its container\n{}",
        context()
    );
    Outcome::Refused
}

/// A task that connected, said hello and exited must not have a container started in the
/// cgroups of whichever process gets its pid number next (here: root's).
#[test]
fn a_reused_pid_number_never_lends_its_cgroups_to_an_exited_tasks_container() {
    common::require_root();
    let start = Instant::now();
    for attempt in 0..ATTEMPTS {
        match scenario(attempt) {
            Outcome::Refused => {
                eprintln!(
                    "pid reuse refused (attempt {}, {:?})",
                    attempt + 1,
                    start.elapsed()
                );
                return;
            }
            Outcome::SlotLost => eprintln!(
                "attempt {}: the step's real tasks took both slots first; again",
                attempt + 1
            ),
        }
    }
    panic!("in {ATTEMPTS} attempts the forged task never got a slot of the step");
}
