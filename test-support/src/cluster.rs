//! The machine `make up` sets up, as the system tests see it.
//!
//! The tests run against the real machine set up by `make up` (Slurm nodes n1 and n2, the
//! registry on 127.0.0.1:5000 with the test images, egret installed under /usr/local). They
//! need root, and they fail loudly when something is missing: a test never skips itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The local registry started by `scripts/registry-up.sh`.
pub const REGISTRY: &str = "127.0.0.1:5000";
/// The installed CLI (`make install`).
pub const EGRET_BIN: &str = "/usr/local/bin/egret";
/// The installed SPANK plugin.
pub const PLUGIN_SO: &str = "/usr/local/lib/egret/spank_egret.so";
/// The installed site configuration.
pub const EGRET_CONFIG: &str = "/etc/egret/egret.json";
/// runc's state directory as egret uses it (egret.json `runcRoot` default).
pub const RUNC_ROOT: &str = "/run/egret/runc";
/// Slurm node names of the test cluster (`scripts/cluster-up.sh`).
pub const NODES: [&str; 2] = ["n1", "n2"];
/// Every `srun`/`sbatch` a test starts is killed after this many seconds.
pub const SLURM_TIMEOUT_S: u32 = 120;
/// Images pushed by `scripts/build-test-images.py` (tag `latest`; busybox also has `v2s2`,
/// a Docker schema 2 manifest, and `multiarch`, an OCI index with amd64 and arm64).
pub const TEST_IMAGES: [&str; 8] = [
    "busybox",
    "multilayer",
    "entrypoint",
    "reported",
    "hooklabels",
    "pytorch",
    "glibc",
    "mpich",
];

/// An ordinary (non-root) user that exists on every node of the test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestUser {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'static str,
}

/// `egretuser`, created by `scripts/cluster-up.sh`.
pub const TEST_USER: TestUser = TestUser {
    name: "egretuser",
    uid: 4242,
    gid: 4242,
    home: "/home/egretuser",
};

/// Panics unless the test runs as root (integration tests must fail, never skip), and unless
/// the installed egret is the one this checkout built.
pub fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert!(
        euid == 0,
        "this integration test needs root (euid is {euid}): run `make test` as root on a \
         machine prepared with `make up`"
    );
    require_installed_build();
}

/// What `scripts/install.sh` installs from `target/release`: (built file, installed path).
const INSTALLED: [(&str, &str); 4] = [
    ("egret", EGRET_BIN),
    ("egret-launcher", "/usr/local/libexec/egret/egret-launcher"),
    ("egret-launcher", "/usr/local/bin/egret-launcher"),
    ("libspank_egret.so", PLUGIN_SO),
];

/// Panics, once per test binary, when an installed binary, hook or the plugin differs from the
/// one in `target/release`: the system tests exercise the installed files, so a stale install
/// would test yesterday's code.
pub fn require_installed_build() {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let verdict = CHECKED.get_or_init(|| {
        let release = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"))
            .join("release");
        let mut pairs: Vec<(PathBuf, PathBuf)> = INSTALLED
            .iter()
            .map(|(built, installed)| (release.join(built), PathBuf::from(installed)))
            .collect();
        let hooks = fs::read_dir(&release).map_err(|e| {
            format!(
                "cannot read {}: {e} (run `make install`, which builds it)",
                release.display()
            )
        })?;
        for entry in hooks.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && name.starts_with("egret-") && name.ends_with("-hook") {
                let installed = Path::new("/usr/local/libexec/egret/hooks").join(&name);
                pairs.push((entry.path(), installed));
            }
        }
        let mut stale = Vec::new();
        for (built, installed) in &pairs {
            let a = fs::read(built).map_err(|e| {
                format!("cannot read {}: {e} (run `make install`)", built.display())
            })?;
            match fs::read(installed) {
                Ok(b) if a == b => {}
                Ok(_) => stale.push(format!(
                    "{} differs from {}",
                    installed.display(),
                    built.display()
                )),
                Err(e) => stale.push(format!("{}: {e}", installed.display())),
            }
        }
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the installed egret is not this checkout's build: {}; run `make install`",
                stale.join("; ")
            ))
        }
    });
    if let Err(why) = verdict {
        panic!("{why}");
    }
}

/// Makes sure the system store (the one srun uses) holds `127.0.0.1:5000/egret/NAME` for root,
/// so a test that looks at a step's output is not looking at an import's progress lines as
/// well: `egret pull` as root, which downloads only when the store lacks the image.
pub fn stored_for_root(name: &str) {
    let image = registry_image(name);
    let out = run(egret().args(["pull", &image]));
    assert_success(&out, &format!("egret pull {image}"));
}

/// `127.0.0.1:5000/egret/NAME` (no tag: `latest`).
pub fn registry_image(name: &str) -> String {
    format!("{REGISTRY}/egret/{name}")
}

/// The repository root (the workspace holding this crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A `Command` for the installed `egret` CLI. Panics if it is not installed.
pub fn egret() -> Command {
    assert!(
        Path::new(EGRET_BIN).is_file(),
        "{EGRET_BIN} is not installed: run `make install`"
    );
    require_installed_build();
    let mut cmd = Command::new(EGRET_BIN);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a command to completion, stdin from /dev/null, and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Stdout and stderr of an `Output`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        status_text(out),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status_text(out: &Output) -> String {
    match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

/// Panics with the command's output unless it exited 0; returns its stdout.
pub fn assert_success(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed\n{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `timeout 120 srun ARGS` as root (stdin /dev/null).
pub fn srun(args: &[&str]) -> Output {
    require_installed_build();
    run(Command::new("timeout")
        .args(["--kill-after=10", &SLURM_TIMEOUT_S.to_string(), "srun"])
        .args(args))
}

/// `srun` that must succeed; returns its stdout.
pub fn srun_ok(args: &[&str]) -> String {
    let out = srun(args);
    assert_success(&out, &format!("srun {}", args.join(" ")))
}

/// `timeout 120 srun ARGS` as `user` (through `runuser`).
pub fn srun_as(user: &str, args: &[&str]) -> Output {
    let timeout = SLURM_TIMEOUT_S.to_string();
    let mut cmd = vec!["timeout", "--kill-after=10", timeout.as_str(), "srun"];
    cmd.extend_from_slice(args);
    run_as_user(user, &cmd)
}

/// `runuser -u USER -- timeout --kill-after=10 120 ARGS...` in `dir` with `env` added: a
/// bounded command of `user`'s, to [`run`] or [`run_with_stdin`].
pub fn user_command(user: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    assert!(!args.is_empty(), "user_command: empty command");
    require_installed_build();
    let timeout = SLURM_TIMEOUT_S.to_string();
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "timeout", "--kill-after=10", &timeout])
        .args(args)
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a command to completion with `input` on its stdin; returns its output.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("cannot write to the stdin of {cmd:?}: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"))
}

/// Runs `cmd` as `user` with `runuser -u USER --` (a login-less switch, environment kept).
pub fn run_as_user(user: &str, cmd: &[&str]) -> Output {
    assert!(!cmd.is_empty(), "run_as_user: empty command");
    require_installed_build();
    run(Command::new("runuser")
        .args(["-u", user, "--"])
        .args(cmd)
        .current_dir("/"))
}

static SCRATCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under /tmp/egret-tests, owned by `owner` (uid/gid), mode 0755.
pub fn scratch_dir(owner: Option<TestUser>) -> PathBuf {
    let n = SCRATCH_COUNTER.fetch_add(1, Ordering::SeqCst);
    let base = Path::new("/tmp/egret-tests");
    fs::create_dir_all(base).expect("create /tmp/egret-tests");
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).expect("chmod /tmp/egret-tests");
    let dir = base.join(format!("{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove old scratch dir");
    }
    fs::create_dir(&dir).expect("create scratch dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod scratch dir");
    if let Some(u) = owner {
        std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid)).expect("chown scratch dir");
    }
    dir
}

/// Submits `script` (its full text, starting with `#!`) with `sbatch --wait` as root and
/// returns (the job's exit code, the text of its output file).
pub fn sbatch_wait(script: &str) -> (i32, String) {
    sbatch_wait_impl(None, script, &[])
}

/// Like `sbatch_wait`, with extra sbatch options (e.g. `["-N2", "--container-image=..."]`).
pub fn sbatch_wait_with(script: &str, opts: &[&str]) -> (i32, String) {
    sbatch_wait_impl(None, script, opts)
}

/// Like `sbatch_wait`, submitted by `user`.
pub fn sbatch_wait_as(user: TestUser, script: &str, opts: &[&str]) -> (i32, String) {
    sbatch_wait_impl(Some(user), script, opts)
}

fn sbatch_wait_impl(user: Option<TestUser>, script: &str, opts: &[&str]) -> (i32, String) {
    require_installed_build();
    let dir = scratch_dir(user);
    let script_path = dir.join("job.sh");
    let out_path = dir.join("job.out");
    fs::write(&script_path, script).expect("write batch script");
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    if let Some(u) = user {
        std::os::unix::fs::chown(&script_path, Some(u.uid), Some(u.gid)).expect("chown script");
    }
    let timeout = SLURM_TIMEOUT_S.to_string();
    let output_opt = format!("--output={}", out_path.display());
    let mut cmd: Vec<&str> = vec!["timeout", "--kill-after=10", &timeout, "sbatch", "--wait"];
    cmd.push(&output_opt);
    cmd.extend_from_slice(opts);
    let script_str = script_path.to_str().expect("utf-8 path");
    cmd.push(script_str);
    let out = match user {
        Some(u) => run_as_user(u.name, &cmd),
        None => run(Command::new(cmd[0]).args(&cmd[1..]).current_dir(&dir)),
    };
    // sbatch --wait exits with the job's exit code; 124/137 is our timeout.
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != 124 && code != 137,
        "sbatch --wait timed out after {SLURM_TIMEOUT_S}s\n{}",
        describe(&out)
    );
    let text = fs::read_to_string(&out_path).unwrap_or_else(|e| {
        panic!(
            "cannot read the job's output {}: {e}\n{}",
            out_path.display(),
            describe(&out)
        )
    });
    (code, text)
}

/// Number of mounts in this process's mount namespace (/proc/self/mountinfo lines).
pub fn count_mounts() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .count()
}

/// Mount points whose source or target contains `needle` (e.g. "egret", "squashfs").
pub fn mounts_matching(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Number of attached loop devices (`losetup -a` lines).
pub fn count_loop_devices() -> usize {
    loop_devices().len()
}

/// `losetup -a`, one line per attached loop device.
pub fn loop_devices() -> Vec<String> {
    let out = run(Command::new("losetup").arg("-a"));
    assert_success(&out, "losetup -a")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Container state directories left under egret's runc root (empty if it does not exist).
pub fn runc_state_entries() -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(RUNC_ROOT) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {RUNC_ROOT}: {e}"),
    };
    names.sort();
    names
}

/// Pids and command names of live processes whose name is one of `names` (e.g. "runc",
/// "egret-launcher").
pub fn processes_named(names: &[&str]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
            let comm = comm.trim_end();
            if names.contains(&comm) {
                found.push((pid, comm.to_owned()));
            }
        }
    }
    found.sort();
    found
}

/// What a containerised step may leak on this machine. Take one before, one after, and
/// `assert_no_leaks(&before)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakSnapshot {
    pub mounts: usize,
    pub loop_devices: Vec<String>,
    pub runc_states: Vec<String>,
    pub processes: Vec<(u32, String)>,
}

pub fn leak_snapshot() -> LeakSnapshot {
    LeakSnapshot {
        mounts: count_mounts(),
        loop_devices: loop_devices(),
        runc_states: runc_state_entries(),
        processes: processes_named(&["runc", "egret-launcher"]),
    }
}

/// Waits (up to 15 s, cleanup at step end is asynchronous) until nothing is left over
/// compared with `before`; panics with the difference otherwise.
pub fn assert_no_leaks(before: &LeakSnapshot) {
    let mut now = leak_snapshot();
    let ok = |now: &LeakSnapshot| {
        now.mounts <= before.mounts
            && now.loop_devices.len() <= before.loop_devices.len()
            && now.runc_states.len() <= before.runc_states.len()
            && now.processes.iter().all(|p| before.processes.contains(p))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok(&now) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = leak_snapshot();
    }
    assert!(
        ok(&now),
        "resources leaked by the step:\nbefore: {before:#?}\nafter: {now:#?}"
    );
}

/// Polls `cond` every 100 ms until it is true or `timeout` passes; returns whether it became
/// true.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `skopeo inspect --raw` of `REGISTRY/egret/NAME:TAG`; the manifest bytes.
pub fn registry_manifest(name: &str, tag: &str) -> Vec<u8> {
    let reference = format!("docker://{}:{tag}", registry_image(name));
    let out =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &reference]));
    assert_success(&out, &format!("skopeo inspect --raw {reference}"));
    out.stdout
}

/// `sha256:HEX` of the manifest the registry serves for `NAME:TAG`.
pub fn registry_digest(name: &str, tag: &str) -> String {
    let bytes = registry_manifest(name, tag);
    let out = {
        use std::io::Write;
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sha256sum");
        child
            .stdin
            .take()
            .expect("sha256sum stdin")
            .write_all(&bytes)
            .expect("write to sha256sum");
        child.wait_with_output().expect("sha256sum")
    };
    let text = assert_success(&out, "sha256sum");
    format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// The expected merged tree of `egret/multilayer` (`test-support/data/multilayer-expected.json`,
/// written by `scripts/build-test-images.py`). See its `_comment` for the format.
pub fn multilayer_expected() -> serde_json::Value {
    let path = repo_root().join("test-support/data/multilayer-expected.json");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (run `make images`)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The id the next job will get: unchanged when srun refused to queue one.
pub fn next_job_id() -> usize {
    next_job_id_of(Command::new("scontrol"))
}

/// `NEXT_JOB_ID` from `scontrol show config` run as `scontrol` (a cluster's `SLURM_CONF` set).
pub(crate) fn next_job_id_of(mut scontrol: Command) -> usize {
    let o = scontrol.args(["show", "config"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("NEXT_JOB_ID")
                .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .expect("NEXT_JOB_ID in scontrol show config")
}

/// A squashfs file made by the test user (as `enroot import` or `mksquashfs` would) at
/// `dir/NAME`, private to them (0600): busybox's `sh`, `cat` and `id`, and `/hello` saying `text`.
pub fn users_squashfs(dir: &Path, name: &str, text: &str) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "id"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    fs::write(root.join("hello"), text).unwrap();
    let out = dir.join(name);
    let _ = fs::remove_file(&out);
    let ok = Command::new("mksquashfs")
        .arg(&root)
        .arg(&out)
        .args(["-quiet", "-no-progress", "-all-root"])
        .status()
        .unwrap();
    assert!(ok.success());
    std::os::unix::fs::chown(&out, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).unwrap();
    out
}

/// A character device number no driver serves: opening it fails with ENXIO when the device
/// cgroup lets it through, EPERM when the cgroup refuses.
pub fn driverless_char_device(dir: &Path, minor: u64) -> std::path::PathBuf {
    let taken = std::fs::read_to_string("/proc/devices").unwrap();
    let major = (60u64..64)
        .chain(120..128)
        .find(|m| {
            !taken
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&m.to_string()))
        })
        .expect("a free experimental major number");
    let node = dir.join(format!("driverless{minor}"));
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap(); // past the umask
    node
}

/// The path of `controller` in a `/proc/PID/cgroup` text (cgroup v1 lines `N:CONTROLLERS:PATH`).
pub fn cgroup_path(proc_cgroup: &str, controller: &str) -> String {
    proc_cgroup
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            (c == controller).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} line in {proc_cgroup}"))
}
