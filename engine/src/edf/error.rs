//! Why an environment definition file (or the resolved environment handed to the nodes) is
//! refused. Each is the user's one line (without `egret: `); those about a file start with
//! `FILE:LINE: KEY:` so an editor can jump there.

use std::io;

use crate::container::mounts::MountError;
use crate::image::reference::RefError;

/// Where a value was written: the file as the user knows it (`~/.edf/x.toml`), its line, and
/// the key (`mounts`, `env.PATH`, `annotations.com.hooks.ssh.enabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: u32,
    pub key: String,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdfError {
    #[error("--environment: empty value")]
    EmptyName,
    /// A name (not a path) that none of the search directories holds as `NAME.toml`.
    #[error("--environment={name}: no {name}.toml in {} ({how}); give a path (/abs/x.toml or ./x.toml) or put the file there", .searched.join(", "))]
    NotFound {
        name: String,
        searched: Vec<String>,
        how: &'static str,
    },
    #[error("--environment={name}: a name cannot contain '/'; a path starts with '/' or './'")]
    BadName { name: String },
    #[error("EDF_PATH={}: '{entry}' is not an absolute directory (EDF_PATH is a ':'-separated list of them)", .value.escape_debug())]
    BadEdfPath { value: String, entry: String },
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file}: larger than {limit} bytes; an EDF is a few lines of TOML")]
    TooLarge { file: String, limit: usize },
    #[error("{file}: not UTF-8 text")]
    NotText { file: String },
    /// The TOML parser's own words, at the line it stopped.
    #[error("{file}:{line}: {message}")]
    Toml {
        file: String,
        line: u32,
        message: String,
    },
    #[error("{at}: unknown key (an EDF has base_environment, image, mounts, workdir, entrypoint, writable, [env] and [annotations])")]
    UnknownKey { at: At },
    #[error("{at}: expected {expected}")]
    WrongType { at: At, expected: &'static str },
    #[error("{at}: undefined variable ${{{name}}} (use ${{{name}:-}} for an empty default, $$ for a literal $)")]
    Undefined { at: At, name: String },
    #[error("{at}: '{text}': {reason}")]
    BadReference {
        at: At,
        text: String,
        reason: &'static str,
    },
    #[error("{at}: {source}")]
    BadImage {
        at: At,
        #[source]
        source: RefError,
    },
    #[error("{at}: {source}")]
    BadMount {
        at: At,
        #[source]
        source: MountError,
    },
    #[error("{at}: '{entry}': squashfs mounts (:sqsh) are not supported by egret; unpack the data into a directory and bind it, or build it into the image")]
    SquashfsMount { at: At, entry: String },
    #[error("{at}: '{entry}': one mount per entry; a path with ',' cannot be mounted")]
    CommaInMount { at: At, entry: String },
    #[error("{at}: {what}")]
    BadValue { at: At, what: String },
    /// A `base_environment` that names a file already being read.
    #[error("{at}: {} includes itself: {}", .name, .chain.join(" -> "))]
    Loop {
        at: At,
        name: String,
        chain: Vec<String>,
    },
    #[error("{at}: base environments nested deeper than {limit} levels: {}", .chain.join(" -> "))]
    TooDeep {
        at: At,
        limit: usize,
        chain: Vec<String>,
    },
    #[error("--environment={name}: the environment names no image (set image = \"...\" in it or a base, or give --container-image)")]
    NoImage { name: String },
    #[error("--environment={name}: the resolved environment is {size} bytes, more than the {limit} the job's environment may carry")]
    TooBig {
        name: String,
        size: usize,
        limit: usize,
    },
    /// In slurmstepd: what srun resolved did not arrive, or is not for this `--environment`.
    #[error("--environment={name}: {why}")]
    NotHanded { name: String, why: String },
}
