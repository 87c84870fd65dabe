//! hooks.d files and annotations shared by the tests of this module.

use std::collections::BTreeMap;
use std::path::Path;

use crate::hooks::schema::{parse_hook, HookConfig, HooksError};

pub(crate) const MPI: &str = r#"{
        "version": "1.0.0",
        "hook": {"path": "/opt/egret/bin/mpi_hook", "args": ["mpi_hook"], "env": ["LDCONFIG_PATH=/sbin/ldconfig"]},
        "when": {"annotations": {"^com.hooks.mpi.enabled$": "^true$", "^com.hooks.mpi.type$": "^mpich$"}},
        "stages": ["prestart"]
    }"#;
pub(crate) const ALWAYS: &str = r#"{"version":"1.0.0","hook":{"path":"/bin/ts","timeout":5},"when":{"always":true},"stages":["createRuntime","poststop"]}"#;

pub(crate) fn parse(name: &str, text: &str) -> Result<HookConfig, HooksError> {
    parse_hook(Path::new(name), text)
}

pub(crate) fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
