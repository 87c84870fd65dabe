//! `slurm_spank_job_epilog` (root, once per job and node, after its last step): named
//! containers live as long as the job.

use std::io;

use egret_engine::config::{Config, ConfigError};

use crate::ffi::Spank;
use crate::plugin_args::{PluginArgs, PluginArgsError};

#[derive(Debug, thiserror::Error)]
pub enum JobEpilogError {
    #[error(transparent)]
    PluginArgs(#[from] PluginArgsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("removing the named containers of job {job}: {source}")]
    RemoveNamed { job: u32, source: io::Error },
}

/// Removes the job's named containers (those of `container_scope=global` outlive it).
pub fn job_epilog(sp: Spank, args: &[String]) -> Result<(), JobEpilogError> {
    let config = PluginArgs::parse(args)?.config;
    let (Some(uid), Some(job)) = (sp.uid(), sp.job_id()) else {
        return Ok(());
    };
    let cfg = Config::load_on(&config, &egret_engine::config::local_node_name())?;
    egret_engine::slurm::fanout::remove_job(&cfg, job);
    egret_engine::slurm::named::remove_job(&cfg, uid, job)
        .map_err(|source| JobEpilogError::RemoveNamed { job, source })
}
