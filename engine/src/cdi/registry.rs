//! The CDI specs of a node: every `*.json`, `*.yaml` and `*.yml` file of the spec directories,
//! directories in the configured order and files by name within each. A device (`KIND=NAME`)
//! defined again later replaces the earlier definition, with the later file's own edits.
//! A missing directory is no error (a node without GPUs has none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::spec::{self, ContainerEdits, Spec};
use super::CdiError;
use crate::config::security::{self, Violation};

/// One spec file, as read.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub path: PathBuf,
    pub spec: Spec,
}

/// The devices of the loaded specs.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub files: Vec<SpecFile>,
    /// Qualified name -> (index in `files`, index in its `devices`).
    devices: BTreeMap<String, (usize, usize)>,
    /// The directories, for messages.
    dirs: Vec<PathBuf>,
}

/// The edits one selected device brings, with the file they come from.
#[derive(Debug, Clone)]
pub struct Selected<'a> {
    pub name: String,
    pub file: &'a SpecFile,
    pub edits: &'a ContainerEdits,
}

impl Registry {
    /// Loads `dirs`; with `checks` (`securityChecks`), refuses a file that anyone but root
    /// could change.
    pub fn load(dirs: &[PathBuf], checks: bool) -> Result<Registry, CdiError> {
        let mut reg = Registry {
            dirs: dirs.to_vec(),
            ..Registry::default()
        };
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CdiError::Read {
                        path: dir.clone(),
                        source,
                    })
                }
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml" | "yml")
                    )
                })
                .collect();
            files.sort();
            for path in files {
                if checks {
                    trusted(&path)?;
                }
                let spec = spec::read(&path)?;
                reg.add(SpecFile { path, spec });
            }
        }
        Ok(reg)
    }

    /// Adds a file read; its devices replace earlier ones of the same name.
    pub fn add(&mut self, file: SpecFile) {
        let fi = self.files.len();
        for (di, d) in file.spec.devices.iter().enumerate() {
            self.devices
                .insert(format!("{}={}", file.spec.kind, d.name), (fi, di));
        }
        self.files.push(file);
    }

    /// True when some spec defines a device of `kind`.
    pub fn has_kind(&self, kind: &str) -> bool {
        let prefix = format!("{kind}=");
        self.devices.keys().any(|k| k.starts_with(&prefix))
    }

    /// The edits of the devices `names` (in that order, each once), then those of every file
    /// that defines one of them (once per file, as the specification asks).
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Selected<'_>>, CdiError> {
        let mut out = Vec::new();
        let mut files_used: Vec<usize> = Vec::new();
        let mut done: Vec<&str> = Vec::new();
        for name in names {
            if done.contains(&name.as_str()) {
                continue;
            }
            done.push(name);
            let &(fi, di) = self
                .devices
                .get(name)
                .ok_or_else(|| CdiError::UnknownDevice {
                    name: name.clone(),
                    dirs: self
                        .dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let file = &self.files[fi];
            out.push(Selected {
                name: name.clone(),
                file,
                edits: &file.spec.devices[di].container_edits,
            });
            if !files_used.contains(&fi) {
                files_used.push(fi);
            }
        }
        for fi in files_used {
            let file = &self.files[fi];
            out.push(Selected {
                name: file.spec.kind.clone(),
                file,
                edits: &file.spec.container_edits,
            });
        }
        Ok(out)
    }
}

/// `path` must be root's alone: owned by root, not writable by group or others, nor any
/// directory above it.
pub fn trusted(path: &Path) -> Result<(), CdiError> {
    let mut v: Vec<Violation> = Vec::new();
    security::check_untamperable(path, &mut v);
    match v.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(CdiError::Untrusted {
            path: path.to_path_buf(),
            rule: if first.path == path {
                first.rule
            } else {
                format!("{}: {}", first.path.display(), first.rule)
            },
        }),
    }
}
