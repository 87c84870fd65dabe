//! `${VAR}` expansion in EDF values, as CSCS documents it: `${VAR}` is the variable's value,
//! `${VAR:-DEFAULT}` the default where VAR is unset, `$$` a literal `$`; a `$` followed by
//! anything else stays as it is; an undefined variable without a default is an error. As in sh, a default also replaces a variable set to the empty string.
//!
//! The variables are the environment of the srun, sbatch or salloc that reads the file (the
//! user's shell): the image's environment is not known before the job is queued, and the
//! values that need expanding (mount sources, the image, the working directory) are host
//! paths and names. The default is taken literally (it is not expanded again).

use super::error::{At, EdfError};

/// Expands `text` (the value at `at`) with `lookup`.
pub fn expand(
    text: &str,
    at: &At,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EdfError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| bad(at, text, "'${' without its '}'"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !crate::slurm::options::valid_env_name(name) {
                return Err(bad(at, text, "not a variable name between '${' and '}'"));
            }
            // As in sh, the default also replaces a variable that is set but empty.
            let value = match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => Some(d.to_string()),
                (Some(v), _) => Some(v),
                (None, d) => d.map(str::to_string),
            };
            match value {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(EdfError::Undefined {
                        at: at.clone(),
                        name: name.to_string(),
                    })
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn bad(at: &At, text: &str, reason: &'static str) -> EdfError {
    EdfError::BadReference {
        at: at.clone(),
        text: text.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> At {
        At {
            file: "~/.edf/x.toml".into(),
            line: 3,
            key: "mounts".into(),
        }
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "SCRATCH" => Some("/scratch/u".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn x(s: &str) -> Result<String, String> {
        expand(s, &at(), &env).map_err(|e| e.to_string())
    }

    #[test]
    fn variables_defaults_and_literal_dollars() {
        assert_eq!(x("${SCRATCH}:${SCRATCH}").unwrap(), "/scratch/u:/scratch/u");
        assert_eq!(x("${NOPE:-/d}/x").unwrap(), "/d/x");
        assert_eq!(x("${NOPE:-}").unwrap(), "");
        assert_eq!(x("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(x("[${EMPTY}]").unwrap(), "[]");
        assert_eq!(x("$${SCRATCH} costs $$5").unwrap(), "${SCRATCH} costs $5");
        assert_eq!(x("$HOME and a$").unwrap(), "$HOME and a$");
        assert_eq!(x("no variables").unwrap(), "no variables");
    }

    #[test]
    fn an_undefined_variable_names_the_file_line_key_and_variable() {
        let e = x("${NOPE}/data").unwrap_err();
        assert_eq!(
            e,
            "~/.edf/x.toml:3: mounts: undefined variable ${NOPE} (use ${NOPE:-} for an empty default, $$ for a literal $)"
        );
    }

    #[test]
    fn broken_references_are_refused() {
        for s in ["${SCRATCH", "${}", "${1A}", "${A B}"] {
            let e = x(s).unwrap_err();
            assert!(e.starts_with("~/.edf/x.toml:3: mounts: '"), "{s}: {e}");
        }
    }
}
