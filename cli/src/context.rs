//! What every command gets: the loaded config and the caller's identity.

use std::path::{Path, PathBuf};

use egret_engine::config::{Config, ConfigError};

use crate::privilege::Caller;

/// Why the config could not be chosen or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// `--config` from a user: the config decides what runs as root.
    #[error("--config {}: only root may choose the config file; see 'egret --help'", .0.display())]
    ConfigNotRoot(PathBuf),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `securityChecks` found something a user could change in what root would trust.
    #[error(transparent)]
    Untrusted(#[from] egret_engine::config::security::SecurityError),
}

/// The loaded config and the caller's identity, shared by every command.
pub struct Context {
    pub config: Config,
    /// The file `config` came from (the default path when none exists).
    pub config_path: PathBuf,
    pub verbose: bool,
    pub debug: bool,
    /// The real uid/gid: whose index `images`, `pull`, `load` and `rmi` work on.
    pub uid: u32,
    pub gid: u32,
    /// Who started egret (identity and environment) and whether it is a user's setuid run.
    pub caller: Caller,
}

impl Context {
    /// Loads `path` (root only), else `$EGRET_CONFIG` (root only), else the default config file
    /// if it exists, else the built-in defaults.
    pub fn new(
        path: Option<&Path>,
        verbose: bool,
        debug: bool,
        caller: Caller,
    ) -> Result<Context, ContextError> {
        let uid = nix::unistd::Uid::from_raw(caller.identity.uid);
        let gid = caller.identity.gid;
        // The config decides what runs as root: only root may point at another one.
        let env_path = std::env::var_os("EGRET_CONFIG").map(PathBuf::from);
        let chosen = match (path, env_path) {
            (Some(p), _) if !uid.is_root() => {
                return Err(ContextError::ConfigNotRoot(p.to_path_buf()))
            }
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) if uid.is_root() => Some(p),
            _ => None,
        };
        let default = Path::new(egret_engine::config::DEFAULT_CONFIG_PATH);
        let node = egret_engine::config::local_node_name();
        let config = match &chosen {
            Some(p) => Config::load_on(p, &node)?,
            None if default.exists() => Config::load_on(default, &node)?,
            None => Config::default(),
        };
        if let Some(path) = chosen.as_deref().or(default.exists().then_some(default)) {
            for warning in config.warnings(path) {
                eprintln!("egret: {warning}");
            }
        }
        Ok(Context {
            config,
            config_path: chosen.unwrap_or_else(|| default.to_path_buf()),
            verbose,
            debug,
            uid: uid.as_raw(),
            gid,
            caller,
        })
    }

    /// The security checks of `securityChecks` over the config, everything it names and this
    /// binary itself (which runs as root for users).
    pub fn check_installation(&self) -> Result<(), ContextError> {
        let me: Vec<PathBuf> = std::env::current_exe().into_iter().collect();
        Ok(egret_engine::config::security::enforce(
            &self.config,
            &self.config_path,
            &me,
        )?)
    }
}
