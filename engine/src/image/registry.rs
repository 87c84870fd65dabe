//! Fetching through skopeo, behind the [`Fetcher`] trait so the import logic can be tested with
//! a fake.
//!
//! The registry protocol, `registries.conf` (mirrors, insecure registries), `policy.json` and
//! the auth files stay skopeo's: sites already know how to configure them. egret only adds
//! explicit credentials (as a private temporary auth file, never on a command line) and turns
//! skopeo's stderr into one line a user can act on.
//!
//! When root imports for a user (the launcher), skopeo runs as that user ([`FetchUser`]): with
//! their uid, gid and groups, `no_new_privs`, a clean environment and their home as its working
//! directory, so their own auth files and credential helpers apply and nobody else's can, and
//! nothing a user writes in them runs as root. What it downloads is then only bytes to verify.

use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::Config;
use crate::image::reference::ImageRef;

/// The tag given to the image inside the temporary OCI layouts egret reads.
pub const OCI_REF_NAME: &str = "egret";
/// How often a running copy is looked at for progress.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchAuth {
    /// A containers-auth.json / docker config.json to use instead of skopeo's default.
    pub authfile: Option<PathBuf>,
    /// User name and password (e.g. from `--password-stdin`); wins over `authfile`.
    pub creds: Option<(String, String)>,
}

/// The user a fetch runs as, when root fetches on their behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    pub home: PathBuf,
    /// Variables from the job's environment skopeo may see (see [`FETCH_ENV`]).
    pub env: Vec<(String, String)>,
}

/// What skopeo takes from the user's environment: where their credentials are, and proxies.
pub const FETCH_ENV: [&str; 10] = [
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

impl FetchUser {
    /// The user `id`, with the variables of `job_env` (`NAME=VALUE`) that [`FETCH_ENV`] names.
    pub fn new(id: &crate::container::user::UserIdentity, job_env: &[String]) -> FetchUser {
        let env = job_env
            .iter()
            .filter_map(|e| e.split_once('='))
            .filter(|(k, _)| FETCH_ENV.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FetchUser {
            uid: id.uid,
            gid: id.gid,
            groups: id.groups.clone(),
            home: id.home.clone(),
            env,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    DockerArchive,
    OciArchive,
}

impl ArchiveFormat {
    pub fn transport(self) -> &'static str {
        match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("image {reference} not found in the registry")]
    NotFound { reference: String },
    #[error("registry {registry} unreachable ({reason})")]
    Unreachable { registry: String, reason: String },
    #[error("unauthorized to pull {reference}: give your credentials (`egret pull --login`, or a login in ~/.docker/config.json or $REGISTRY_AUTH_FILE, which srun steps use)")]
    Unauthorized { reference: String },
    #[error("{reference}: not found, or you are not authorized to pull it")]
    Denied { reference: String },
    #[error("registry {registry} rate-limits this host (too many requests); try again later")]
    RateLimited { registry: String },
    #[error("registry {registry}: {detail}")]
    Tls { registry: String, detail: String },
    #[error("no space left on the device while downloading {reference}")]
    NoSpace { reference: String },
    #[error("skopeo failed for {what}: {detail}")]
    Failed { what: String, detail: String },
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// The registry could not be reached at all (a stored image may stand in).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. })
    }
}

/// `Sync`: a pull copies on one thread while its layers are read on others.
pub trait Fetcher: Sync {
    /// The manifest (or manifest list / index) `r` names, as the exact bytes the registry sent:
    /// its digest is computed over exactly these bytes.
    fn inspect_raw(&self, r: &ImageRef, auth: &FetchAuth) -> Result<Vec<u8>, FetchError>;

    /// The config blob of the image manifest `r` names, as the exact bytes the registry sent
    /// (`copy_to_layout` may have written a converted one under another digest).
    fn inspect_config(&self, r: &ImageRef, auth: &FetchAuth) -> Result<Vec<u8>, FetchError>;

    /// Copies the image `r` (pinned by digest) into the empty directory `dir` as an OCI image
    /// layout: each blob in `blobs/sha256/HEX`, renamed into that name once complete, layers
    /// possibly several at once (their readers wait for them while the copy runs). The manifest
    /// it writes may be a converted one: importers use the manifest they verified, not this one.
    /// `tick(bytes, blobs)` is called now and then while it runs.
    fn copy_to_layout(
        &self,
        r: &ImageRef,
        dir: &Path,
        auth: &FetchAuth,
        tick: &mut dyn FnMut(u64, usize),
    ) -> Result<(), FetchError>;

    /// The user the fetch runs as, when not this process's own identity: `copy_to_layout`'s
    /// directory must then be theirs, and what they wrote is read as untrusted.
    fn runs_as(&self) -> Option<(u32, u32)> {
        None
    }

    /// Copies the (single) image in a docker-archive or OCI archive tar into a new OCI layout.
    fn copy_archive_to_oci_dir(
        &self,
        archive: &Path,
        format: ArchiveFormat,
        dir: &Path,
    ) -> Result<(), FetchError>;
}

/// The real fetcher: the configured skopeo binary.
#[derive(Debug, Clone)]
pub struct Skopeo {
    pub path: PathBuf,
    /// Platform for manifest lists: linux and the host's architecture.
    pub os: String,
    pub arch: String,
    /// A manifest request that takes longer than this is a registry problem.
    pub inspect_timeout: Duration,
    /// Retries for blob downloads (not for inspect, so an offline registry is noticed fast).
    pub retry_times: u32,
    /// Run as this user rather than as ourselves (root importing for a user).
    pub user: Option<FetchUser>,
}

impl Skopeo {
    pub fn new(cfg: &Config) -> Skopeo {
        Skopeo {
            path: cfg.skopeo_path.clone(),
            os: "linux".into(),
            arch: host_arch().into(),
            inspect_timeout: Duration::from_secs(120),
            retry_times: 3,
            user: None,
        }
    }

    /// The same skopeo, run as `user` (see the module comment).
    pub fn as_user(mut self, user: FetchUser) -> Skopeo {
        self.user = Some(user);
        self
    }

    /// `skopeo inspect ARGS r`'s output, bounded by `inspect_timeout`.
    fn inspect(
        &self,
        r: &ImageRef,
        auth: &FetchAuth,
        args: &[&str],
    ) -> Result<Vec<u8>, FetchError> {
        let authfile = TempAuth::new(r, auth, self.runs_as())?;
        let mut cmd = self.command();
        cmd.arg("--command-timeout")
            .arg(format!("{}s", self.inspect_timeout.as_secs()));
        cmd.arg("inspect").args(args);
        if let Some(f) = authfile.path(auth) {
            cmd.arg("--authfile").arg(f);
        }
        cmd.arg(r.transport_ref());
        self.run(cmd, &r.display(), Some(r), || {})
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        if let Some(u) = &self.user {
            // Nothing of root's environment (its HOME, its REGISTRY_AUTH_FILE) reaches skopeo.
            c.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", &u.home)
                .envs(u.env.iter().map(|(k, v)| (k, v)));
            crate::sys::process::run_as_user_on_exec(&mut c, u.uid, u.gid, &u.groups, &u.home);
        }
        c.arg("--override-os")
            .arg(&self.os)
            .arg("--override-arch")
            .arg(&self.arch);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `cmd`, polling `tick` while it runs; returns stdout, or the classified error.
    fn run(
        &self,
        cmd: Command,
        what: &str,
        r: Option<&ImageRef>,
        tick: impl FnMut(),
    ) -> Result<Vec<u8>, FetchError> {
        self.spawn(cmd, what, r)?.finish(None, tick)
    }

    fn spawn(&self, cmd: Command, what: &str, r: Option<&ImageRef>) -> Result<Running, FetchError> {
        Running::spawn(cmd, what, r)
    }

    /// Starts `skopeo inspect --raw` for `r` and returns at once: srun resolves the step's tag
    /// while Slurm creates the step, and collects the manifest with [`Running::finish`].
    pub fn start_inspect(&self, r: &ImageRef) -> Result<Running, FetchError> {
        let mut cmd = self.command();
        cmd.arg("--command-timeout")
            .arg(format!("{}s", self.inspect_timeout.as_secs().max(1)));
        cmd.arg("inspect").arg("--raw").arg(r.transport_ref());
        self.spawn(cmd, &r.display(), Some(r))
    }
}

fn temp_err(source: io::Error) -> FetchError {
    FetchError::Io {
        path: std::env::temp_dir(),
        source,
    }
}

/// A skopeo process started by [`Skopeo::start_inspect`] (or `run`), its output in files.
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    out: std::fs::File,
    err: std::fs::File,
    what: String,
    reference: Option<ImageRef>,
}

impl Running {
    /// Starts `cmd` (skopeo, or another program answering for it) with its output collected.
    pub fn spawn(
        mut cmd: Command,
        what: &str,
        r: Option<&ImageRef>,
    ) -> Result<Running, FetchError> {
        // Files rather than pipes: no reader threads, and the child can never block on us.
        let mut out = tempfile::tempfile().map_err(temp_err)?;
        let mut err = tempfile::tempfile().map_err(temp_err)?;
        cmd.stdout(out.try_clone().map_err(temp_err)?);
        cmd.stderr(err.try_clone().map_err(temp_err)?);
        let child = cmd.spawn().map_err(|source| FetchError::Spawn {
            path: PathBuf::from(cmd.get_program()),
            source,
        })?;
        // Only the child holds the write ends now; ours are for reading back.
        out.rewind().map_err(temp_err)?;
        err.rewind().map_err(temp_err)?;
        Ok(Running {
            child,
            out,
            err,
            what: what.to_string(),
            reference: r.cloned(),
        })
    }

    /// Waits for skopeo (killing it at `deadline`, if one is given), polling `tick` meanwhile;
    /// returns its stdout, or the classified error.
    pub fn finish(
        mut self,
        deadline: Option<std::time::Instant>,
        mut tick: impl FnMut(),
    ) -> Result<Vec<u8>, FetchError> {
        // Woken by skopeo's exit itself (its pidfd; opened while it is our unreaped child),
        // not by the next tick of a poll: srun waits on this before it launches the step.
        // `tick` runs often at first, then every POLL.
        let exited =
            crate::sys::process::PidFd::open(nix::unistd::Pid::from_raw(self.child.id() as i32))
                .ok();
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match self.child.try_wait().map_err(temp_err)? {
                Some(s) => break s,
                None if deadline.is_some_and(|d| std::time::Instant::now() >= d) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(FetchError::Failed {
                        what: self.what,
                        detail: "no answer in time".into(),
                    });
                }
                None => {
                    tick();
                    let left =
                        deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
                    let wait = left.map_or(pause, |l| l.min(pause));
                    match &exited {
                        Some(pidfd) => {
                            pidfd.wait_exit(wait);
                        }
                        None => std::thread::sleep(wait),
                    }
                    pause = (pause * 2).min(POLL);
                }
            }
        };
        let read = |f: &mut std::fs::File| -> io::Result<Vec<u8>> {
            f.rewind()?;
            let mut v = Vec::new();
            f.read_to_end(&mut v)?;
            Ok(v)
        };
        if status.success() {
            return read(&mut self.out).map_err(temp_err);
        }
        let stderr = String::from_utf8_lossy(&read(&mut self.err).unwrap_or_default()).into_owned();
        Err(classify(&stderr, &self.what, self.reference.as_ref()))
    }
}

impl Fetcher for Skopeo {
    fn inspect_raw(&self, r: &ImageRef, auth: &FetchAuth) -> Result<Vec<u8>, FetchError> {
        self.inspect(r, auth, &["--raw"])
    }

    fn inspect_config(&self, r: &ImageRef, auth: &FetchAuth) -> Result<Vec<u8>, FetchError> {
        self.inspect(r, auth, &["--raw", "--config"])
    }

    fn copy_to_layout(
        &self,
        r: &ImageRef,
        dir: &Path,
        auth: &FetchAuth,
        tick: &mut dyn FnMut(u64, usize),
    ) -> Result<(), FetchError> {
        if r.digest.is_none() {
            // Copying by tag could fetch something else than what was resolved and checked.
            return Err(FetchError::Failed {
                what: r.display(),
                detail: "internal error: copy of an image not pinned by digest".into(),
            });
        }
        let authfile = TempAuth::new(r, auth, self.runs_as())?;
        let mut cmd = self.command();
        // `oci:` rather than `dir:`: skopeo 1.9 copies a `dir:` image one layer at a time, base
        // first, so the top layer, which the flattener needs first, came last (egret/big's import:
        // 4.18 s against 3.81 s, medians of 3 alternating runs). `oci:` stores no signatures: dropping
        // them keeps a copy from registries that publish some possible (policy.json is still
        // checked before anything is copied), and uncompressed layers are taken as they are.
        cmd.arg("copy")
            .arg("--retry-times")
            .arg(self.retry_times.to_string())
            .arg("--remove-signatures")
            .arg("--dest-oci-accept-uncompressed-layers");
        if let Some(f) = authfile.path(auth) {
            cmd.arg("--src-authfile").arg(f);
        }
        cmd.arg(r.transport_ref()).arg(oci_dest(dir));
        self.run(cmd, &r.display(), Some(r), || {
            let (bytes, n) = layout_usage(dir);
            tick(bytes, n);
        })
        .map(drop)
    }

    fn runs_as(&self) -> Option<(u32, u32)> {
        self.user.as_ref().map(|u| (u.uid, u.gid))
    }

    fn copy_archive_to_oci_dir(
        &self,
        archive: &Path,
        format: ArchiveFormat,
        dir: &Path,
    ) -> Result<(), FetchError> {
        let mut cmd = self.command();
        cmd.arg("copy").arg("--dest-oci-accept-uncompressed-layers");
        let mut src = std::ffi::OsString::from(format!("{}:", format.transport()));
        src.push(archive);
        cmd.arg(src).arg(oci_dest(dir));
        self.run(cmd, &archive.display().to_string(), None, || {})
            .map(drop)
    }
}

fn oci_dest(dir: &Path) -> std::ffi::OsString {
    let mut d = std::ffi::OsString::from("oci:");
    d.push(dir);
    d.push(format!(":{OCI_REF_NAME}"));
    d
}

/// Bytes downloaded so far into the OCI layout `dir` (blobs being written sit in `dir` itself,
/// finished ones in `blobs/sha256`), and the number of finished blobs.
fn layout_usage(dir: &Path) -> (u64, usize) {
    let files = |d: &Path| -> Vec<u64> {
        std::fs::read_dir(d)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.size())
                    .collect()
            })
            .unwrap_or_default()
    };
    let writing: u64 = files(dir).iter().sum();
    let done = files(&dir.join("blobs").join("sha256"));
    (writing + done.iter().sum::<u64>(), done.len())
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// Explicit credentials as a private temporary auth file (0600), so the password never shows
/// up in `ps`; removed when dropped.
struct TempAuth(Option<tempfile::NamedTempFile>);

impl TempAuth {
    /// `owner`: the user skopeo runs as, who must be able to read it.
    fn new(
        r: &ImageRef,
        auth: &FetchAuth,
        owner: Option<(u32, u32)>,
    ) -> Result<TempAuth, FetchError> {
        let Some((user, pass)) = &auth.creds else {
            return Ok(TempAuth(None));
        };
        let io_err = |source| FetchError::Io {
            path: std::env::temp_dir(),
            source,
        };
        let mut f = tempfile::Builder::new()
            .prefix(".egret-auth-")
            .suffix(".json")
            .tempfile()
            .map_err(io_err)?;
        let token = base64(format!("{user}:{pass}").as_bytes());
        let body = serde_json::json!({ "auths": { r.registry.clone(): { "auth": token } } });
        f.write_all(body.to_string().as_bytes()).map_err(io_err)?;
        f.flush().map_err(io_err)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(f.as_file(), Some(uid), Some(gid)).map_err(io_err)?;
        }
        Ok(TempAuth(Some(f)))
    }

    fn path<'a>(&'a self, auth: &'a FetchAuth) -> Option<&'a Path> {
        match &self.0 {
            Some(f) => Some(f.path()),
            None => auth.authfile.as_deref(),
        }
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// skopeo's last message, without logrus' `time=… level=fatal msg="…"` wrapping.
fn last_message(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let msg = match line.find("msg=\"") {
        Some(i) => {
            let rest = &line[i + 5..];
            rest.strip_suffix('"').unwrap_or(rest).replace("\\\"", "\"")
        }
        None => line.to_string(),
    };
    msg.chars().filter(|c| !c.is_control()).collect()
}

/// Maps skopeo's stderr to an error a user can act on.
fn classify(stderr: &str, what: &str, r: Option<&ImageRef>) -> FetchError {
    let msg = last_message(stderr);
    let low = msg.to_lowercase();
    let reference = r.map_or_else(|| what.to_string(), |r| r.display());
    let registry = r.map_or_else(String::new, |r| r.registry.clone());
    let has = |needles: &[&str]| needles.iter().any(|n| low.contains(n));
    if has(&["connection refused"]) {
        return FetchError::Unreachable {
            registry,
            reason: "connection refused".into(),
        };
    }
    if has(&["no such host"]) {
        return FetchError::Unreachable {
            registry,
            reason: "unknown host name".into(),
        };
    }
    for reason in [
        "network is unreachable",
        "no route to host",
        "i/o timeout",
        "tls handshake timeout",
        "context deadline exceeded",
        "connection reset by peer",
    ] {
        if low.contains(reason) {
            return FetchError::Unreachable {
                registry,
                reason: reason.into(),
            };
        }
    }
    if has(&["server gave http response to https client"]) {
        return FetchError::Tls {
            registry,
            detail: "it speaks plain HTTP; list it with insecure = true in registries.conf".into(),
        };
    }
    if has(&["x509:", "certificate"]) {
        return FetchError::Tls {
            registry,
            detail: format!("TLS certificate problem: {msg}"),
        };
    }
    if has(&["toomanyrequests", "too many requests"]) {
        return FetchError::RateLimited { registry };
    }
    if has(&["no space left on device"]) {
        return FetchError::NoSpace { reference };
    }
    if has(&[
        "requested access to the resource is denied",
        "insufficient_scope",
    ]) {
        // Docker Hub's answer for both a private and a missing repository.
        return FetchError::Denied { reference };
    }
    if has(&[
        "unauthorized",
        "authentication required",
        "invalid username/password",
    ]) {
        return FetchError::Unauthorized { reference };
    }
    if has(&[
        "manifest unknown",
        "name unknown",
        "not found",
        "no such image",
    ]) {
        return FetchError::NotFound { reference };
    }
    FetchError::Failed {
        what: what.to_string(),
        detail: if msg.is_empty() {
            "no error message".into()
        } else {
            msg
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(stderr: &str) -> String {
        let r = ImageRef::parse("127.0.0.1:5000/egret/busybox").unwrap();
        classify(stderr, "x", Some(&r)).to_string()
    }

    #[test]
    fn skopeo_errors_become_one_clear_line() {
        let wrap = |m: &str| format!("time=\"2026-11-23T20:34:00Z\" level=fatal msg=\"{m}\"\n");
        let e = err(&wrap(
            r#"Error parsing image name \"docker://127.0.0.1:1/x/y:latest\": pinging container registry 127.0.0.1:1: Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"#,
        ));
        assert_eq!(
            e,
            "registry 127.0.0.1:5000 unreachable (connection refused)"
        );
        let e = err(&wrap(
            "reading manifest latest in 127.0.0.1:5099/x/y: manifest unknown: manifest unknown",
        ));
        assert_eq!(
            e,
            "image 127.0.0.1:5000/egret/busybox:latest not found in the registry"
        );
        let e = err(&wrap(
            "reading manifest latest in x: unauthorized: authentication required",
        ));
        assert!(e.starts_with("unauthorized to pull"), "{e}");
        let e = err(&wrap("pinging container registry x: Get \"https://x/v2/\": http: server gave HTTP response to HTTPS client"));
        assert!(
            e.contains("plain HTTP") && e.contains("registries.conf"),
            "{e}"
        );
        let e = err(&wrap(
            "lookup nonexistent.invalid on 10.0.0.1:53: no such host",
        ));
        assert!(e.contains("unreachable (unknown host name)"), "{e}");
        let e = err(&wrap("requested access to the resource is denied"));
        assert!(e.contains("not authorized"), "{e}");
        let e = err("something odd\nwith two lines\n");
        assert_eq!(e, "skopeo failed for x: with two lines");
        assert!(!err("").contains('\n'));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
    }

    #[test]
    fn temp_auth_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let r = ImageRef::parse("reg.example/a/b").unwrap();
        let auth = FetchAuth {
            authfile: None,
            creds: Some(("u".into(), "p".into())),
        };
        let t = TempAuth::new(&r, &auth, None).unwrap();
        let p = t.path(&auth).unwrap().to_path_buf();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["auths"]["reg.example"]["auth"], "dTpw");
        drop(t);
        assert!(!p.exists());
        let plain = FetchAuth {
            authfile: Some("/a.json".into()),
            creds: None,
        };
        assert_eq!(
            TempAuth::new(&r, &plain, None).unwrap().path(&plain),
            Some(Path::new("/a.json"))
        );
    }

    #[test]
    fn arch_names_are_oci_names() {
        assert!(["amd64", "arm64", "ppc64le", "s390x", "riscv64", "386"].contains(&host_arch()));
    }
}
