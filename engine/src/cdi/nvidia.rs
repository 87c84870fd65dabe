//! NVIDIA GPUs on a node without a CDI spec for them, as Apptainer's `--nv` brings them: the
//! task's `/dev/nvidiaN`, the control nodes (`nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools`,
//! `nvidia-modeset`), the driver's libraries named in the site's list and found in the host's
//! linker cache, and its programs (`nvidia-smi`). The result is the same `containerEdits` a
//! CDI spec would give, applied the same way.
//!
//! Nothing is done on a node without `nvidiactl` (no NVIDIA driver: an AMD node, a node
//! without GPUs).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::spec::{ContainerEdits, DeviceNode, Mount};
use super::CdiError;
use crate::config::NvidiaConfig;
use crate::container::ldcache;

/// Where the libraries go in the container: the directory NVIDIA's CUDA images already have
/// in their `LD_LIBRARY_PATH` (egret also puts it first there).
pub const LIB_DIR: &str = "/usr/local/nvidia/lib64";
/// Where the programs go: on every image's `PATH`.
pub const BIN_DIR: &str = "/usr/bin";

/// The control nodes, each bound when the node has it.
const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Where a program of the list is looked for on the host (unless the list gives a path).
const BIN_SEARCH: &[&str] = &["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"];

/// The list used when the site's file does not exist: the driver's programs and libraries
/// (a library entry matches every cached soname it starts, `libcuda.so` -> `libcuda.so.1`).
pub const DEFAULT_LIST: &str = include_str!("../../../etc/nvliblist.conf");

/// The list's entries: (programs, library prefixes). `#` starts a comment.
pub fn parse_list(text: &str) -> (Vec<String>, Vec<String>) {
    let mut bins = Vec::new();
    let mut libs = Vec::new();
    for line in text.lines() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if entry.ends_with(".so") || entry.contains(".so.") {
            libs.push(entry.to_string());
        } else {
            bins.push(entry.to_string());
        }
    }
    (bins, libs)
}

/// True when the cache's `soname` is what the list's `entry` names: the same, or the entry
/// followed by a version (`libcuda.so` names `libcuda.so.1`, not `libcudart.so.12`).
pub fn names(entry: &str, soname: &str) -> bool {
    soname == entry
        || soname
            .strip_prefix(entry)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn char_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// The edits for the task's GPUs `ids` (host indices); `None` on a node without the driver.
pub fn edits(cfg: &NvidiaConfig, ids: &[String]) -> Result<Option<ContainerEdits>, CdiError> {
    let dev = &cfg.dev_dir;
    if !char_device(&dev.join("nvidiactl")) {
        return Ok(None);
    }
    let node = |name: &str| DeviceNode {
        path: format!("/dev/{name}"),
        host_path: Some(dev.join(name).display().to_string()),
        ..DeviceNode::default()
    };
    let mut out = ContainerEdits::default();
    for id in ids {
        if id.parse::<u32>().is_err() {
            return Err(CdiError::Nvidia {
                msg: format!(
                    "GPU '{id}' is not an index: without a CDI spec egret binds {}/nvidiaN; install one (nvidia-ctk cdi generate)",
                    dev.display()
                ),
            });
        }
        let name = format!("nvidia{id}");
        if !char_device(&dev.join(&name)) {
            return Err(CdiError::Nvidia {
                msg: format!(
                    "the task's GPU {id} has no device node {}",
                    dev.join(&name).display()
                ),
            });
        }
        out.device_nodes.push(node(&name));
    }
    for name in CONTROL_NODES {
        if char_device(&dev.join(name)) {
            out.device_nodes.push(node(name));
        }
    }
    let list = match std::fs::read_to_string(&cfg.library_list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_LIST.to_string(),
        Err(source) => {
            return Err(CdiError::Host {
                path: cfg.library_list.clone(),
                source,
            })
        }
    };
    let (bins, libs) = parse_list(&list);
    let bind = |host: &Path, dest: String| Mount {
        host_path: host.display().to_string(),
        container_path: dest,
        options: ["ro", "nosuid", "nodev", "rbind"]
            .map(String::from)
            .to_vec(),
        typ: Some("bind".into()),
    };
    if !libs.is_empty() {
        let mut bound: Vec<String> = Vec::new();
        for lib in host_cache(cfg)?.into_iter().filter(|l| l.is_64bit()) {
            if bound.contains(&lib.soname) || !libs.iter().any(|e| names(e, &lib.soname)) {
                continue;
            }
            out.mounts
                .push(bind(&lib.path, format!("{LIB_DIR}/{}", lib.soname)));
            bound.push(lib.soname);
        }
    }
    for b in bins {
        let found = if b.starts_with('/') {
            Some(PathBuf::from(&b)).filter(|p| p.is_file())
        } else {
            BIN_SEARCH
                .iter()
                .map(|d| Path::new(d).join(&b))
                .find(|p| p.is_file())
        };
        if let Some(host) = found {
            let name = host.file_name().unwrap_or_default().to_string_lossy();
            out.mounts.push(bind(&host, format!("{BIN_DIR}/{name}")));
        }
    }
    Ok(Some(out))
}

/// The host's linker cache (`ldconfig -p -C CACHE`, the admin's ldconfig).
fn host_cache(cfg: &NvidiaConfig) -> Result<Vec<ldcache::CachedLib>, CdiError> {
    if !cfg.ld_cache.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new(&cfg.ldconfig)
        .arg("-C")
        .arg(&cfg.ld_cache)
        .arg("-p")
        .env_clear()
        .output()
        .map_err(|source| CdiError::Host {
            path: cfg.ldconfig.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(CdiError::Nvidia {
            msg: format!(
                "{} -C {} -p failed: {}",
                cfg.ldconfig.display(),
                cfg.ld_cache.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(ldcache::parse_print_cache(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_separates_programs_and_libraries() {
        let (bins, libs) = parse_list("# c\nnvidia-smi\n\nlibcuda.so # the driver\n/opt/x/nvidia-debugdump\nlibnvidia-ml.so.1\n");
        assert_eq!(bins, ["nvidia-smi", "/opt/x/nvidia-debugdump"]);
        assert_eq!(libs, ["libcuda.so", "libnvidia-ml.so.1"]);
        let (bins, libs) = parse_list(DEFAULT_LIST);
        assert!(bins.contains(&"nvidia-smi".to_string()));
        assert!(libs.contains(&"libcuda.so".to_string()));
        assert!(libs.contains(&"libnvidia-ml.so".to_string()));
    }

    #[test]
    fn an_entry_names_its_versions_only() {
        assert!(names("libcuda.so", "libcuda.so.1"));
        assert!(names("libcuda.so", "libcuda.so"));
        assert!(!names("libcuda.so", "libcudart.so.12"));
        assert!(!names("libcuda.so", "libcuda.sox"));
    }

    #[test]
    fn no_driver_no_edits() {
        let d = tempfile::tempdir().unwrap();
        let cfg = NvidiaConfig {
            dev_dir: d.path().to_path_buf(),
            ..NvidiaConfig::default()
        };
        assert!(edits(&cfg, &["0".into()]).unwrap().is_none());
    }
}
