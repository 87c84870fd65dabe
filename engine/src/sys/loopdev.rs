//! Loop devices: attach an image file read-only with `LO_FLAGS_AUTOCLEAR`, so the device detaches
//! itself when its last user (the squashfs mount) goes away — with the mount namespace, at the
//! latest. `LOOP_CONFIGURE` (Linux 5.8) sets file, flags and autoclear in one call; older kernels
//! get `LOOP_SET_FD` + `LOOP_SET_STATUS64`.
//!
//! # References
//! loop(4); `include/uapi/linux/loop.h`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// Another process may grab the device `LOOP_CTL_GET_FREE` gave us; try again that many times.
const ATTEMPTS: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn new(flags: u32, name: &Path) -> LoopInfo64 {
        let mut file_name = [0u8; LO_NAME_SIZE];
        let bytes = name.as_os_str().as_encoded_bytes();
        // Shown by `losetup -a`; keep the tail, which names the image, and a NUL terminator.
        let tail = &bytes[bytes.len().saturating_sub(LO_NAME_SIZE - 1)..];
        file_name[..tail.len()].copy_from_slice(tail);
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// An attached loop device. Dropping it closes our descriptor; thanks to autoclear the device is
/// then detached as soon as nothing else (a mount) uses it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _fd: OwnedFd,
}

/// Attaches `backing` (opened read-only by the caller) to a free loop device, read-only and
/// autoclear. `name` is recorded in the device for `losetup -a`.
pub fn attach_read_only(backing: &File, name: &Path) -> io::Result<LoopDevice> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; `ctl` is an open descriptor.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_device(&path)?;
        match configure(&dev, backing, name) {
            Ok(()) => {
                return Ok(LoopDevice {
                    path,
                    _fd: dev.into(),
                })
            }
            // Someone attached it between GET_FREE and our call: take the next free one.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn open_device(path: &Path) -> io::Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path);
    match rw {
        Err(e)
            if e.raw_os_error() == Some(libc::EROFS) || e.raw_os_error() == Some(libc::EACCES) =>
        {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
        }
        other => other,
    }
}

fn configure(dev: &File, backing: &File, name: &Path) -> io::Result<()> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64::new(LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR, name),
        reserved: [0; 8],
    };
    // SAFETY: `config` is a valid `struct loop_config` that outlives the call; the kernel only
    // reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Kernels before 5.8 do not know LOOP_CONFIGURE.
        Some(libc::EINVAL) | Some(libc::ENOTTY) => configure_legacy(dev, backing, name),
        _ => Err(err),
    }
}

fn configure_legacy(dev: &File, backing: &File, name: &Path) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing descriptor by value; both descriptors are open.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_FD,
            backing.as_raw_fd() as libc::c_ulong,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Read-only comes from the backing file's O_RDONLY here; only autoclear can be set.
    let info = LoopInfo64::new(LO_FLAGS_AUTOCLEAR, name);
    // SAFETY: `info` is a valid `struct loop_info64` that outlives the call; the kernel only
    // reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64,
            &info as *const LoopInfo64,
        )
    };
    if r != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument; undo the attach so no device is left behind.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
        return Err(err);
    }
    Ok(())
}
