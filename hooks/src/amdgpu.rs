//! The AMD GPU hook (ROCm): gives the container `/dev/kfd` and the DRM nodes of its GPUs.
//!
//! Does nothing unless the host's `/dev/kfd` is a character device, so it can be installed with
//! `when.always`. GPUs are found through `/dev/dri/by-path/*-card` links (to `cardN`) and their
//! `*-render` siblings (to `renderDM`). The container's `ROCR_VISIBLE_DEVICES` (card numbers,
//! comma separated) selects GPUs; unset or empty means all. Nodes keep their names inside.
//!
//! `AMDGPU_DEV_ROOT` in the hook's env replaces `/dev` as the host directory looked at (tests
//! use a fake tree); container paths are always under `/dev`. The device cgroup must allow the
//! nodes: the hook's JSON declares them in `DEVICES` (see the admin guide), and the engine adds
//! the rules.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::bind::{self, BindError};
use crate::HookContext;

#[derive(Debug, thiserror::Error)]
pub enum AmdGpuError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// One GPU: its card node name and, when found, its render node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub card: String,
    pub render: Option<String>,
}

fn is_char_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// The GPUs listed in `<dri>/by-path`, by card number.
pub fn discover(dri: &Path) -> Result<BTreeMap<u32, Gpu>, AmdGpuError> {
    let by_path = dri.join("by-path");
    let entries = match std::fs::read_dir(&by_path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(AmdGpuError::Read {
                path: by_path,
                source,
            })
        }
    };
    let link_name = |p: &Path| -> Option<String> {
        let t = std::fs::read_link(p).ok()?;
        Some(t.file_name()?.to_str()?.to_string())
    };
    let mut gpus = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| AmdGpuError::Read {
            path: by_path.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(prefix) = name.strip_suffix("-card") else {
            continue;
        };
        let Some(card) = link_name(&entry.path()) else {
            continue;
        };
        let Some(n) = card
            .strip_prefix("card")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let render = link_name(&by_path.join(format!("{prefix}-render")));
        gpus.insert(n, Gpu { card, render });
    }
    Ok(gpus)
}

/// The GPUs `ROCR_VISIBLE_DEVICES` selects (all when unset or empty), and warnings for ids
/// that name no GPU.
pub fn select(gpus: &BTreeMap<u32, Gpu>, rocr: Option<&str>) -> (Vec<Gpu>, Vec<String>) {
    let Some(list) = rocr.map(str::trim).filter(|s| !s.is_empty()) else {
        return (gpus.values().cloned().collect(), Vec::new());
    };
    let mut out: Vec<Gpu> = Vec::new();
    let mut warnings = Vec::new();
    for id in list.split(',').map(str::trim) {
        match id.parse::<u32>().ok().and_then(|n| gpus.get(&n)) {
            Some(g) if !out.contains(g) => out.push(g.clone()),
            Some(_) => {}
            None => warnings.push(format!(
                "ROCR_VISIBLE_DEVICES: '{id}' is not a GPU of this node, ignored"
            )),
        }
    }
    (out, warnings)
}

/// The hook.
pub fn run(ctx: &HookContext) -> Result<(), AmdGpuError> {
    let dev = crate::hook_env("AMDGPU_DEV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev"));
    let kfd = dev.join("kfd");
    if !is_char_device(&kfd) {
        crate::debug!("{} is not a character device: no AMD GPU", kfd.display());
        return Ok(());
    }
    let dri = dev.join("dri");
    let gpus = discover(&dri)?;
    let (selected, warnings) = select(&gpus, ctx.env("ROCR_VISIBLE_DEVICES").as_deref());
    for w in warnings {
        crate::warn!("{w}");
    }
    let rootfs = ctx.rootfs();
    bind::bind_device(rootfs, &kfd, Path::new("/dev/kfd"))?;
    let container_dri = Path::new("/dev/dri");
    for g in &selected {
        for name in std::iter::once(&g.card).chain(g.render.iter()) {
            bind::bind_device(rootfs, &dri.join(name), &container_dri.join(name))?;
        }
    }
    crate::info!(
        "/dev/kfd and {} GPU(s): {}",
        selected.len(),
        selected
            .iter()
            .map(|g| g.card.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let dri = d.path().join("dri");
        std::fs::create_dir_all(dri.join("by-path")).unwrap();
        for (bus, n) in [
            ("pci-0000:c1:00.0", 0),
            ("pci-0000:c9:00.0", 1),
            ("pci-0000:d1:00.0", 2),
        ] {
            std::fs::write(dri.join(format!("card{n}")), "").unwrap();
            std::fs::write(dri.join(format!("renderD{}", 128 + n)), "").unwrap();
            symlink(
                format!("../card{n}"),
                dri.join(format!("by-path/{bus}-card")),
            )
            .unwrap();
            if n != 2 {
                symlink(
                    format!("../renderD{}", 128 + n),
                    dri.join(format!("by-path/{bus}-render")),
                )
                .unwrap();
            }
        }
        symlink(
            "../nothing",
            dri.join("by-path/platform-simple-framebuffer.0-card"),
        )
        .unwrap();
        d
    }

    #[test]
    fn discovery_and_selection() {
        let d = tree();
        let gpus = discover(&d.path().join("dri")).unwrap();
        assert_eq!(gpus.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(gpus[&1].render.as_deref(), Some("renderD129"));
        assert_eq!(gpus[&2].render, None);
        let (all, w) = select(&gpus, None);
        assert_eq!(all.len(), 3);
        assert!(w.is_empty());
        assert_eq!(select(&gpus, Some(" ")).0.len(), 3);
        let (some, w) = select(&gpus, Some("2,0,2,7,GPU-x"));
        assert_eq!(
            some.iter().map(|g| g.card.as_str()).collect::<Vec<_>>(),
            vec!["card2", "card0"]
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(discover(&d.path().join("none")).unwrap().is_empty());
    }
}
