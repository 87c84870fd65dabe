//! pull, load, images, rmi. (Owner: image pipeline.)
use std::path::Path;
use std::process::ExitCode;

/// What every command gets: the loaded config and the caller's identity.
pub struct Context {
    pub config: egret_engine::config::Config,
    pub verbose: bool,
    pub debug: bool,
}

impl Context {
    pub fn new(path: Option<&Path>, verbose: bool, debug: bool) -> Result<Context, String> {
        let default = Path::new(egret_engine::config::DEFAULT_CONFIG_PATH);
        let config = match path {
            Some(p) => egret_engine::config::Config::load(p).map_err(|e| e.to_string())?,
            None if default.exists() => {
                egret_engine::config::Config::load(default).map_err(|e| e.to_string())?
            }
            None => egret_engine::config::Config::default(),
        };
        Ok(Context { config, verbose, debug })
    }
}

#[derive(clap::Args)]
pub struct PullArgs {}
#[derive(clap::Args)]
pub struct LoadArgs {}
#[derive(clap::Args)]
pub struct ImagesArgs {}
#[derive(clap::Args)]
pub struct RmiArgs {}

pub fn pull(_c: &Context, _a: PullArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
pub fn load(_c: &Context, _a: LoadArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
pub fn images(_c: &Context, _a: ImagesArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
pub fn rmi(_c: &Context, _a: RmiArgs) -> Result<ExitCode, String> {
    Err("not implemented".into())
}
