//! The plugstack.conf arguments: `config=PATH`, `launcher=PATH`, and pyxis's
//! `execute_entrypoint=0|1` (whether the image's ENTRYPOINT runs when neither
//! `--container-entrypoint` nor `--no-container-entrypoint` is given; default 0) and
//! `remap_root=0|1` (the default of `--container-remap-root`; default 0) and
//! `container_scope=job|global` (how long named containers live; default job).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginArgsError {
    #[error("plugstack.conf: container_scope={0}: expected job or global")]
    ContainerScope(String),
    #[error("plugstack.conf: {key}={value}: expected 0 or 1")]
    NotABool { key: String, value: String },
    #[error("unknown plugstack.conf argument '{0}' (expected config=PATH, launcher=PATH, execute_entrypoint=0|1, remap_root=0|1 or container_scope=job|global)")]
    Unknown(String),
}

/// The plugin's arguments, with their defaults filled in.
pub struct PluginArgs {
    pub config: PathBuf,
    pub launcher: PathBuf,
    pub execute_entrypoint: bool,
    pub remap_root: bool,
    pub global_scope: bool,
}

impl PluginArgs {
    pub fn parse(args: &[String]) -> Result<PluginArgs, PluginArgsError> {
        let mut out = PluginArgs {
            config: PathBuf::from(egret_engine::config::DEFAULT_CONFIG_PATH),
            launcher: PathBuf::from(egret_engine::slurm::step::DEFAULT_LAUNCHER),
            execute_entrypoint: false,
            remap_root: false,
            global_scope: false,
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
        let e = error(&["colour=blue"]);
        assert!(e.contains("unknown plugstack.conf argument"), "{e}");
    }
}
