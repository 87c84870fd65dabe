//! From `--environment=VALUE` to a [`Resolved`] environment: find the file, read it (as the
//! calling process's user: srun, sbatch, salloc or `egret env check`), read its bases first,
//! in order, up to [`MAX_DEPTH`] levels, then its own entries over theirs. `mounts` and
//! `[env]` are appended to (a later `[env]` entry of the same name wins), every other key is
//! overwritten; `[annotations]` merge key by key.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{At, EdfError};
use super::expand::expand;
use super::parse::{parse, EdfFile, Raw};
use super::search::SearchPath;
use super::{values, EnvEntry, Resolved, Sourced, MAX_DEPTH, MAX_FILE};

/// The caller's side of a resolution: where to search and the variables to expand.
pub struct Host<'a> {
    pub search: SearchPath,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Resolves `value` (what `--environment` was given).
pub fn resolve(value: &str, host: &Host<'_>) -> Result<Resolved, EdfError> {
    let mut r = Resolved {
        environment: value.to_string(),
        ..Resolved::default()
    };
    let file = host.search.locate(value)?;
    load(host, &file, &mut Vec::new(), &mut r)?;
    Ok(r)
}

/// Reads `path` and its bases into `r`. `chain` holds the files being read, outermost first.
fn load(
    host: &Host<'_>,
    path: &Path,
    chain: &mut Vec<(PathBuf, String)>,
    r: &mut Resolved,
) -> Result<(), EdfError> {
    let shown = host.search.show(path);
    let text = read(path, &shown)?;
    let edf = parse(&shown, &text)?;
    let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    chain.push((canonical, shown.clone()));
    for base in &edf.base {
        let name = expand(&base.value, &base.at, host.env)?;
        let file = host.search.locate(&name).map_err(|e| EdfError::BadValue {
            at: base.at.clone(),
            what: e.to_string(),
        })?;
        let canonical = fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        let names = || {
            let mut c: Vec<String> = chain.iter().map(|(_, s)| s.clone()).collect();
            c.push(host.search.show(&file));
            c
        };
        if chain.iter().any(|(p, _)| *p == canonical) {
            return Err(EdfError::Loop {
                at: base.at.clone(),
                name: host.search.show(&file),
                chain: names(),
            });
        }
        if chain.len() > MAX_DEPTH {
            return Err(EdfError::TooDeep {
                at: base.at.clone(),
                limit: MAX_DEPTH,
                chain: names(),
            });
        }
        load(host, &file, chain, r)?;
    }
    chain.pop();
    merge(host, edf, r)?;
    r.files.push(shown);
    Ok(())
}

/// The file as text, at most [`MAX_FILE`] bytes.
fn read(path: &Path, shown: &str) -> Result<String, EdfError> {
    let err = |source| EdfError::Read {
        file: shown.to_string(),
        source,
    };
    let f = fs::File::open(path).map_err(err)?;
    if f.metadata().map_err(err)?.is_dir() {
        return Err(err(std::io::Error::from(std::io::ErrorKind::IsADirectory)));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() > MAX_FILE {
        return Err(EdfError::TooLarge {
            file: shown.to_string(),
            limit: MAX_FILE,
        });
    }
    String::from_utf8(bytes).map_err(|_| EdfError::NotText {
        file: shown.to_string(),
    })
}

/// This file's entries over what its bases gave.
fn merge(host: &Host<'_>, edf: EdfFile, r: &mut Resolved) -> Result<(), EdfError> {
    let x = |raw: &Raw<String>| expand(&raw.value, &raw.at, host.env);
    if let Some(i) = &edf.image {
        let v = absolute(&host.search.cwd, &x(i)?);
        values::image(&v, &i.at)?;
        r.image = Some(sourced(v, &i.at));
    }
    if let Some(w) = &edf.workdir {
        let v = x(w)?;
        values::workdir(&v, &w.at)?;
        r.workdir = Some(sourced(v, &w.at));
    }
    if let Some(e) = &edf.entrypoint {
        r.entrypoint = Some(sourced(e.value, &e.at));
    }
    if let Some(w) = &edf.writable {
        r.writable = Some(sourced(w.value, &w.at));
    }
    for m in &edf.mounts {
        let v = absolute(&host.search.cwd, &x(m)?);
        values::mount(&v, &m.at)?;
        r.mounts.push(sourced(v, &m.at));
    }
    for e in &edf.env {
        let (name, raw) = &e.value;
        let v = expand(raw, &e.at, host.env)?;
        values::env(name, &v, &e.at)?;
        r.env.retain(|o| o.value.name != *name);
        let value = (!v.is_empty()).then_some(v);
        r.env.push(sourced(
            EnvEntry {
                name: name.clone(),
                value,
            },
            &e.at,
        ));
    }
    for a in &edf.annotations {
        let (key, raw) = &a.value;
        let v = expand(raw, &a.at, host.env)?;
        values::annotation(key, &v, &a.at)?;
        r.annotations.retain(|o| o.value.0 != *key);
        r.annotations.push(sourced((key.clone(), v), &a.at));
    }
    Ok(())
}

fn sourced<T>(value: T, at: &At) -> Sourced<T> {
    Sourced {
        value,
        file: at.file.clone(),
        line: at.line,
    }
}

/// A `./` or `../` path (an image file, a mount source) from the caller's working
/// directory, as CSCS documents: not from the EDF's own directory.
fn absolute(cwd: &Path, value: &str) -> String {
    if let Some(rest) = value.strip_prefix("./") {
        return cwd.join(rest).display().to_string();
    }
    if value.starts_with("../") {
        return cwd.join(value).display().to_string();
    }
    value.to_string()
}
