//! The simple hooks (timestamp, mount, AMD GPU, glibc) as installed in
//! /usr/local/libexec/egret/hooks, run by real runc through `egret run` with a sandbox hooks
//! directory, and the timestamp hook from the installed /etc/egret/hooks.d under real Slurm.
//!
//! `egret run` runs containers as its caller: these tests run them as root; the Slurm test runs
//! as the test user and checks what the hook did with the user's credentials.
//!
//! Run with `make test` (after `make install` and `make up`); every test needs root.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

use common::sandbox::{stderr, Sandbox};

const HOOKS: &str = "/usr/local/libexec/egret/hooks";

/// One test at a time: the leak checks of the other test files count machine-wide resources.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pull(sb: &Sandbox, name: &str) -> String {
    let image = common::registry_image(name);
    sb.ok(&["pull", &image]);
    image
}

fn run(sb: &Sandbox, args: &[&str]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    sb.egret(&all)
}

fn run_ok(sb: &Sandbox, args: &[&str]) -> String {
    common::assert_success(&run(sb, args), &format!("egret run {}", args.join(" ")))
}

/// Writes `<sandbox>/hooks.d/<file>` for the installed hook `egret-<name>-hook`.
fn hook(
    sb: &Sandbox,
    file: &str,
    name: &str,
    args: &[&str],
    env: &[String],
    when: Value,
    stages: &[&str],
) {
    let bin = format!("{HOOKS}/egret-{name}-hook");
    assert!(
        Path::new(&bin).is_file(),
        "{bin} is not installed: run `make install`"
    );
    let mut argv = vec![format!("egret-{name}-hook")];
    argv.extend(args.iter().map(|s| s.to_string()));
    let def = json!({
        "version": "1.0.0",
        "hook": {"path": bin, "args": argv, "env": env, "timeout": 60},
        "when": when,
        "stages": stages,
    });
    fs::write(
        sb.path("hooks.d").join(file),
        serde_json::to_vec_pretty(&def).unwrap(),
    )
    .unwrap();
}

fn always() -> Value {
    json!({"always": true})
}

/// The mount points of the container's /proc/self/mountinfo (field 5).
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

#[test]
fn timestamp_lines_in_hook_order_only_when_asked() {
    let _s = serial();
    let sb = Sandbox::new();
    let image = pull(&sb, "busybox");
    hook(
        &sb,
        "00-ts.json",
        "timestamp",
        &["first"],
        &[],
        always(),
        &["createRuntime"],
    );
    hook(
        &sb,
        "05-ts.json",
        "timestamp",
        &[],
        &["TIMESTAMP_HOOK_MESSAGE=from-env".into()],
        always(),
        &["createContainer"],
    );
    hook(
        &sb,
        "09-ts.json",
        "timestamp",
        &["last"],
        &[],
        always(),
        &["createContainer"],
    );
    let log = sb.path("ts.log");

    // Not set in the container: no file.
    run_ok(&sb, &[&image, "true"]);
    assert!(!log.exists());

    let env = format!("TIMESTAMP_HOOK_LOGFILE={}", log.display());
    let out = run_ok(
        &sb,
        &[
            "-e",
            &env,
            &image,
            "sh",
            "-c",
            "echo $TIMESTAMP_HOOK_LOGFILE",
        ],
    );
    assert_eq!(out.trim(), log.to_str().unwrap());
    let text = fs::read_to_string(&log).unwrap();
    // [S.NNNNNNNNN] [HOST-PID] [hook] [INFO] Timestamp hook: MESSAGE
    let parse = |l: &str| -> Option<(f64, u32, String)> {
        let rest = l.strip_prefix('[')?;
        let (time, rest) = rest.split_once("] [")?;
        let (secs, nanos) = time.split_once('.')?;
        if nanos.len() != 9
            || !secs
                .chars()
                .chain(nanos.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let (host_pid, rest) = rest.split_once("] ")?;
        let pid = host_pid.rsplit_once('-')?.1.parse().ok()?;
        let msg = rest.strip_prefix("[hook] [INFO] Timestamp hook: ")?;
        Some((time.parse().ok()?, pid, msg.to_string()))
    };
    let lines: Vec<(f64, u32, String)> = text
        .lines()
        .map(|l| parse(l).unwrap_or_else(|| panic!("bad line {l:?} in\n{text}")))
        .collect();
    let messages: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert_eq!(messages, ["first", "from-env", "last"], "{text}");
    assert!(
        lines.windows(2).all(|w| w[0].0 <= w[1].0),
        "monotonic: {text}"
    );
    assert!(
        lines.windows(2).all(|w| w[0].1 != w[1].1),
        "one process per hook: {text}"
    );

    // A relative path is the user's mistake, reported as the hook's error.
    let o = run(
        &sb,
        &["-e", "TIMESTAMP_HOOK_LOGFILE=rel.log", &image, "true"],
    );
    assert!(!o.status.success(), "{}", common::describe(&o));
    assert!(
        stderr(&o).contains("TIMESTAMP_HOOK_LOGFILE=rel.log: must be an absolute path"),
        "{}",
        common::describe(&o)
    );
}

#[test]
fn mount_hook_wildcard_readonly_and_devices() {
    let _s = serial();
    let sb = Sandbox::new();
    let busybox = pull(&sb, "busybox");
    let glibc = pull(&sb, "glibc");
    let prov = sb.path("providers");
    fs::create_dir(&prov).unwrap();
    fs::write(prov.join("libtest-fi.so"), "provider").unwrap();
    let mount = format!(
        "--mount=type=bind,src={},dst=<FI_PROVIDER_PATH>/egret-test,readonly",
        prov.display()
    );
    hook(
        &sb,
        "12-mount.json",
        "mount",
        &[&mount, "--device=/dev/fuse"],
        &[],
        json!({"annotations": {"^com.example.mount$": "^on$"}}),
        &["createContainer"],
    );
    let on = ["--annotation", "com.example.mount=on"];
    let script = "for d in /opt/fi/egret-test /usr/lib/egret-test \
                  /usr/lib/x86_64-linux-gnu/libfabric/egret-test; do \
                  test -e $d/libtest-fi.so && echo found:$d; done; \
                  touch /opt/fi/egret-test/x 2>/dev/null && echo writable; \
                  test -c /dev/fuse && (exec 3<>/dev/fuse) && echo fuse-opened; true";

    // The container's FI_PROVIDER_PATH wins.
    let mut args = on.to_vec();
    args.extend([
        "-e",
        "FI_PROVIDER_PATH=/opt/fi",
        &busybox,
        "sh",
        "-c",
        script,
    ]);
    let out = run_ok(&sb, &args);
    assert_eq!(
        out, "found:/opt/fi/egret-test\nfuse-opened\n",
        "read-only mount, usable device"
    );

    // No variable, no libfabric in the linker cache (busybox has no cache): /usr/lib.
    let mut args = on.to_vec();
    args.extend([busybox.as_str(), "sh", "-c", script]);
    assert_eq!(
        run_ok(&sb, &args),
        "found:/usr/lib/egret-test\nfuse-opened\n"
    );

    // libfabric in the container's linker cache: a first mount hook binds a libfabric.so.1
    // (built here, only its soname matters) into a directory of the image's ld.so.conf and
    // refreshes the cache with LDCONFIG_PATH; the wildcard of the next one then names the
    // `libfabric` directory beside it.
    let fab = sb.path("fabric");
    fs::create_dir(&fab).unwrap();
    fs::write(fab.join("fi.c"), "int fi_version(void) { return 1; }\n").unwrap();
    let cc = common::run(
        std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libfabric.so.1", "-o"])
            .arg(fab.join("libfabric.so.1"))
            .arg(fab.join("fi.c")),
    );
    common::assert_success(&cc, "cc -shared libfabric.so.1");
    let lib_mount = format!(
        "--mount=type=bind,src={},dst=/usr/lib/x86_64-linux-gnu/libfabric.so.1,readonly",
        fab.join("libfabric.so.1").display()
    );
    hook(
        &sb,
        "10-mount.json",
        "mount",
        &[&lib_mount],
        &["LDCONFIG_PATH=/sbin/ldconfig".to_string()],
        json!({"annotations": {"^com.example.mount$": "^on$"}}),
        &["createContainer"],
    );
    let mut args = on.to_vec();
    args.extend([glibc.as_str(), "sh", "-c", script]);
    assert_eq!(
        run_ok(&sb, &args),
        "found:/usr/lib/x86_64-linux-gnu/libfabric/egret-test\nfuse-opened\n"
    );
    fs::remove_file(sb.path("hooks.d/10-mount.json")).unwrap();

    // Not selected: nothing mounted, and /dev/fuse is neither there nor allowed.
    assert_eq!(run_ok(&sb, &[&busybox, "sh", "-c", script]), "");

    // A device bound with --mount is not declared as a device: the container has the node but
    // its device cgroup refuses it, which shows the rule above is what made it usable.
    fs::remove_file(sb.path("hooks.d/12-mount.json")).unwrap();
    hook(
        &sb,
        "12-mount.json",
        "mount",
        &["--mount=type=bind,src=/dev/fuse,dst=/dev/fuse"],
        &[],
        always(),
        &["createContainer"],
    );
    let out = run_ok(
        &sb,
        &[
            &busybox,
            "sh",
            "-c",
            "test -c /dev/fuse && echo node; (exec 3<>/dev/fuse) 2>&1 || echo refused",
        ],
    );
    assert!(
        out.starts_with("node\n") && out.ends_with("refused\n"),
        "{out}"
    );
}

#[test]
fn device_rules_of_selected_hooks_reach_the_cgroup() {
    let _s = serial();
    let sb = Sandbox::new();
    let busybox = pull(&sb, "busybox");
    hook(
        &sb,
        "12-mount.json",
        "mount",
        &["--device=/dev/fuse:rw"],
        &[],
        always(),
        &["createContainer"],
    );
    // cgroup v1: the container's devices.list shows the rule runc applied.
    let out = run_ok(
        &sb,
        &[
            &busybox,
            "sh",
            "-c",
            "cat /sys/fs/cgroup/devices/devices.list",
        ],
    );
    assert!(out.lines().any(|l| l == "c 10:229 rw"), "{out}");
}

/// A fake AMD GPU tree: kfd and two cards with render nodes, by-path links as udev makes them.
/// kfd gets /dev/fuse's numbers (not among the standard devices: only its rule lets the
/// container open it), the DRM nodes harmless memory devices.
fn fake_amd_tree(dir: &Path) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let node = |p: &Path, major, minor| {
        mknod(
            p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()))
    };
    fs::create_dir_all(dir.join("dri/by-path")).unwrap();
    node(&dir.join("kfd"), 10, 229);
    for (n, bus) in [(0, "pci-0000:c1:00.0"), (1, "pci-0000:c9:00.0")] {
        node(&dir.join(format!("dri/card{n}")), 1, 3);
        node(&dir.join(format!("dri/renderD{}", 128 + n)), 1, 5);
        symlink(
            format!("../card{n}"),
            dir.join(format!("dri/by-path/{bus}-card")),
        )
        .unwrap();
        symlink(
            format!("../renderD{}", 128 + n),
            dir.join(format!("dri/by-path/{bus}-render")),
        )
        .unwrap();
    }
}

#[test]
fn amdgpu_hook_with_a_fake_device_tree() {
    let _s = serial();
    let sb = Sandbox::new();
    let busybox = pull(&sb, "busybox");
    let dev = sb.path("fakedev");
    fake_amd_tree(&dev);
    let env = vec![
        format!("AMDGPU_DEV_ROOT={}", dev.display()),
        format!("DEVICES={0}/kfd:{0}/dri", dev.display()),
    ];
    hook(
        &sb,
        "11-amdgpu.json",
        "amdgpu",
        &[],
        &env,
        always(),
        &["createContainer"],
    );
    let script = "ls /dev/dri 2>/dev/null | tr '\\n' ' '; echo; test -c /dev/kfd && (exec 3<>/dev/kfd) && echo kfd-opened; true";

    let out = run_ok(&sb, &[&busybox, "sh", "-c", script]);
    assert_eq!(out, "card0 card1 renderD128 renderD129 \nkfd-opened\n");
    let out = run_ok(
        &sb,
        &["-e", "ROCR_VISIBLE_DEVICES=1", &busybox, "sh", "-c", script],
    );
    assert_eq!(out, "card1 renderD129 \nkfd-opened\n");

    // No kfd on the "host": the hook does nothing.
    let empty = sb.path("nodev");
    fs::create_dir(&empty).unwrap();
    fs::remove_file(sb.path("hooks.d/11-amdgpu.json")).unwrap();
    let env = vec![format!("AMDGPU_DEV_ROOT={}", empty.display())];
    hook(
        &sb,
        "11-amdgpu.json",
        "amdgpu",
        &[],
        &env,
        always(),
        &["createContainer"],
    );
    let out = run_ok(
        &sb,
        &[
            &busybox,
            "sh",
            "-c",
            "test -e /dev/kfd && echo kfd; ls /dev/dri 2>&1 | grep -c card; true",
        ],
    );
    assert_eq!(out, "0\n");
}

/// The host's glibc version (`2.36`).
fn host_glibc() -> String {
    let out = common::run(std::process::Command::new("getconf").arg("GNU_LIBC_VERSION"));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn glibc_hook_skips_replaces_and_reports() {
    let _s = serial();
    let sb = Sandbox::new();
    let busybox = pull(&sb, "busybox");
    let glibc = pull(&sb, "glibc");
    let libdir = "/usr/lib/x86_64-linux-gnu";
    let enabled = json!({"annotations": {"^com.hooks.glibc.enabled$": "^true$"}});
    let on = ["--annotation", "com.hooks.glibc.enabled=true"];
    let host_libs =
        "GLIBC_LIBS=/lib/x86_64-linux-gnu/libc.so.6:/lib/x86_64-linux-gnu/libm.so.6".to_string();
    hook(
        &sb,
        "01-glibc.json",
        "glibc",
        &[],
        &[host_libs],
        enabled.clone(),
        &["createContainer"],
    );
    let libc_mounts = |out: &str| -> Vec<String> {
        mount_points(out)
            .into_iter()
            .filter(|m| m.contains("libc.so") || m.contains("libm.so"))
            .collect()
    };

    // busybox: no linker cache, no glibc: untouched, and the container runs.
    let mut args = on.to_vec();
    args.extend([busybox.as_str(), "cat", "/proc/self/mountinfo"]);
    assert!(libc_mounts(&run_ok(&sb, &args)).is_empty());

    // The glibc image has the host's own glibc: not older, not replaced.
    let mut args = on.to_vec();
    args.extend([glibc.as_str(), "cat", "/proc/self/mountinfo"]);
    assert!(libc_mounts(&run_ok(&sb, &args)).is_empty());

    // A "host" glibc that says it is newer: the host's libc.so.6 with its version banner
    // patched (same length, still a working glibc). The container's is now older: replaced,
    // and programs run on the replacement.
    let host = host_glibc();
    assert_eq!(
        host.len(),
        4,
        "the patch below assumes an X.YY version, got {host}"
    );
    let real = fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let needle = format!("stable release version {host}.");
    let pos = real
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the banner in the host's libc.so.6");
    let mut patched = real.clone();
    patched[pos..pos + needle.len()].copy_from_slice(b"stable release version 2.99.");
    let fake = sb.path("newer-host");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("libc.so.6"), &patched).unwrap();
    fs::set_permissions(fake.join("libc.so.6"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(sb.path("hooks.d/01-glibc.json")).unwrap();
    let libs = format!("GLIBC_LIBS={}", fake.join("libc.so.6").display());
    hook(
        &sb,
        "01-glibc.json",
        "glibc",
        &[],
        &[libs],
        enabled.clone(),
        &["createContainer"],
    );
    let mut args = on.to_vec();
    let script =
        format!("cat /proc/self/mountinfo; {libdir}/libc.so.6 | head -1; ls {libdir}/libc.so.6");
    args.extend([glibc.as_str(), "sh", "-c", &script]);
    let out = run_ok(&sb, &args);
    assert_eq!(libc_mounts(&out), [format!("{libdir}/libc.so.6")], "{out}");
    assert!(out.contains("stable release version 2.99."), "{out}");
    // Not selected without the annotation.
    let out = run_ok(&sb, &[&glibc, "sh", "-c", &script]);
    assert!(
        libc_mounts(&out).is_empty() && out.contains(&needle),
        "{out}"
    );

    // A broken hook JSON is the hook's error, shown by egret, and the container does not run.
    fs::remove_file(sb.path("hooks.d/01-glibc.json")).unwrap();
    hook(
        &sb,
        "01-glibc.json",
        "glibc",
        &[],
        &[],
        enabled,
        &["createContainer"],
    );
    let mut args = on.to_vec();
    args.extend([glibc.as_str(), "echo", "ran"]);
    let o = run(&sb, &args);
    assert!(!o.status.success(), "{}", common::describe(&o));
    assert!(
        stderr(&o).contains("egret glibc: error: GLIBC_LIBS: not set"),
        "{}",
        common::describe(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"));
}

#[test]
fn installed_timestamp_hook_under_slurm_writes_as_the_user() {
    let _s = serial();
    common::require_root();
    let user = common::TEST_USER;
    let dir = common::scratch_dir(Some(user));
    let log = dir.join("ts.log");
    let image = format!("--container-image={}", common::registry_image("busybox"));
    let export = format!("--export=ALL,TIMESTAMP_HOOK_LOGFILE={}", log.display());
    let o = common::srun_as(user.name, &["-N1", "-n2", &export, &image, "true"]);
    common::assert_success(&o, "srun --container-image with TIMESTAMP_HOOK_LOGFILE");
    let text = fs::read_to_string(&log).unwrap();
    let md = fs::metadata(&log).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (user.uid, user.gid),
        "the user's file"
    );
    // Every shipped timestamp hook, once per task (two tasks).
    let starts = text
        .lines()
        .filter(|l| l.ends_with("Timestamp hook: Start-of-stage"))
        .count();
    let ends = text
        .lines()
        .filter(|l| l.ends_with("Timestamp hook: After-mount-hook"))
        .count();
    assert_eq!((starts, ends), (4, 2), "{text}");

    // A file the user may not write is not written, even though the hook runs as root.
    let forbidden = Path::new("/etc/egret-timestamp-test.log");
    let _ = fs::remove_file(forbidden);
    let export = format!(
        "--export=ALL,TIMESTAMP_HOOK_LOGFILE={}",
        forbidden.display()
    );
    let o = common::srun_as(user.name, &["-N1", "-n1", &export, &image, "echo", "ran"]);
    assert!(!o.status.success(), "{}", common::describe(&o));
    assert!(!forbidden.exists(), "created as root");
    let _ = fs::remove_dir_all(&dir);
}
