//! The launcher must never signal runc's pid number once runc was reaped (docs/security.md,
//! "Hostile tests"; security finding 4). `watch()` forwards each `{"Signal": N}` frame a task
//! sends to the runc it started for that task. Its reader thread keeps reading the task's
//! connection after the container ended and the task heard `Exit`: until the task closes the
//! connection or the launcher ends, which is when the step's last local task ends. Signalled by
//! number (`kill(pid)`), a frame sent then reached whichever process got runc's number next,
//! as root: any user of the step could kill a root process. By pidfd it reaches nobody.
//!
//! The scheme, deterministic up to two races:
//! 1. A step of two tasks on one node (`salloc -n2`, then `srun -n2`). The user's forger F
//!    (`FORGER`, python) polls the step's socket and takes the slot of local task 1 with a hello
//!    whose command waits for a file (`forged-stop`); the real task 1 is refused. The real task
//!    0 waits for a file too (`real-stop`), so the launcher lives on as long as the test wants.
//!    Both see the test's directory in the container (`--container-mounts`).
//! 2. While F's container runs, the test finds the launcher's child for F's container id:
//!    runc (`runc ... run ... egret-JOB.0.0.1`), which joined the task's cgroups itself.
//! 3. `forged-stop`: the container ends, the launcher reaps runc and then sends F `Exit`.
//! 4. The test makes a root-owned `sleep 60` get exactly runc's pid number (ns_last_pid).
//! 5. F sends `{"Signal": 15}` and `{"Signal": 9}` frames on its still open connection and waits
//!    until the launcher has read every byte (SIOCOUTQ is 0) while the connection is still open
//!    (so the reader thread read them, not a close that discarded them).
//! 6. A second later root's sleep must still be alive. Then F closes, `real-stop` ends the real
//!    task, the step ends cleanly with the real task's output, and nothing is left behind.
//!
//! The races: (a) F must connect before the real task 1 does (the launcher takes one hello per
//! task id): F polls without pause, the real tasks back off (1 to 50 ms), so F nearly always
//! wins; (b) between the end of runc and the test's fork another process may take the freed
//! number. A lost race is run again, up to `ATTEMPTS` times.

use egret_test_support as common;
use egret_test_support::forged_task;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TEST_USER;
use forged_task::{note, run_dir, Allocation, Running};

/// Any importable test image does.
const IMAGE: &str = "busybox";
/// The local task id the forged hello claims (the step has 0 and 1): the real task 1 is refused.
const FORGED_LOCAL_ID: u32 = 1;
/// How often the whole scenario runs when a race is lost.
const ATTEMPTS: u32 = 3;
/// What the real task prints in its container once released.
const REAL_MARK: &str = "egret-real-task-ran";
/// Where the test's directory appears in the containers.
const MOUNTED: &str = "/mnt/sig";
/// The signals the forger asks for after its container ended.
const SIGNALS: [i32; 6] = [15, 9, 15, 9, 15, 9];

/// The forged task client, run as the user: `forger.py SOCKET OUTDIR`. It reports through files
/// in OUTDIR: `ready` (its pid, polling), `connected`, `exit` (the `Exit` frame's code), `sent`
/// (the Signal frames were read, JSON), or `fail` (why it gave up; "slot lost: ..." when the
/// real task 1 was first). It waits for `go` before sending the signals and for `close` before
/// closing its connection.
const FORGER: &str = r#"from forger_lib import *

note("ready", str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def fail(why, code):
    note("fail", why)
    sys.exit(code)


connect_and_hello(s, hello_frame(%LOCAL_ID%, %ARGV%), 30, fail)

frames = []
s.settimeout(60)
try:
    while True:
        head = read_exact(s, 4)
        data = head and read_exact(s, struct.unpack(">I", head)[0])
        if data is None:
            why = "slot lost" if not frames else "the launcher closed the connection"
            note("fail", "%s: end of stream after %r" % (why, frames))
            sys.exit(3)
        msg = json.loads(data)
        frames.append(msg)
        if "Exit" in msg:
            break
        if "Error" in msg:
            lost = "already connected" in msg["Error"]
            note("fail", "%s: %r" % ("slot lost" if lost else "refused", frames))
            sys.exit(3)
except socket.timeout:
    note("fail", "no Exit frame in 60 s: %r" % frames)
    sys.exit(1)
except ConnectionResetError:
    note("fail", "slot lost: the connection was reset after %r" % frames)
    sys.exit(3)
# The launcher reaped runc before it sent Exit; root now reuses runc's number.
note("exit", json.dumps({"code": frames[-1]["Exit"], "frames": frames}))
if not wait_file("go", 30):
    note("fail", "no 'go' from the test in 30 s")
    sys.exit(1)
signals = %SIGNALS%
try:
    s.sendall(b"".join(frame({"Signal": n}) for n in signals))
except (BrokenPipeError, ConnectionResetError) as e:
    note("fail", "the launcher closed the connection before the Signal frames: %s" % e)
    sys.exit(1)
# Every byte read by the launcher's reader thread (a close by the launcher would empty the
# queue too: the connection must still be open afterwards).
deadline = time.monotonic() + 10
while unread(s) != 0:
    if time.monotonic() > deadline:
        note("fail", "the launcher never read the Signal frames (%d bytes unread)" % unread(s))
        sys.exit(1)
    time.sleep(0.001)
s.setblocking(False)
try:
    state = "closed" if s.recv(1, socket.MSG_PEEK) == b"" else "data"
except BlockingIOError:
    state = "open"
except ConnectionResetError:
    state = "reset"
note("sent", json.dumps({"signals": signals, "state": state}))
wait_file("close", 30)
s.close()
"#;

/// A root `sleep 60` with a chosen pid number. Killed on drop.
struct RootSleep(Child);

impl RootSleep {
    /// Makes a root `sleep` get pid number `pid` (free again: its owner was reaped). None when
    /// another process has or gets the number first.
    fn reuse(pid: i32) -> Option<RootSleep> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if Path::new(&format!("/proc/{pid}")).exists() {
                return None;
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
                // spawn returns once the child has its new memory, a moment before the kernel
                // renames it: wait for the name, or the checks below see the test's own name.
                let named = Instant::now() + Duration::from_secs(2);
                while comm(pid as u32) != "sleep" && Instant::now() < named {
                    std::thread::sleep(Duration::from_millis(1));
                }
                return Some(RootSleep(child));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        None
    }

    /// None while it runs; how it ended otherwise.
    fn ended(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("wait for the root sleep")
    }
}

impl Drop for RootSleep {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's argv (empty when it is gone or a kernel thread).
fn argv(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's parent pid (`/proc/PID/stat`, after the command name).
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The launcher's child that runs container `id`: `runc ... run ... ID` (older launchers: an
/// `egret-launcher join-cgroup ... -- runc ...` shim that execs runc in place, same pid). Not
/// its `runc delete` children.
fn runc_of(id: &str) -> Option<(u32, u32)> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let args = argv(pid);
        let shim = args.get(1).is_some_and(|a| a == "join-cgroup");
        let runc = args.first().is_some_and(|a| a.ends_with("runc"));
        if !(shim || runc)
            || !args.iter().any(|a| a == "run")
            || args.last().map(String::as_str) != Some(id)
        {
            continue;
        }
        if let Some(ppid) = parent(pid).filter(|&p| comm(p) == "egret-launcher") {
            return Some((pid, ppid));
        }
    }
    None
}

/// Creates the (empty) signal file `name` in the shared directory.
fn touch(dir: &Path, name: &str) {
    fs::write(dir.join(name), b"").unwrap_or_else(|e| panic!("write {name}: {e}"));
}

/// A shell loop for a container: waits (at most 40 s) for `file` in the mounted directory.
fn wait_in_container(file: &str) -> String {
    format!(
        "i=0; while [ ! -e {MOUNTED}/{file} ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done"
    )
}

/// What one run of the scenario showed.
enum Outcome {
    /// The frames were read after runc's number was root's, and root's process lived.
    Survived,
    /// A race was lost (which one: the text); nothing was tested.
    Lost(String),
}

fn scenario() -> Outcome {
    let before = common::leak_snapshot();
    let dir = common::scratch_dir(Some(TEST_USER));
    let forged_argv = serde_json::json!(["sh", "-c", wait_in_container("forged-stop")]);
    let forger = forged_task::write_forger(
        &dir,
        &FORGER
            .replace("%LOCAL_ID%", &FORGED_LOCAL_ID.to_string())
            .replace("%ARGV%", &forged_argv.to_string())
            .replace("%SIGNALS%", &format!("{SIGNALS:?}")),
    );
    let job = Allocation::new("egret-sigafterexit");
    let socket = run_dir().join(format!("step-{}.0.0.sock", job.0));
    let forged_id = format!("egret-{}.0.0.{FORGED_LOCAL_ID}", job.0);
    let real_id = format!("egret-{}.0.0.0", job.0);

    // 1. The forger polls for the socket; then the step starts.
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
            "--- forger: connected {} ---\n--- forger stderr ---\n{}\n--- srun stdout ---\n{}\n\
             --- srun stderr ---\n{}\n--- launcher.log (last lines, newest first) ---\n{}",
            read("connected"),
            read("forger.err"),
            read("srun.out"),
            read("srun.err"),
            tail.join("\n")
        )
    };
    let fpid: i32 = note(&dir, "ready", Duration::from_secs(10), &context)
        .unwrap_or_else(|why| panic!("the forger gave up: {why}\n{}", context()))
        .trim()
        .parse()
        .expect("the forger's ready note");
    forged_task::boost_priority(fpid);
    let image = format!("--container-image={}", common::registry_image(IMAGE));
    let mounts = format!("--container-mounts={}:{MOUNTED}:ro", dir.display());
    let job_opt = format!("--jobid={}", job.0);
    let real = format!("{}; echo {REAL_MARK}", wait_in_container("real-stop"));
    let mut srun = Running(
        Command::new("runuser")
            .args(["-u", TEST_USER.name, "--"])
            .args(["timeout", "--kill-after=10", "60"])
            .args(["srun", &job_opt, "-N1", "-n2", "-w", common::NODES[0]])
            .args([&image, &mounts])
            .args(["sh", "-c", &real])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log("srun.out"))
            .stderr(log("srun.err"))
            .spawn()
            .expect("start srun"),
    );
    // Ends the step (both containers' loops) and waits for srun; every path out does this.
    let finish = |srun: &mut Running| {
        touch(&dir, "forged-stop");
        touch(&dir, "real-stop");
        touch(&dir, "close");
        let ended = common::wait_for(Duration::from_secs(30), || {
            matches!(srun.0.try_wait(), Ok(Some(_)))
        });
        assert!(ended, "srun did not end\n{}", context());
        srun.0.try_wait().unwrap().unwrap()
    };

    // 2. The forged task's container runs: find its runc, the launcher's child.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (runc, launcher) = loop {
        if let Some(found) = runc_of(&forged_id) {
            break found;
        }
        if let Ok(why) = fs::read_to_string(dir.join("fail")) {
            finish(&mut srun);
            drop((srun, f, job));
            common::assert_no_leaks(&before);
            if why.starts_with("slot lost") {
                return Outcome::Lost(format!("race (a), the real task 1 was first: {why}"));
            }
            panic!("the forger gave up: {why}\n{}", context());
        }
        assert!(
            Instant::now() < deadline,
            "no runc for the forged task's container {forged_id} in 45 s\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // The shim has exec'd runc, and runc runs the container.
    let execd = common::wait_for(Duration::from_secs(10), || {
        comm(runc) == "runc" && common::runc_state_entries().contains(&forged_id)
    });
    assert!(
        execd,
        "pid {runc} ({:?}) is not runc running {forged_id}\n{}",
        argv(runc),
        context()
    );

    // 3. The container ends; the launcher reaps runc and says Exit.
    touch(&dir, "forged-stop");
    let exit = match note(&dir, "exit", Duration::from_secs(20), &context) {
        Ok(exit) => exit,
        // The forger's other connection lost its slot to the real task: race (a) again.
        Err(why) if why.starts_with("slot lost") => {
            finish(&mut srun);
            drop((srun, f, job));
            common::assert_no_leaks(&before);
            return Outcome::Lost(format!("race (a), late: {why}"));
        }
        Err(why) => panic!("the forger gave up: {why}\n{}", context()),
    };
    let exit: serde_json::Value = serde_json::from_str(&exit).expect("the forger's exit note");
    assert_eq!(
        exit["code"],
        0,
        "the forged task's container failed: {exit}\n{}",
        context()
    );

    // 4. Root's process gets runc's number while the launcher still lives (the real task runs).
    let Some(mut sleep) = RootSleep::reuse(runc as i32) else {
        let taker = argv(runc);
        finish(&mut srun);
        drop((srun, f, job));
        common::assert_no_leaks(&before);
        return Outcome::Lost(format!(
            "race (b), runc's number {runc} was taken by another process: {taker:?}"
        ));
    };
    let status = fs::read_to_string(format!("/proc/{runc}/status")).unwrap_or_default();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t")) && comm(runc) == "sleep",
        "pid {runc} is not root's sleep\n{status}"
    );
    assert!(
        comm(launcher) == "egret-launcher" && common::runc_state_entries().contains(&real_id),
        "the step's launcher {launcher} or its real task {real_id} ended early: the window \
         this test is about is closed\n{}",
        context()
    );

    // 5. The forged task asks for signals; the launcher reads them on the open connection.
    touch(&dir, "go");
    let sent = note(&dir, "sent", Duration::from_secs(15), &context)
        .unwrap_or_else(|why| panic!("the forger gave up: {why}\n{}", context()));
    let sent: serde_json::Value = serde_json::from_str(&sent).expect("the forger's sent note");
    assert_eq!(
        sent["state"],
        "open",
        "the launcher did not read the Signal frames on an open connection: {sent}\n{}",
        context()
    );

    // 6. Root's process must live on.
    std::thread::sleep(Duration::from_secs(1));
    let killed = sleep.ended();
    assert!(
        killed.is_none(),
        "the launcher signalled root's process {runc}, which merely reused the number of the \
         forged task's reaped runc: it ended with {killed:?} after the task sent {SIGNALS:?}\n{}",
        context()
    );
    drop(sleep);
    eprintln!(
        "runc {runc} (child of launcher {launcher}) reaped, its number reused by root's sleep, \
         which outlived {SIGNALS:?} read by the launcher ({sent})"
    );

    let srun_status = finish(&mut srun);
    let out = fs::read_to_string(dir.join("srun.out")).unwrap_or_default();
    let ran = out.lines().filter(|l| l.trim() == REAL_MARK).count();
    assert_ne!(
        srun_status.code(),
        Some(124),
        "srun timed out\n{}",
        context()
    );
    assert_eq!(
        ran,
        1,
        "expected exactly one real task (0) to run in its container\n{}",
        context()
    );
    drop((srun, f, job));
    common::assert_no_leaks(&before);
    Outcome::Survived
}

/// Signal frames a task sends after its container ended must not reach the process that got
/// runc's pid number next (here: root's).
#[test]
fn signals_after_a_tasks_exit_never_reach_the_process_that_reused_runcs_pid() {
    common::require_root();
    let start = Instant::now();
    for attempt in 1..=ATTEMPTS {
        match scenario() {
            Outcome::Survived => {
                eprintln!(
                    "root's process survived (attempt {attempt}, {:?})",
                    start.elapsed()
                );
                return;
            }
            Outcome::Lost(why) => eprintln!("attempt {attempt}: {why}; again"),
        }
    }
    panic!("in {ATTEMPTS} attempts the scenario never got past its races");
}
