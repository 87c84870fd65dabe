//! Keeping containers inside the Slurm task's cgroups.
//!
//! runc started by root with no cgroup path makes its own cgroup at the hierarchy root, outside
//! Slurm's limits and accounting. The launcher's child for runc therefore moves itself into
//! every cgroup the task is in between fork and exec ([`crate::sys::enter_cgroups`]); runc then
//! creates the container's cgroup *below* them (a relative `cgroupsPath` is relative to runc's
//! own cgroup), so the task's limits apply and its accounting includes the container.
//!
//! The sequence, and why each step (see [`entry`] and `enter_cgroups::enter_on_exec`):
//! 1. The launcher reads the task's `/proc/PID/cgroup` and opens the `cgroup.procs` files it
//!    names, by the number its pidfd gives, and checks that the pidfd still names that number
//!    afterwards: the files are the task's, not those of whoever got the number next.
//! 2. The forked child writes `0` to each (joins): no helper program, no extra exec. Groups
//!    the launcher is already in (the same line in its own `/proc/self/cgroup`) are not
//!    written: a migration costs an RCU grace period when none ran for a while, even onto the
//!    same group; the child checks that it is still in them.
//! 3. The child takes the task's CPU affinity (a v1 cpuset join reset it).
//! 4. The child reads the task's membership again and polls the task's pidfd: the task must not
//!    have exited (zombies count as exited) and must still be in the same groups, *after* the
//!    join. A task that exited right after connecting gets no runc at all ("the task exited
//!    before its container started"): the spawn fails, nothing is created.
//! 5. On cgroup v1, the child unmounts the `cpu`, `cpuacct` and `cpuset` hierarchies in a mount
//!    namespace of its own ([`shared_hierarchies`]): runc (1.1) skips a controller it finds
//!    unmounted, so the container's processes stay in the *task's* groups for these, like a
//!    plain task's, and do not pay a deeper scheduling hierarchy at every context switch (the
//!    MPI latency gap of docs/benchmarks.md). Only the controllers that need a group of their
//!    own get one (devices for the device rules, freezer for runc's kill, memory, pids, ...).
//! 6. exec runc.
//!
//! The parsing is pure ([`resolve`], [`shared_hierarchies`]) so cgroup v1, hybrid and v2 texts
//! are unit-tested; on a pure v2 node there is one hierarchy and nothing is hidden.

use std::ffi::CString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::enter_cgroups::{self, Entry};
use crate::sys::process::PidFd;

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

/// v1 controllers whose group the container shares with its task (see the module's step 5).
const SHARED: [&str; 3] = ["cpu", "cpuacct", "cpuset"];

/// Every v1 controller a hierarchy can carry (the other super options are flags or a name).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// What the launcher prepares for its runc child to enter the cgroups of `task`, whose number
/// is `pid` (steps 1, 3 and 5 of the module's sequence; the child does the rest). Call it inside
/// `task.with_pid`, so that the number named the task throughout.
pub fn entry(pid: i32, task: &PidFd) -> Result<Entry, CgroupError> {
    let read = |p: &str| fs::read(p).map_err(|source| CgroupError::Read { pid, source });
    let owner = task
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| CgroupError::Read { pid, source })?;
    let membership_path = format!("/proc/{pid}/cgroup");
    let membership = read(&membership_path)?;
    let mountinfo = String::from_utf8_lossy(&read("/proc/self/mountinfo")?).into_owned();
    // Where the launcher (and so its child) already is the task's group, no write: a write to
    // `cgroup.procs` migrates even onto the same group, and the first migration after an idle
    // spell waits for an RCU grace period (5-9 ms here). The child checks it is still there.
    let own = read("/proc/self/cgroup")?;
    let (to_join, already) = split_joins(
        &String::from_utf8_lossy(&membership),
        &String::from_utf8_lossy(&own),
    );
    let mut procs = Vec::new();
    for path in resolve(&to_join, &mountinfo) {
        let required = !optional(&path);
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => procs.push((OwnedFd::from(f), required)),
            Err(_) if !required => {}
            Err(source) => return Err(CgroupError::Join { path, source }),
        }
    }
    // Unreadable affinity (the task is gone): step 4 will refuse anyway.
    let affinity = enter_cgroups::affinity_of(pid).ok();
    let hide = shared_hierarchies(&mountinfo)
        .into_iter()
        .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .collect();
    Ok(Entry {
        procs,
        owner,
        membership_path: CString::new(membership_path).expect("no NUL in a /proc path"),
        membership,
        already: already.into_iter().map(String::into_bytes).collect(),
        affinity,
        hide,
    })
}

/// Splits the task's `/proc/PID/cgroup` text into the lines whose group the launcher is not in
/// (to join, as a text for [`resolve`]) and those it is already in (`own`, the launcher's text,
/// has the same line: same hierarchy, same path), which need no write.
pub fn split_joins(membership: &str, own: &str) -> (String, Vec<String>) {
    let mut to_join = String::new();
    let mut already = Vec::new();
    for line in membership.lines().filter(|l| !l.is_empty()) {
        if own.lines().any(|o| o == line) {
            already.push(line.to_string());
        } else {
            to_join.push_str(line);
            to_join.push('\n');
        }
    }
    (to_join, already)
}

/// Hierarchies that may refuse a process and hold no limit (systemd's named one, the empty
/// unified one of a hybrid v1 machine): joining them is best effort.
fn optional(file: &Path) -> bool {
    file.components()
        .any(|c| c.as_os_str() == "systemd" || c.as_os_str() == "unified")
}

/// A cgroup filesystem mount of `mountinfo`.
struct CgroupMount {
    /// `cgroup` (v1) or `cgroup2`.
    fstype: String,
    /// Super options: a v1 hierarchy's controllers (and flags, `name=`).
    options: String,
    point: String,
    /// The mounted sub-tree (`/` for a whole hierarchy).
    root: String,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
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
            mounts.push(CgroupMount {
                fstype: r[0].to_string(),
                options: r[2].to_string(),
                point: l[4].to_string(),
                root: l[3].to_string(),
            });
        }
    }
    mounts
}

/// The mount points of the v1 hierarchies whose controllers are all in [`SHARED`] (none on a
/// pure v2 node, and never a hierarchy that also carries, say, devices): step 5.
pub fn shared_hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    cgroup_mounts(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "cgroup")
        .filter(|m| {
            let ctrls: Vec<&str> = m
                .options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .collect();
            !ctrls.is_empty() && ctrls.iter().all(|c| SHARED.contains(c))
        })
        .map(|m| PathBuf::from(m.point))
        .collect()
}

/// The `cgroup.procs` files of every hierarchy of a `/proc/PID/cgroup` text (`membership`),
/// against `mountinfo`.
pub fn resolve(membership: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mounts = cgroup_mounts(mountinfo);
    let mut out = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if ctrls.is_empty() {
            mounts.iter().find(|m| m.fstype == "cgroup2")
        } else {
            // v1: the mount whose super options list exactly these controllers.
            mounts.iter().find(|m| {
                m.fstype == "cgroup"
                    && ctrls.split(',').all(|c| {
                        m.options.split(',').any(|o| {
                            o == c || o == format!("name={}", c.trim_start_matches("name="))
                        })
                    })
            })
        };
        let Some(m) = mount else {
            continue;
        };
        // A mount of a sub-tree (root != "/") shows paths relative to that root.
        let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
        let dir = Path::new(&m.point).join(rel.trim_start_matches('/'));
        let file = dir.join("cgroup.procs");
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12 with systemd's hybrid layout (v1 controllers, an empty v2 at `unified`).
    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset,clone_children
37 30 0:33 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
35 30 0:31 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd";

    /// A pure cgroup v2 node (RHEL 9, Debian 12 with systemd's default, Ubuntu 22.04+).
    const V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";

    #[test]
    fn v1_and_v2_membership_resolves_to_procs_files() {
        let membership =
            "4:memory:/slurm/uid_0/job_5\n3:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/x";
        let files = resolve(membership, HYBRID);
        assert_eq!(
            files,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/slurm/uid_0/job_5/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/systemd/init.scope/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/x/cgroup.procs"),
            ]
        );
        assert!(optional(&files[2]) && optional(&files[3]) && !optional(&files[0]));
    }

    #[test]
    fn groups_the_launcher_is_already_in_are_not_joined_again() {
        let task = "4:memory:/slurm/uid_0/job_5/step_0/task_0\n3:cpu,cpuacct:/\n1:name=systemd:/\n";
        let own = "4:memory:/slurm/uid_0/job_5/step_0\n3:cpu,cpuacct:/\n1:name=systemd:/\n";
        let (to_join, already) = split_joins(task, own);
        assert_eq!(to_join, "4:memory:/slurm/uid_0/job_5/step_0/task_0\n");
        assert_eq!(already, vec!["3:cpu,cpuacct:/", "1:name=systemd:/"]);
        assert_eq!(
            resolve(&to_join, HYBRID),
            vec![PathBuf::from(
                "/sys/fs/cgroup/memory/slurm/uid_0/job_5/step_0/task_0/cgroup.procs"
            )]
        );
        // Same path, another hierarchy: not the same group.
        let (to_join, already) = split_joins("4:memory:/\n", "3:cpu,cpuacct:/\n");
        assert_eq!((to_join.as_str(), already.len()), ("4:memory:/\n", 0));
        // Pure v2: the one line decides.
        let v2 = "0::/system.slice/slurmstepd.scope/job_5/step_0/user/task_0\n";
        assert_eq!(
            split_joins(v2, "0::/system.slice/slurmstepd.scope/job_5/step_0/slurm\n").0,
            v2
        );
        assert!(split_joins(v2, v2).0.is_empty());
    }

    #[test]
    fn on_v1_only_the_scheduling_hierarchies_are_shared_with_the_task() {
        assert_eq!(
            shared_hierarchies(HYBRID),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                PathBuf::from("/sys/fs/cgroup/cpuset"),
            ]
        );
        // A hierarchy that also carries devices keeps a group of its own (the device rules).
        let joint = "34 30 0:30 / /c rw - cgroup cgroup rw,cpu,cpuacct,devices";
        assert!(shared_hierarchies(joint).is_empty());
    }

    #[test]
    fn a_slurm_task_on_pure_v2_resolves_to_its_one_cgroup_and_nothing_is_hidden() {
        // Slurm's cgroup/v2 plugin: slurmstepd's scope, the step, the user's tasks' leaf.
        let membership = "0::/system.slice/slurmstepd.scope/job_5/step_0/user/task_0\n";
        assert_eq!(
            resolve(membership, V2),
            vec![PathBuf::from(
                "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_5/step_0/user/task_0/cgroup.procs"
            )]
        );
        // One hierarchy holds every controller: hiding it would hide devices too.
        assert!(shared_hierarchies(V2).is_empty());
        let file = &resolve(membership, V2)[0];
        assert!(!optional(file), "the task's v2 group must be joined");
    }

    #[test]
    fn a_v2_mount_of_a_subtree_resolves_relative_to_its_root() {
        // Inside a cgroup namespace or a container: mountinfo shows the mounted sub-tree.
        let mountinfo = "26 22 0:23 /job_5 /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(
            resolve("0::/job_5/step_0/user/task_1", mountinfo),
            vec![PathBuf::from(
                "/sys/fs/cgroup/step_0/user/task_1/cgroup.procs"
            )]
        );
    }

    #[test]
    fn a_membership_without_a_mounted_hierarchy_resolves_to_nothing() {
        assert!(resolve("0::/x", "1 0 0:1 / / rw - ext4 /dev/sda rw").is_empty());
        assert!(resolve("garbage\n", V2).is_empty());
    }
}
