//! `hooksDir`: OCI hook definitions in the podman/CRI-O "hooks.d" format (schema 1.0.0), and the
//! selection of the hooks a container gets.
//!
//! A file holds `version` ("1.0.0"), `hook` (a runtime-spec hook: `path`, `args`, `env`,
//! `timeout`), `when` (`always`, `annotations` {key regex: value regex}, `commands` [regex on
//! the command], `hasBindMounts`) and `stages`. A hook applies when *every* condition given in
//! `when` holds; `always: false` and `hasBindMounts: false` never hold. Files are read in the
//! order of their lower-cased names, and hooks keep that order within each stage. Unknown keys are
//! errors naming the file: a typo must not silently disable (or enable) a hook. Annotations come
//! from egret and the user, never from image labels.

pub mod devices;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, HookBuilder, Hooks};
use regex::Regex;
use serde::Deserialize;

pub const MPI_ENABLED: &str = "com.hooks.mpi.enabled";
pub const MPI_TYPE: &str = "com.hooks.mpi.type";
pub const TIMESTAMP_ENABLED: &str = "com.hooks.timestamp.enabled";
pub const AMDGPU_ENABLED: &str = "com.hooks.amdgpu.enabled";

/// Annotations egret derives from facts rather than options, so that hooks with nothing to do
/// are not even started (every hook is an exec per container): the timestamp hooks when the
/// container's environment names `TIMESTAMP_HOOK_LOGFILE`, the AMD GPU hook when the host has
/// `/dev/kfd`. An annotation the user gave is kept.
pub fn add_automatic_annotations(
    annotations: &mut BTreeMap<String, String>,
    env: &[(String, String)],
) {
    if env
        .iter()
        .any(|(k, v)| k == "TIMESTAMP_HOOK_LOGFILE" && !v.is_empty())
    {
        annotations
            .entry(TIMESTAMP_ENABLED.into())
            .or_insert_with(|| "true".into());
    }
    if Path::new("/dev/kfd").exists() {
        annotations
            .entry(AMDGPU_ENABLED.into())
            .or_insert_with(|| "true".into());
    }
}

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

    fn parse(s: &str) -> Option<Stage> {
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
    pub annotations: Vec<(String, String, Regex, Regex)>,
    pub commands: Vec<Regex>,
    pub has_bind_mounts: Option<bool>,
}

impl When {
    /// True when every condition given holds.
    pub fn matches(
        &self,
        annotations: &BTreeMap<String, String>,
        command: Option<&str>,
        has_bind_mounts: bool,
    ) -> bool {
        if let Some(always) = self.always {
            if !always {
                return false;
            }
        }
        if let Some(want) = self.has_bind_mounts {
            if !(want && has_bind_mounts) {
                return false;
            }
        }
        for (_, _, key, value) in &self.annotations {
            if !annotations
                .iter()
                .any(|(k, v)| key.is_match(k) && value.is_match(v))
            {
                return false;
            }
        }
        if !self.commands.is_empty() {
            let Some(cmd) = command else { return false };
            if !self.commands.iter().any(|re| re.is_match(cmd)) {
                return false;
            }
        }
        true
    }
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
        Regex::new(pattern).map_err(|e| invalid(format!("bad regex '{pattern}': {e}")))
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

/// The hooks a container with these annotations, command (`args[0]` of the user's process) and
/// bind mounts gets, per stage, in file order.
pub fn select(
    hooks: &[HookConfig],
    annotations: &BTreeMap<String, String>,
    command: Option<&str>,
    has_bind_mounts: bool,
) -> Hooks {
    let mut per_stage: BTreeMap<&'static str, Vec<Hook>> = BTreeMap::new();
    for h in hooks
        .iter()
        .filter(|h| h.when.matches(annotations, command, has_bind_mounts))
    {
        for st in &h.stages {
            per_stage
                .entry(st.as_str())
                .or_default()
                .push(h.hook.clone());
        }
    }
    let mut out = Hooks::default();
    let mut take = |st: Stage| per_stage.remove(st.as_str());
    #[allow(deprecated)] // prestart: still what runc 1.1 and the MPI/GPU hooks use.
    out.set_prestart(take(Stage::Prestart));
    out.set_create_runtime(take(Stage::CreateRuntime));
    out.set_create_container(take(Stage::CreateContainer));
    out.set_start_container(take(Stage::StartContainer));
    out.set_poststart(take(Stage::Poststart));
    out.set_poststop(take(Stage::Poststop));
    out
}

/// `egret hooks`: NAME PATH STAGES.
pub fn format_list(hooks: &[HookConfig]) -> String {
    let rows: Vec<[String; 3]> = hooks
        .iter()
        .map(|h| {
            let stages: Vec<&str> = h.stages.iter().map(|s| s.as_str()).collect();
            [
                h.name.clone(),
                h.hook.path().display().to_string(),
                stages.join(","),
            ]
        })
        .collect();
    table(&["NAME", "PATH", "STAGES"], &rows)
}

/// An MPI hook: one whose annotation conditions look at `com.hooks.mpi.enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiHook {
    pub name: String,
    /// The `com.hooks.mpi.type` pattern without its anchors; empty when it accepts any type.
    pub mpi_type: String,
    /// The site's `defaultMPIType` selects this hook.
    pub default: bool,
}

/// The MPI hooks, with the MPI type each serves.
pub fn mpi_hooks(hooks: &[HookConfig], default_mpi_type: Option<&str>) -> Vec<MpiHook> {
    hooks
        .iter()
        .filter(|h| {
            h.when
                .annotations
                .iter()
                .any(|(_, _, k, _)| k.is_match(MPI_ENABLED))
        })
        .map(|h| {
            let ty = h
                .when
                .annotations
                .iter()
                .find(|(_, _, k, _)| k.is_match(MPI_TYPE));
            let mpi_type = ty
                .map(|(_, v, _, _)| v.trim_start_matches('^').trim_end_matches('$').to_string())
                .unwrap_or_default();
            let default = match (ty, default_mpi_type) {
                (Some((_, _, _, v)), Some(d)) => v.is_match(d),
                _ => false,
            };
            MpiHook {
                name: h.name.clone(),
                mpi_type,
                default,
            }
        })
        .collect()
}

/// `--mpi-hook[=TYPE]`: an error when no hook would serve the request (the container would
/// otherwise run silently without the host's MPI). `requested` is TYPE, empty for the site's
/// `defaultMPIType`. Only the hooks' `com.hooks.mpi.*` conditions are looked at.
pub fn check_mpi_request(
    hooks: &[HookConfig],
    requested: &str,
    default_mpi_type: Option<&str>,
) -> Result<(), String> {
    let ty = if requested.is_empty() {
        default_mpi_type.unwrap_or_default()
    } else {
        requested
    };
    let mut wanted = vec![(MPI_ENABLED, "true")];
    if !ty.is_empty() {
        wanted.push((MPI_TYPE, ty));
    }
    let serves = |h: &HookConfig| {
        h.when
            .annotations
            .iter()
            .filter(|(_, _, k, _)| k.is_match(MPI_ENABLED) || k.is_match(MPI_TYPE))
            .all(|(_, _, k, v)| {
                wanted
                    .iter()
                    .any(|(wk, wv)| k.is_match(wk) && v.is_match(wv))
            })
    };
    let mpi = mpi_hooks(hooks, default_mpi_type);
    if hooks
        .iter()
        .filter(|h| mpi.iter().any(|m| m.name == h.name))
        .any(serves)
    {
        return Ok(());
    }
    let available: Vec<&str> = mpi.iter().map(|m| m.mpi_type.as_str()).collect();
    let available = if available.is_empty() {
        "no MPI hook is configured".to_string()
    } else {
        format!("MPI types configured: {}", available.join(", "))
    };
    Err(if requested.is_empty() && ty.is_empty() {
        format!("--mpi-hook: no MPI type given and no defaultMPIType set ({available})")
    } else if requested.is_empty() {
        format!("--mpi-hook: no MPI hook serves the default MPI type '{ty}' ({available})")
    } else {
        format!("--mpi-hook={ty}: no MPI hook serves this MPI type ({available})")
    })
}

#[cfg(test)]
mod mpi_request_tests {
    use super::*;

    fn hook(name: &str, when: &str) -> HookConfig {
        let text = format!(
            r#"{{"version":"1.0.0","hook":{{"path":"/h"}},"when":{when},"stages":["createContainer"]}}"#
        );
        parse_hook(Path::new(&format!("/d/{name}.json")), &text).unwrap()
    }

    #[test]
    fn an_mpi_type_nobody_serves_is_an_error() {
        let mpich = hook(
            "05-mpi",
            r#"{"annotations":{"^com.hooks.mpi.enabled$":"^true$","^com.hooks.mpi.type$":"^mpich$"}}"#,
        );
        let other = hook("10-ts", r#"{"always":true}"#);
        let hooks = [mpich, other.clone()];
        assert_eq!(check_mpi_request(&hooks, "mpich", None), Ok(()));
        assert_eq!(check_mpi_request(&hooks, "", Some("mpich")), Ok(()));
        let e = check_mpi_request(&hooks, "unknowntype", Some("mpich")).unwrap_err();
        assert_eq!(
            e,
            "--mpi-hook=unknowntype: no MPI hook serves this MPI type (MPI types configured: mpich)"
        );
        let e = check_mpi_request(&hooks, "", None).unwrap_err();
        assert!(e.contains("no defaultMPIType"), "{e}");
        let e = check_mpi_request(&hooks, "", Some("openmpi")).unwrap_err();
        assert!(e.contains("default MPI type 'openmpi'"), "{e}");
        let e = check_mpi_request(&[other], "mpich", None).unwrap_err();
        assert!(e.contains("no MPI hook is configured"), "{e}");
        // A hook for any type serves every request, also one without a type.
        let any = hook(
            "05-any",
            r#"{"annotations":{"^com.hooks.mpi.enabled$":"^true$"}}"#,
        );
        assert_eq!(
            check_mpi_request(std::slice::from_ref(&any), "whatever", None),
            Ok(())
        );
        assert_eq!(check_mpi_request(&[any], "", None), Ok(()));
    }
}

/// `egret hooks --mpi`: NAME MPI TYPE, `(default)` after the site's default.
pub fn format_mpi_list(hooks: &[MpiHook]) -> String {
    let rows: Vec<[String; 2]> = hooks
        .iter()
        .map(|h| {
            let ty = if h.default {
                format!("{} (default)", h.mpi_type)
            } else {
                h.mpi_type.clone()
            };
            [h.name.clone(), ty]
        })
        .collect();
    table(&["NAME", "MPI TYPE"], &rows)
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPI: &str = r#"{
        "version": "1.0.0",
        "hook": {"path": "/opt/egret/bin/mpi_hook", "args": ["mpi_hook"], "env": ["LDCONFIG_PATH=/sbin/ldconfig"]},
        "when": {"annotations": {"^com.hooks.mpi.enabled$": "^true$", "^com.hooks.mpi.type$": "^mpich$"}},
        "stages": ["prestart"]
    }"#;
    const ALWAYS: &str = r#"{"version":"1.0.0","hook":{"path":"/bin/ts","timeout":5},"when":{"always":true},"stages":["createRuntime","poststop"]}"#;

    fn parse(name: &str, text: &str) -> Result<HookConfig, HooksError> {
        parse_hook(Path::new(name), text)
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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

    #[test]
    fn all_conditions_must_match() {
        let h = parse(
            "x.json",
            r#"{"version":"1.0.0","hook":{"path":"/x"},
                "when":{"always":true,"annotations":{"^a$":"^1$"},"commands":["^/usr/bin/python"],"hasBindMounts":true},
                "stages":["prestart"]}"#,
        )
        .unwrap();
        let a = ann(&[("a", "1"), ("b", "2")]);
        assert!(h.when.matches(&a, Some("/usr/bin/python3"), true));
        assert!(!h.when.matches(&a, Some("/bin/sh"), true));
        assert!(!h.when.matches(&a, None, true));
        assert!(!h.when.matches(&a, Some("/usr/bin/python3"), false));
        assert!(!h
            .when
            .matches(&ann(&[("a", "2")]), Some("/usr/bin/python3"), true));
        let never = parse("n.json", r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":false},"stages":["prestart"]}"#).unwrap();
        assert!(!never.when.matches(&a, None, true));
        let nobind = parse("n.json", r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"hasBindMounts":false},"stages":["prestart"]}"#).unwrap();
        assert!(!nobind.when.matches(&a, None, false));
    }

    #[test]
    fn selection_per_stage_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("B-always.json"), ALWAYS).unwrap();
        std::fs::write(dir.path().join("a-mpi.json"), MPI).unwrap();
        std::fs::write(
            dir.path().join("c-always2.json"),
            ALWAYS.replace("/bin/ts", "/bin/ts2"),
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a hook").unwrap();
        let hooks = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a-mpi", "B-always", "c-always2"]);

        let sel = select(&hooks, &ann(&[]), Some("/bin/true"), false);
        let paths = |v: &Option<Vec<Hook>>| -> Vec<String> {
            v.iter()
                .flatten()
                .map(|h| h.path().display().to_string())
                .collect()
        };
        assert_eq!(paths(sel.create_runtime()), ["/bin/ts", "/bin/ts2"]);
        assert_eq!(paths(sel.poststop()), ["/bin/ts", "/bin/ts2"]);
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert!(pre.is_none(), "MPI hook not requested");
        let sel = select(
            &hooks,
            &ann(&[(MPI_ENABLED, "true"), (MPI_TYPE, "mpich")]),
            None,
            false,
        );
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert_eq!(paths(pre), ["/opt/egret/bin/mpi_hook"]);
        let sel = select(
            &hooks,
            &ann(&[(MPI_ENABLED, "true"), (MPI_TYPE, "openmpi")]),
            None,
            false,
        );
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert!(pre.is_none());

        let bad = dir.path().join("d.json");
        std::fs::write(&bad, "{").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("d.json"), "{e}");
        let e = load_dir(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn listings() {
        let hooks = vec![
            parse("/h/05-mpi.json", MPI).unwrap(),
            parse("/h/10-ts.json", ALWAYS).unwrap(),
        ];
        let out = format_list(&hooks);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "PATH", "STAGES"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["05-mpi", "/opt/egret/bin/mpi_hook", "prestart"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["10-ts", "/bin/ts", "createRuntime,poststop"]
        );
        let mpi = mpi_hooks(&hooks, Some("mpich"));
        assert_eq!(
            mpi,
            vec![MpiHook {
                name: "05-mpi".into(),
                mpi_type: "mpich".into(),
                default: true
            }]
        );
        let out = format_mpi_list(&mpi);
        assert!(
            out.lines().nth(1).unwrap().ends_with("mpich (default)"),
            "{out}"
        );
        assert!(!mpi_hooks(&hooks, Some("openmpi"))[0].default);
        assert!(out.starts_with("NAME"));
    }
}
