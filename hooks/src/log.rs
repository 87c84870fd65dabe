//! One logging setup for every egret hook: lines `egret <hook>: <message>` on stderr, filtered
//! by the level in the annotation `com.hooks.logging.level`.
//!
//! Levels are accepted by name (`error`, `warn`/`warning`, `info`, `debug`, any case) or by
//! Sarus's numbers, most verbose first: `0` debug, `1` info, `2` warn, `3` error (higher numbers
//! are error too). Missing: info. Unrecognised: info, with a warning saying so.
//!
//! runc captures a hook's stderr and shows it only inside its error when the hook fails, so
//! info lines cost nothing on success and explain the failure when there is one.

use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;

/// The annotation the engine (or the user, `--container-annotation`) sets.
pub const LEVEL_ANNOTATION: &str = egret_engine::hooks::annotations::LOGGING_LEVEL;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub const DEFAULT: Level = Level::Info;

    /// Parses a level name or Sarus number; `None` when it is neither.
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "error" => return Some(Level::Error),
            "warn" | "warning" => return Some(Level::Warn),
            "info" => return Some(Level::Info),
            "debug" => return Some(Level::Debug),
            _ => {}
        }
        match s.parse::<u32>().ok()? {
            0 => Some(Level::Debug),
            1 => Some(Level::Info),
            2 => Some(Level::Warn),
            _ => Some(Level::Error),
        }
    }

    /// The level for an annotation value, and whether the value was understood.
    pub fn from_annotation(value: Option<&str>) -> (Level, bool) {
        match value {
            None => (Level::DEFAULT, true),
            Some(v) => match Level::parse(v) {
                Some(l) => (l, true),
                None => (Level::DEFAULT, false),
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

struct Logger {
    hook: String,
    level: Level,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets the hook's name and level, once per process (later calls are ignored). Before it is
/// called, messages are written with the name "hook" at the default level.
pub fn init(hook: &str, level: Level) {
    let _ = LOGGER.set(Logger {
        hook: hook.to_string(),
        level,
    });
}

/// True when messages at `level` are written.
pub fn enabled(level: Level) -> bool {
    level <= LOGGER.get().map(|l| l.level).unwrap_or(Level::DEFAULT)
}

/// The line written for a message (without the newline).
pub fn format_line(hook: &str, level: Level, msg: &dyn Display) -> String {
    match level {
        Level::Info => format!("egret {hook}: {msg}"),
        other => format!("egret {hook}: {}: {msg}", other.label()),
    }
}

/// Writes `msg` at `level` when enabled, as one write so that concurrent hooks do not interleave
/// within a line.
pub fn write(level: Level, msg: &dyn Display) {
    if !enabled(level) {
        return;
    }
    let hook = LOGGER.get().map(|l| l.hook.as_str()).unwrap_or("hook");
    let mut line = format_line(hook, level, msg);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn error(msg: impl Display) {
    write(Level::Error, &msg);
}
pub fn warn(msg: impl Display) {
    write(Level::Warn, &msg);
}
pub fn info(msg: impl Display) {
    write(Level::Info, &msg);
}
pub fn debug(msg: impl Display) {
    write(Level::Debug, &msg);
}

/// `error!("fmt", args..)`: [`error`] with `format_args!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(format_args!($($arg)*)) };
}
/// `warn!("fmt", args..)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(format_args!($($arg)*)) };
}
/// `info!("fmt", args..)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(format_args!($($arg)*)) };
}
/// `debug!("fmt", args..)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_and_sarus_numbers() {
        for (s, l) in [
            ("error", Level::Error),
            ("WARN", Level::Warn),
            ("warning", Level::Warn),
            (" info ", Level::Info),
            ("Debug", Level::Debug),
            ("0", Level::Debug),
            ("1", Level::Info),
            ("2", Level::Warn),
            ("3", Level::Error),
            ("4", Level::Error),
        ] {
            assert_eq!(Level::parse(s), Some(l), "{s}");
        }
        for s in ["", "-1", "verbose", "1.5"] {
            assert_eq!(Level::parse(s), None, "{s}");
        }
        assert_eq!(Level::from_annotation(None), (Level::Info, true));
        assert_eq!(Level::from_annotation(Some("x")), (Level::Info, false));
        assert_eq!(Level::from_annotation(Some("0")), (Level::Debug, true));
        assert!(Level::Error < Level::Debug);
    }

    #[test]
    fn line_format() {
        assert_eq!(format_line("mount", Level::Info, &"ok"), "egret mount: ok");
        assert_eq!(
            format_line("mount", Level::Error, &format_args!("bad {}", 1)),
            "egret mount: error: bad 1"
        );
    }
}
