//! `%n` in the node-local directories of `egret.json`: the name of the Slurm node the process
//! works for, as Slurm's own `SlurmdSpoolDir=/var/spool/slurmd-%n` has it. A host that runs
//! several slurmd (`slurmd -N NAME`, a test cluster or a multiple-slurmd site) gives each node
//! its own store, run and bundle directories with one configuration file; a site with one
//! slurmd per host has no use for it.

use super::Config;

/// The name `%n` stands for outside a step: the node a step's process runs on
/// (`SLURMD_NODENAME`, set by slurmd in every task, prolog and epilog), else this host's short
/// name. Only a plain file name is taken: the value becomes part of a root-owned path.
pub fn local_node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|n| is_plain_name(n))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h| h.split('.').next().unwrap_or_default().to_string())
                .filter(|n| is_plain_name(n))
        })
        .unwrap_or_else(|| "local".to_string())
}

/// A name that is one path component: not empty, no `/`, not starting with `.`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.starts_with('.') && !name.contains('\0')
}

/// Replaces `%n` with `node` (and `%%` with `%`) in the node-local directories. A `node` that is
/// not a plain name becomes `local`, so no value can climb out of the configured directory.
pub(super) fn expand(cfg: &mut Config, node: &str) {
    let node = if is_plain_name(node) { node } else { "local" };
    let dirs = [
        &mut cfg.oci_bundle_dir,
        &mut cfg.temp_dir,
        &mut cfg.local_repository_base_dir,
        &mut cfg.runc_root,
        &mut cfg.run_dir,
        &mut cfg.containers_dir,
    ];
    for dir in dirs {
        let Some(text) = dir.to_str() else { continue };
        if text.contains('%') {
            *dir = substitute(text, node).into();
        }
    }
}

fn substitute(text: &str, node: &str) -> String {
    let mut out = String::with_capacity(text.len() + node.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(node),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(json: &str) -> Config {
        Config::parse_str(json, Path::new("t.json")).unwrap()
    }

    #[test]
    fn node_local_directories_take_the_node_name() {
        let mut c = cfg(r#"{"localRepositoryBaseDir": "/var/lib/egret/%n/store",
            "runDir": "/run/egret/%n", "runcRoot": "/run/egret/%n/runc",
            "OCIBundleDir": "/var/lib/egret/%n/bundle", "containersDir": "/c/%n",
            "tempDir": "/var/tmp/100%%-%n"}"#);
        expand(&mut c, "m3");
        assert_eq!(
            c.local_repository_base_dir,
            Path::new("/var/lib/egret/m3/store")
        );
        assert_eq!(c.run_dir, Path::new("/run/egret/m3"));
        assert_eq!(c.runc_root, Path::new("/run/egret/m3/runc"));
        assert_eq!(c.oci_bundle_dir, Path::new("/var/lib/egret/m3/bundle"));
        assert_eq!(c.containers_dir, Path::new("/c/m3"));
        assert_eq!(c.temp_dir, Path::new("/var/tmp/100%-m3"));
    }

    #[test]
    fn a_name_that_is_not_one_component_becomes_local() {
        for bad in ["../etc", "a/b", "", ".hidden"] {
            let mut c = cfg(r#"{"localRepositoryBaseDir": "/s/%n"}"#);
            expand(&mut c, bad);
            assert_eq!(
                c.local_repository_base_dir,
                Path::new("/s/local"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_without_percent_and_other_escapes_are_kept() {
        let mut c = cfg(r#"{"localRepositoryBaseDir": "/s/%x/%", "runDir": "/run/egret"}"#);
        expand(&mut c, "n1");
        assert_eq!(c.local_repository_base_dir, Path::new("/s/%x/%"));
        assert_eq!(c.run_dir, Path::new("/run/egret"));
    }
}
