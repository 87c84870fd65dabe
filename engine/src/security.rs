//! Security checks (Sarus's `securityChecks`): everything egret runs or reads as root must be
//! impossible for anyone but root to change. A file, and every directory above it up to `/`,
//! must be owned by root and not writable by group or others; a directory is checked with
//! everything below it. Paths that do not exist are skipped (a feature not installed).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// One broken rule, named so an admin can fix it without reading code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: PathBuf,
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "security check: {}: {}", self.path.display(), self.rule)
    }
}

/// Checks the directory `dir` and each of its parents, not what is below it.
fn check_dir_and_parents(dir: &Path, out: &mut Vec<Violation>) {
    if fs::metadata(dir).is_err() {
        return;
    }
    for d in dir.ancestors() {
        if !d.as_os_str().is_empty() {
            let _ = check_one(d, out);
        }
    }
}

/// Checks `path` (recursively when a directory) and each of its parents.
pub fn check_untamperable(path: &Path, out: &mut Vec<Violation>) {
    if fs::metadata(path).is_err() {
        return;
    }
    let mut p = path.parent();
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        let _ = check_one(dir, out);
        p = dir.parent();
    }
    check_tree(path, out, 0);
}

fn check_tree(path: &Path, out: &mut Vec<Violation>, depth: usize) {
    let Ok(md) = check_one(path, out) else { return };
    if md.is_dir() && depth < 8 {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                check_tree(&e.path(), out, depth + 1);
            }
        }
    }
}

/// Follows symlinks, as the file used is the target.
fn check_one(path: &Path, out: &mut Vec<Violation>) -> Result<fs::Metadata, ()> {
    let md = fs::metadata(path).map_err(|_| ())?;
    if md.uid() != 0 {
        out.push(Violation {
            path: path.to_path_buf(),
            rule: format!("must be owned by root (owner uid is {})", md.uid()),
        });
    }
    let mode = md.mode() & 0o7777;
    // The sticky bit does not make /tmp-like dirs safe parents: anyone can create entries.
    if mode & 0o022 != 0 {
        out.push(Violation {
            path: path.to_path_buf(),
            rule: format!("must not be writable by group or others (mode {mode:04o})"),
        });
    }
    Ok(md)
}

/// Every file egret trusts as root: the config itself, runtimes, init, mksquashfs, skopeo,
/// sqfs2tar, the hooks (their JSON and the programs they name), the extra paths the caller
/// names (e.g. the launcher binary), and the directories egret writes as root (bundle, store,
/// runDir, containersDir).
pub fn check_install(cfg: &Config, config_path: &Path, extra: &[PathBuf]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = vec![
        config_path.to_path_buf(),
        cfg.runc_path.clone(),
        cfg.init_path.clone(),
        cfg.mksquashfs_path.clone(),
        cfg.skopeo_path.clone(),
        cfg.sqfs2tar_path.clone(),
    ];
    // Directories egret writes as root: each itself and its parents only. What is below is
    // egret's own, some of it deliberately the user's (sockets in runDir, a named container's
    // upper layer), and a step joining a running named container sees the other step's rootfs
    // in the bundle directory.
    let store_images = cfg.local_repository_base_dir.join("images");
    for dir in [
        &cfg.oci_bundle_dir,
        &cfg.local_repository_base_dir,
        &store_images,
        &cfg.run_dir,
        &cfg.containers_dir,
    ] {
        check_dir_and_parents(dir, &mut out);
    }
    if let Some(s) = &cfg.seccomp_profile {
        paths.push(s.clone());
    }
    if let Some(dir) = &cfg.hooks_dir {
        paths.push(dir.clone());
        if let Ok(hooks) = crate::hooksd::load_dir(dir) {
            paths.extend(hooks.into_iter().map(|h| h.hook.path().clone()));
        }
    }
    paths.extend(extra.iter().cloned());
    for p in paths {
        check_untamperable(&p, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.rule.cmp(&b.rule)));
    out.dedup();
    out
}

/// `Ok` when checks are off or pass; otherwise one line naming the first violation (and how
/// many more there are, for `egret check`).
pub fn enforce(cfg: &Config, config_path: &Path, extra: &[PathBuf]) -> Result<(), String> {
    if !cfg.security_checks {
        return Ok(());
    }
    let v = check_install(cfg, config_path, extra);
    match v.first() {
        None => Ok(()),
        Some(first) if v.len() == 1 => Err(format!("{first}")),
        Some(first) => Err(format!(
            "{first} (and {} more; run 'egret check')",
            v.len() - 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writable_file_and_parent_are_named() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let f = dir.join("runc");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let mut out = Vec::new();
        check_untamperable(&f, &mut out);
        assert!(
            out.iter()
                .any(|v| v.path == f && v.rule.contains("group or others")),
            "{out:?}"
        );
        assert!(
            out.iter().any(|v| v.path == dir && v.rule.contains("0777")),
            "{out:?}"
        );
    }

    #[test]
    fn missing_paths_are_skipped() {
        let mut out = Vec::new();
        check_untamperable(Path::new("/nonexistent/egret/x"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn disabled_checks_pass() {
        let cfg = Config {
            security_checks: false,
            ..Config::default()
        };
        assert!(enforce(&cfg, Path::new("/nonexistent"), &[]).is_ok());
    }
}
