//! The image's ENTRYPOINT under srun, as pyxis runs it: in the container's own environment, its
//! output hidden unless `--container-entrypoint-log`, the user's command after it with the
//! task's stdio and the host variables the entrypoint did not see.
//!
//! pyxis starts the entrypoint once per node in front of a shell that stops itself, and reads
//! that shell's environment. egret runs one container per task, so the same is done in line, by
//! two `/bin/sh -c` steps around the entrypoint (pyxis needs a shell in the image too):
//!
//! `sh -c PRE sh ENTRYPOINT... sh -c POST sh COMMAND...`
//!
//! - PRE keeps the task's stdout and stderr on two spare descriptors and sends the
//!   entrypoint's output to the launcher's log pipe (or, with the log on, to stderr, where
//!   pyxis prints it), then runs the entrypoint with `sh -c POST sh COMMAND...` as its
//!   arguments (an entrypoint ends with `exec "$@"`);
//! - POST tells the launcher the entrypoint got as far as the command (one byte on the ready
//!   pipe), sources the variables to set after the entrypoint from a descriptor, puts the
//!   task's stdout and stderr back, closes every descriptor of its own and runs the command.
//!
//! The variables travel on a descriptor, not in arguments, so no other user sees them in `ps`.

use crate::container::env::AfterEntrypoint;

/// The descriptors (container numbers) the two steps use; each below 10 (what every `sh`
/// accepts in a redirection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointWrap {
    /// Where the entrypoint's output goes; `None` with the log on (to the task's stderr).
    pub log: Option<u32>,
    /// Written one byte once the entrypoint runs the command.
    pub ready: u32,
    /// The variables to set after the entrypoint (a script for `.`).
    pub env: u32,
    /// Spare numbers for the task's stdout and stderr while the entrypoint runs.
    pub saved_out: u32,
    pub saved_err: u32,
}

/// The shell every wrapped entrypoint needs in the image.
pub const SHELL: &str = "/bin/sh";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--container-entrypoint: descriptor {0} is too high for the image's /bin/sh (at most 9; the task passes too many descriptors)")]
pub struct TooManyFds(pub u32);

impl EntrypointWrap {
    /// The wrap for a container whose descriptors up to `first - 1` are taken.
    pub fn after(first: u32, log_on: bool) -> Result<EntrypointWrap, TooManyFds> {
        let mut next = first;
        let mut take = || {
            let n = next;
            next += 1;
            n
        };
        let log = (!log_on).then(&mut take);
        let w = EntrypointWrap {
            log,
            ready: take(),
            env: take(),
            saved_out: take(),
            saved_err: take(),
        };
        if w.saved_err > 9 {
            return Err(TooManyFds(w.saved_err));
        }
        Ok(w)
    }

    /// How many descriptors the launcher passes beyond the task's own (log, ready, env).
    pub fn passed(&self) -> u32 {
        if self.log.is_some() {
            3
        } else {
            2
        }
    }

    /// The full command line around `entrypoint` and `command`.
    pub fn argv(&self, entrypoint: &[String], command: &[String]) -> Vec<String> {
        let (s, t, r, v) = (self.saved_out, self.saved_err, self.ready, self.env);
        let (pre, close_log) = match self.log {
            Some(l) => (
                format!("exec {s}>&1 {t}>&2 1>&{l} 2>&{l}; exec \"$@\""),
                format!(" {l}>&-"),
            ),
            None => (
                format!("exec {s}>&1 {t}>&2 1>&2; exec \"$@\""),
                String::new(),
            ),
        };
        let post = format!(
            "echo >&{r}; exec {r}>&-{close_log}; . /proc/self/fd/{v}; exec {v}<&- 1>&{s} 2>&{t} {s}>&- {t}>&-; exec \"$@\""
        );
        let mut argv = vec![SHELL.to_string(), "-c".into(), pre, "sh".into()];
        argv.extend(entrypoint.iter().cloned());
        argv.extend([SHELL.to_string(), "-c".into(), post, "sh".into()]);
        argv.extend(command.iter().cloned());
        argv
    }
}

/// The script POST sources: the variables of `after` whose names a shell can set (others,
/// which `sh` cannot export, are left out).
pub fn env_script(after: &[AfterEntrypoint]) -> String {
    let mut out = String::new();
    for a in after {
        let (k, v, always) = match a {
            AfterEntrypoint::IfUnset(k, v) => (k, v, false),
            AfterEntrypoint::Always(k, v) => (k, v, true),
        };
        if !shell_name(k) {
            continue;
        }
        let quoted = format!("'{}'", v.replace('\'', "'\\''"));
        if always {
            out.push_str(&format!("export {k}={quoted}\n"));
        } else {
            out.push_str(&format!("[ -n \"${{{k}+x}}\" ] || export {k}={quoted}\n"));
        }
    }
    out
}

/// A name POSIX `sh` can assign: a letter or `_`, then letters, digits and `_`.
fn shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn descriptors_follow_the_tasks_and_stay_below_ten() {
        let w = EntrypointWrap::after(3, false).unwrap();
        assert_eq!(
            (w.log, w.ready, w.env, w.saved_out, w.saved_err),
            (Some(3), 4, 5, 6, 7)
        );
        assert_eq!(w.passed(), 3);
        let w = EntrypointWrap::after(4, true).unwrap();
        assert_eq!((w.log, w.ready, w.env, w.saved_err), (None, 4, 5, 7));
        assert_eq!(w.passed(), 2);
        let e = EntrypointWrap::after(6, false).unwrap_err();
        assert_eq!(e, TooManyFds(10));
        assert!(e.to_string().starts_with("--container-entrypoint: "), "{e}");
    }

    #[test]
    fn argv_runs_the_entrypoint_between_the_two_steps() {
        let w = EntrypointWrap::after(3, false).unwrap();
        let argv = w.argv(&s(&["/entry.sh", "-x"]), &s(&["echo", "hi"]));
        assert_eq!(argv[0], "/bin/sh");
        assert_eq!(argv[2], "exec 6>&1 7>&2 1>&3 2>&3; exec \"$@\"");
        assert_eq!(&argv[3..6], &s(&["sh", "/entry.sh", "-x"])[..]);
        assert_eq!(
            argv[8],
            "echo >&4; exec 4>&- 3>&-; . /proc/self/fd/5; exec 5<&- 1>&6 2>&7 6>&- 7>&-; exec \"$@\""
        );
        assert_eq!(&argv[9..], &s(&["sh", "echo", "hi"])[..]);
        let on = EntrypointWrap::after(3, true).unwrap();
        let argv = on.argv(&s(&["/e"]), &s(&["true"]));
        assert_eq!(argv[2], "exec 5>&1 6>&2 1>&2; exec \"$@\"");
        assert!(argv[7].starts_with("echo >&3; exec 3>&-; . /proc/self/fd/4;"));
    }

    #[test]
    fn env_script_quotes_and_keeps_what_the_entrypoint_set() {
        let script = env_script(&[
            AfterEntrypoint::IfUnset("A".into(), "it's $x".into()),
            AfterEntrypoint::Always("B".into(), "b".into()),
            AfterEntrypoint::IfUnset("BASH_FUNC_f%%".into(), "() { :; }".into()),
            AfterEntrypoint::IfUnset("1X".into(), "no".into()),
        ]);
        assert_eq!(
            script,
            "[ -n \"${A+x}\" ] || export A='it'\\''s $x'\nexport B='b'\n"
        );
    }
}
