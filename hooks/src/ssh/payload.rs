//! The host's dropbear programs and everything they load, found with the host's `ldd`.

use std::path::{Path, PathBuf};

use crate::ssh::{Settings, SshError};

/// The host files the client and daemon need: programs, the loader and the libraries.
pub(super) struct Payload {
    pub(super) dropbear: PathBuf,
    pub(super) dbclient: PathBuf,
    /// (file name in `lib/`, host path)
    pub(super) libs: Vec<(String, PathBuf)>,
    pub(super) loader: String,
}

pub(super) fn payload(settings: &Settings) -> Result<Payload, SshError> {
    let dropbear = settings.program("dropbear")?;
    let dbclient = settings.program("dbclient")?;
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    let mut loader = None;
    for prog in [&dropbear, &dbclient] {
        let out = std::process::Command::new(&settings.ldd)
            .arg(prog)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .map_err(|e| SshError::Tool {
                program: settings.ldd.display().to_string(),
                msg: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SshError::Tool {
                program: format!("{} {}", settings.ldd.display(), prog.display()),
                msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        for (name, path, is_loader) in parse_ldd(&String::from_utf8_lossy(&out.stdout)) {
            if is_loader {
                loader = Some(name.clone());
            }
            if !libs.iter().any(|(n, _)| *n == name) {
                libs.push((name, path));
            }
        }
    }
    let loader = loader.ok_or_else(|| SshError::Tool {
        program: format!("{} {}", settings.ldd.display(), dropbear.display()),
        msg: "names no program interpreter (a static dropbear? give a dynamic one)".into(),
    })?;
    Ok(Payload {
        dropbear,
        dbclient,
        libs,
        loader,
    })
}

/// `ldd` lines: `name => /path (addr)` and the loader `/lib64/ld-linux-x86-64.so.2 (addr)`.
/// Returns (file name, host path, is the loader); the vDSO has no path and is skipped.
fn parse_ldd(text: &str) -> Vec<(String, PathBuf, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (name, path, loader) = match line.split_once(" => ") {
            Some((name, rest)) => (name.to_string(), rest.split(" (").next(), false),
            None => {
                let p = line.split(" (").next().unwrap_or("");
                let base = Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (base, Some(p), true)
            }
        };
        match path {
            Some(p) if p.starts_with('/') && !name.contains('/') && !name.is_empty() => {
                out.push((name, PathBuf::from(p), loader));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let got = parse_ldd(text);
        assert_eq!(
            got,
            vec![
                (
                    "libz.so.1".into(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                    false
                ),
                (
                    "libc.so.6".into(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                    false
                ),
                (
                    "ld-linux-x86-64.so.2".into(),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
                    true
                ),
            ]
        );
    }

    #[test]
    fn the_hosts_dropbear_has_a_payload() {
        let p = payload(&Settings::from_env(|_| None).unwrap()).expect("dropbear-bin installed");
        assert!(p.loader.starts_with("ld-"), "{}", p.loader);
        assert!(p.libs.iter().any(|(n, _)| n.starts_with("libc.so")));
    }
}
