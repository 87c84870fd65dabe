//! The privilege boundary, attacked as an ordinary cluster user would (docs/security.md,
//! "Hostile tests"): a registry auth file that names a credential helper by a relative path,
//! root's own credentials waiting to be borrowed, and an image whose `/etc` leads into a host
//! directory the user bound. Real srun, real launcher, real registry, real runc.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{describe, TEST_USER};

/// Runs `args` as the test user with `dir` as the working directory and `env` added.
fn as_user_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    common::run(&mut common::user_command(TEST_USER.name, dir, env, args))
}

/// The image these tests pull as the user. Not `reported`: tests that need an image new to the
/// store remove that one from root's index, which frees it only while no other user holds it.
/// Whether it is stored or not does not matter here: every step resolves its tag with the
/// registry, as the user, so the credential lookup happens either way.
const IMAGE: &str = "hooklabels";

fn write_executable(path: &Path, text: &str, owner: Option<(u32, u32)>) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A credential helper that records who ran it in `log` and answers with anonymous-looking
/// credentials (the test registry asks for none, so the pull goes on).
fn helper_script(log: &Path) -> String {
    format!(
        "#!/bin/sh\nid -u >> {}\ncat >/dev/null\n\
         printf '{{\"ServerURL\":\"127.0.0.1:5000\",\"Username\":\"u\",\"Secret\":\"s\"}}'\n",
        log.display()
    )
}

/// Removes what a test put in the user's home, also when it panics.
struct HomeFiles(Vec<PathBuf>);

impl Drop for HomeFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    }
}

/// Finding 1 of the security review: skopeo ran as root, in the step's working directory, so
/// `"credHelpers": {"127.0.0.1:5000": "x/../pwn"}` made root exec the user's `./pwn`. Now the
/// whole registry conversation runs as the user: the helper runs, but with the user's uid.
#[test]
fn a_credential_helper_in_the_users_auth_file_runs_as_the_user_never_as_root() {
    common::require_root();
    let user = (TEST_USER.uid, TEST_USER.gid);
    let dir = common::scratch_dir(Some(TEST_USER));
    let log = dir.join("helper-ran-as");
    // The helper lies beside the auth file, in the job's working directory and in the home
    // (skopeo's working directory now): wherever a relative path resolves, it is found.
    let home = Path::new(TEST_USER.home);
    let _cleanup = HomeFiles(vec![
        home.join("docker-credential-x"),
        home.join("pwn"),
        home.join(".docker"),
    ]);
    for base in [dir.as_path(), home] {
        let sub = base.join("docker-credential-x");
        fs::create_dir_all(&sub).unwrap();
        std::os::unix::fs::chown(&sub, Some(user.0), Some(user.1)).unwrap();
        write_executable(&base.join("pwn"), &helper_script(&log), Some(user));
    }
    let image = format!("--container-image={}", common::registry_image(IMAGE));
    // The key that names a helper per registry. (`credsStore`, the one for all registries, is
    // not consulted by skopeo 1.9 for a registry without a login; were it, it would run in the
    // same user process.)
    for auth in [r#"{"credHelpers": {"127.0.0.1:5000": "x/../pwn"}}"#] {
        let auth_file = dir.join("auth.json");
        fs::write(&auth_file, auth).unwrap();
        std::os::unix::fs::chown(&auth_file, Some(user.0), Some(user.1)).unwrap();
        let docker_dir = home.join(".docker");
        fs::create_dir_all(&docker_dir).unwrap();
        fs::write(docker_dir.join("config.json"), auth).unwrap();
        for p in [&docker_dir, &docker_dir.join("config.json")] {
            std::os::unix::fs::chown(p, Some(user.0), Some(user.1)).unwrap();
        }
        let auth_env = auth_file.to_str().unwrap();
        let reference = common::registry_image(IMAGE);
        // Once through REGISTRY_AUTH_FILE, once through ~/.docker/config.json; through a Slurm
        // step and through the setuid `egret pull`.
        let commands: [&[&str]; 2] = [
            &["srun", &image, "grep", "^ID=", "/etc/os-release"],
            &[common::EGRET_BIN, "pull", &reference],
        ];
        for (env, command) in [vec![("REGISTRY_AUTH_FILE", auth_env)], vec![]]
            .into_iter()
            .flat_map(|env| commands.map(|c| (env.clone(), c)))
        {
            let _ = fs::remove_file(&log);
            let o = as_user_in(&dir, &env, command);
            assert!(
                o.status.success(),
                "{auth} {env:?} {command:?}\n{}",
                describe(&o)
            );
            let ran = fs::read_to_string(&log).unwrap_or_default();
            assert!(
                !ran.is_empty(),
                "the user's helper was not consulted at all ({auth} {env:?} {command:?}): the \
                 trap is not armed\n{}",
                describe(&o)
            );
            for line in ran.lines() {
                assert_eq!(
                    line.trim(),
                    TEST_USER.uid.to_string(),
                    "the user's credential helper ran as uid {line} ({auth} {env:?} {command:?})"
                );
            }
        }
    }
}

/// Puts a credential helper for the test registry into root's own configuration and takes it
/// out again, also when the test panics.
struct RootCredentials {
    config: PathBuf,
    saved: Option<Vec<u8>>,
    helper: PathBuf,
}

impl RootCredentials {
    fn install(log: &Path) -> RootCredentials {
        let config = PathBuf::from("/root/.docker/config.json");
        let saved = fs::read(&config).ok();
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        fs::write(
            &config,
            r#"{"credHelpers": {"127.0.0.1:5000": "egret-root-test"}}"#,
        )
        .unwrap();
        let helper = PathBuf::from("/usr/local/bin/docker-credential-egret-root-test");
        write_executable(&helper, &helper_script(log), None);
        RootCredentials {
            config,
            saved,
            helper,
        }
    }
}

impl Drop for RootCredentials {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.helper);
        match &self.saved {
            Some(bytes) => {
                let _ = fs::write(&self.config, bytes);
            }
            None => {
                let _ = fs::remove_file(&self.config);
            }
        }
    }
}

/// containers/image falls back to the running user's own auth files and helpers: while skopeo
/// ran as root, a user without credentials pulled with root's. A user's step must never reach
/// root's configuration; root's own pull still does (which proves the trap is armed).
#[test]
fn a_users_step_never_uses_roots_registry_credentials() {
    common::require_root();
    let dir = common::scratch_dir(None);
    let log = dir.join("root-helper-ran");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let _root = RootCredentials::install(&log);
    let image = common::registry_image(IMAGE);
    common::assert_success(
        &common::run(common::egret().args(["pull", &image])),
        "root pull",
    );
    assert!(
        log.exists(),
        "root's own pull did not use root's credential helper: the trap is not armed"
    );
    fs::remove_file(&log).unwrap();
    let opt = format!("--container-image={image}");
    let o = common::srun_as(TEST_USER.name, &[&opt, "grep", "^ID=", "/etc/os-release"]);
    let out = common::assert_success(&o, "the user's step");
    assert!(out.starts_with("ID=egret-"), "{out}");
    assert!(
        !log.exists(),
        "the user's step ran root's credential helper (as uid {})",
        fs::read_to_string(&log).unwrap_or_default().trim()
    );
}

/// Every file under `dir` with (owner uid, contents or link target).
fn tree(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(&p).unwrap()
            };
            out.push((p, m.uid(), body));
        }
    }
    out.sort();
    out
}

/// Builds, as the user, `NAME.sqsh`: busybox with `LINK` (`etc` or `etc/profile.d`) replaced
/// by a symbolic link to `/mnt/host/LINK`, and the host directory `host/LINK` holding the
/// user's own copy of it, which the step binds at `/mnt/host`.
fn image_with_a_link_into_a_bind(dir: &Path, name: &str, link: &str) -> PathBuf {
    let base = dir.join("base.sqsh");
    if !base.exists() {
        let o = as_user_in(
            dir,
            &[],
            &[
                common::EGRET_BIN,
                "import",
                "-o",
                "base.sqsh",
                &common::registry_image("busybox"),
            ],
        );
        common::assert_success(&o, "egret import busybox as the user");
    }
    let script = format!(
        "set -e
rm -rf root
unsquashfs -q -d root base.sqsh >/dev/null
mkdir -p root/{link} host/{link} root/mnt/host
cp -a root/{link}/. host/{link}/
rm -rf root/{link}
ln -s /mnt/host/{link} root/{link}
mksquashfs root {name}.sqsh -all-root -noappend -quiet >/dev/null
rm -rf root"
    );
    let o = as_user_in(dir, &[], &["sh", "-c", &script]);
    common::assert_success(&o, &format!("build {name}.sqsh"));
    dir.join(format!("{name}.sqsh"))
}

/// Finding 2: the SSH hook rewrote `/etc/passwd`, `/etc/shells` and `/etc/profile.d` through
/// paths the user controls. With the image's `/etc` a link into a bound host directory, or a
/// link at `/etc/profile.d`, root must write nothing there: the step either
/// runs without touching the host files or fails saying the file is on another mount.
#[test]
fn the_ssh_hook_never_writes_into_a_host_directory_the_user_bound() {
    common::require_root();
    let keygen = common::run_as_user(TEST_USER.name, &[common::EGRET_BIN, "ssh-keygen"]);
    common::assert_success(&keygen, "egret ssh-keygen");
    let dir = common::scratch_dir(Some(TEST_USER));
    let host = dir.join("host");
    let mounts = format!("--container-mounts={}:/mnt/host", host.display());
    let cases = [
        image_with_a_link_into_a_bind(&dir, "etc-linked", "etc"),
        image_with_a_link_into_a_bind(&dir, "profile-linked", "etc/profile.d"),
    ];
    for evil in &cases {
        let image = format!("--container-image={}", evil.display());
        let watched = &host;
        let before = tree(watched);
        let o = as_user_in(
            &dir,
            &[],
            &["srun", "--container-ssh", &image, &mounts, "true"],
        );
        let after = tree(watched);
        assert_eq!(
            before,
            after,
            "{evil:?}: the host directory changed under the step\n{}",
            describe(&o)
        );
        assert!(
            after.iter().all(|(_, uid, _)| *uid == TEST_USER.uid),
            "{evil:?}: root-owned files appeared: {after:?}"
        );
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("another mount"),
                "{evil:?}: refused, but not saying why\n{}",
                describe(&o)
            );
        }
    }
}

/// Finding 7: the launcher is started from slurmstepd, whose umask is the user's
/// (`SLURM_UMASK`): with `umask 0000` the first step after boot created `runDir` 0777, and a
/// user could then plant `launcher.log` as a link that root opened. `runDir` gets its mode
/// explicitly, and the log is a root-only regular file opened without following links.
#[test]
fn the_users_umask_never_shapes_roots_run_directory() {
    common::require_root();
    let run_dir = Path::new("/run/egret");
    let launchers = common::processes_named(&["egret-launcher"]);
    assert!(launchers.is_empty(), "launchers still run: {launchers:?}");
    // As after a reboot: /run is memory.
    if run_dir.exists() {
        fs::remove_dir_all(run_dir).unwrap();
    }
    let dir = common::scratch_dir(Some(TEST_USER));
    let image = format!("--container-image={}", common::registry_image("busybox"));
    let o = as_user_in(
        &dir,
        &[],
        &["sh", "-c", &format!("umask 0000; srun {image} true")],
    );
    common::assert_success(&o, "a step with umask 0000");
    let meta = fs::symlink_metadata(run_dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (0, 0o755),
        "runDir after a step with umask 0000"
    );
    let log = fs::symlink_metadata(run_dir.join("launcher.log")).unwrap();
    assert!(log.file_type().is_file(), "launcher.log is a regular file");
    assert_eq!((log.uid(), log.mode() & 0o777), (0, 0o600));
    // The container still gets the step's umask, as a plain srun task does.
    for mask in ["0000", "0027"] {
        let script = format!("umask {mask}; srun {image} sh -c umask");
        let o = as_user_in(&dir, &[], &["sh", "-c", &script]);
        let out = common::assert_success(&o, &format!("umask {mask}"));
        assert_eq!(out.trim(), mask, "the container's umask");
    }
}

/// Finding 6: `PMIX_SERVER_TMPDIR` is the user's to set. A directory with the right name and
/// owner in a directory the user can write (where a rename could swap it for any other between
/// root's check and runc's bind), or reached through a link, is refused with one line naming the
/// variable; the container never starts.
#[test]
fn a_pmix_directory_outside_slurms_spool_is_never_bound() {
    common::require_root();
    common::require_installed_build();
    let dir = common::scratch_dir(Some(TEST_USER));
    let image = format!("--container-image={}", common::registry_image(IMAGE));
    // Inside the allocation the next step is step 0: the directory gets this step's name.
    let script = format!(
        "mkdir -p {d}/own {d}/spool && ln -s {d}/spool {d}/link && \
         mkdir -p {d}/own/pmix.$SLURM_JOB_ID.0 {d}/spool/pmix.$SLURM_JOB_ID.1 && \
         PMIX_SERVER_TMPDIR={d}/own/pmix.$SLURM_JOB_ID.0 srun {image} echo started-0; \
         PMIX_SERVER_TMPDIR={d}/link/pmix.$SLURM_JOB_ID.1 srun {image} echo started-1",
        d = dir.display()
    );
    let o = as_user_in(&dir, &[], &["salloc", "-n1", "sh", "-c", &script]);
    let text = describe(&o);
    assert!(!text.contains("started-"), "a container started: {text}");
    assert!(
        text.contains("only root can change"),
        "the user-writable parent is named: {text}"
    );
    assert_eq!(
        text.matches("PMIX_SERVER_TMPDIR=").count(),
        2,
        "each step refused with one line naming the variable: {text}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Finding 3: store images are root's alone. An image another user pulled is reachable only
/// through that user's index: its file (whose name `/sys/block/loop*/loop/backing_file` shows)
/// is 0600 and naming it as `--container-image` is refused, because the user's file is opened
/// as the user.
#[test]
fn another_users_image_file_in_the_store_cannot_be_run_or_read() {
    common::require_root();
    common::require_installed_build();
    common::stored_for_root(IMAGE);
    let digest = common::registry_digest(IMAGE, "latest");
    let stem = digest.replacen(':', "-", 1);
    let images = Path::new("/var/lib/egret/store/images");
    for ext in ["squashfs", "meta"] {
        let file = images.join(format!("{stem}.{ext}"));
        let m = fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o600),
            "{} is root's alone",
            file.display()
        );
    }
    let file = images.join(format!("{stem}.squashfs"));
    let o = as_user_in(
        Path::new("/tmp"),
        &[],
        &[
            "srun",
            &format!("--container-image={}", file.display()),
            "echo",
            "started",
        ],
    );
    let text = describe(&o);
    assert!(!o.status.success() && !text.contains("started"), "{text}");
    assert!(text.contains("cannot read it as"), "one line why: {text}");
    let read = as_user_in(
        Path::new("/tmp"),
        &[],
        &["head", "-c1", &file.display().to_string()],
    );
    assert!(!read.status.success(), "the user read a store image");
}

fn store_image_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir("/var/lib/egret/store/images")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "squashfs"))
        .collect();
    v.sort();
    v
}

/// Finding 8 (disk): every change of a user's `.sqsh` file is a new conversion; the copy of the
/// version before is deleted, so touching a file in a loop cannot fill the store. The user's
/// private (0600) file is converted into a root-only store file.
#[test]
fn a_users_squashfs_file_keeps_one_copy_in_the_store_however_often_it_changes() {
    common::require_root();
    common::require_installed_build();
    let dir = common::scratch_dir(Some(TEST_USER));
    let before = store_image_files();
    let mut seen = Vec::new();
    for round in 0..3 {
        let file = common::users_squashfs(&dir, "mine.sqsh", &format!("round {round}\n"));
        let o = as_user_in(
            &dir,
            &[],
            &["srun", "--container-image=./mine.sqsh", "cat", "/hello"],
        );
        let out = common::assert_success(&o, &format!("round {round}"));
        assert_eq!(out.trim(), format!("round {round}"));
        let new: Vec<PathBuf> = store_image_files()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(new.len(), 1, "one copy after round {round}: {new:?}");
        let m = fs::metadata(&new[0]).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o600),
            "the copy is root's alone"
        );
        seen.push(new[0].clone());
        drop(file);
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "each version was converted anew: {seen:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// Restores the installed configuration when dropped.
struct ConfigRestore(Vec<u8>);

impl Drop for ConfigRestore {
    fn drop(&mut self) {
        fs::write(common::EGRET_CONFIG, &self.0).unwrap();
    }
}

/// Finding 8 (disk): with `localRepositoryMaxBytes`, the least recently used image goes when a
/// new one would pass the bound; the image the step uses stays.
#[test]
fn the_store_size_bound_deletes_the_least_recently_used_image() {
    common::require_root();
    common::require_installed_build();
    common::stored_for_root(IMAGE);
    let victim_digest = common::registry_digest(IMAGE, "latest");
    let victim = PathBuf::from(format!(
        "/var/lib/egret/store/images/{}.squashfs",
        victim_digest.replacen(':', "-", 1)
    ));
    let victim_meta = victim.with_extension("meta");
    // The oldest use of all.
    let ok = Command::new("touch")
        .args(["-h", "-d", "2001-01-01"])
        .arg(&victim_meta)
        .status()
        .unwrap();
    assert!(ok.success());
    let total: u64 = fs::read_dir("/var/lib/egret/store/images")
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let original = fs::read(common::EGRET_CONFIG).unwrap();
    let _restore = ConfigRestore(original.clone());
    let mut cfg: serde_json::Value = serde_json::from_slice(&original).unwrap();
    cfg["localRepositoryMaxBytes"] = serde_json::json!(total);
    fs::write(
        common::EGRET_CONFIG,
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();

    let dir = common::scratch_dir(Some(TEST_USER));
    common::users_squashfs(&dir, "bound.sqsh", "bounded\n");
    let o = as_user_in(
        &dir,
        &[],
        &["srun", "--container-image=./bound.sqsh", "cat", "/hello"],
    );
    let out = common::assert_success(&o, "a step over the bound");
    assert_eq!(out.trim(), "bounded");
    assert!(
        !victim.exists(),
        "the least recently used image was deleted"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Finding 9: while runc sets up a step's next container, a running task must not be able to
/// swap the shared root filesystem's top-level entries for links (the precondition of runc's
/// 2025 mount races). The container's `/` is root's and sticky: the user still creates files
/// there, but cannot rename or remove the image's own entries.
#[test]
fn a_task_cannot_replace_the_top_level_entries_of_the_shared_root() {
    common::require_root();
    common::require_installed_build();
    let image = format!("--container-image={}", common::registry_image(IMAGE));
    let o = as_user_in(
        Path::new("/tmp"),
        &[],
        &[
            "srun",
            &image,
            "sh",
            "-c",
            "mv /etc /etc.moved 2>/dev/null && echo moved-etc; \
             rmdir /mnt 2>/dev/null && echo removed-mnt; \
             touch /mine && echo created; stat -c '%u %a' /",
        ],
    );
    let out = common::assert_success(&o, "a step trying to rename /etc");
    assert!(
        !out.contains("moved-etc") && !out.contains("removed-mnt"),
        "{out}"
    );
    assert!(out.contains("created"), "users still write in /: {out}");
    assert!(out.contains("0 1777"), "/ is root's and sticky: {out}");
}

/// The inodes of the Unix sockets at `/run/egret/step-JOB.*.sock`: the listener while it
/// listens, and the launcher's ends of the tasks' connections (which show its path too).
fn step_sockets(job: &str) -> Vec<String> {
    let table = fs::read_to_string("/proc/net/unix").unwrap();
    table
        .lines()
        .filter(|l| l.contains(&format!("/run/egret/step-{job}.")))
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
        .collect()
}

/// slurmstepd binds the step's socket (as root) before it forks the tasks and hands it to the
/// launcher: nothing but the launcher may hold the listener, neither the user's task processes
/// (forked from slurmstepd afterwards) nor the container or runc (the launcher's children):
/// whoever could accept on it could pose as the launcher to the step's other tasks.
#[test]
fn only_the_launcher_holds_the_steps_sockets() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let mut step = common::user_command(
        TEST_USER.name,
        &dir,
        &[],
        &[
            "srun",
            "-n2",
            &format!("--container-image={}", common::registry_image("busybox")),
            "sh",
            "-c",
            "echo job=$SLURM_JOB_ID; sleep 4",
        ],
    );
    step.stdout(std::process::Stdio::piped());
    let mut child = step.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let job = line
        .trim()
        .strip_prefix("job=")
        .expect("the step's job id")
        .to_string();
    // A listener inherited by anyone else would outlive the launcher's copy and show here.
    let inodes = step_sockets(&job);
    assert!(!inodes.is_empty(), "no socket of job {job}'s step");
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut holders = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path())
                .is_ok_and(|l| targets.contains(&l.to_string_lossy().into_owned()))
            {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                holders.push(comm.trim().to_string());
            }
        }
    }
    let _ = child.wait();
    assert!(
        !holders.is_empty() && holders.iter().all(|c| c == "egret-launcher"),
        "the step's sockets are held by {holders:?}"
    );
}
