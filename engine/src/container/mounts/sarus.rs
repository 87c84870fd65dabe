//! Sarus's (and Docker's) `--mount` syntax.

use crate::container::mounts::{absolute, BindMount, MountError};

/// Sarus/Docker `--mount type=bind,src=/a,dst=/b[,readonly]`; `source`, `destination` and
/// `target` are accepted spellings, and `ro` for `readonly`.
pub fn parse_sarus_mount(s: &str) -> Result<BindMount, MountError> {
    let mut kind = None;
    let mut source = None;
    let mut destination = None;
    let mut readonly = false;
    for field in s.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let slot = match key {
            "type" => &mut kind,
            "source" | "src" => &mut source,
            "destination" | "dst" | "target" => &mut destination,
            "readonly" | "ro" => {
                if value.is_some() {
                    return Err(MountError::parse(s, format!("'{key}' takes no value")));
                }
                readonly = true;
                continue;
            }
            "" => return Err(MountError::parse(s, "empty field")),
            other => {
                return Err(MountError::parse(
                    s,
                    format!("unknown key '{other}' (expected type, source, destination, readonly)"),
                ))
            }
        };
        let Some(value) = value else {
            return Err(MountError::parse(
                s,
                format!("'{key}' needs a value ({key}=...)"),
            ));
        };
        if slot.replace(value).is_some() {
            return Err(MountError::parse(
                s,
                format!("'{key}' given more than once"),
            ));
        }
    }
    match kind {
        None => return Err(MountError::parse(s, "missing 'type=bind'")),
        Some("bind") => {}
        Some(t) => {
            return Err(MountError::parse(
                s,
                format!("type '{t}' is not supported (only bind)"),
            ))
        }
    }
    let source = absolute(
        s,
        "source",
        source.ok_or_else(|| MountError::parse(s, "missing source"))?,
    )?;
    let destination = absolute(
        s,
        "destination",
        destination.ok_or_else(|| MountError::parse(s, "missing destination"))?,
    )?;
    Ok(BindMount {
        source,
        destination,
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn sarus_mount_forms() {
        let m = parse_sarus_mount("type=bind,src=/a,dst=/b").unwrap();
        assert_eq!(
            m,
            BindMount {
                source: p("/a"),
                destination: p("/b"),
                readonly: false
            }
        );
        let m = parse_sarus_mount("destination=/b,readonly,source=/a,type=bind").unwrap();
        assert!(m.readonly);
        assert_eq!(
            parse_sarus_mount("type=bind,source=/a,target=/c")
                .unwrap()
                .destination,
            p("/c")
        );
    }

    #[test]
    fn sarus_mount_errors_name_the_problem() {
        for (input, needle) in [
            ("src=/a,dst=/b", "missing 'type=bind'"),
            ("type=volume,src=/a,dst=/b", "only bind"),
            ("type=bind,dst=/b", "missing source"),
            ("type=bind,src=/a", "missing destination"),
            ("type=bind,src=a,dst=/b", "absolute"),
            ("type=bind,src=/a,dst=b", "absolute"),
            ("type=bind,src=/a,src=/c,dst=/b", "more than once"),
            (
                "type=bind,src=/a,dst=/b,bind-propagation=slave",
                "unknown key 'bind-propagation'",
            ),
            ("type=bind,src=/a,dst=/b,readonly=true", "takes no value"),
            ("type=bind,src,dst=/b", "needs a value"),
            ("type=bind,,src=/a,dst=/b", "empty field"),
            ("type=bind,src=,dst=/b", "empty source"),
        ] {
            let e = parse_sarus_mount(input).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(input), "{input}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
