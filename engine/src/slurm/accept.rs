//! The accept loop: the step's tasks connect to the launcher's socket, the kernel says who they
//! are, and each task's hello (argv, env, descriptors) goes to the thread serving the tasks.

use std::collections::HashSet;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::sys::process::PidFd;

use super::protocol::{self, Hello, StepRequest, ToTask};
use super::task_progress::TaskProgress;

/// One connected task of the step.
pub struct TaskConn {
    pub stream: UnixStream,
    pub hello: Hello,
    pub fds: Vec<OwnedFd>,
    /// The task process that connected, named by pidfd (its number is recycled once it is gone).
    pub task: PidFd,
}

/// Accepts the step's `local_tasks` tasks, each once, and hands them to `tx`; task 0's
/// connection also gets the import progress.
pub fn accept_tasks(
    listener: UnixListener,
    req: StepRequest,
    tx: mpsc::Sender<TaskConn>,
    progress: TaskProgress,
) {
    let mut accepted = 0;
    let mut seen = HashSet::new();
    while accepted < req.local_tasks {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let Ok(cred) = getsockopt(&stream, PeerCredentials) else {
            continue;
        };
        // The socket is 0600 and owned by the user; check anyway, the kernel's word is final.
        if cred.uid() != req.uid && cred.uid() != 0 {
            continue;
        }
        let Some(task) = peer_process(&stream, cred.pid(), cred.uid()) else {
            continue;
        };
        // A connection that never finishes its hello must not hold up the step's tasks.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let hello = protocol::recv_hello(&mut stream);
        let _ = stream.set_read_timeout(None);
        match hello {
            Ok((hello, _)) if hello.local_id >= req.local_tasks || !seen.insert(hello.local_id) => {
                let msg = protocol::user_line(format_args!(
                    "task {} is not a task of this step, or already connected",
                    hello.local_id
                ));
                eprintln!("egret-launcher: refused a hello: {msg}");
                let _ = protocol::send(&mut stream, &ToTask::Error(msg));
            }
            Ok((hello, fds)) => {
                accepted += 1;
                if hello.local_id == 0 {
                    progress.attach(&stream);
                }
                let conn = TaskConn {
                    stream,
                    hello,
                    fds,
                    task,
                };
                if tx.send(conn).is_err() {
                    return;
                }
            }
            Err(e) => eprintln!("egret-launcher: bad hello: {e}"),
        }
    }
}

/// The process at the other end of `stream`: the kernel's pidfd of the connecting process, or
/// (before Linux 6.5) a pidfd opened now for the `SO_PEERCRED` pid and accepted only if that
/// process still has the peer's uid, so a recycled number can at worst name one of the user's
/// own processes.
fn peer_process(stream: &UnixStream, pid: i32, uid: u32) -> Option<PidFd> {
    match PidFd::of_peer(stream) {
        Ok(p) => return Some(p),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
        Err(e) => {
            eprintln!("egret-launcher: SO_PEERPIDFD: {e}");
            return None;
        }
    }
    let p = PidFd::open(nix::unistd::Pid::from_raw(pid)).ok()?;
    let same_user = p.with_pid(|n| process_uid(n) == Some(uid)).unwrap_or(false);
    same_user.then_some(p)
}

/// The real uid of process `pid` (`/proc/PID/status`).
pub(super) fn process_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
