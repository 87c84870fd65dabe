//! Keeping containers inside the Slurm task's cgroup.
//!
//! runc started by root with no cgroup path makes its own cgroup at the hierarchy root, outside
//! Slurm's limits and accounting. The launcher therefore starts runc through a tiny shim (this
//! same binary, `join-cgroup` mode) that first moves itself into every cgroup the task is in;
//! runc then creates the container's cgroup *below* them (a relative `cgroupsPath` is relative
//! to runc's own cgroup), so the task's limits apply and its accounting includes the container.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read the cgroups of task pid {pid}: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot join cgroup {path}: {source}")]
    Join {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `cgroup.procs` files of every hierarchy process `pid` belongs to.
pub fn procs_files(pid: i32) -> Result<Vec<PathBuf>, CgroupError> {
    let read =
        |p: String| fs::read_to_string(p).map_err(|source| CgroupError::Read { pid, source });
    let membership = read(format!("/proc/{pid}/cgroup"))?;
    let mountinfo = read("/proc/self/mountinfo".into())?;
    Ok(resolve(&membership, &mountinfo))
}

/// Pure part of `procs_files`, for tests: `/proc/PID/cgroup` lines against `mountinfo`.
pub fn resolve(membership: &str, mountinfo: &str) -> Vec<PathBuf> {
    // Mount points of cgroup filesystems: (fstype, super options, mount point, root).
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        if r[0] == "cgroup" || r[0] == "cgroup2" {
            mounts.push((
                r[0].to_string(),
                r[2].to_string(),
                l[4].to_string(),
                l[3].to_string(),
            ));
        }
    }
    let mut out = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if ctrls.is_empty() {
            mounts.iter().find(|m| m.0 == "cgroup2")
        } else {
            // v1: the mount whose super options list exactly these controllers.
            mounts.iter().find(|m| {
                m.0 == "cgroup"
                    && ctrls.split(',').all(|c| {
                        m.1.split(',').any(|o| {
                            o == c || o == format!("name={}", c.trim_start_matches("name="))
                        })
                    })
            })
        };
        let Some((_, _, point, root)) = mount else {
            continue;
        };
        // A mount of a sub-tree (root != "/") shows paths relative to that root.
        let rel = path.strip_prefix(root.as_str()).unwrap_or(path);
        let dir = Path::new(point).join(rel.trim_start_matches('/'));
        let file = dir.join("cgroup.procs");
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

/// Moves the calling process into the cgroups listed (best effort for hierarchies that refuse,
/// e.g. a v2 cgroup with controllers enabled below it, but an unreadable list is an error).
pub fn join(files: &[PathBuf]) -> Result<(), CgroupError> {
    let me = std::process::id().to_string();
    for f in files {
        if let Err(source) = fs::write(f, &me) {
            // The named hierarchy of systemd and friends may refuse; limits live elsewhere.
            if f.components()
                .any(|c| c.as_os_str() == "systemd" || c.as_os_str() == "unified")
            {
                continue;
            }
            return Err(CgroupError::Join {
                path: f.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// `inner` wrapped so it first joins the cgroups of task `pid`: `egret-launcher join-cgroup
/// FILE... -- PROGRAM ARGS...`.
pub fn join_then_exec(pid: i32, inner: &Command) -> Result<Command, CgroupError> {
    let files = procs_files(pid)?;
    let me = std::env::current_exe().map_err(|source| CgroupError::Read { pid, source })?;
    let mut cmd = Command::new(me);
    cmd.arg("join-cgroup")
        .args(&files)
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd";

    #[test]
    fn v1_and_v2_membership_resolves_to_procs_files() {
        let membership =
            "4:memory:/slurm/uid_0/job_5\n3:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/x";
        let files = resolve(membership, MOUNTINFO);
        assert_eq!(
            files,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/slurm/uid_0/job_5/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/systemd/init.scope/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/x/cgroup.procs"),
            ]
        );
    }
}
