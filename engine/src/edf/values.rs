//! The checks of each resolved value, made by srun after expansion and again by slurmstepd
//! on what srun handed over: the same rules the matching `--container-*` options follow.

use std::path::Path;

use super::error::{At, EdfError};
use crate::container::mounts::pyxis;
use crate::image::reference::ImageSource;
use crate::slurm::options::{valid_env_name, MAX_VALUE};

fn bad(at: &At, what: impl Into<String>) -> EdfError {
    EdfError::BadValue {
        at: at.clone(),
        what: what.into(),
    }
}

/// Length and control characters, as every option value.
fn plain(text: &str, at: &At) -> Result<(), EdfError> {
    if text.len() > MAX_VALUE {
        return Err(bad(at, format!("longer than {MAX_VALUE} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(bad(at, "contains a control character"));
    }
    Ok(())
}

pub fn image(text: &str, at: &At) -> Result<(), EdfError> {
    plain(text, at)?;
    if text.is_empty() {
        return Err(bad(at, "empty (name an image, or leave the key out)"));
    }
    ImageSource::parse(text).map_err(|source| EdfError::BadImage {
        at: at.clone(),
        source,
    })?;
    Ok(())
}

pub fn workdir(text: &str, at: &At) -> Result<(), EdfError> {
    plain(text, at)?;
    if text.is_empty() {
        return Err(bad(at, "empty (name a directory, or leave the key out)"));
    }
    Ok(())
}

/// One `SRC:DST[:FLAGS]` entry, in the syntax of `--container-mounts`.
pub fn mount(text: &str, at: &At) -> Result<(), EdfError> {
    plain(text, at)?;
    if text.contains(',') {
        return Err(EdfError::CommaInMount {
            at: at.clone(),
            entry: text.to_string(),
        });
    }
    let flags = text.split(':').nth(2).unwrap_or("");
    if flags.split('+').any(|f| f == "sqsh") {
        return Err(EdfError::SquashfsMount {
            at: at.clone(),
            entry: text.to_string(),
        });
    }
    pyxis::parse(text, Path::new("/")).map_err(|source| EdfError::BadMount {
        at: at.clone(),
        source,
    })?;
    Ok(())
}

pub fn env(name: &str, value: &str, at: &At) -> Result<(), EdfError> {
    if !valid_env_name(name) {
        return Err(bad(
            at,
            format!("'{}' is not a valid variable name", name.escape_debug()),
        ));
    }
    if value.contains('\0') {
        return Err(bad(at, "the value contains a NUL byte"));
    }
    if value.len() > MAX_VALUE {
        return Err(bad(at, format!("longer than {MAX_VALUE} bytes")));
    }
    Ok(())
}

pub fn annotation(key: &str, value: &str, at: &At) -> Result<(), EdfError> {
    if key.is_empty() || key.starts_with('.') || key.ends_with('.') {
        return Err(bad(at, "empty annotation key"));
    }
    plain(key, at)?;
    plain(value, at)
}
