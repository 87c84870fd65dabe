//! What a hook knows about its container: the OCI state runc writes on the hook's stdin, and the
//! bundle's `config.json`.
//!
//! The bundle directory is egret's own (created by the launcher or `egret run`), so reading its
//! `config.json` is safe; the last component is still opened without following a symlink. The
//! rootfs path comes from `root.path`, joined to the bundle when relative, as runc does.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read the container state from stdin: {0}")]
    Stdin(#[source] io::Error),
    #[error("invalid container state on stdin: {0}")]
    State(#[source] serde_json::Error),
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} has no root.path", path.display())]
    NoRoot { path: PathBuf },
    #[error("the container state's bundle '{}' is not an absolute path", path.display())]
    RelativeBundle { path: PathBuf },
}

/// The OCI runtime state (runtime-spec "State"), as given to hooks on stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub oci_version: String,
    pub id: String,
    #[serde(default)]
    pub status: String,
    /// Host pid of the container init at prestart/createRuntime; at createContainer (exec'd by
    /// runc init) the pid as seen in the container's pid namespace.
    #[serde(default)]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

impl State {
    pub fn parse(text: &[u8]) -> Result<State, ContextError> {
        serde_json::from_slice(text).map_err(ContextError::State)
    }
}

/// The container a hook runs for.
#[derive(Debug, Clone)]
pub struct HookContext {
    state: State,
    spec: Spec,
    rootfs: PathBuf,
}

impl HookContext {
    /// Reads all of stdin (runc writes the state and fails with SIGPIPE when a hook leaves part
    /// of it unread), then the bundle's `config.json`.
    pub fn from_stdin() -> Result<HookContext, ContextError> {
        let mut text = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut text)
            .map_err(ContextError::Stdin)?;
        HookContext::from_state(State::parse(&text)?)
    }

    /// The context for `state`, reading `<bundle>/config.json`.
    pub fn from_state(state: State) -> Result<HookContext, ContextError> {
        if !state.bundle.is_absolute() {
            return Err(ContextError::RelativeBundle {
                path: state.bundle.clone(),
            });
        }
        let path = state.bundle.join("config.json");
        let read_err = |source| ContextError::ReadConfig {
            path: path.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(read_err)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(read_err)?;
        let spec: Spec = serde_json::from_slice(&text).map_err(|source| ContextError::Config {
            path: path.clone(),
            source,
        })?;
        HookContext::new(state, spec).map_err(|_| ContextError::NoRoot { path })
    }

    /// A context from parts already read (tests, tools). Fails when the spec has no root.
    pub fn new(state: State, spec: Spec) -> Result<HookContext, ContextError> {
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| ContextError::NoRoot {
                path: state.bundle.join("config.json"),
            })?;
        let rootfs = if root.is_absolute() {
            root
        } else {
            state.bundle.join(root)
        };
        Ok(HookContext {
            state,
            spec,
            rootfs,
        })
    }

    /// A variable of the container process's environment (the last definition wins, as for
    /// execve's consumers).
    pub fn env(&self, name: &str) -> Option<String> {
        let env = self.spec.process().as_ref()?.env().as_ref()?;
        env.iter().rev().find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v.to_string()),
            _ => None,
        })
    }

    /// An annotation of `config.json` (set by egret and the user), else of the state.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(key))
            .or_else(|| self.state.annotations.get(key))
            .map(String::as_str)
    }

    /// True when the annotation is set to `true` (what egret writes for an enabled feature).
    pub fn annotation_enabled(&self, key: &str) -> bool {
        self.annotation(key) == Some("true")
    }

    /// The uid the container process runs as (0 when config.json names none).
    pub fn uid(&self) -> u32 {
        self.spec
            .process()
            .as_ref()
            .map(|p| p.user().uid())
            .unwrap_or(0)
    }

    /// The primary gid of the container process.
    pub fn gid(&self) -> u32 {
        self.spec
            .process()
            .as_ref()
            .map(|p| p.user().gid())
            .unwrap_or(0)
    }

    /// Primary gid first, then the additional gids of the container process.
    pub fn groups(&self) -> Vec<u32> {
        let mut groups = vec![self.gid()];
        if let Some(extra) = self
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.user().additional_gids().clone())
        {
            for g in extra {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        groups
    }

    /// The pid from the state (see [`State::pid`] for which namespace it is in).
    pub fn pid(&self) -> Option<i32> {
        self.state.pid
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn bundle(&self) -> &Path {
        &self.state.bundle
    }

    /// The container's root filesystem at its host path.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_engine::hooks::annotations;

    const STATE: &str = r#"{"ociVersion":"1.0.2","id":"egret-42","status":"creating","pid":1,
        "bundle":"/run/egret/b","annotations":{"com.hooks.logging.level":"3","a":"state"}}"#;

    fn spec(root: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": root},
            "process": {
                "cwd": "/",
                "user": {"uid": 4242, "gid": 100, "additionalGids": [100, 27]},
                "env": ["PATH=/bin", "X=1", "EMPTY=", "X=2", "WEIRD=a=b"]
            },
            "annotations": {"a": "config", "com.hooks.glibc.enabled": "true"}
        }))
        .unwrap()
    }

    #[test]
    fn state_parses_with_and_without_optional_fields() {
        let s = State::parse(STATE.as_bytes()).unwrap();
        assert_eq!(s.id, "egret-42");
        assert_eq!(s.pid, Some(1));
        assert_eq!(s.bundle, Path::new("/run/egret/b"));
        assert_eq!(s.annotations["a"], "state");
        let s = State::parse(br#"{"id":"x","bundle":"/b"}"#).unwrap();
        assert_eq!(s.pid, None);
        assert!(s.annotations.is_empty());
        assert!(State::parse(br#"{"id":"x"}"#).is_err());
        assert!(State::parse(b"").is_err());
    }

    #[test]
    fn rootfs_env_annotations_and_ids() {
        let state = State::parse(STATE.as_bytes()).unwrap();
        let ctx = HookContext::new(state.clone(), spec("rootfs")).unwrap();
        assert_eq!(ctx.rootfs(), Path::new("/run/egret/b/rootfs"));
        assert_eq!(ctx.env("X").as_deref(), Some("2"));
        assert_eq!(ctx.env("EMPTY").as_deref(), Some(""));
        assert_eq!(ctx.env("WEIRD").as_deref(), Some("a=b"));
        assert_eq!(ctx.env("PAT"), None);
        assert_eq!(ctx.annotation("a"), Some("config"));
        assert_eq!(ctx.annotation(annotations::LOGGING_LEVEL), Some("3"));
        assert!(ctx.annotation_enabled(annotations::GLIBC_ENABLED));
        assert!(!ctx.annotation_enabled(annotations::MPI_ENABLED));
        assert_eq!((ctx.uid(), ctx.gid()), (4242, 100));
        assert_eq!(ctx.groups(), vec![100, 27]);
        assert_eq!(ctx.id(), "egret-42");
        let ctx = HookContext::new(state, spec("/abs/root")).unwrap();
        assert_eq!(ctx.rootfs(), Path::new("/abs/root"));
    }

    #[test]
    fn config_is_read_from_the_bundle_without_following_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_string(&spec("rootfs")).unwrap();
        std::fs::write(dir.path().join("real.json"), &text).unwrap();
        let state = State {
            oci_version: String::new(),
            id: "x".into(),
            status: String::new(),
            pid: None,
            bundle: dir.path().to_path_buf(),
            annotations: HashMap::new(),
        };
        std::os::unix::fs::symlink("real.json", dir.path().join("config.json")).unwrap();
        assert!(matches!(
            HookContext::from_state(state.clone()),
            Err(ContextError::ReadConfig { .. })
        ));
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        std::fs::write(dir.path().join("config.json"), &text).unwrap();
        let ctx = HookContext::from_state(state).unwrap();
        assert_eq!(ctx.rootfs(), dir.path().join("rootfs"));
    }
}
