//! A registry that requires a login, pulled from by an ordinary user through Slurm: the user's
//! own credentials (`~/.docker/config.json`, `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`) reach skopeo, which runs as the user
//! (docs/security.md, "The privilege boundary"); without them, or with a wrong password, the
//! step fails in one line and stores nothing. Real srun, real launcher, real registry.
//!
//! The registry is `scripts/registry-up.sh`'s second instance, 127.0.0.1:5001: the storage of
//! 127.0.0.1:5000, read-only, behind htpasswd basic auth (user `egrettest`, the password in
//! `/etc/egret-registry/auth-password`, root only).

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use common::{describe, TEST_USER};
use egret_engine::config::Config;
use egret_engine::image::reference::ImageRef;
use egret_engine::image::store::Store;

/// The login-protected registry.
const PRIVATE: &str = "127.0.0.1:5001";
/// The test login `scripts/registry-up.sh` makes.
const LOGIN_USER: &str = "egrettest";
const PASSWORD_FILE: &str = "/etc/egret-registry/auth-password";
/// The image these tests pull: busybox as a Docker schema 2 manifest, a digest of its own that
/// no other test stores (the others only inspect it in the registry), so once this user's name
/// for it is gone, the step really downloads it, through the login.
const REPO: &str = "egret/busybox";
const TAG: &str = "v2s2";
/// What its `/etc/os-release` says.
const IMAGE_ID: &str = "ID=egret-busybox";
/// The variables that point skopeo at auth files: the tests set them explicitly, never inherit.
const AUTH_VARS: [&str; 4] = [
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
];

/// One test at a time in this binary: they share the user's home and index entry.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `127.0.0.1:5001#egret/busybox:v2s2`, as srun takes it.
fn srun_image() -> String {
    format!("--container-image={PRIVATE}#{REPO}:{TAG}")
}

/// The name the user's index gives it.
fn unique_key() -> String {
    format!("{PRIVATE}/{REPO}:{TAG}")
}

/// The test login's password; panics unless the registry is up and refuses anonymous pulls
/// (otherwise a passing test would prove nothing).
fn password() -> String {
    let pass = fs::read_to_string(PASSWORD_FILE).unwrap_or_else(|e| {
        panic!("cannot read {PASSWORD_FILE}: {e} (run `bash scripts/registry-up.sh` as root)")
    });
    let pass = pass.trim().to_owned();
    assert!(!pass.is_empty(), "{PASSWORD_FILE} is empty");
    let code = |creds: Option<String>| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
        ]);
        if let Some(c) = creds {
            cmd.args(["-u", &c]);
        }
        cmd.arg(format!("http://{PRIVATE}/v2/"));
        String::from_utf8_lossy(&common::run(&mut cmd).stdout).into_owned()
    };
    assert_eq!(
        code(None),
        "401",
        "http://{PRIVATE}/v2/ does not ask anonymous clients to log in: run \
         `bash scripts/registry-up.sh`"
    );
    assert_eq!(
        code(Some(format!("{LOGIN_USER}:{pass}"))),
        "200",
        "the test login is refused by {PRIVATE}: run `bash scripts/registry-up.sh`"
    );
    pass
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A containers-auth.json / docker config.json with an `auths` entry for the registry.
fn auth_json(password: &str) -> String {
    let token = base64(format!("{LOGIN_USER}:{password}").as_bytes());
    serde_json::json!({ "auths": { PRIVATE: { "auth": token } } }).to_string()
}

/// Writes `text` to `path` as the user's own private file (directories above it, up to an
/// existing one, made 0700 and the user's).
fn write_user_file(path: &Path, text: &str) {
    let mut missing = Vec::new();
    let mut dir = path.parent().unwrap();
    while !dir.exists() {
        missing.push(dir.to_path_buf());
        dir = dir.parent().unwrap();
    }
    for d in missing.iter().rev() {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(d, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(path, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
}

/// Puts back what a test changed in the user's home, also when it panics: files it created
/// are removed (with the directories it created for them), files it replaced are restored.
struct HomeFiles(Vec<(PathBuf, Option<Vec<u8>>, Option<PathBuf>)>);

impl HomeFiles {
    fn new() -> HomeFiles {
        HomeFiles(Vec::new())
    }

    /// Writes `rel` (below the user's home) as the user's private file, remembering how to
    /// undo it.
    fn write(&mut self, rel: &str, text: &str) -> PathBuf {
        let home = Path::new(TEST_USER.home);
        let path = home.join(rel);
        let saved = fs::read(&path).ok();
        // The topmost directory this creates, to remove again.
        let created = path
            .ancestors()
            .skip(1)
            .take_while(|d| !d.exists())
            .last()
            .map(Path::to_path_buf);
        write_user_file(&path, text);
        self.0.push((path.clone(), saved, created));
        path
    }
}

impl Drop for HomeFiles {
    fn drop(&mut self) {
        for (path, saved, created) in self.0.iter().rev() {
            match saved {
                Some(bytes) => {
                    let _ = fs::write(path, bytes);
                }
                None => {
                    let _ = fs::remove_file(path);
                }
            }
            if let Some(dir) = created {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}

/// The installed site configuration.
fn config() -> Config {
    Config::load(Path::new(common::EGRET_CONFIG))
        .unwrap_or_else(|e| panic!("{}: {e}", common::EGRET_CONFIG))
}

/// The test user's view of the store, as the launcher opens it for their steps. `egret rmi`
/// is root's own index only, so the tests edit the user's through the store's API (its locks,
/// and its collection of files no index names any more).
fn user_store() -> Store {
    let c = config();
    Store::open(
        &c.local_repository_base_dir,
        TEST_USER.uid,
        TEST_USER.gid,
        &c.repository_metadata_lock_timings,
    )
    .unwrap_or_else(|e| panic!("cannot open the store for {}: {e}", TEST_USER.name))
}

/// The names in the test user's store index.
fn user_index() -> Vec<String> {
    user_store()
        .list()
        .unwrap_or_else(|e| panic!("cannot list {}'s images: {e}", TEST_USER.name))
        .into_iter()
        .map(|e| e.unique_key)
        .collect()
}

/// Whether the store holds the image the registry serves for it (by manifest digest).
fn image_stored() -> bool {
    let digest = common::registry_digest("busybox", TAG);
    config()
        .local_repository_base_dir
        .join("images")
        .join(format!("{}.squashfs", digest.replace(':', "-")))
        .exists()
}

/// Removes the image from the user's index (nobody else stores this digest, so its files go
/// too), now and again when the test ends.
struct Forget;

impl Forget {
    fn now() -> Forget {
        forget();
        assert!(
            !user_index().contains(&unique_key()),
            "{} is still in {}'s index after its removal",
            unique_key(),
            TEST_USER.name
        );
        Forget
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        forget();
    }
}

fn forget() {
    if user_index().contains(&unique_key()) {
        let r = ImageRef::parse(&unique_key()).unwrap();
        user_store().remove(&r).unwrap_or_else(|e| {
            panic!("cannot remove {} for {}: {e}", unique_key(), TEST_USER.name)
        });
    }
}

/// `srun --container-image=127.0.0.1:5001#egret/busybox:v2s2 cat /etc/os-release` as the test
/// user, from `/`, with none of the auth variables of this process and `env` added.
fn user_step(env: &[(&str, &str)]) -> Output {
    let timeout = common::SLURM_TIMEOUT_S.to_string();
    let image = srun_image();
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", TEST_USER.name, "--", "timeout", "--kill-after=10"])
        .args([
            timeout.as_str(),
            "srun",
            image.as_str(),
            "cat",
            "/etc/os-release",
        ])
        .current_dir("/");
    for var in AUTH_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::require_installed_build();
    common::run(&mut cmd)
}

/// The step succeeded, printed the image's `/etc/os-release`, and the image is in the user's
/// index; when the store did not hold it before, the step downloaded it.
fn assert_pulled(o: &Output, was_stored: bool, what: &str) {
    let out = common::assert_success(o, what);
    assert!(
        out.lines().any(|l| l == IMAGE_ID),
        "{what}: not the image's /etc/os-release\n{}",
        describe(o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    if !was_stored {
        assert!(
            err.contains("egret: downloading") && err.contains("egret: stored"),
            "{what}: the image was not in the store, yet the step did not download it\n{}",
            describe(o)
        );
    }
    assert!(
        user_index().contains(&unique_key()),
        "{what}: {} is not in {}'s index",
        unique_key(),
        TEST_USER.name
    );
}

/// The step failed with exactly one egret line saying the pull was unauthorized, naming the
/// registry, and stored nothing.
fn assert_refused(o: &Output, was_stored: bool, what: &str) {
    assert!(!o.status.success(), "{what}: the step ran\n{}", describe(o));
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret")).collect();
    assert_eq!(ours.len(), 1, "{what}: not one egret line\n{}", describe(o));
    let line = ours[0];
    assert!(
        line.starts_with("egret: unauthorized to pull ")
            && line.contains(&format!("{PRIVATE}/{REPO}:{TAG}")),
        "{what}: the line does not say the login to {PRIVATE} failed: {line}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(IMAGE_ID),
        "{what}: the container ran\n{}",
        describe(o)
    );
    assert!(
        !user_index().contains(&unique_key()),
        "{what}: {} was added to {}'s index",
        unique_key(),
        TEST_USER.name
    );
    assert_eq!(
        image_stored(),
        was_stored,
        "{what}: the refused step changed the store"
    );
}

#[test]
fn the_users_docker_config_logs_the_step_in() {
    common::require_root();
    let _serial = serial();
    let password = password();
    let mut home = HomeFiles::new();
    home.write(".docker/config.json", &auth_json(&password));
    let _forget = Forget::now();
    let was_stored = image_stored();
    let o = user_step(&[]);
    assert_pulled(&o, was_stored, "a step with ~/.docker/config.json");
    // Stored now: the next step resolves the tag with the registry again, through the login.
    let o = user_step(&[]);
    assert_pulled(&o, true, "a second step with ~/.docker/config.json");
}

#[test]
fn without_credentials_or_with_a_wrong_password_the_step_fails_in_one_line() {
    common::require_root();
    let _serial = serial();
    let password = password();
    let home = Path::new(TEST_USER.home);
    // Whatever else the home holds, nothing in it logs in to this registry.
    for rel in [
        ".docker/config.json",
        ".config/containers/auth.json",
        ".dockercfg",
    ] {
        let text = fs::read_to_string(home.join(rel)).unwrap_or_default();
        assert!(
            !text.contains(PRIVATE),
            "~{}/{rel} names {PRIVATE}: the user is not without credentials",
            TEST_USER.name
        );
    }
    let _forget = Forget::now();
    let was_stored = image_stored();
    let o = user_step(&[]);
    assert_refused(&o, was_stored, "a step without credentials");

    let wrong = format!("{password}x");
    let mut files = HomeFiles::new();
    files.write(".docker/config.json", &auth_json(&wrong));
    let o = user_step(&[]);
    assert_refused(&o, was_stored, "a step with a wrong password in ~/.docker");
    let file = files.write("egret-test-wrong-auth.json", &auth_json(&wrong));
    let o = user_step(&[("REGISTRY_AUTH_FILE", file.to_str().unwrap())]);
    assert_refused(
        &o,
        was_stored,
        "a step with a wrong password in REGISTRY_AUTH_FILE",
    );
}

#[test]
fn registry_auth_file_logs_the_step_in() {
    common::require_root();
    let _serial = serial();
    let password = password();
    let mut home = HomeFiles::new();
    let file = home.write("egret-test-auth.json", &auth_json(&password));
    // The variable is what logs in: ~/.docker holds a wrong password, which it overrides.
    home.write(".docker/config.json", &auth_json(&format!("{password}x")));
    let _forget = Forget::now();
    let was_stored = image_stored();
    let o = user_step(&[("REGISTRY_AUTH_FILE", file.to_str().unwrap())]);
    assert_pulled(&o, was_stored, "a step with REGISTRY_AUTH_FILE");
}

#[test]
fn the_auth_file_in_the_users_runtime_directory_logs_the_step_in() {
    common::require_root();
    let _serial = serial();
    let password = password();
    // A runtime directory of the user's own, as pam_systemd makes /run/user/UID.
    let runtime = common::scratch_dir(Some(TEST_USER));
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    write_user_file(&runtime.join("containers/auth.json"), &auth_json(&password));
    let _forget = Forget::now();
    let was_stored = image_stored();
    let o = user_step(&[("XDG_RUNTIME_DIR", runtime.to_str().unwrap())]);
    assert_pulled(
        &o,
        was_stored,
        "a step with $XDG_RUNTIME_DIR/containers/auth.json",
    );
    fs::remove_dir_all(&runtime).unwrap();
}

/// `egret pull --username egrettest --password-stdin 127.0.0.1:5001/egret/busybox:v2s2` as the
/// test user, `stdin` on its standard input.
fn user_cli_pull(stdin: &str) -> Output {
    let reference = unique_key();
    let argv = [
        common::EGRET_BIN,
        "pull",
        "--username",
        LOGIN_USER,
        "--password-stdin",
        &reference,
    ];
    let mut cmd = common::user_command(TEST_USER.name, Path::new("/"), &[], &argv);
    common::run_with_stdin(&mut cmd, stdin.as_bytes())
}

#[test]
fn a_user_logs_in_on_the_command_line_with_password_stdin() {
    common::require_root();
    let _serial = serial();
    let pass = password();
    let _forget = Forget::now();
    let was_stored = image_stored();
    // A wrong password: refused, nothing stored, nothing in the user's index.
    let o = user_cli_pull("not-the-password\n");
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unauthorized to pull"),
        "{}",
        describe(&o)
    );
    assert!(!user_index().contains(&unique_key()));
    assert_eq!(
        image_stored(),
        was_stored,
        "the refused pull changed the store"
    );
    // The right one: the user's setuid egret pulls through the login, into their own index.
    let o = user_cli_pull(&format!("{pass}\n"));
    common::assert_success(&o, "egret pull --password-stdin as the user");
    assert!(
        user_index().contains(&unique_key()),
        "{} is not in {}'s index",
        unique_key(),
        TEST_USER.name
    );
}

/// `egret pull --login REF` as the test user on a real terminal (`script` gives it one), the
/// user name and password typed in as `typed`.
fn user_cli_login_pull(typed: &str) -> Output {
    let line = format!("{} pull --login {}", common::EGRET_BIN, unique_key());
    let argv = ["script", "-qec", &line, "/dev/null"];
    let mut cmd = common::user_command(TEST_USER.name, Path::new("/"), &[], &argv);
    common::run_with_stdin(&mut cmd, typed.as_bytes())
}

#[test]
fn a_user_logs_in_at_the_login_prompt() {
    common::require_root();
    let _serial = serial();
    let pass = password();
    let _forget = Forget::now();
    let o = user_cli_login_pull(&format!("{LOGIN_USER}\nnot-the-password\n"));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(text.contains("unauthorized to pull"), "{}", describe(&o));
    assert!(!user_index().contains(&unique_key()));
    let o = user_cli_login_pull(&format!("{LOGIN_USER}\n{pass}\n"));
    // (What is typed ahead arrives before the prompt turns echo off, so the terminal shows it
    // here: whether the prompt echoes is not what this test can see.)
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", describe(&o));
    assert!(text.contains("Password:"), "{text}");
    assert!(
        user_index().contains(&unique_key()),
        "{} is not in {}'s index after --login",
        unique_key(),
        TEST_USER.name
    );
}
