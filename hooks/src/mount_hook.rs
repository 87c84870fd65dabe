//! The mount hook: bind mounts and devices the admin lists in the hook's JSON `args`:
//! `--mount=<egret run --mount syntax>` (`type=bind,src=/a,dst=/b[,readonly]`) and
//! `--device=HOST[:CONTAINER][:ACCESS]`, each repeatable. In a mount's destination,
//! `<FI_PROVIDER_PATH>` stands for the directory of the container's libfabric providers: the
//! container's `FI_PROVIDER_PATH` when set, else `<dir of libfabric.so.N in the container's
//! linker cache>/libfabric`, else `/usr/lib`. With `LDCONFIG_PATH` in the hook's env, the
//! container's linker cache is rebuilt after mounting.
//!
//! Sources are the admin's (trusted); the wildcard, which the user influences, may only appear in
//! a destination.

use std::path::{Path, PathBuf};

use egret_engine::container::mounts::{self, BindMount, DeviceRequest, MountError};

use crate::bind::{self, BindError, BindOptions};
use crate::ldcache::{self, CachedLib, LdcacheError};
use crate::HookContext;

pub const WILDCARD: &str = "<FI_PROVIDER_PATH>";

#[derive(Debug, thiserror::Error)]
pub enum MountHookError {
    #[error("argument '{arg}': {msg}")]
    Arg { arg: String, msg: String },
    #[error("argument '{arg}': {source}")]
    Parse {
        arg: String,
        #[source]
        source: MountError,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    LdCache(#[from] LdcacheError),
}

/// What the arguments ask for, mounts still holding the wildcard.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub mounts: Vec<String>,
    pub devices: Vec<DeviceRequest>,
}

/// Parses the hook's arguments (without `argv[0]`).
pub fn parse_args(args: &[String]) -> Result<Request, MountHookError> {
    let mut req = Request::default();
    for arg in args {
        if let Some(m) = arg.strip_prefix("--mount=") {
            check_wildcard_in_source(arg, m)?;
            // Parsed now (wildcard replaced by a stand-in) so that a bad argument fails even
            // when the wildcard is never resolved.
            mounts::parse_sarus_mount(&m.replace(WILDCARD, "/x")).map_err(|source| {
                MountHookError::Parse {
                    arg: arg.clone(),
                    source,
                }
            })?;
            req.mounts.push(m.to_string());
        } else if let Some(d) = arg.strip_prefix("--device=") {
            req.devices.push(
                mounts::parse_device(d).map_err(|source| MountHookError::Parse {
                    arg: arg.clone(),
                    source,
                })?,
            );
        } else {
            return Err(MountHookError::Arg {
                arg: arg.clone(),
                msg: "expected --mount=... or --device=...".into(),
            });
        }
    }
    Ok(req)
}

fn check_wildcard_in_source(arg: &str, m: &str) -> Result<(), MountHookError> {
    for field in m.split(',') {
        let key = field.split_once('=').map(|(k, _)| k).unwrap_or(field);
        if matches!(key, "src" | "source") && field.contains(WILDCARD) {
            return Err(MountHookError::Arg {
                arg: arg.to_string(),
                msg: format!("{WILDCARD} is only allowed in the destination"),
            });
        }
    }
    Ok(())
}

/// The value of the wildcard (see the module documentation).
pub fn provider_path(container_env: Option<&str>, cache: &[CachedLib]) -> PathBuf {
    if let Some(p) = container_env.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let libfabric = cache.iter().find(|l| {
        l.soname
            .strip_prefix("libfabric.so.")
            .is_some_and(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
    });
    match libfabric.and_then(|l| l.path.parent()) {
        Some(dir) => dir.join("libfabric"),
        None => PathBuf::from("/usr/lib"),
    }
}

/// `m` with the wildcard replaced, parsed.
pub fn resolve_mount(m: &str, provider: &Path) -> Result<BindMount, MountHookError> {
    let text = m.replace(WILDCARD, &provider.display().to_string());
    mounts::parse_sarus_mount(&text).map_err(|source| MountHookError::Parse {
        arg: format!("--mount={m}"),
        source,
    })
}

/// The hook.
pub fn run(ctx: &HookContext) -> Result<(), MountHookError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let req = parse_args(&args)?;
    let rootfs = ctx.rootfs();
    let ldconfig = crate::hook_env("LDCONFIG_PATH").map(PathBuf::from);
    let provider = if req.mounts.iter().any(|m| m.contains(WILDCARD)) {
        let env = ctx.env("FI_PROVIDER_PATH");
        let cache = match (&env, &ldconfig) {
            (Some(e), _) if !e.is_empty() => Vec::new(),
            _ => ldcache::container_libraries(
                rootfs,
                ldconfig.as_deref().unwrap_or(&ldcache::ldconfig_path()),
            )?,
        };
        let p = provider_path(env.as_deref(), &cache);
        crate::debug!("{WILDCARD} is {}", p.display());
        p
    } else {
        PathBuf::new()
    };
    for m in &req.mounts {
        let b = resolve_mount(m, &provider)?;
        let at = bind::bind(
            rootfs,
            &b.source,
            &b.destination,
            BindOptions {
                readonly: b.readonly,
                recursive: true,
            },
        )?;
        crate::info!("mounted {} at {}", b.source.display(), at.display());
    }
    for d in &req.devices {
        let at = bind::bind_device(rootfs, &d.host, &d.container)?;
        crate::info!("device {} at {}", d.host.display(), at.display());
    }
    if let Some(ldconfig) = ldconfig {
        ldcache::refresh(rootfs, &ldconfig, &[])?;
        crate::debug!("linker cache refreshed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(soname: &str, path: &str) -> CachedLib {
        CachedLib {
            soname: soname.into(),
            flags: "libc6,x86-64".into(),
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn wildcard_value() {
        let cache = vec![
            lib("libfabric.so", "/opt/x/lib/libfabric.so"),
            lib("libfabric.so.1", "/usr/lib64/libfabric.so.1"),
        ];
        assert_eq!(
            provider_path(Some("/env/prov"), &cache),
            Path::new("/env/prov")
        );
        assert_eq!(
            provider_path(Some(""), &cache),
            Path::new("/usr/lib64/libfabric")
        );
        assert_eq!(
            provider_path(None, &cache),
            Path::new("/usr/lib64/libfabric")
        );
        assert_eq!(
            provider_path(None, &[lib("libfabric.so", "/a/libfabric.so")]),
            Path::new("/usr/lib")
        );
        assert_eq!(provider_path(None, &[]), Path::new("/usr/lib"));
    }

    #[test]
    fn arguments() {
        let args: Vec<String> = [
            "--mount=type=bind,src=/opt/prov,dst=<FI_PROVIDER_PATH>/x,readonly",
            "--device=/dev/fuse",
            "--device=/dev/a:/dev/b:r",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let req = parse_args(&args).unwrap();
        assert_eq!(req.mounts.len(), 1);
        assert_eq!(req.devices.len(), 2);
        assert_eq!(req.devices[1].container, Path::new("/dev/b"));
        let m = resolve_mount(&req.mounts[0], Path::new("/usr/lib64/libfabric")).unwrap();
        assert_eq!(m.source, Path::new("/opt/prov"));
        assert_eq!(m.destination, Path::new("/usr/lib64/libfabric/x"));
        assert!(m.readonly);
        for bad in [
            "--mount=type=bind,src=<FI_PROVIDER_PATH>,dst=/x",
            "--mount=type=bind,source=/a<FI_PROVIDER_PATH>,dst=/x",
            "--mount=type=bind,src=rel,dst=/x",
            "--device=dev",
            "--what=1",
            "/x",
        ] {
            assert!(parse_args(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
