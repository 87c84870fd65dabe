//! The launcher's cgroup entry for runc, as root on this machine's real hierarchies: a task in
//! a group of its own (as Slurm's task/cgroup puts one) gets runc's process in that group, in
//! the hierarchies where the task's group differs from the launcher's; where they are the same,
//! nothing is written and the child is still there. The test cluster runs without Slurm's
//! cgroup plugins, so its steps only ever take the second path.

use egret_test_support as common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use egret_engine::slurm::cgroup;
use egret_engine::sys::enter_cgroups;
use egret_engine::sys::process::PidFd;

/// A v1 hierarchy that can hold a group of the test's own (pids, else freezer), or pure v2.
fn hierarchy() -> PathBuf {
    for h in ["pids", "freezer", "unified"] {
        let p = Path::new("/sys/fs/cgroup").join(h);
        if p.join("cgroup.procs").exists() {
            return p;
        }
    }
    let root = PathBuf::from("/sys/fs/cgroup");
    assert!(
        root.join("cgroup.procs").exists(),
        "no cgroup hierarchy under /sys/fs/cgroup"
    );
    root
}

struct Group(PathBuf);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn runc_s_process_joins_the_task_s_own_group_and_stays_in_shared_ones() {
    common::require_root();
    let h = hierarchy();
    let group = Group(h.join(format!("egret-test-join-{}", std::process::id())));
    fs::create_dir(&group.0).unwrap();
    // The "task": a sleep moved into the group.
    let mut task = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = task.id() as i32;
    fs::write(group.0.join("cgroup.procs"), pid.to_string()).unwrap();
    let pidfd = PidFd::open(nix::unistd::Pid::from_raw(pid)).unwrap();

    let entry = pidfd
        .with_pid(|p| cgroup::entry(p, &pidfd))
        .unwrap()
        .unwrap();
    // Only the group that differs is written; the others are the launcher's (ours).
    assert_eq!(
        entry.procs.len(),
        1,
        "only the task's own group differs from ours; already shared: {:?}",
        entry.already.len()
    );
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/cgroup").stdout(Stdio::piped());
    enter_cgroups::enter_on_exec(&mut cmd, entry);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let child = String::from_utf8_lossy(&out.stdout).into_owned();
    let task_text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let name = group.0.file_name().unwrap().to_string_lossy().into_owned();
    let task_line = task_text
        .lines()
        .find(|l| l.ends_with(&format!("/{name}")))
        .unwrap();
    assert!(
        child.lines().any(|l| l == task_line),
        "runc's process is not in the task's group {task_line}:\n{child}"
    );
    // Every other line is the task's too (the launcher's, shared): the child is where the task is.
    for line in task_text
        .lines()
        .filter(|l| !l.contains("name=systemd") && !l.starts_with("0::"))
    {
        assert!(
            child.lines().any(|l| l == line),
            "{line} missing in:\n{child}"
        );
    }
    let _ = task.kill();
    let _ = task.wait();
}
