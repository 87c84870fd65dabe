//! `--container-unshare=net,ipc,uts` (pyxis): namespaces of their own for the step, shared by
//! all its tasks on a node. The launcher starts one holder process per node and step in new
//! namespaces (`unshare(1)`; in a new network namespace it brings `lo` up), and every task's
//! container joins them by path. With `ipc`, the tasks share a fresh `/dev/shm` of the step
//! instead of the host's (and runc's `/dev/mqueue` belongs to the new IPC namespace). The
//! holder dies with the launcher, even one killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

/// Why `--container-unshare` cannot be served; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum UnshareError {
    /// pyxis's words ("unknown namespace"), which scripts may grep.
    #[error("--container-unshare={value}: unknown namespace '{name}' (use net, ipc or uts)")]
    UnknownNamespace { value: String, name: String },
    #[error("--container-unshare={value}: empty namespace argument (use net, ipc or uts)")]
    EmptyNamespace { value: String },
    #[error("--container-unshare={value}: '{name}' given twice")]
    GivenTwice { value: String, name: String },
    #[error("--container-unshare: cannot start unshare: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("--container-unshare: the namespaces could not be set up (see the launcher log)")]
    NotReady,
    #[error("the spec has no linux section")]
    NoLinuxSection,
    #[error("{0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("{}: {source}", path.display())]
    Shm {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which namespaces a step gets of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unshare {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Parses `net,ipc,uts` (any non-empty subset, each once).
pub fn parse(value: &str) -> Result<Unshare, UnshareError> {
    let mut u = Unshare::default();
    for name in value.split(',') {
        let slot = match name {
            "net" => &mut u.net,
            "ipc" => &mut u.ipc,
            "uts" => &mut u.uts,
            "" => {
                return Err(UnshareError::EmptyNamespace {
                    value: value.to_string(),
                })
            }
            other => {
                return Err(UnshareError::UnknownNamespace {
                    value: value.to_string(),
                    name: other.to_string(),
                })
            }
        };
        if *slot {
            return Err(UnshareError::GivenTwice {
                value: value.to_string(),
                name: name.to_string(),
            });
        }
        *slot = true;
    }
    Ok(u)
}

/// The process holding the step's namespaces.
pub struct Holder {
    pub unshare: Unshare,
    pid: u32,
    child: Mutex<Child>,
}

impl Holder {
    /// Starts the holder. Call it from the thread that lives as long as the launcher (the
    /// holder is killed when that thread ends).
    pub fn start(u: Unshare) -> Result<Holder, UnshareError> {
        let mut cmd = Command::new("/usr/bin/unshare");
        for (on, flag) in [(u.net, "--net"), (u.ipc, "--ipc"), (u.uts, "--uts")] {
            if on {
                cmd.arg(flag);
            }
        }
        let script = if u.net {
            "/usr/sbin/ip link set lo up && echo ready && exec sleep infinity"
        } else {
            "echo ready && exec sleep infinity"
        };
        cmd.args(["--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        crate::sys::process::die_with_parent_on_exec(&mut cmd);
        let mut child = cmd.spawn().map_err(UnshareError::Spawn)?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(UnshareError::NotReady);
        }
        Ok(Holder {
            unshare: u,
            pid: child.id(),
            child: Mutex::new(child),
        })
    }

    fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid))
    }

    /// Makes a task's spec join the step's namespaces; `shm` is the step's `/dev/shm` (with
    /// `ipc`), a directory of the launcher's bundle.
    pub fn apply(&self, spec: &mut Spec, shm: &Path) -> Result<(), UnshareError> {
        let u = self.unshare;
        let linux = spec
            .linux_mut()
            .as_mut()
            .ok_or(UnshareError::NoLinuxSection)?;
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for (on, typ, kind) in [
            (u.net, LinuxNamespaceType::Network, "net"),
            (u.ipc, LinuxNamespaceType::Ipc, "ipc"),
            (u.uts, LinuxNamespaceType::Uts, "uts"),
        ] {
            if !on {
                continue;
            }
            namespaces.retain(|n| n.typ() != typ);
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(self.ns_path(kind))
                    .build()?,
            );
        }
        linux.set_namespaces(Some(namespaces));
        if u.uts {
            // runc may not set a hostname in a namespace it joins.
            spec.set_hostname(None);
        }
        if u.ipc {
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            for m in mounts.iter_mut() {
                if m.destination() == Path::new("/dev/shm") {
                    m.set_source(Some(shm.to_path_buf()));
                }
            }
            spec.set_mounts(Some(mounts));
        }
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Creates the step's `/dev/shm` directory in the bundle (world-writable and sticky, as
/// /dev/shm is; on the bundle's in-memory filesystem).
pub fn make_shm(bundle_dir: &Path) -> Result<PathBuf, UnshareError> {
    let dir = bundle_dir.join("shm");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)))
        .map_err(|source| UnshareError::Shm {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse("net,uts").unwrap(),
            Unshare {
                net: true,
                ipc: false,
                uts: true
            }
        );
        assert_eq!(
            parse("pid").unwrap_err().to_string(),
            "--container-unshare=pid: unknown namespace 'pid' (use net, ipc or uts)"
        );
        assert_eq!(
            parse("net,,ipc").unwrap_err().to_string(),
            "--container-unshare=net,,ipc: empty namespace argument (use net, ipc or uts)"
        );
        assert_eq!(
            parse("net,net").unwrap_err().to_string(),
            "--container-unshare=net,net: 'net' given twice"
        );
        assert!(parse("").is_err());
    }
}
