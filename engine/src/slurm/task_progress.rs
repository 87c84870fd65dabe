//! Import progress for the user's terminal: lines go to local task 0 of the step (once it has
//! connected; earlier lines wait), and every line goes to the launcher's log. Routine lines
//! (resolving, "up to date") stay out of the job's output.

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use crate::image::progress::Progress;

use super::protocol::{self, ToTask};

#[derive(Default)]
struct Sink {
    stream: Option<UnixStream>,
    backlog: Vec<String>,
}

/// Shared between the accepting thread (which attaches task 0) and the import.
#[derive(Clone, Default)]
pub struct TaskProgress {
    sink: Arc<Mutex<Sink>>,
}

impl TaskProgress {
    /// Task 0 has connected: send it what was said so far, and everything from now on.
    pub fn attach(&self, stream: &UnixStream) {
        let Ok(mut clone) = stream.try_clone() else {
            return;
        };
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        for line in sink.backlog.drain(..) {
            let _ = protocol::send(&mut clone, &ToTask::Message(line));
        }
        sink.stream = Some(clone);
    }

    /// No more lines for the task (its container starts now).
    pub fn detach(&self) {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
    }

    fn line(&self, msg: String, for_user: bool) {
        eprintln!("{msg}");
        if !for_user {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        match sink.stream.as_mut() {
            Some(s) => {
                let _ = protocol::send(s, &ToTask::Message(msg));
            }
            None => sink.backlog.push(msg),
        }
    }
}

impl Progress for TaskProgress {
    fn phase(&self, msg: &str) {
        self.line(format!("egret: {msg}"), !msg.starts_with("resolving"));
    }
    fn advance(&self, _bytes: u64, _total: Option<u64>, _done: usize, _total_layers: usize) {}
    fn warn(&self, msg: &str) {
        self.line(format!("egret: warning: {msg}"), true);
    }
    fn done(&self, msg: &str) {
        self.line(format!("egret: {msg}"), !msg.contains("up to date"));
    }
}
