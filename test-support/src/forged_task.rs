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

/// The Python both forgers import (`from forger_lib import *`): written beside each forger by
/// [`write_forger`]. Reports go to files in OUTDIR (`note`), written whole (rename), so the
/// test never reads half a report.
const FORGER_LIB: &str = r#"import array, errno, fcntl, json, os, socket, struct, sys, termios, time

sock_path, out = sys.argv[1], sys.argv[2]


def note(name, text):
    tmp = os.path.join(out, "." + name)
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(out, name))


def wait_file(name, limit):
    deadline = time.monotonic() + limit
    while not os.path.exists(os.path.join(out, name)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def frame(msg):
    body = json.dumps(msg).encode()
    return struct.pack(">I", len(body)) + body


def hello_frame(local_id, argv):
    return frame({"Hello": {"local_id": local_id, "global_id": local_id, "argv": argv,
                            "env": ["PATH=/usr/bin:/bin"], "fds": [0, 1, 2], "tty": False}})


def unread(s):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def connect_and_hello(s, hello, limit, fail):
    """Polls the step's socket, then sends the hello with descriptors 0, 1, 2. On failure calls
    fail(why, code): code 3 when the real task took the slot first ("slot lost: ...")."""
    start = time.monotonic()
    errors = {}
    refused_since = None
    while True:
        try:
            s.connect(sock_path)
            break
        except OSError as e:
            errors[e.strerror] = errors.get(e.strerror, 0) + 1
            now = time.monotonic()
            # Refused for a while: the launcher accepted all its tasks and closed its socket.
            if e.errno == errno.ECONNREFUSED:
                refused_since = refused_since or now
                if now > refused_since + 0.2:
                    fail("slot lost: the socket refuses connections: %r" % errors, 3)
            else:
                refused_since = None
            if now > start + limit:
                fail("could not connect in %d s: %r" % (limit, errors), 1)
    try:
        s.sendmsg([hello[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                 array.array("i", [0, 1, 2]))])
        s.sendall(hello[1:])
    except (BrokenPipeError, ConnectionResetError) as e:
        # Connected to the backlog just before the launcher closed its socket.
        fail("slot lost: the launcher closed the connection: %s" % e, 3)
    note("connected", "after %.3f s: %r" % (time.monotonic() - start, errors))
"#;

/// Writes `forger.py` (the test's `script`) and the library it imports into `dir`, readable by
/// the user the forger runs as; returns the forger's path.
pub fn write_forger(dir: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    for (name, text) in [("forger_lib.py", FORGER_LIB), ("forger.py", script)] {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir.join("forger.py")
}
