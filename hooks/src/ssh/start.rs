//! `createRuntime`: the user's keys, the staged files bound into the rootfs and, on the node's
//! first task, the daemon.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use egret_engine::container::user::UserIdentity;
use egret_engine::sys::in_root;
use nix::sched::CloneFlags;

use crate::bind::{self, BindOptions};
use crate::ssh::daemon::{record, spawn_daemon, wait_listening, LOG_FILE};
use crate::ssh::error::{io_err, sys_err};
use crate::ssh::payload::payload;
use crate::ssh::rootfs::{bind_home_ssh, fix_login};
use crate::ssh::stage::{Stage, HOST_KEY_NAME, STAGE_DIR};
use crate::ssh::{
    files, keys, port_for, Settings, SshError, AUTHORIZE_KEY_ANNOTATION, CONTAINER_DIR,
    PORT_ANNOTATION,
};
use crate::HookContext;

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

pub(super) fn start(ctx: &HookContext) -> Result<(), SshError> {
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
    bind::bind(
        &rootfs,
        &stage.join("opt"),
        Path::new(CONTAINER_DIR),
        BindOptions {
            readonly: true,
            recursive: false,
        },
    )?;
    bind_home_ssh(&rootfs, &stage.join("home"), &home_ssh, &user)?;
    bind::bind(
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
