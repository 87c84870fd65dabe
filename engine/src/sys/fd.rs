//! Descriptors: passing them over a Unix socket (`SCM_RIGHTS`), laying them out for a child
//! process, and the one raw `write(2)` a signal handler may make.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Reads into `buf` once, taking ownership of up to `MAX` descriptors sent with those bytes
/// (close-on-exec). Returns the number of bytes read (0: the peer closed) and the descriptors.
pub fn recv_with_fds<const MAX: usize>(
    sock: &UnixStream,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buf),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed these descriptors in our table for us;
                // nobody else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// A close-on-exec duplicate of descriptor `n`, which this process inherited (Slurm's
/// `PMI_FD`, say), or `None` when no descriptor of that number is open.
pub fn dup_inherited(n: RawFd) -> Option<OwnedFd> {
    if n < 0 {
        return None;
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any number is sound: it fails with EBADF when nothing
    // is open there, and otherwise returns a new descriptor.
    let fd = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fcntl just returned this descriptor to us; nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Highest number of descriptors [`map_fds_on_exec`] lays out.
const MAP_MAX: usize = 16;
/// Parking area above any descriptor the shuffle could target.
const PARK: RawFd = 64;

/// Makes the child start with `fds[0..]` as its descriptors 0, 1, 2, 3, ... (at most 16; the
/// rest are ignored). The descriptors must stay open until the child is spawned.
pub fn map_fds_on_exec<Fd: AsRawFd>(cmd: &mut Command, fds: &[Fd]) {
    let mut table = [-1 as RawFd; MAP_MAX];
    let n = fds.len().min(MAP_MAX);
    for (slot, fd) in table.iter_mut().zip(fds) {
        *slot = fd.as_raw_fd();
    }
    // SAFETY: the closure runs between fork and exec and only calls fcntl/dup2/close, which are
    // async-signal-safe; it touches no allocation or lock.
    unsafe {
        cmd.pre_exec(move || {
            // Park every source above the targets first, so no dup2 clobbers a later source.
            let mut parked = [-1 as RawFd; MAP_MAX];
            for i in 0..n {
                let p = libc::fcntl(table[i], libc::F_DUPFD, PARK);
                if p < 0 {
                    return Err(io::Error::last_os_error());
                }
                parked[i] = p;
            }
            for (i, p) in parked.iter().enumerate().take(n) {
                if libc::dup2(*p, i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(*p);
            }
            Ok(())
        });
    }
}

/// `write(2)` of `buf` to descriptor `fd`, nothing else: async-signal-safe, for signal handlers.
/// A closed or foreign `fd` makes the write fail or land there; no memory is at stake. Returns
/// what write(2) returned.
pub fn write_from_signal_handler(fd: RawFd, buf: &[u8]) -> isize {
    // SAFETY: `buf` is initialised memory of `buf.len()` bytes that outlives the call.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::IoSlice;

    #[test]
    fn descriptors_travel_with_the_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; 1];
        let (n, got) = recv_with_fds::<4>(&b, &mut buf).unwrap();
        assert_eq!((n, &buf, got.len()), (1, b"x", 1));
    }
}
