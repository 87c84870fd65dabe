//! Wire format between a task and its launcher: length-prefixed JSON frames over a Unix stream
//! socket; the first frame (`Hello`) carries the task's descriptors as SCM_RIGHTS.

use std::fmt::Display;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};

use super::options::ContainerOptions;
use crate::sys;

/// Largest frame we accept: argv + env of a task fit comfortably; anything bigger is hostile.
const MAX_FRAME: usize = 8 << 20;
/// At most this many descriptors travel with `Hello` (stdio + PMI descriptors).
pub const MAX_FDS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("launcher socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("launcher socket: {0}")]
    Sys(#[from] nix::Error),
    #[error("launcher protocol: bad frame: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("launcher protocol: frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("launcher protocol: connection closed")]
    Closed,
}

/// What slurmstepd tells the launcher when it starts it (on its stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRequest {
    pub job_id: u32,
    pub step_id: u32,
    pub node_id: u32,
    pub uid: u32,
    pub gid: u32,
    pub local_tasks: u32,
    pub options: ContainerOptions,
    /// The batch script (batch step only): bound read-only at its own path in the container.
    pub batch_script: Option<PathBuf>,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// The job's environment at step start (for the image import: auth and proxy settings).
    pub job_env: Vec<String>,
    /// plugstack `container_scope=global`: named containers outlive the job.
    #[serde(default)]
    pub global_scope: bool,
    /// The descriptor on which the plugin passes `socket`, already bound and listening (see
    /// `step::bind_socket`); `None`: the launcher binds it.
    #[serde(default)]
    pub listener_fd: Option<i32>,
}

/// A task introduces itself. The descriptors listed in `fds` arrive in the same order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub local_id: u32,
    pub global_id: u32,
    pub argv: Vec<String>,
    /// The task's final environment (`NAME=VALUE`), as slurmstepd would exec it.
    pub env: Vec<String>,
    /// Each passed descriptor: its number in the task (0, 1, 2, then e.g. PMI_FD's).
    pub fds: Vec<i32>,
    /// The task's stdin is a terminal (`srun --pty`): the container gets one too.
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToLauncher {
    Hello(Box<Hello>),
    Signal(i32),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToTask {
    /// A line for the user's terminal (progress, warnings).
    Message(String),
    /// The container ended with this wait status code (exit code, or 128+signal).
    Exit(i32),
    /// The container could not be started; one clear line for the user.
    Error(String),
}

/// A line for the user's terminal: every message the launcher sends a task says who speaks.
/// The one place the `egret: ` prefix of the launcher's user-facing lines is added.
pub fn user_line(msg: impl Display) -> String {
    format!("egret: {msg}")
}

/// Encodes a frame: 4-byte big-endian length, then JSON.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn send<T: Serialize>(sock: &mut UnixStream, msg: &T) -> Result<(), ProtocolError> {
    sock.write_all(&encode(msg)?)?;
    Ok(())
}

pub fn recv<T: for<'de> Deserialize<'de>>(sock: &mut UnixStream) -> Result<T, ProtocolError> {
    let mut len = [0u8; 4];
    read_exact_or_closed(sock, &mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    read_exact_or_closed(sock, &mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

fn read_exact_or_closed(sock: &mut UnixStream, buf: &mut [u8]) -> Result<(), ProtocolError> {
    match sock.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtocolError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Sends `Hello` with its descriptors attached to the first byte of the frame.
pub fn send_hello(sock: &UnixStream, hello: Hello, fds: &[RawFd]) -> Result<(), ProtocolError> {
    let frame = encode(&ToLauncher::Hello(Box::new(hello)))?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    let first = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&frame[..1])],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    debug_assert_eq!(first, 1);
    (&*sock).write_all(&frame[1..])?;
    Ok(())
}

/// Receives `Hello` and the descriptors that came with it.
pub fn recv_hello(sock: &mut UnixStream) -> Result<(Hello, Vec<OwnedFd>), ProtocolError> {
    let mut first = [0u8; 1];
    let (read, fds) = sys::fd::recv_with_fds::<MAX_FDS>(sock, &mut first)?;
    if read == 0 {
        return Err(ProtocolError::Closed);
    }
    let mut rest = [0u8; 3];
    read_exact_or_closed(sock, &mut rest)?;
    let len = u32::from_be_bytes([first[0], rest[0], rest[1], rest[2]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    read_exact_or_closed(sock, &mut body)?;
    match serde_json::from_slice(&body)? {
        ToLauncher::Hello(h) => {
            if h.fds.len() != fds.len() {
                return Err(ProtocolError::Io(std::io::Error::other(format!(
                    "task announced {} descriptors but sent {}",
                    h.fds.len(),
                    fds.len()
                ))));
            }
            Ok((*h, fds))
        }
        ToLauncher::Signal(_) => Err(ProtocolError::Io(std::io::Error::other(
            "expected Hello first",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_with_fds_round_trips() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let hello = Hello {
            local_id: 1,
            global_id: 5,
            argv: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into()],
            fds: vec![7],
            tty: false,
        };
        send_hello(&a, hello, &[file.as_raw_fd()]).unwrap();
        let (h, fds) = recv_hello(&mut b).unwrap();
        assert_eq!(h.global_id, 5);
        assert_eq!(h.argv, vec!["echo", "hi"]);
        assert_eq!(fds.len(), 1);
    }

    #[test]
    fn frames_round_trip_and_close_is_detected() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        send(&mut a, &ToTask::Exit(3)).unwrap();
        send(&mut a, &ToTask::Error("boom".into())).unwrap();
        assert_eq!(recv::<ToTask>(&mut b).unwrap(), ToTask::Exit(3));
        assert_eq!(
            recv::<ToTask>(&mut b).unwrap(),
            ToTask::Error("boom".into())
        );
        drop(a);
        assert!(matches!(recv::<ToTask>(&mut b), Err(ProtocolError::Closed)));
    }

    #[test]
    fn user_lines_say_egret_once() {
        assert_eq!(
            user_line(format_args!("no --container-image")),
            "egret: no --container-image"
        );
    }

    #[test]
    fn oversized_frame_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&(u32::MAX).to_be_bytes()).unwrap();
        assert!(matches!(
            recv::<ToTask>(&mut b),
            Err(ProtocolError::TooLarge(_))
        ));
    }
}
