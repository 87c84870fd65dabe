//! The MPI hook policy: which hooks.d files are MPI hooks, the MPI type each serves, and whether
//! a `--mpi-hook` request is served at all.

use crate::hooks::annotations::{MPI_ENABLED, MPI_TYPE};
use crate::hooks::schema::HookConfig;

/// A `--mpi-hook` request no MPI hook of the site serves; `configured` are the MPI types the
/// site's MPI hooks serve (an empty one: any type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpiRequestError {
    #[error(
        "{option}: no MPI type given and no defaultMPIType set ({})",
        describe_configured(configured)
    )]
    NoTypeNoDefault {
        option: &'static str,
        configured: Vec<String>,
    },
    #[error(
        "{option}: no MPI hook serves the default MPI type '{mpi_type}' ({})",
        describe_configured(configured)
    )]
    DefaultTypeNotServed {
        option: &'static str,
        mpi_type: String,
        configured: Vec<String>,
    },
    #[error(
        "{option}={mpi_type}: no MPI hook serves this MPI type ({})",
        describe_configured(configured)
    )]
    TypeNotServed {
        option: &'static str,
        mpi_type: String,
        configured: Vec<String>,
    },
}

/// An MPI hook: one whose annotation conditions look at `com.hooks.mpi.enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiHook {
    pub name: String,
    /// The `com.hooks.mpi.type` pattern without its anchors; empty when it accepts any type.
    pub mpi_type: String,
    /// The pattern as the hook file writes it (what `hooks --mpi` shows, as Sarus does).
    pub pattern: String,
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
            let pattern = ty.map(|(_, v, _, _)| v.clone()).unwrap_or_default();
            let mpi_type = pattern
                .trim_start_matches('^')
                .trim_end_matches('$')
                .to_string();
            let default = match (ty, default_mpi_type) {
                (Some((_, _, _, v)), Some(d)) => v.is_match(d),
                _ => false,
            };
            MpiHook {
                name: h.name.clone(),
                mpi_type,
                pattern,
                default,
            }
        })
        .collect()
}

/// `--mpi-hook[=TYPE]`: an error when no hook would serve the request (the container would
/// otherwise run silently without the host's MPI). `requested` is TYPE, empty for the site's
/// `defaultMPIType`; `option` is how the user asked (`--mpi-hook` under srun, `--mpi` for
/// `egret run`), for the error. Only the hooks' `com.hooks.mpi.*` conditions are looked at.
pub fn check_mpi_request(
    hooks: &[HookConfig],
    requested: &str,
    default_mpi_type: Option<&str>,
    option: &'static str,
) -> Result<(), MpiRequestError> {
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
    let configured: Vec<String> = mpi.into_iter().map(|m| m.mpi_type).collect();
    Err(if requested.is_empty() && ty.is_empty() {
        MpiRequestError::NoTypeNoDefault { option, configured }
    } else if requested.is_empty() {
        MpiRequestError::DefaultTypeNotServed {
            option,
            mpi_type: ty.to_string(),
            configured,
        }
    } else {
        MpiRequestError::TypeNotServed {
            option,
            mpi_type: ty.to_string(),
            configured,
        }
    })
}

/// What the MPI hooks of the site offer, for the end of a [`MpiRequestError`].
fn describe_configured(configured: &[String]) -> String {
    if configured.is_empty() {
        "no MPI hook is configured".to_string()
    } else {
        format!("MPI types configured: {}", configured.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::schema::parse_hook;
    use std::path::Path;

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
        assert_eq!(
            check_mpi_request(&hooks, "mpich", None, "--mpi-hook"),
            Ok(())
        );
        assert_eq!(
            check_mpi_request(&hooks, "", Some("mpich"), "--mpi-hook"),
            Ok(())
        );
        let e = check_mpi_request(&hooks, "unknowntype", Some("mpich"), "--mpi-hook")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--mpi-hook=unknowntype: no MPI hook serves this MPI type (MPI types configured: mpich)"
        );
        let e = check_mpi_request(&hooks, "", None, "--mpi-hook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no defaultMPIType"), "{e}");
        let e = check_mpi_request(&hooks, "", Some("openmpi"), "--mpi-hook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default MPI type 'openmpi'"), "{e}");
        let e = check_mpi_request(&[other], "mpich", None, "--mpi-hook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no MPI hook is configured"), "{e}");
        // A hook for any type serves every request, also one without a type.
        let any = hook(
            "05-any",
            r#"{"annotations":{"^com.hooks.mpi.enabled$":"^true$"}}"#,
        );
        assert_eq!(
            check_mpi_request(std::slice::from_ref(&any), "whatever", None, "--mpi-hook"),
            Ok(())
        );
        assert_eq!(check_mpi_request(&[any], "", None, "--mpi-hook"), Ok(()));
    }
}
