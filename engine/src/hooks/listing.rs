//! The tables `egret hooks` prints.

use std::fmt::Write;

use crate::hooks::mpi::MpiHook;
use crate::hooks::schema::HookConfig;

/// `egret hooks`: NAME PATH STAGES.
pub fn format_list(hooks: &[HookConfig]) -> String {
    let rows: Vec<[String; 3]> = hooks
        .iter()
        .map(|h| {
            let stages: Vec<&str> = h.stages.iter().map(|s| s.as_str()).collect();
            [
                h.name.clone(),
                h.hook.path().display().to_string(),
                stages.join(","),
            ]
        })
        .collect();
    table(&["NAME", "PATH", "STAGES"], &rows)
}

/// `egret hooks --mpi`: NAME MPI TYPE, `(default)` after the site's default.
pub fn format_mpi_list(hooks: &[MpiHook]) -> String {
    let rows: Vec<[String; 2]> = hooks
        .iter()
        .map(|h| {
            let ty = if h.default {
                format!("{} (default)", h.pattern)
            } else {
                h.pattern.clone()
            };
            [h.name.clone(), ty]
        })
        .collect();
    table(&["NAME", "MPI TYPE"], &rows)
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::fixtures::{parse, ALWAYS, MPI};
    use crate::hooks::mpi::mpi_hooks;

    #[test]
    fn listings() {
        let hooks = vec![
            parse("/h/05-mpi.json", MPI).unwrap(),
            parse("/h/10-ts.json", ALWAYS).unwrap(),
        ];
        let out = format_list(&hooks);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "PATH", "STAGES"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["05-mpi", "/opt/egret/bin/mpi_hook", "prestart"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["10-ts", "/bin/ts", "createRuntime,poststop"]
        );
        let mpi = mpi_hooks(&hooks, Some("mpich"));
        assert_eq!(
            mpi,
            vec![MpiHook {
                name: "05-mpi".into(),
                mpi_type: "mpich".into(),
                pattern: "^mpich$".into(),
                default: true
            }]
        );
        let out = format_mpi_list(&mpi);
        assert!(
            out.lines().nth(1).unwrap().ends_with(" ^mpich$ (default)"),
            "{out}"
        );
        assert!(!mpi_hooks(&hooks, Some("openmpi"))[0].default);
        assert!(out.starts_with("NAME"));
    }
}
