//! The hooks.d file format (podman/CRI-O, schema 1.0.0) and reading a hooks directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, HookBuilder};
use serde::Deserialize;

use super::pattern::Pattern;

#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("cannot read hooks directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read hook file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("hook file {}: {msg}", file.display())]
    Invalid { file: PathBuf, msg: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookFile {
    version: String,
    hook: HookDef,
    when: WhenDef,
    stages: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookDef {
    path: PathBuf,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WhenDef {
    #[serde(default)]
    always: Option<bool>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    commands: Option<Vec<String>>,
    #[serde(default)]
    has_bind_mounts: Option<bool>,
}

/// The OCI lifecycle stages a hook can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Stage> {
        [
            Stage::Prestart,
            Stage::CreateRuntime,
            Stage::CreateContainer,
            Stage::StartContainer,
            Stage::Poststart,
            Stage::Poststop,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The conditions of one hook, compiled.
#[derive(Debug, Clone)]
pub struct When {
    pub always: Option<bool>,
    /// (key pattern, value pattern), as written and compiled.
    pub annotations: Vec<(String, String, Pattern, Pattern)>,
    pub commands: Vec<Pattern>,
    pub has_bind_mounts: Option<bool>,
}

/// One hooks.d file.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The file name without `.json`.
    pub name: String,
    pub file: PathBuf,
    pub hook: Hook,
    pub when: When,
    pub stages: Vec<Stage>,
}

/// Reads every `*.json` file of `dir`, in lower-cased name order.
pub fn load_dir(dir: &Path) -> Result<Vec<HookConfig>, HooksError> {
    let read_dir_err = |source| HooksError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && entry.file_type().map_err(read_dir_err)?.is_file() {
            files.push((name.to_lowercase(), entry.path()));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, file)| {
            let text = std::fs::read_to_string(&file).map_err(|source| HooksError::Read {
                file: file.clone(),
                source,
            })?;
            parse_hook(&file, &text)
        })
        .collect()
}

/// Parses one hook file's text; `file` names it in errors.
pub fn parse_hook(file: &Path, text: &str) -> Result<HookConfig, HooksError> {
    let invalid = |msg: String| HooksError::Invalid {
        file: file.to_path_buf(),
        msg,
    };
    let def: HookFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if def.version != "1.0.0" {
        return Err(invalid(format!(
            "version '{}' is not supported (only 1.0.0)",
            def.version
        )));
    }
    if !def.hook.path.is_absolute() {
        return Err(invalid(format!(
            "hook.path '{}' must be absolute",
            def.hook.path.display()
        )));
    }
    let compile = |pattern: &str| {
        Pattern::new(pattern).map_err(|e| invalid(format!("bad regex '{pattern}': {e}")))
    };
    let mut annotations = Vec::new();
    for (k, v) in def.when.annotations.unwrap_or_default() {
        let (kr, vr) = (compile(&k)?, compile(&v)?);
        annotations.push((k, v, kr, vr));
    }
    let commands = def
        .when
        .commands
        .unwrap_or_default()
        .iter()
        .map(|c| compile(c))
        .collect::<Result<_, _>>()?;
    let when = When {
        always: def.when.always,
        annotations,
        commands,
        has_bind_mounts: def.when.has_bind_mounts,
    };
    if when.always.is_none()
        && when.has_bind_mounts.is_none()
        && when.annotations.is_empty()
        && when.commands.is_empty()
    {
        return Err(invalid("'when' needs at least one condition".into()));
    }
    if def.stages.is_empty() {
        return Err(invalid("'stages' is empty".into()));
    }
    let stages = def
        .stages
        .iter()
        .map(|s| Stage::parse(s).ok_or_else(|| invalid(format!("unknown stage '{s}'"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = HookBuilder::default().path(def.hook.path);
    if let Some(args) = def.hook.args {
        builder = builder.args(args);
    }
    if let Some(env) = def.hook.env {
        builder = builder.env(env);
    }
    if let Some(t) = def.hook.timeout {
        if t <= 0 {
            return Err(invalid(format!("hook.timeout must be positive, got {t}")));
        }
        builder = builder.timeout(t);
    }
    let hook = builder.build().map_err(|e| invalid(e.to_string()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(HookConfig {
        name,
        file: file.to_path_buf(),
        hook,
        when,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::fixtures::{parse, ALWAYS, MPI};

    #[test]
    fn parses_the_schema() {
        let h = parse("/etc/egret/hooks.d/05-mpi.json", MPI).unwrap();
        assert_eq!(h.name, "05-mpi");
        assert_eq!(h.stages, vec![Stage::Prestart]);
        assert_eq!(
            h.hook.args().as_ref().unwrap(),
            &vec!["mpi_hook".to_string()]
        );
        let h = parse("a.json", ALWAYS).unwrap();
        assert_eq!(h.hook.timeout(), Some(5));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        for (text, needle) in [
            (
                r#"{"version":"0.1.0","hook":{"path":"/x"},"when":{"always":true},"stages":["prestart"]}"#,
                "0.1.0",
            ),
            (
                r#"{"version":"1.0.0","hook":"/x","when":{"always":true},"stages":["prestart"]}"#,
                "invalid type",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"hasbindmounts":true},"stages":["prestart"]}"#,
                "hasbindmounts",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":["prestart"],"x":1}"#,
                "unknown field",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"x"},"when":{"always":true},"stages":["prestart"]}"#,
                "absolute",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{},"stages":["prestart"]}"#,
                "at least one",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":[]}"#,
                "empty",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":true},"stages":["prestop"]}"#,
                "prestop",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"commands":["("]},"stages":["prestart"]}"#,
                "bad regex",
            ),
            (
                r#"{"version":"1.0.0","hook":{"path":"/x","timeout":0},"when":{"always":true},"stages":["prestart"]}"#,
                "timeout",
            ),
        ] {
            let e = parse("/d/bad.json", text).unwrap_err().to_string();
            assert!(e.contains("/d/bad.json") && e.contains(needle), "{e}");
        }
    }
}
