//! The plugstack.conf arguments: `config=PATH`, `launcher=PATH`, and pyxis's
//! `execute_entrypoint=0|1` (whether the image's ENTRYPOINT runs when neither
//! `--container-entrypoint` nor `--no-container-entrypoint` is given; default 0) and
//! `remap_root=0|1` (the default of `--container-remap-root`; default 0) and
//! `container_scope=job|global` (how long named containers live; default job) and
//! `resolve_tags=submit|node` (where a step's tag becomes a digest: once in srun on the
//! submit node, handed to every node, or on each node; default submit).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginArgsError {
    #[error("plugstack.conf: container_scope={0}: expected job or global")]
    ContainerScope(String),
    #[error("plugstack.conf: {key}={value}: expected 0 or 1")]
    NotABool { key: String, value: String },
    #[error("plugstack.conf: resolve_tags={0}: expected submit or node")]
    ResolveTags(String),
    #[error("unknown plugstack.conf argument '{0}' (expected config=PATH, launcher=PATH, execute_entrypoint=0|1, remap_root=0|1, container_scope=job|global or resolve_tags=submit|node)")]
    Unknown(String),
}

/// The plugin's arguments, with their defaults filled in.
pub struct PluginArgs {
    pub config: PathBuf,
    pub launcher: PathBuf,
    pub execute_entrypoint: bool,
    pub remap_root: bool,
    pub global_scope: bool,
    /// `resolve_tags=submit`: srun resolves the step's tag once for all its nodes.
    pub resolve_on_submit: bool,
}

impl PluginArgs {
    pub fn parse(args: &[String]) -> Result<PluginArgs, PluginArgsError> {
        let mut out = PluginArgs {
            config: PathBuf::from(egret_engine::config::DEFAULT_CONFIG_PATH),
            launcher: PathBuf::from(egret_engine::slurm::step::DEFAULT_LAUNCHER),
            execute_entrypoint: false,
            remap_root: false,
            global_scope: false,
            resolve_on_submit: true,
        };
        for a in args {
            match a.split_once('=') {
                Some(("config", v)) => out.config = PathBuf::from(v),
                Some(("launcher", v)) => out.launcher = PathBuf::from(v),
                Some(("container_scope", v)) => {
                    out.global_scope = match v {
                        "job" => false,
                        "global" => true,
                        _ => return Err(PluginArgsError::ContainerScope(v.to_string())),
                    }
                }
                Some(("resolve_tags", v)) => {
                    out.resolve_on_submit = match v {
                        "submit" => true,
                        "node" => false,
                        _ => return Err(PluginArgsError::ResolveTags(v.to_string())),
                    }
                }
                Some((key @ ("execute_entrypoint" | "remap_root"), v)) => {
                    let on = egret_engine::slurm::options::parse_bool(v).ok_or_else(|| {
                        PluginArgsError::NotABool {
                            key: key.to_string(),
                            value: v.to_string(),
                        }
                    })?;
                    if key == "remap_root" {
                        out.remap_root = on;
                    } else {
                        out.execute_entrypoint = on;
                    }
                }
                _ => return Err(PluginArgsError::Unknown(a.clone())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn error(a: &[&str]) -> String {
        PluginArgs::parse(&args(a)).err().unwrap().to_string()
    }

    #[test]
    fn plugstack_arguments() {
        let pa =
            PluginArgs::parse(&args(&["config=/x/egret.json", "execute_entrypoint=1"])).unwrap();
        assert_eq!(pa.config, PathBuf::from("/x/egret.json"));
        assert!(pa.execute_entrypoint);
        assert!(!PluginArgs::parse(&[]).unwrap().execute_entrypoint);
        let e = error(&["execute_entrypoint=maybe"]);
        assert!(e.contains("execute_entrypoint=maybe"), "{e}");
        let e = error(&["container_scope=everywhere"]);
        assert!(e.contains("container_scope=everywhere"), "{e}");
        assert!(
            PluginArgs::parse(&args(&["container_scope=global"]))
                .unwrap()
                .global_scope
        );
        assert!(PluginArgs::parse(&[]).unwrap().resolve_on_submit);
        assert!(
            !PluginArgs::parse(&args(&["resolve_tags=node"]))
                .unwrap()
                .resolve_on_submit
        );
        let e = error(&["resolve_tags=login"]);
        assert!(e.contains("resolve_tags=login"), "{e}");
        let e = error(&["colour=blue"]);
        assert!(e.contains("unknown plugstack.conf argument"), "{e}");
    }
}
