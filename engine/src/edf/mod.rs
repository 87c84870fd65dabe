//! Environment definition files (EDF), CSCS's way of naming a container environment:
//! `srun --environment=NAME` reads a small TOML file (image, mounts, workdir, entrypoint,
//! writable, `[env]`, `[annotations]`, and `base_environment` to inherit from others).
//!
//! The file is read where the user typed the option, by srun, sbatch or salloc, which run as
//! the user: [`resolve`] follows the search path ([`search`]), the inheritance and the
//! `${VAR}` expansion ([`expand`]) there, so every mistake is one line naming the file, the
//! line and the key before the job is queued. What it resolved ([`Resolved`]) travels to the
//! nodes in the job's environment ([`VAR`]), where slurmstepd reads it as hostile input:
//! [`Resolved::decode`] checks every value again, and root never opens the user's file.
//! [`apply`] then merges it into the step's options: the command line wins, then the EDF,
//! then the `PYXIS_`/`EGRET_CONTAINER_*` defaults.

mod apply;
mod error;
mod expand;
mod parse;
mod resolve;
mod search;
#[cfg(test)]
mod tests;
mod values;

use serde::{Deserialize, Serialize};

pub use self::apply::apply;
pub use self::error::{At, EdfError};
pub use self::resolve::{resolve, Host};
pub use self::search::SearchPath;

/// The job environment variable that carries the resolved environment to the nodes.
pub const VAR: &str = "EGRET_EDF";
/// The variables that name an EDF when `--environment` is not given, first found wins.
pub const ENV_DEFAULTS: [&str; 3] = [
    "EGRET_ENVIRONMENT",
    "EGRET_CONTAINER_ENVIRONMENT",
    "PYXIS_CONTAINER_ENVIRONMENT",
];
/// `base_environment` levels below the file `--environment` names (CSCS: 10).
pub const MAX_DEPTH: usize = 10;
/// Largest EDF file read: a few lines of TOML, not a payload.
pub const MAX_FILE: usize = 64 << 10;
/// Largest encoded [`Resolved`]: well below the kernel's 128 KiB for one variable.
pub const MAX_HANDED: usize = 96 << 10;

/// A value and the file and line it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced<T> {
    pub value: T,
    pub file: String,
    pub line: u32,
}

/// One `[env]` entry: an empty value in the file unsets the variable (CSCS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvEntry {
    pub name: String,
    /// None: unset in the container.
    pub value: Option<String>,
}

/// An environment with its inheritance applied and every value expanded and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    /// The `--environment` value it was resolved from.
    pub environment: String,
    /// Every file read, bases first, as the user knows them (`~/.edf/x.toml`).
    pub files: Vec<String>,
    pub image: Option<Sourced<String>>,
    pub workdir: Option<Sourced<String>>,
    pub entrypoint: Option<Sourced<bool>>,
    pub writable: Option<Sourced<bool>>,
    /// Bases' first, each `SRC:DST[:FLAGS]` with a relative source made absolute.
    pub mounts: Vec<Sourced<String>>,
    /// One per name, the last file's (an inheriting file appends and overrides).
    pub env: Vec<Sourced<EnvEntry>>,
    /// One per key, the last file's.
    pub annotations: Vec<Sourced<(String, String)>>,
}

impl<T> Sourced<T> {
    /// Where the value was written, under `key`.
    pub fn at(&self, key: &str) -> At {
        At {
            file: self.file.clone(),
            line: self.line,
            key: key.to_string(),
        }
    }
}

impl Resolved {
    /// The value of [`VAR`].
    pub fn encode(&self) -> Result<String, EdfError> {
        let text = serde_json::to_string(self).expect("a Resolved always serializes");
        if text.len() > MAX_HANDED {
            return Err(EdfError::TooBig {
                name: self.environment.clone(),
                size: text.len(),
                limit: MAX_HANDED,
            });
        }
        Ok(text)
    }

    /// What srun handed over in [`VAR`] for `--environment=environment`, checked as the
    /// user's input: it must be for this very value, well-formed, and every value must pass
    /// the checks srun made.
    pub fn decode(environment: &str, handed: Option<&str>) -> Result<Resolved, EdfError> {
        let not = |why: String| EdfError::NotHanded {
            name: environment.to_string(),
            why,
        };
        let text = handed.ok_or_else(|| {
            not(format!(
                "what srun resolved ({VAR}) is not in the job's environment; submit without --export=NONE, or export {VAR}"
            ))
        })?;
        if text.len() > MAX_HANDED {
            return Err(not(format!("{VAR} is longer than {MAX_HANDED} bytes")));
        }
        let r: Resolved = serde_json::from_str(text)
            .map_err(|e| not(format!("{VAR} is not what srun writes: {e}")))?;
        if r.environment != environment {
            return Err(not(format!(
                "{VAR} was resolved for --environment={}",
                r.environment
            )));
        }
        r.validate()?;
        Ok(r)
    }

    /// The checks [`resolve`] makes of every value.
    pub fn validate(&self) -> Result<(), EdfError> {
        if let Some(i) = &self.image {
            values::image(&i.value, &i.at("image"))?;
        }
        if let Some(w) = &self.workdir {
            values::workdir(&w.value, &w.at("workdir"))?;
        }
        for m in &self.mounts {
            values::mount(&m.value, &m.at("mounts"))?;
        }
        for e in &self.env {
            let a = e.at(&format!("env.{}", e.value.name));
            values::env(&e.value.name, e.value.value.as_deref().unwrap_or(""), &a)?;
        }
        for a in &self.annotations {
            let (k, v) = &a.value;
            values::annotation(k, v, &a.at(&format!("annotations.{k}")))?;
        }
        Ok(())
    }
}
