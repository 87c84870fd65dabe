//! Runs `mksquashfs - OUT -tar …` and feeds its stdin from the calling thread.
//!
//! mksquashfs' stderr goes to an unlinked temporary file, read back once it has exited, so it
//! can never block on a full pipe while we are blocked writing its stdin, and no thread has to
//! drain it. (The feeding closure may use threads: squashfs images are only made by egret's own
//! processes, the CLI and `egret-launcher`, never inside slurmstepd, whose forks the SPANK
//! plugin runs in; the plugin links no image code.)

use std::ffi::OsString;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use crate::config::Config;
use crate::image::flatten::FlattenError;

/// Requested size of the pipe into mksquashfs (Linux's default maximum for users is 1 MiB).
const PIPE_SIZE: i32 = 1 << 20;
/// How much of mksquashfs' stderr an error message quotes.
const STDERR_TAIL_LINES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SquashError {
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no space left on the device holding {path} while writing the squashfs image")]
    NoSpace { path: PathBuf },
    #[error("mksquashfs failed ({status}) writing {path}: {stderr}")]
    Failed {
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error(transparent)]
    Feed(FlattenError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The configured mksquashfs and the options every image gets.
#[derive(Debug, Clone)]
pub struct Mksquashfs {
    pub path: PathBuf,
    /// `mksquashfsOptions`, split on whitespace (as Sarus does): compression and the like.
    pub options: Vec<String>,
}

/// A finished image and what mksquashfs had to say while making it.
#[derive(Debug)]
pub struct Squashed<T> {
    /// What the feeding closure returned.
    pub fed: T,
    pub size: u64,
    /// mksquashfs warnings (lines it printed although it succeeded).
    pub warnings: Vec<String>,
}

impl Mksquashfs {
    pub fn from_config(cfg: &Config) -> Mksquashfs {
        Mksquashfs {
            path: cfg.mksquashfs_path.clone(),
            options: cfg
                .mksquashfs_options
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// The full argument list. Options must follow OUT (`sqfstar` would take them as excludes).
    pub fn args(&self, out: &Path) -> Vec<OsString> {
        let fixed = [
            "-tar",
            "-noappend",
            // Without these the root directory is 0777 and owned by whoever runs mksquashfs.
            "-root-mode",
            "0755",
            "-root-uid",
            "0",
            "-root-gid",
            "0",
            "-quiet",
            "-no-progress",
            "-exit-on-error",
        ];
        let mut args: Vec<OsString> = vec!["-".into(), out.into()];
        args.extend(fixed.iter().map(OsString::from));
        args.extend(self.options.iter().map(OsString::from));
        args
    }

    /// Writes `out` from the tar that `feed` writes to mksquashfs' stdin. On any failure the
    /// partial `out` is removed and mksquashfs is gone (killed if `feed` failed).
    pub fn build<T>(
        &self,
        out: &Path,
        feed: impl FnOnce(&mut ChildStdin) -> Result<T, FlattenError>,
    ) -> Result<Squashed<T>, SquashError> {
        let io_err = |source| SquashError::Io {
            path: out.to_path_buf(),
            source,
        };
        let mut log = tempfile::tempfile().map_err(io_err)?;
        let mut child = Command::new(&self.path)
            .args(self.args(out))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log.try_clone().map_err(io_err)?)
            .spawn()
            .map_err(|source| SquashError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        let result = {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            // A bigger pipe means fewer context switches between the flattener and mksquashfs
            // (the default 64 KiB holds a few tar blocks). Best effort: the limit is per user.
            let _ = nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&stdin),
                nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
            );
            let r = feed(&mut stdin);
            // Closing stdin is mksquashfs' end of input.
            drop(stdin);
            r
        };
        match result {
            Err(e) if !e.is_broken_pipe() => {
                kill(&mut child);
                remove_partial(out);
                return Err(SquashError::Feed(e));
            }
            _ => {}
        }
        let status = child.wait().map_err(io_err)?;
        let stderr = read_log(&mut log);
        if !status.success() {
            remove_partial(out);
            return Err(classify_failure(out, status, &stderr));
        }
        let fed = match result {
            Ok(fed) => fed,
            // The pipe broke but mksquashfs says it succeeded: never trust that image.
            Err(e) => {
                remove_partial(out);
                return Err(SquashError::Feed(e));
            }
        };
        let size = std::fs::metadata(out).map_err(io_err)?.len();
        let warnings = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        Ok(Squashed {
            fed,
            size,
            warnings,
        })
    }
}

fn kill(child: &mut Child) {
    // Already exited is fine; we only need it gone before removing its output.
    let _ = child.kill();
    let _ = child.wait();
}

fn remove_partial(out: &Path) {
    // Best effort: the caller's work directory is removed as a whole anyway.
    let _ = std::fs::remove_file(out);
}

fn read_log(log: &mut std::fs::File) -> String {
    let mut s = String::new();
    if log.rewind().is_ok() {
        let mut bytes = Vec::new();
        let _ = log.read_to_end(&mut bytes);
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    s
}

fn classify_failure(out: &Path, status: ExitStatus, stderr: &str) -> SquashError {
    if stderr.contains("No space left on device") {
        return SquashError::NoSpace {
            path: out.to_path_buf(),
        };
    }
    let tail: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    let tail = tail[tail.len().saturating_sub(STDERR_TAIL_LINES)..].join(" / ");
    SquashError::Failed {
        path: out.to_path_buf(),
        status,
        stderr: if tail.is_empty() {
            "no message".into()
        } else {
            tail
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::flatten::{flatten, LayerInput};
    use std::io::Write;

    /// Writes `data` as the whole of stdin.
    fn feed_bytes(data: &[u8]) -> impl FnOnce(&mut ChildStdin) -> Result<(), FlattenError> + '_ {
        move |stdin| {
            stdin
                .write_all(data)
                .map_err(|source| FlattenError::Write { source })
        }
    }

    fn mk() -> Mksquashfs {
        Mksquashfs::from_config(&Config::default())
    }

    fn tar_with(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn listing(img: &Path) -> String {
        let o = Command::new("unsquashfs")
            .arg("-lls")
            .arg(img)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn args_put_options_after_output() {
        let m = Mksquashfs {
            path: "/x".into(),
            options: vec!["-comp".into(), "zstd".into()],
        };
        let a = m.args(Path::new("/o.sqfs"));
        assert_eq!(a[0], "-");
        assert_eq!(a[1], "/o.sqfs");
        assert_eq!(a[2], "-tar");
        assert_eq!(&a[a.len() - 2..], &["-comp", "zstd"]);
    }

    #[test]
    fn builds_from_flattened_layers() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.sqfs");
        let layer = tar_with(&[("etc/hostname", "egret\n"), ("bin/sh", "#!")]);
        let res = mk()
            .build(&out, |stdin| {
                let inputs = vec![LayerInput {
                    name: "l".into(),
                    reader: Box::new(io::Cursor::new(layer)),
                }];
                flatten(inputs, stdin, &mut |_| {})
            })
            .unwrap();
        assert!(res.size > 0);
        assert_eq!(res.fed.entries, 4);
        let l = listing(&out);
        assert!(l.contains("squashfs-root/etc/hostname"), "{l}");
        assert!(
            l.lines()
                .next()
                .unwrap()
                .starts_with("drwxr-xr-x root/root"),
            "{l}"
        );
    }

    #[test]
    fn feed_error_kills_and_removes_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.sqfs");
        let err = mk()
            .build(&out, |stdin| -> Result<(), FlattenError> {
                stdin.write_all(&tar_with(&[("a", "b")])[..512]).unwrap();
                Err(FlattenError::UnsafeEntry {
                    layer: "l".into(),
                    path: "../x".into(),
                    reason: "test".into(),
                })
            })
            .unwrap_err();
        assert!(
            matches!(err, SquashError::Feed(FlattenError::UnsafeEntry { .. })),
            "{err}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn mksquashfs_failure_is_reported_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing-dir/img.sqfs");
        let err = mk()
            .build(&out, feed_bytes(&tar_with(&[("a", "b")])))
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SquashError::Failed { .. }), "{msg}");
        assert!(msg.contains("img.sqfs") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn missing_binary_is_named() {
        let m = Mksquashfs {
            path: "/nonexistent/mksquashfs".into(),
            options: vec![],
        };
        let err = m
            .build(Path::new("/tmp/x.sqfs"), feed_bytes(b""))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mksquashfs"), "{err}");
    }

    #[test]
    fn bad_option_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.sqfs");
        let m = Mksquashfs {
            options: vec!["-no-such-option".into()],
            ..mk()
        };
        let err = m
            .build(&out, feed_bytes(&tar_with(&[("a", "b")])))
            .unwrap_err();
        assert!(matches!(err, SquashError::Failed { .. }), "{err}");
        assert!(!out.exists());
    }
}
