//! Security checks (Sarus's `securityChecks`): everything egret runs or reads as root must be
//! impossible for anyone but root to change. A file, and every directory above it up to `/`,
//! must be owned by root and not writable by group or others; a directory is checked with
//! everything below it. Paths that do not exist are skipped (a feature not installed).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

mod cache;

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

/// Why egret refuses to run as root: the install is not safe from users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// Every violation, sorted by path (never empty). The message names the first only, to
    /// stay one line; `egret check` lists them all.
    #[error("{}", first_of(.violations))]
    Untrusted { violations: Vec<Violation> },
}

/// The first violation, and how many more there are.
fn first_of(violations: &[Violation]) -> String {
    match violations {
        [] => String::new(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more; run 'egret check')", rest.len()),
    }
}

/// The owners a checked path may have: root in production; tests add their own uid so that a
/// tree in a temporary directory can pass.
#[derive(Debug, Clone, Copy)]
struct Trust {
    extra_owner: Option<u32>,
}

impl Trust {
    const ROOT: Trust = Trust { extra_owner: None };

    fn owner_ok(&self, uid: u32) -> bool {
        uid == 0 || Some(uid) == self.extra_owner
    }
}

/// Every metadata lookup of one check, so that a passing check can be remembered by the
/// metadata it saw (see [`cache`]) and the same path is not looked up twice.
struct Probe {
    trust: Trust,
    seen: cache::Seen,
    /// A lookup failed for another reason than the path's absence: the result is not cached.
    incomplete: bool,
}

impl Probe {
    fn new(trust: Trust) -> Probe {
        Probe {
            trust,
            seen: cache::Seen::default(),
            incomplete: false,
        }
    }

    fn lookup(&mut self, path: &Path, follow: bool) -> Option<fs::Metadata> {
        let r = if follow {
            fs::metadata(path)
        } else {
            fs::symlink_metadata(path)
        };
        match r {
            Ok(md) => {
                self.seen.record(path, follow, Some(&md));
                Some(md)
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.seen.record(path, follow, None);
                } else {
                    self.incomplete = true;
                }
                None
            }
        }
    }

    /// The entry itself (a link is not followed).
    fn lstat(&mut self, path: &Path) -> Option<fs::Metadata> {
        self.lookup(path, false)
    }

    /// What the path names (links followed): one lookup when it is no link.
    fn stat(&mut self, path: &Path) -> Option<fs::Metadata> {
        let md = self.lstat(path);
        match md {
            Some(m) if m.file_type().is_symlink() => self.lookup(path, true),
            other => other,
        }
    }
}

/// Checks the directory `dir` and each of its parents, not what is below it.
fn check_dir_and_parents(probe: &mut Probe, dir: &Path, out: &mut Vec<Violation>) {
    if probe.stat(dir).is_none() {
        return;
    }
    let _ = check_one(probe, dir, None, out);
    check_parents(probe, dir, out);
}

/// Checks `path` (recursively when a directory) and each of its parents.
pub fn check_untamperable(path: &Path, out: &mut Vec<Violation>) {
    check_untamperable_with(&mut Probe::new(Trust::ROOT), path, out);
}

fn check_untamperable_with(probe: &mut Probe, path: &Path, out: &mut Vec<Violation>) {
    if probe.stat(path).is_none() {
        return;
    }
    check_parents(probe, path, out);
    check_tree(probe, path, out, 0);
}

/// The directories above `path`, each as a parent of the next one down.
fn check_parents(probe: &mut Probe, path: &Path, out: &mut Vec<Violation>) {
    let mut child = path;
    let mut p = path.parent();
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        // The entry below a sticky directory (/tmp, /var/tmp) cannot be renamed or removed by
        // anyone but its owner and root: when root owns it (the entry itself, not a link's
        // target), others writing the directory cannot swap it.
        let child_owner = probe.lstat(child).map(|m| m.uid());
        let trusted_child = child_owner.map(|u| if probe.trust.owner_ok(u) { 0 } else { u });
        let _ = check_one(probe, dir, trusted_child, out);
        child = dir;
        p = dir.parent();
    }
}

/// Whether the write bits of a directory (`mode`) let someone other than root replace the
/// entry below it, which `child_owner` owns: not when the directory is sticky and root owns
/// the entry.
pub fn writers_can_swap(mode: u32, child_owner: Option<u32>) -> bool {
    let writable = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    writable && !(sticky && child_owner == Some(0))
}

fn check_tree(probe: &mut Probe, path: &Path, out: &mut Vec<Violation>, depth: usize) {
    let Ok(md) = check_one(probe, path, None, out) else {
        return;
    };
    probe.seen.contents_matter(path);
    if md.is_dir() && depth < 8 {
        match fs::read_dir(path) {
            Ok(entries) => {
                let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                names.sort();
                for p in names {
                    check_tree(probe, &p, out, depth + 1);
                }
            }
            Err(_) => probe.incomplete = true,
        }
    }
}

/// Follows symlinks, as the file used is the target. `below_owner`: for a directory on the way
/// to a trusted path, the owner of its entry on that path (see [`writers_can_swap`]); `None`
/// for a trusted path itself, which is tamperable when others may write it, sticky or not.
fn check_one(
    probe: &mut Probe,
    path: &Path,
    below_owner: Option<u32>,
    out: &mut Vec<Violation>,
) -> Result<fs::Metadata, ()> {
    let md = probe.stat(path).ok_or(())?;
    if !probe.trust.owner_ok(md.uid()) {
        out.push(Violation {
            path: path.to_path_buf(),
            rule: format!("must be owned by root (owner uid is {})", md.uid()),
        });
    }
    let mode = md.mode() & 0o7777;
    if writers_can_swap(mode, below_owner) {
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
    let mut probe = Probe::new(Trust::ROOT);
    check_install_with(&mut probe, cfg, config_path, extra)
}

fn check_install_with(
    probe: &mut Probe,
    cfg: &Config,
    config_path: &Path,
    extra: &[PathBuf],
) -> Vec<Violation> {
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
        check_dir_and_parents(probe, dir, &mut out);
    }
    if let Some(s) = &cfg.seccomp_profile {
        paths.push(s.clone());
    }
    if let Some(dir) = &cfg.hooks_dir {
        paths.push(dir.clone());
        // The hooks' JSON files are in the tree checked below, so their metadata is part of
        // what a cached result is remembered by: an edit that names another program counts.
        match crate::hooks::schema::load_dir(dir) {
            Ok(hooks) => paths.extend(hooks.into_iter().map(|h| h.hook.path().clone())),
            Err(_) => probe.incomplete = true,
        }
    }
    paths.extend(extra.iter().cloned());
    for p in paths {
        check_untamperable_with(probe, &p, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.rule.cmp(&b.rule)));
    out.dedup();
    out
}

/// `Ok` when checks are off or pass; otherwise every violation, shown as one line naming the
/// first (and how many more there are, for `egret check`).
///
/// On a hot path (the launcher of every step, every `egret run`) a pass is remembered in a
/// root-only file of `runDir` by the metadata of every path it looked at (see [`cache`]): the
/// next call only looks those paths up again (tens of microseconds) and runs the full check
/// when anything differs. Only a check run as root is remembered or trusts what is.
pub fn enforce(cfg: &Config, config_path: &Path, extra: &[PathBuf]) -> Result<(), SecurityError> {
    if !cfg.security_checks {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    let store = root.then(|| cache::Store::new(&cfg.run_dir, 0));
    enforce_with(cfg, config_path, extra, Trust::ROOT, store.as_ref())
}

fn enforce_with(
    cfg: &Config,
    config_path: &Path,
    extra: &[PathBuf],
    trust: Trust,
    store: Option<&cache::Store>,
) -> Result<(), SecurityError> {
    let inputs = cache::Inputs::new(config_path, extra);
    if let Some(s) = store {
        if s.still_valid(&inputs) {
            return Ok(());
        }
    }
    let mut probe = Probe::new(trust);
    let violations = check_install_with(&mut probe, cfg, config_path, extra);
    if !violations.is_empty() {
        if let Some(s) = store {
            s.forget(&inputs);
        }
        return Err(SecurityError::Untrusted { violations });
    }
    if let (Some(s), false) = (store, probe.incomplete) {
        s.remember(&inputs, &probe.seen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sticky_parent_protects_only_roots_own_entries() {
        // /tmp: sticky and world-writable; root's entry below it cannot be swapped.
        assert!(!writers_can_swap(0o1777, Some(0)));
        // ... a user's entry (a link or directory they made) can.
        assert!(writers_can_swap(0o1777, Some(4242)));
        assert!(writers_can_swap(0o1777, None));
        // Without the sticky bit anyone who may write the directory can rename in it.
        assert!(writers_can_swap(0o0777, Some(0)));
        assert!(writers_can_swap(0o0775, Some(0)));
        assert!(!writers_can_swap(0o0755, Some(4242)));
    }

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

    /// An install in a temporary directory that passes (owned by this uid, 0755/0644), and
    /// the cache a check as this uid uses.
    struct Install {
        _t: tempfile::TempDir,
        root: PathBuf,
        cfg: Config,
        config_path: PathBuf,
        trust: Trust,
    }

    impl Install {
        fn new() -> Install {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().to_path_buf();
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
            for d in ["bin", "hooks.d", "run", "store", "store/images", "bundle"] {
                fs::create_dir(root.join(d)).unwrap();
                fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
            }
            for f in [
                "bin/runc",
                "bin/tini",
                "bin/mksquashfs",
                "bin/skopeo",
                "bin/sqfs2tar",
                "egret.json",
            ] {
                fs::write(root.join(f), b"x").unwrap();
                fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o755)).unwrap();
            }
            let cfg = Config {
                runc_path: root.join("bin/runc"),
                init_path: root.join("bin/tini"),
                mksquashfs_path: root.join("bin/mksquashfs"),
                skopeo_path: root.join("bin/skopeo"),
                sqfs2tar_path: root.join("bin/sqfs2tar"),
                oci_bundle_dir: root.join("bundle"),
                local_repository_base_dir: root.join("store"),
                run_dir: root.join("run"),
                containers_dir: root.join("containers"),
                seccomp_profile: None,
                hooks_dir: Some(root.join("hooks.d")),
                ..Config::default()
            };
            let me = nix::unistd::geteuid().as_raw();
            Install {
                config_path: root.join("egret.json"),
                _t: t,
                root,
                cfg,
                trust: Trust {
                    extra_owner: Some(me),
                },
            }
        }

        fn store(&self) -> cache::Store {
            cache::Store::new(&self.cfg.run_dir, nix::unistd::geteuid().as_raw()).settling(0)
        }

        fn inputs(&self) -> cache::Inputs {
            cache::Inputs::new(&self.config_path, &[])
        }

        fn enforce(&self) -> Result<(), SecurityError> {
            enforce_with(
                &self.cfg,
                &self.config_path,
                &[],
                self.trust,
                Some(&self.store()),
            )
        }

        fn cached(&self) -> bool {
            self.store().still_valid(&self.inputs())
        }
    }

    #[test]
    fn a_pass_is_remembered_in_a_file_of_its_owner_alone() {
        let i = Install::new();
        assert!(!i.cached());
        i.enforce().unwrap();
        assert!(i.cached());
        let md = fs::symlink_metadata(i.store().path(&i.inputs())).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        // Another set of inputs (the launcher's own binary) is remembered apart.
        assert!(!i.store().still_valid(&cache::Inputs::new(
            &i.config_path,
            &[i.root.join("bin/runc")]
        )));
    }

    #[test]
    fn a_chmod_after_the_pass_was_remembered_is_caught() {
        let i = Install::new();
        i.enforce().unwrap();
        assert!(i.cached());
        let runc = i.root.join("bin/runc");
        fs::set_permissions(&runc, fs::Permissions::from_mode(0o757)).unwrap();
        assert!(!i.cached());
        let err = i.enforce().unwrap_err().to_string();
        assert!(
            err.contains("bin/runc") && err.contains("group or others"),
            "{err}"
        );
        // ... and the pass is forgotten: fixing the mode back needs a full check again.
        assert!(!i.store().path(&i.inputs()).exists());
        fs::set_permissions(&runc, fs::Permissions::from_mode(0o755)).unwrap();
        i.enforce().unwrap();
        assert!(i.cached());
    }

    #[test]
    fn a_new_hook_a_new_directory_or_an_edit_invalidates_the_pass() {
        let i = Install::new();
        i.enforce().unwrap();
        // A file added to hooksDir: the directory's mtime changed.
        let hook = i.root.join("hooks.d/99-x.json");
        fs::write(&hook, b"{}").unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!i.cached());
        assert!(i.enforce().is_err());
        fs::remove_file(&hook).unwrap();
        i.enforce().unwrap();
        // containersDir did not exist when checked; one that appears is checked.
        let containers = i.root.join("containers");
        fs::create_dir(&containers).unwrap();
        fs::set_permissions(&containers, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!i.cached());
        assert!(i.enforce().is_err());
        fs::remove_dir(&containers).unwrap();
        i.enforce().unwrap();
        // The config rewritten with the same mode (another program named, say).
        fs::write(&i.config_path, b"y").unwrap();
        assert!(!i.cached());
    }

    #[test]
    fn a_cache_file_others_could_have_written_is_ignored() {
        let i = Install::new();
        i.enforce().unwrap();
        let file = i.store().path(&i.inputs());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            !i.cached(),
            "a file readable or writable by others is not trusted"
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(i.cached());
        // A hard link to it (a second name someone else might hold) is refused, and so is a
        // symlink in its place.
        let other = i.root.join("other");
        fs::hard_link(&file, &other).unwrap();
        assert!(!i.cached());
        fs::remove_file(&other).unwrap();
        let real = i.root.join("real");
        fs::rename(&file, &real).unwrap();
        std::os::unix::fs::symlink(&real, &file).unwrap();
        assert!(!i.cached());
        // A file whose entries do not describe the paths as they are now passes nothing.
        fs::remove_file(&file).unwrap();
        let text = fs::read_to_string(&real).unwrap();
        let forged: String = text
            .lines()
            .map(|l| {
                if l.starts_with("L ") || l.starts_with("F ") {
                    format!("{}0\n", &l[..l.len() - 1])
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        fs::write(&file, forged).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!i.cached());
    }

    #[test]
    fn paths_changed_just_before_the_check_are_not_remembered() {
        let i = Install::new();
        let store = i.store().settling(3600);
        enforce_with(&i.cfg, &i.config_path, &[], i.trust, Some(&store)).unwrap();
        assert!(!store.path(&i.inputs()).exists());
    }

    #[test]
    fn untrusted_names_the_first_violation_and_counts_the_rest() {
        let v = |p: &str| Violation {
            path: PathBuf::from(p),
            rule: "must be owned by root (owner uid is 1000)".into(),
        };
        let one = SecurityError::Untrusted {
            violations: vec![v("/a")],
        };
        assert_eq!(
            one.to_string(),
            "security check: /a: must be owned by root (owner uid is 1000)"
        );
        let three = SecurityError::Untrusted {
            violations: vec![v("/a"), v("/b"), v("/c")],
        };
        assert_eq!(
            three.to_string(),
            "security check: /a: must be owned by root (owner uid is 1000) \
             (and 2 more; run 'egret check')"
        );
    }
}

/// Which known runc container-breakout CVEs the installed runc predates, judged by the
/// upstream version number in `runc --version` alone (distributions backport fixes without
/// changing it, so a "vulnerable" runc may be patched; `egret check` says so).
///
/// - CVE-2024-21626 (leaked fd, GHSA-xr7r-f8xq-vfvv): fixed in 1.1.12.
/// - CVE-2025-31133, CVE-2025-52565, CVE-2025-52881 (mount races, GHSA-9493-h29p-rfm2,
///   GHSA-qw9x-cqr3-wc7r, GHSA-cgrx-mc8f-2prm): fixed in 1.2.8, 1.3.3 and 1.4.0-rc.3; no
///   1.1.z or older release has the fixes, 1.5 and later all do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuncCveStatus {
    /// At or above the fixed release of its branch for every CVE above.
    Fixed { version: String },
    /// Older than a fix: the CVEs it predates and the upstream release to install.
    Vulnerable {
        version: String,
        cves: Vec<&'static str>,
        install: String,
    },
    /// The first line is not `runc version X.Y.Z[...]`.
    Unknown { first_line: String },
}

impl RuncCveStatus {
    /// The first line of `runc --version` output, judged (see [`RuncCveStatus`]).
    pub fn of_version_output(output: &str) -> RuncCveStatus {
        const CVE_2024: &[&str] = &["CVE-2024-21626"];
        const CVE_2025: &[&str] = &["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"];
        let first_line = output.lines().next().unwrap_or("").trim();
        let unknown = || RuncCveStatus::Unknown {
            first_line: first_line.to_string(),
        };
        let Some(version) = first_line.strip_prefix("runc version ") else {
            return unknown();
        };
        let version = version.trim();
        // X.Y.Z, then a suffix: "-rc.N" / "-rcN" (an upstream release candidate), another
        // "-WORD" (a pre-release below any rc), "-DIGITS..." or "+..." (a build or a
        // distribution's revision: the release itself, e.g. Debian's "1.1.5+ds1").
        let end = version
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(version.len());
        let (numbers, suffix) = version.split_at(end);
        let parts: Vec<Option<u64>> = numbers.split('.').map(|p| p.parse().ok()).collect();
        let [Some(major), Some(minor), Some(patch)] = parts[..] else {
            return unknown();
        };
        // Pre-release rank: u64::MAX for a release.
        let pre = match suffix.strip_prefix('-') {
            Some(s) if s.starts_with(|c: char| c.is_ascii_digit()) => u64::MAX,
            Some(s) => match s.strip_prefix("rc") {
                Some(n) => {
                    let n = n.strip_prefix('.').unwrap_or(n);
                    let digits = n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len());
                    match n[..digits].parse::<u64>() {
                        Ok(n) => n,
                        Err(_) => return unknown(),
                    }
                }
                None if s.starts_with(|c: char| c.is_ascii_alphabetic()) => 0,
                None => return unknown(),
            },
            None if suffix.is_empty() || suffix.starts_with('+') => u64::MAX,
            None => return unknown(),
        };
        let v = (major, minor, patch, pre);
        let release = |x, y, z| (x, y, z, u64::MAX);
        let mut cves = Vec::new();
        if v < release(1, 1, 12) {
            cves.extend_from_slice(CVE_2024);
        }
        // The fixed release of this version's branch; None where the branch has none.
        let fixed_2025 = match (major, minor) {
            (1, 2) => Some(((1, 2, 8, u64::MAX), "1.2.8")),
            (1, 3) => Some(((1, 3, 3, u64::MAX), "1.3.3")),
            (1, 4) => Some(((1, 4, 0, 3), "1.4.0-rc.3 (or 1.4.0)")),
            (1, m) if m >= 5 => Some(((1, m, 0, 0), "")),
            (m, _) if m >= 2 => Some(((m, 0, 0, 0), "")),
            _ => None,
        };
        let install = match fixed_2025 {
            Some((fixed, _)) if v >= fixed => None,
            Some((_, name)) => Some(format!("{name} or later")),
            None => Some(
                "1.2.8, 1.3.3, 1.4.0 or later (no 1.1.z or older release has the \
                 2025 fixes)"
                    .to_string(),
            ),
        };
        if let Some(install) = install {
            cves.extend_from_slice(CVE_2025);
            return RuncCveStatus::Vulnerable {
                version: version.to_string(),
                cves,
                install,
            };
        }
        // Every release before 1.1.12 is on a branch without the 2025 fixes: handled above.
        debug_assert!(cves.is_empty());
        RuncCveStatus::Fixed {
            version: version.to_string(),
        }
    }

    /// One line for an admin, `None` when fixed.
    pub fn warning(&self) -> Option<String> {
        match self {
            RuncCveStatus::Fixed { .. } => None,
            RuncCveStatus::Vulnerable {
                version,
                cves,
                install,
            } => Some(format!(
                "runc version {version} predates the upstream fixes for {} (judged by the \
                 upstream version number only: distributions may backport fixes without \
                 changing it): install runc {install}, or confirm that your distribution's \
                 package has the fixes backported",
                cves.join(", ")
            )),
            RuncCveStatus::Unknown { first_line } => Some(format!(
                "cannot tell which runc CVE fixes it has: 'runc --version' did not start with \
                 'runc version X.Y.Z' (first line: {first_line:?}); make sure it is runc 1.2.8, \
                 1.3.3, 1.4.0 or later, or has the fixes for CVE-2024-21626, CVE-2025-31133, \
                 CVE-2025-52565 and CVE-2025-52881 backported"
            )),
        }
    }
}

#[cfg(test)]
mod runc_cve_tests {
    use super::RuncCveStatus;

    fn status(v: &str) -> RuncCveStatus {
        RuncCveStatus::of_version_output(&format!(
            "runc version {v}\ncommit: x\nspec: 1.0.2-dev\ngo: go1.19.8\n"
        ))
    }

    fn cves(v: &str) -> Vec<&'static str> {
        match status(v) {
            RuncCveStatus::Vulnerable { cves, .. } => cves,
            RuncCveStatus::Fixed { .. } => Vec::new(),
            RuncCveStatus::Unknown { first_line } => panic!("{v}: unknown ({first_line})"),
        }
    }

    const ALL_2025: [&str; 3] = ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"];

    #[test]
    fn debian_12_runc_predates_every_fix() {
        let mut all = vec!["CVE-2024-21626"];
        all.extend(ALL_2025);
        assert_eq!(cves("1.1.5+ds1"), all);
        match status("1.1.5+ds1") {
            RuncCveStatus::Vulnerable {
                version, install, ..
            } => {
                assert_eq!(version, "1.1.5+ds1");
                assert!(install.contains("1.2.8, 1.3.3, 1.4.0"), "{install}");
            }
            s => panic!("{s:?}"),
        }
        let w = status("1.1.5+ds1").warning().unwrap();
        assert!(w.contains("runc version 1.1.5+ds1"), "{w}");
        assert!(w.contains("CVE-2024-21626, CVE-2025-31133"), "{w}");
        assert!(w.contains("upstream version number"), "{w}");
        assert!(w.contains("backported"), "{w}");
    }

    #[test]
    fn the_2024_fix_is_1_1_12() {
        assert!(cves("1.1.11").contains(&"CVE-2024-21626"));
        assert!(cves("1.0.0-rc95").contains(&"CVE-2024-21626"));
        assert_eq!(cves("1.1.12"), ALL_2025);
        assert_eq!(cves("1.1.15"), ALL_2025);
    }

    #[test]
    fn the_2025_fixes_are_per_branch() {
        for v in [
            "1.2.7",
            "1.2.0",
            "1.2.0-rc.1",
            "1.3.2",
            "1.3.0-rc.1",
            "1.4.0-rc.2",
        ] {
            assert_eq!(cves(v), ALL_2025, "{v}");
        }
        for v in [
            "1.2.8",
            "1.2.9",
            "1.3.3",
            "1.3.4+dev",
            "1.4.0-rc.3",
            "1.4.0-rc.3+dev",
            "1.4.0",
            "1.4.1",
            "1.5.0",
            "1.5.0-rc.1",
            "2.0.0",
        ] {
            assert_eq!(status(v), RuncCveStatus::Fixed { version: v.into() }, "{v}");
            assert_eq!(status(v).warning(), None);
        }
        // A distribution's revision is the release itself; a non-rc pre-release is below rc.1.
        assert_eq!(cves("1.3.3-0ubuntu1~24.04.2"), Vec::<&str>::new());
        assert_eq!(cves("1.4.0-beta.1"), ALL_2025);
        match status("1.4.0-rc.2") {
            RuncCveStatus::Vulnerable { install, .. } => {
                assert!(install.starts_with("1.4.0-rc.3"), "{install}")
            }
            s => panic!("{s:?}"),
        }
        match status("1.2.7") {
            RuncCveStatus::Vulnerable { install, .. } => assert_eq!(install, "1.2.8 or later"),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn garbage_is_unknown() {
        for out in [
            "",
            "garbage",
            "runc version",
            "runc version x.y.z",
            "runc version 1.2",
            "runc version 1.2.8.1",
            "crun version 1.8.1",
            "runc version 1.2.8-rc.x",
        ] {
            let s = RuncCveStatus::of_version_output(out);
            assert!(matches!(s, RuncCveStatus::Unknown { .. }), "{out:?}: {s:?}");
            let w = s.warning().unwrap();
            assert!(w.contains("cannot tell"), "{w}");
        }
    }
}
