//! The SSH hook (`--container-ssh`): a dropbear daemon in the container of each node's first
//! task, an `ssh` client wrapper in every container, the user's own keys, and the container's
//! environment replayed in every session.
//!
//! At `createRuntime` (root, runc's mount namespace, `state.pid` = the container's init as a host
//! pid, before `pivot_root`) the hook:
//! 1. reads the user's keys as the user (`egret ssh-keygen` made them; none: a clear error);
//! 2. enters the container's mount namespace and builds, on a tmpfs in the (root-owned) bundle,
//!    `/opt/egret/ssh` (Debian's dropbear and dbclient with the host's loader and libraries:
//!    they run in any image, glibc, musl or none, because they never use the image's) and the
//!    user's `~/.ssh` (keys, `authorized_keys`), then binds both, and the `ssh` wrapper over
//!    `/usr/bin/ssh`, into the rootfs (targets resolved inside the rootfs, never through an
//!    image's link). The user's real home is never written: `~/.ssh` is a tmpfs;
//! 3. on the node's first task only (`SLURM_LOCALID=0`: one daemon per node and port), adds
//!    `/etc/profile.d/egret-ssh.sh`, makes the user's login shell one dropbear accepts, and
//!    starts dropbear in the container's pid namespace, chrooted into the rootfs, as the user,
//!    with `no_new_privs`; it returns once the port answers, so the sync hook after it releases
//!    the tasks only when every node's daemon listens.
//!
//! At `poststop` it stops the daemon it recorded in the bundle (the private pid namespace that
//! `--container-ssh` implies already takes it down with the container; this is for certainty).

pub mod files;
pub mod keys;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egret_engine::container::user::UserIdentity;
use egret_engine::hooks::annotations;
use egret_engine::sys::in_root;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::mount::{self as bindmount, BindOptions};
use crate::HookContext;

/// Where the hook's files appear in the container.
pub const CONTAINER_DIR: &str = "/opt/egret/ssh";
pub const ENABLED_ANNOTATION: &str = annotations::SSH_ENABLED;
/// A user's choice of port for the step (1024-65535).
pub const PORT_ANNOTATION: &str = annotations::SSH_PORT;
/// A public key file (read as the user) that may log in as well, e.g. from a laptop.
pub const AUTHORIZE_KEY_ANNOTATION: &str = annotations::SSH_AUTHORIZE_KEY;
/// The port when neither the hook's JSON nor the user chose one (Sarus's).
pub const DEFAULT_PORT: u16 = 15263;
/// In the task's bundle directory (root's): the daemon's host pid and start time, its log.
const PID_FILE: &str = "egret-ssh-dropbear.pid";
const LOG_FILE: &str = "egret-ssh-dropbear.log";
const STAGE_DIR: &str = "egret-ssh-stage";
/// The daemon's host key, inside the user's `~/.ssh` tmpfs.
const HOST_KEY_NAME: &str = "egret_host_key";
/// How long the daemon may take to answer on its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "--container-ssh needs a private PID namespace (--container-pid=private), \
         this container shares the host's"
    )]
    HostPid,
    #[error("--container-ssh is for ordinary users: dropbear does not run as root")]
    Root,
    #[error(transparent)]
    User(#[from] egret_engine::container::user::UserError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("{name}={value:?}: {what}")]
    Setting {
        name: String,
        value: String,
        what: &'static str,
    },
    #[error("{} not found (install Debian's dropbear-bin or set DROPBEAR_DIR)", path.display())]
    Missing { path: PathBuf },
    #[error("{program}: {msg}")]
    Tool { program: String, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bind(#[from] bindmount::BindError),
    #[error(transparent)]
    Target(#[from] in_root::InRootError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "port {port} is already in use on this node (another --container-ssh step?); \
         choose another with --container-annotation={PORT_ANNOTATION}=PORT"
    )]
    PortInUse { port: u16 },
    #[error("dropbear did not start on port {port}: {log}")]
    Daemon { port: u16, log: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SshError + '_ {
    move |source| SshError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SshError {
    let what = what.into();
    move |source| SshError::Sys { what, source }
}

/// The admin's settings, from the hook's JSON `env`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hook_base_dir: Option<PathBuf>,
    pub dropbear_dir: PathBuf,
    pub port: u16,
    /// Add `SLURM_NODEID` to the port: for clusters that run several slurmd on one host.
    pub port_per_node: bool,
    pub ldd: PathBuf,
}

impl Settings {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SshError> {
        let abs = |name: &str, default: &str| -> Result<PathBuf, SshError> {
            let v = get(name).unwrap_or_else(|| default.to_string());
            let p = PathBuf::from(&v);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(SshError::Setting {
                    name: name.into(),
                    value: v,
                    what: "must be an absolute path",
                })
            }
        };
        let hook_base_dir = match get("HOOK_BASE_DIR") {
            Some(_) => Some(abs("HOOK_BASE_DIR", "")?),
            None => None,
        };
        let port = match get("SERVER_PORT_DEFAULT").or_else(|| get("SERVER_PORT")) {
            Some(v) => parse_port("SERVER_PORT_DEFAULT", &v)?,
            None => DEFAULT_PORT,
        };
        let port_per_node = get("SERVER_PORT_NODE_OFFSET")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        Ok(Settings {
            hook_base_dir,
            dropbear_dir: abs("DROPBEAR_DIR", "/usr")?,
            port,
            port_per_node,
            ldd: abs("LDD_PATH", "/usr/bin/ldd")?,
        })
    }

    /// A dropbear program: `<DROPBEAR_DIR>/bin/NAME` or `<DROPBEAR_DIR>/sbin/NAME`.
    pub fn program(&self, name: &str) -> Result<PathBuf, SshError> {
        ["bin", "sbin"]
            .iter()
            .map(|d| self.dropbear_dir.join(d).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| SshError::Missing {
                path: self.dropbear_dir.join("bin").join(name),
            })
    }
}

fn parse_port(name: &str, v: &str) -> Result<u16, SshError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p >= 1024 => Ok(p),
        _ => Err(SshError::Setting {
            name: name.into(),
            value: v.into(),
            what: "expected a port number between 1024 and 65535",
        }),
    }
}

/// The port of this container's daemon: the user's annotation, else the site's; plus the node
/// id where the site runs several slurmd per host.
pub fn port_for(
    settings: &Settings,
    annotation: Option<&str>,
    node_id: Option<&str>,
) -> Result<u16, SshError> {
    let base = match annotation {
        Some(v) => parse_port(PORT_ANNOTATION, v)?,
        None => settings.port,
    };
    if !settings.port_per_node {
        return Ok(base);
    }
    let node: u16 = node_id.and_then(|n| n.parse().ok()).unwrap_or(0);
    base.checked_add(node).ok_or_else(|| SshError::Setting {
        name: PORT_ANNOTATION.into(),
        value: base.to_string(),
        what: "plus the node id is beyond 65535",
    })
}

/// `egret-ssh-hook keygen [--overwrite]`, run by `egret ssh-keygen` as the user.
pub fn keygen_main(args: &[String]) -> std::process::ExitCode {
    match keygen_cmd(args) {
        Ok(msg) => {
            println!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret ssh-keygen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn keygen_cmd(args: &[String]) -> Result<String, SshError> {
    let overwrite = match args {
        [] => false,
        [a] if a == "--overwrite" => true,
        other => {
            return Err(SshError::Setting {
                name: "arguments".into(),
                value: other.join(" "),
                what: "expected nothing or --overwrite",
            })
        }
    };
    // Plain user command: never with borrowed privileges.
    if nix::unistd::geteuid() != nix::unistd::getuid() {
        return Err(SshError::Root);
    }
    let settings = Settings::from_env(crate::hook_env)?;
    let user = UserIdentity::current_real()?;
    let dir = keys::keys_dir(settings.hook_base_dir.as_deref(), &user.name, &user.home);
    let dropbearkey = settings.program("dropbearkey")?;
    Ok(match keys::keygen(&dir, &dropbearkey, overwrite)? {
        keys::Keygen::Created => format!("SSH keys created in {}", dir.display()),
        keys::Keygen::Replaced => format!("SSH keys replaced in {}", dir.display()),
        keys::Keygen::Kept => format!(
            "SSH keys already exist in {} (kept; use --overwrite to replace them)",
            dir.display()
        ),
    })
}

/// The hook, for both of its stages.
pub fn hook(ctx: &HookContext) -> Result<(), SshError> {
    if !ctx.annotation_enabled(ENABLED_ANNOTATION) {
        return Ok(());
    }
    if ctx.state().status == "stopped" {
        stop(ctx.bundle());
        return Ok(());
    }
    start(ctx)
}

fn private_pid_namespace(ctx: &HookContext) -> bool {
    use oci_spec::runtime::LinuxNamespaceType;
    ctx.spec()
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
}

/// The host files the client and daemon need: programs, the loader and the libraries.
struct Payload {
    dropbear: PathBuf,
    dbclient: PathBuf,
    /// (file name in `lib/`, host path)
    libs: Vec<(String, PathBuf)>,
    loader: String,
}

fn payload(settings: &Settings) -> Result<Payload, SshError> {
    let dropbear = settings.program("dropbear")?;
    let dbclient = settings.program("dbclient")?;
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    let mut loader = None;
    for prog in [&dropbear, &dbclient] {
        let out = std::process::Command::new(&settings.ldd)
            .arg(prog)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .map_err(|e| SshError::Tool {
                program: settings.ldd.display().to_string(),
                msg: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SshError::Tool {
                program: format!("{} {}", settings.ldd.display(), prog.display()),
                msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        for (name, path, is_loader) in parse_ldd(&String::from_utf8_lossy(&out.stdout)) {
            if is_loader {
                loader = Some(name.clone());
            }
            if !libs.iter().any(|(n, _)| *n == name) {
                libs.push((name, path));
            }
        }
    }
    let loader = loader.ok_or_else(|| SshError::Tool {
        program: format!("{} {}", settings.ldd.display(), dropbear.display()),
        msg: "names no program interpreter (a static dropbear? give a dynamic one)".into(),
    })?;
    Ok(Payload {
        dropbear,
        dbclient,
        libs,
        loader,
    })
}

/// `ldd` lines: `name => /path (addr)` and the loader `/lib64/ld-linux-x86-64.so.2 (addr)`.
/// Returns (file name, host path, is the loader); the vDSO has no path and is skipped.
fn parse_ldd(text: &str) -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (name, path, loader) = match line.split_once(" => ") {
            Some((name, rest)) => (name.to_string(), rest.split(" (").next(), false),
            None => {
                let p = line.split(" (").next().unwrap_or("");
                let base = Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (base, Some(p), true)
            }
        };
        match path {
            Some(p) if p.starts_with('/') && !name.contains('/') && !name.is_empty() => {
                out.push((name, PathBuf::from(p), loader));
            }
            _ => {}
        }
    }
    out
}

fn start(ctx: &HookContext) -> Result<(), SshError> {
    if !private_pid_namespace(ctx) {
        return Err(SshError::HostPid);
    }
    if ctx.uid() == 0 {
        return Err(SshError::Root);
    }
    let settings = Settings::from_env(crate::hook_env)?;
    let user = UserIdentity::from_uid(ctx.uid(), ctx.gid())?;
    let dir = keys::keys_dir(settings.hook_base_dir.as_deref(), &user.name, &user.home);
    let mut keyset = user.run_as(|| keys::read(&dir))??;
    if let Some(extra) = ctx.annotation(AUTHORIZE_KEY_ANNOTATION) {
        let text = user.read_file(Path::new(extra))?;
        let text = String::from_utf8_lossy(&text);
        let key = text.trim();
        if key.lines().count() != 1 || !(key.starts_with("ssh-") || key.starts_with("ecdsa-")) {
            return Err(SshError::Setting {
                name: AUTHORIZE_KEY_ANNOTATION.into(),
                value: extra.into(),
                what: "is not a file holding one public key",
            });
        }
        keyset.authorized_keys.extend_from_slice(key.as_bytes());
        keyset.authorized_keys.push(b'\n');
    }
    let port = port_for(
        &settings,
        ctx.annotation(PORT_ANNOTATION),
        ctx.env("SLURM_NODEID").as_deref(),
    )?;
    // One daemon per node: the containers of a node's other tasks get the client only.
    let daemon = ctx.env("SLURM_LOCALID").is_none_or(|l| l == "0");
    let payload = payload(&settings)?;
    if daemon {
        // Say so plainly instead of leaving it to dropbear's log.
        TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .map_err(|_| SshError::PortInUse { port })?;
    }
    let pid = ctx.pid().ok_or_else(|| SshError::Tool {
        program: "runc".into(),
        msg: "the container state has no pid".into(),
    })?;
    let ns = |kind: &str| {
        let p = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        fs::File::open(&p).map(OwnedFd::from).map_err(io_err(&p))
    };
    let (mnt_ns, pid_ns) = (ns("mnt")?, ns("pid")?);
    let log_path = ctx.bundle().join(LOG_FILE);
    let log = fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .map_err(io_err(&log_path))?;

    nix::sched::setns(&mnt_ns, CloneFlags::CLONE_NEWNS)
        .map_err(sys_err("cannot enter the container's mount namespace"))?;
    let rootfs = ctx.rootfs().to_path_buf();
    let home_ssh = user.home.join(".ssh");
    let client_key = home_ssh.join(keys::CLIENT_KEY);
    let stage = ctx.bundle().join(STAGE_DIR);
    let env: Vec<String> = ctx
        .spec()
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let staged = Stage::new(&stage)?;
    staged.fill(&payload, &keyset, &user, &env, port, &client_key)?;
    bindmount::bind(
        &rootfs,
        &stage.join("opt"),
        Path::new(CONTAINER_DIR),
        BindOptions {
            readonly: true,
            recursive: false,
        },
    )?;
    bind_home_ssh(&rootfs, &stage.join("home"), &home_ssh, &user)?;
    bindmount::bind(
        &rootfs,
        &stage.join("opt/bin/ssh"),
        Path::new("/usr/bin/ssh"),
        BindOptions {
            readonly: true,
            recursive: false,
        },
    )?;
    drop(staged);
    if !daemon {
        return Ok(());
    }
    let shell = fix_login(&rootfs, ctx.uid())?;
    crate::debug!("login shell {shell}");
    in_root::replace_file_in_root(
        &rootfs,
        Path::new("/etc/profile.d/egret-ssh.sh"),
        files::profile_snippet().as_bytes(),
        0o644,
    )?;
    nix::sched::setns(&pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(sys_err("cannot enter the container's pid namespace"))?;
    let argv = vec![
        format!("{CONTAINER_DIR}/bin/dropbear"),
        "--library-path".into(),
        format!("{CONTAINER_DIR}/lib"),
        format!("{CONTAINER_DIR}/libexec/dropbear"),
        "-F".into(),
        "-E".into(),
        "-s".into(),
        "-m".into(),
        "-p".into(),
        port.to_string(),
        "-r".into(),
        home_ssh.join(HOST_KEY_NAME).display().to_string(),
        "-c".into(),
        format!("{CONTAINER_DIR}/session"),
        "-P".into(),
        "/dev/null".into(),
    ];
    let child = spawn_daemon(&rootfs, &user, &argv, log)?;
    record(ctx.bundle(), child)?;
    wait_listening(child, port, &log_path)?;
    crate::info!("dropbear listens on port {port} (pid {child})");
    Ok(())
}

/// A tmpfs on `<bundle>/egret-ssh-stage` in the container's mount namespace where the files
/// are made before they are bound into the rootfs; unmounted (the binds keep it) on drop.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    fn new(dir: &Path) -> Result<Stage, SshError> {
        use nix::mount::{mount, MsFlags};
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=64m"),
        )
        .map_err(sys_err(format!(
            "cannot mount a tmpfs on {}",
            dir.display()
        )))?;
        Ok(Stage {
            dir: dir.to_path_buf(),
        })
    }

    fn fill(
        &self,
        p: &Payload,
        keyset: &keys::KeySet,
        user: &UserIdentity,
        env: &[String],
        port: u16,
        client_key: &Path,
    ) -> Result<(), SshError> {
        let opt = self.dir.join("opt");
        for d in ["", "bin", "lib", "libexec"] {
            let path = opt.join(d);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let copy = |src: &Path, dst: PathBuf, mode: u32| -> Result<(), SshError> {
            fs::copy(src, &dst).map_err(io_err(src))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(io_err(&dst))
        };
        // Not executable: they only run through the host's loader (which just reads them).
        // dropbear re-executes itself for every connection; exec'd directly, the image's
        // loader would pair the host's programs with the image's libc. Refused, dropbear
        // serves the connection without re-exec.
        copy(&p.dropbear, opt.join("libexec/dropbear"), 0o644)?;
        copy(&p.dbclient, opt.join("libexec/dbclient"), 0o644)?;
        for (name, host) in &p.libs {
            copy(host, opt.join("lib").join(name), 0o755)?;
        }
        // Started through this link, the daemon shows as `dropbear` in ps, not as the loader.
        let link = opt.join("bin/dropbear");
        std::os::unix::fs::symlink(format!("../lib/{}", p.loader), &link).map_err(io_err(&link))?;
        let write = |rel: &str, text: String, mode: u32| -> Result<(), SshError> {
            let path = opt.join(rel);
            fs::write(&path, text).map_err(io_err(&path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(&path))
        };
        write(
            "bin/ssh",
            files::ssh_wrapper(&p.loader, port, &client_key.display().to_string()),
            0o755,
        )?;
        write("session", files::session_script(), 0o755)?;
        write("environment", files::environment(env), 0o644)?;

        let home = self.dir.join("home");
        fs::create_dir(&home).map_err(io_err(&home))?;
        for (name, data) in [
            (keys::AUTHORIZED_KEYS, &keyset.authorized_keys),
            (keys::CLIENT_KEY, &keyset.client_key),
            (HOST_KEY_NAME, &keyset.host_key),
        ] {
            let path = home.join(name);
            fs::write(&path, data).map_err(io_err(&path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(&path))?;
            chown(&path, user)?;
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).map_err(io_err(&home))?;
        chown(&home, user)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Binds the private `~/.ssh` over the container's. When the home is the user's own directory
/// bound from the host (`--container-mount-home`) and has no `.ssh`, root may not create one
/// there: the user does (mode 0700), as `ssh` would, and the bind hides its contents.
fn bind_home_ssh(
    rootfs: &Path,
    stage: &Path,
    home_ssh: &Path,
    user: &UserIdentity,
) -> Result<(), SshError> {
    match bindmount::bind(rootfs, stage, home_ssh, BindOptions::default()) {
        Err(bindmount::BindError::Target {
            source: in_root::InRootError::OnOtherMount { .. },
            ..
        }) => {
            let rel = in_root::resolve_in_root(rootfs, home_ssh)?;
            let path = rootfs.join(rel);
            user.run_as(|| {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o700).create(&path)
            })?
            .map_err(io_err(home_ssh))?;
            bindmount::bind(rootfs, stage, home_ssh, BindOptions::default())?;
            Ok(())
        }
        other => other.map(|_| ()).map_err(SshError::from),
    }
}

/// For files the hook itself just made on its own tmpfs.
fn chown(path: &Path, user: &UserIdentity) -> Result<(), SshError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(io_err(path))
}

/// Makes the user's login shell one dropbear accepts: present in the image (else `/bin/sh`)
/// and listed in `/etc/shells`. Returns the shell. `/etc` is resolved once, inside the rootfs
/// and on the image's own filesystem: what is read is what is replaced, never a file of a bind
/// mount (a link from the image into a user's host directory is refused, not followed).
fn fix_login(rootfs: &Path, uid: u32) -> Result<String, SshError> {
    let etc = in_root::ContainerDir::open(rootfs, Path::new("/etc"))?;
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let passwd = text(etc.read(OsStr::new("passwd"))?).unwrap_or_default();
    let exists = |shell: &str| {
        in_root::resolve_in_root(rootfs, Path::new(shell))
            .ok()
            .and_then(|rel| fs::symlink_metadata(rootfs.join(rel)).ok())
            .is_some_and(|m| m.is_file())
    };
    let (fixed, shell) = files::fix_passwd(&passwd, uid, exists);
    if let Some(new) = fixed {
        etc.replace(OsStr::new("passwd"), new.as_bytes(), 0o644)?;
    }
    let shells = text(etc.read(OsStr::new("shells"))?);
    if let Some(new) = files::fix_shells(shells.as_deref(), &shell) {
        etc.replace(OsStr::new("shells"), new.as_bytes(), 0o644)?;
    }
    Ok(shell)
}

/// Forks the daemon: a new session in the container's pid namespace (entered before), chrooted
/// into the rootfs, with the user's ids only, `no_new_privs`, stdio on the log.
fn spawn_daemon(
    rootfs: &Path,
    user: &UserIdentity,
    argv: &[String],
    log: fs::File,
) -> Result<Pid, SshError> {
    use std::ffi::CString;
    let cstr = |s: &str| CString::new(s).map_err(|_| sys_err(s.to_string())(nix::Error::EINVAL));
    let c_argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let c_env = vec![cstr("PATH=/usr/local/bin:/usr/bin:/bin")?];
    let devnull = fs::File::open("/dev/null").map_err(io_err(Path::new("/dev/null")))?;
    let user = user.clone();
    let rootfs = rootfs.to_path_buf();
    egret_engine::sys::process::fork_child(move || {
        let res = (|| -> Result<(), String> {
            use nix::unistd::{dup2, setgroups, setresgid, setresuid, Gid, Uid};
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            dup2(devnull.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
            dup2(log.as_raw_fd(), 1).map_err(|e| format!("dup2: {e}"))?;
            dup2(log.as_raw_fd(), 2).map_err(|e| format!("dup2: {e}"))?;
            nix::unistd::chroot(&rootfs).map_err(|e| format!("chroot: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
            let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
            let gid = Gid::from_raw(user.gid);
            setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
            let uid = Uid::from_raw(user.uid);
            setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
            nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
            let e = nix::unistd::execve(&c_argv[0], &c_argv, &c_env).unwrap_err();
            Err(format!("cannot run {}: {e}", argv[0]))
        })();
        if let Err(msg) = res {
            eprintln!("egret ssh hook: {msg}");
        }
        127
    })
    .map_err(|e| SshError::Io {
        path: PathBuf::from("fork"),
        source: e,
    })
}

/// `/proc/PID/stat` field 22: when the process started, to tell it from a later one with the
/// same pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

fn record(bundle: &Path, pid: Pid) -> Result<(), SshError> {
    let path = bundle.join(PID_FILE);
    let start = start_time(pid.as_raw()).unwrap_or(0);
    fs::write(&path, format!("{} {start}\n", pid.as_raw())).map_err(io_err(&path))
}

fn wait_listening(child: Pid, port: u16, log: &Path) -> Result<(), SshError> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let exited = !matches!(
            waitpid(child, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        if exited || Instant::now() >= deadline {
            let text = fs::read_to_string(log).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(if exited { "it exited" } else { "no answer" });
            return Err(SshError::Daemon {
                port,
                log: last.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// poststop: ends the recorded daemon (its process group), if it is still the same process.
fn stop(bundle: &Path) {
    use nix::sys::signal::{kill, Signal};
    let path = bundle.join(PID_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return;
    };
    let _ = fs::remove_file(&path);
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<i32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    let same = || start_time(pid) == Some(start);
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        if !same() {
            return;
        }
        // The daemon leads its own session and process group; its children are in it.
        let _ = kill(Pid::from_raw(-pid), sig);
        let _ = kill(Pid::from_raw(pid), sig);
        let deadline = Instant::now() + Duration::from_secs(2);
        while same() && Instant::now() < deadline {
            if fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    crate::debug!("stopped dropbear {pid}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SshError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn ports() {
        let s = settings(&[]).unwrap();
        assert_eq!(port_for(&s, None, Some("1")).unwrap(), DEFAULT_PORT);
        assert_eq!(port_for(&s, Some("20000"), None).unwrap(), 20000);
        assert!(port_for(&s, Some("22"), None)
            .unwrap_err()
            .to_string()
            .contains(PORT_ANNOTATION));
        let s = settings(&[
            ("SERVER_PORT_DEFAULT", "16000"),
            ("SERVER_PORT_NODE_OFFSET", "1"),
        ])
        .unwrap();
        assert_eq!(port_for(&s, None, Some("1")).unwrap(), 16001);
        assert_eq!(port_for(&s, Some("20000"), Some("3")).unwrap(), 20003);
        assert!(settings(&[("SERVER_PORT", "x")]).is_err());
        assert!(settings(&[("DROPBEAR_DIR", "usr")]).is_err());
        assert_eq!(settings(&[("SERVER_PORT", "17000")]).unwrap().port, 17000);
    }

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let got = parse_ldd(text);
        assert_eq!(
            got,
            vec![
                (
                    "libz.so.1".into(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                    false
                ),
                (
                    "libc.so.6".into(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                    false
                ),
                (
                    "ld-linux-x86-64.so.2".into(),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
                    true
                ),
            ]
        );
    }

    #[test]
    fn the_hosts_dropbear_has_a_payload() {
        let p = payload(&settings(&[]).unwrap()).expect("dropbear-bin installed");
        assert!(p.loader.starts_with("ld-"), "{}", p.loader);
        assert!(p.libs.iter().any(|(n, _)| n.starts_with("libc.so")));
    }

    #[test]
    fn start_time_tells_processes_apart() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
