//! Import progress for people: one updating line on a terminal, plain lines otherwise.
//!
//! The SPANK plugin implements [`Progress`] itself (or wraps [`LineProgress`]) to route lines to
//! the user's srun stderr; the CLI uses [`StderrProgress`].

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

pub trait Progress: Send + Sync {
    /// A new phase ("resolving X", "downloading", "squashing 3 layers"): one line.
    fn phase(&self, msg: &str);
    /// Bytes done (and expected, when known) and layers done of the current phase. Called
    /// often; implementations without a terminal may ignore it.
    fn advance(&self, bytes: u64, total: Option<u64>, layers_done: usize, layers_total: usize);
    /// Something the user should know, though the import goes on.
    fn warn(&self, msg: &str);
    /// The final line ("stored X (sha256:…, 12 MB)").
    fn done(&self, msg: &str);
}

/// Progress that only ever produces whole lines, handed to a callback: for logs, the SPANK
/// plugin, and tests.
pub struct LineProgress<F: Fn(&str) + Send + Sync> {
    emit: F,
}

impl<F: Fn(&str) + Send + Sync> LineProgress<F> {
    pub fn new(emit: F) -> Self {
        LineProgress { emit }
    }
}

impl<F: Fn(&str) + Send + Sync> Progress for LineProgress<F> {
    fn phase(&self, msg: &str) {
        (self.emit)(&format!("egret: {msg}"));
    }
    fn advance(&self, _: u64, _: Option<u64>, _: usize, _: usize) {}
    fn warn(&self, msg: &str) {
        (self.emit)(&format!("egret: warning: {msg}"));
    }
    fn done(&self, msg: &str) {
        (self.emit)(&format!("egret: {msg}"));
    }
}

/// Says nothing at all.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str) {}
    fn advance(&self, _: u64, _: Option<u64>, _: usize, _: usize) {}
    fn warn(&self, _: &str) {}
    fn done(&self, _: &str) {}
}

/// The CLI's progress on stderr: a single redrawn line when stderr is a terminal.
pub struct StderrProgress {
    tty: bool,
    state: Mutex<TtyState>,
}

#[derive(Default)]
struct TtyState {
    phase: String,
    /// A partial (redrawable) line is on screen.
    open: bool,
    last_draw: Option<Instant>,
}

impl Default for StderrProgress {
    fn default() -> Self {
        StderrProgress::new(std::io::stderr().is_terminal())
    }
}

impl StderrProgress {
    pub fn new(tty: bool) -> Self {
        StderrProgress {
            tty,
            state: Mutex::new(TtyState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TtyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permanent line (replacing the redrawn one on a terminal, which is then redrawn below
    /// it if the phase goes on).
    fn line(&self, text: &str, redraw_after: bool) {
        let mut st = self.state();
        let mut err = std::io::stderr().lock();
        if st.open {
            let _ = write!(err, "\r\x1b[K");
            st.open = false;
        }
        let _ = writeln!(err, "{text}");
        if redraw_after && self.tty && !st.phase.is_empty() {
            let _ = write!(err, "egret: {}", st.phase);
            let _ = err.flush();
            st.open = true;
        }
    }
}

impl Progress for StderrProgress {
    fn phase(&self, msg: &str) {
        if !self.tty {
            self.line(&format!("egret: {msg}"), false);
            return;
        }
        // On a terminal every phase rewrites the same line.
        let mut st = self.state();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[Kegret: {msg}");
        let _ = err.flush();
        st.phase = msg.to_string();
        st.open = true;
        st.last_draw = None;
    }

    fn advance(&self, bytes: u64, total: Option<u64>, done: usize, layers: usize) {
        if !self.tty {
            return;
        }
        let mut st = self.state();
        if st.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        let amount = match total {
            Some(t) if t > 0 => format!("{} / {}", mb(bytes), mb(t)),
            _ => mb(bytes),
        };
        let layers = if layers > 0 {
            format!(", {done}/{layers} layers")
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[Kegret: {}: {amount}{layers}", st.phase);
        let _ = err.flush();
        st.open = true;
        st.last_draw = Some(Instant::now());
    }

    fn warn(&self, msg: &str) {
        self.line(&format!("egret: warning: {msg}"), true);
    }

    fn done(&self, msg: &str) {
        self.line(&format!("egret: {msg}"), false);
        self.state().phase.clear();
    }
}

/// `12.3 MB` (decimal megabytes, as download tools show them).
pub fn mb(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else if bytes < 10_000_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} GB", bytes as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn line_progress_prefixes_and_skips_byte_updates() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let p = LineProgress::new(move |s: &str| l2.lock().unwrap().push(s.to_string()));
        p.phase("resolving x");
        p.advance(1, Some(2), 0, 1);
        p.warn("careful");
        p.done("stored x");
        assert_eq!(
            *lines.lock().unwrap(),
            vec![
                "egret: resolving x",
                "egret: warning: careful",
                "egret: stored x"
            ]
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(mb(1_500), "1.5 kB");
        assert_eq!(mb(12_345_678), "12.3 MB");
        assert_eq!(mb(12_345_678_901), "12.3 GB");
    }
}
