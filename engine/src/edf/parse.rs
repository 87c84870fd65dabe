//! One EDF file, from its text to its raw entries (not yet expanded), each with its line.
//!
//! The keys are CSCS's: `base_environment` (a string or an array of them), `image`,
//! `workdir`, `entrypoint` and `writable` (booleans), `mounts` (an array of strings), and the
//! `[env]` and `[annotations]` tables. Any other key is refused by name: a typo must not
//! silently drop a mount. `[annotations]` nests (`[annotations.com.hooks.ssh]`), and is
//! flattened to dotted keys.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{At, EdfError};

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw<T> {
    pub value: T,
    pub at: At,
}

/// One file's entries as written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EdfFile {
    pub base: Vec<Raw<String>>,
    pub image: Option<Raw<String>>,
    pub workdir: Option<Raw<String>>,
    pub entrypoint: Option<Raw<bool>>,
    pub writable: Option<Raw<bool>>,
    pub mounts: Vec<Raw<String>>,
    /// `[env]`, in the file's order of keys (sorted: TOML tables have no order).
    pub env: Vec<Raw<(String, String)>>,
    pub annotations: Vec<Raw<(String, String)>>,
}

/// Parses `text`, the content of `file` (the name used in messages).
pub fn parse(file: &str, text: &str) -> Result<EdfFile, EdfError> {
    let line_of = |span: Range<usize>| line_at(text, span.start);
    let doc = DeTable::parse(text).map_err(|e| EdfError::Toml {
        file: file.to_string(),
        line: e.span().map(|s| line_at(text, s.start)).unwrap_or(1),
        message: e.message().trim().to_string(),
    })?;
    let at = |key: &str, span: Range<usize>| At {
        file: file.to_string(),
        line: line_of(span),
        key: key.to_string(),
    };
    let mut edf = EdfFile::default();
    for (k, v) in doc.get_ref().iter() {
        let key: &str = k.get_ref();
        let here = at(key, k.span());
        match key {
            "base_environment" => match v.get_ref() {
                DeValue::String(s) => edf.base.push(raw(s.to_string(), here)),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        let s = string(item, at(key, item.span()), "an array of strings")?;
                        edf.base.push(raw(s, at(key, item.span())));
                    }
                }
                _ => return Err(wrong(here, "a string or an array of strings")),
            },
            "image" => edf.image = Some(raw(string(v, here.clone(), "a string")?, here)),
            "workdir" => edf.workdir = Some(raw(string(v, here.clone(), "a string")?, here)),
            "entrypoint" => edf.entrypoint = Some(raw(boolean(v, here.clone())?, here)),
            "writable" => edf.writable = Some(raw(boolean(v, here.clone())?, here)),
            "mounts" => {
                let DeValue::Array(items) = v.get_ref() else {
                    return Err(wrong(here, "an array of strings (\"SRC:DST[:FLAGS]\")"));
                };
                for item in items.iter() {
                    let s = string(item, at(key, item.span()), "an array of strings")?;
                    edf.mounts.push(raw(s, at(key, item.span())));
                }
            }
            "env" => {
                let DeValue::Table(t) = v.get_ref() else {
                    return Err(wrong(here, "a table ([env])"));
                };
                for (name, value) in t.iter() {
                    let name: &str = name.get_ref();
                    let key = format!("env.{name}");
                    let vat = at(&key, value.span());
                    let s = string(value, vat.clone(), "a string")?;
                    edf.env.push(raw((name.to_string(), s), vat));
                }
            }
            "annotations" => {
                let DeValue::Table(t) = v.get_ref() else {
                    return Err(wrong(here, "a table ([annotations])"));
                };
                flatten(t, "", &at, &mut edf.annotations)?;
            }
            _ => return Err(EdfError::UnknownKey { at: here }),
        }
    }
    Ok(edf)
}

/// `[annotations]` and its subtables as `a.b.c = "v"` pairs.
fn flatten(
    t: &DeTable<'_>,
    prefix: &str,
    at: &dyn Fn(&str, Range<usize>) -> At,
    out: &mut Vec<Raw<(String, String)>>,
) -> Result<(), EdfError> {
    for (k, v) in t.iter() {
        let name = match prefix {
            "" => k.get_ref().to_string(),
            p => format!("{p}.{}", k.get_ref()),
        };
        let here = at(&format!("annotations.{name}"), v.span());
        match v.get_ref() {
            DeValue::Table(sub) => flatten(sub, &name, at, out)?,
            DeValue::String(s) => out.push(raw((name, s.to_string()), here)),
            _ => return Err(wrong(here, "a string (\"true\", not true)")),
        }
    }
    Ok(())
}

fn raw<T>(value: T, at: At) -> Raw<T> {
    Raw { value, at }
}

fn wrong(at: At, expected: &'static str) -> EdfError {
    EdfError::WrongType { at, expected }
}

fn string(v: &Spanned<DeValue<'_>>, at: At, expected: &'static str) -> Result<String, EdfError> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        _ => Err(wrong(at, expected)),
    }
}

fn boolean(v: &Spanned<DeValue<'_>>, at: At) -> Result<bool, EdfError> {
    match v.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        _ => Err(wrong(at, "true or false (a TOML boolean, without quotes)")),
    }
}

/// The 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u32
}
