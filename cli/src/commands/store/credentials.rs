//! `egret pull`'s registry credentials, Sarus' way: `--password-stdin` reads one line;
//! `--login` (or a user name alone) prompts on the terminal. The password never appears on a
//! command line.

use std::io::{self, BufRead, Write};

use egret_engine::image::registry::FetchAuth;

use super::pull::PullArgs;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("--password-stdin needs --username")]
    PasswordStdinWithoutUsername,
    #[error("--password-stdin: cannot read standard input: {0}")]
    ReadStdin(#[source] io::Error),
    #[error("--password-stdin: standard input holds no password")]
    NoPassword,
    #[error("--login: no terminal to prompt on ({0}); use --password-stdin")]
    NoTerminal(#[source] io::Error),
    #[error("--login: {0}")]
    ReadTerminal(#[source] io::Error),
    /// Switching the terminal's echo off (or on).
    #[error("--login: {0}")]
    Termios(#[source] nix::Error),
    #[error("--login: empty user name")]
    EmptyUser,
}

/// The credentials `pull`'s options ask for (none: the user's auth file, if any).
pub fn from_args(a: &PullArgs) -> Result<FetchAuth, CredentialsError> {
    if a.password_stdin {
        let user = a
            .username
            .clone()
            .ok_or(CredentialsError::PasswordStdinWithoutUsername)?;
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(CredentialsError::ReadStdin)?;
        let pass = line.trim_end_matches(['\n', '\r']).to_string();
        if pass.is_empty() {
            return Err(CredentialsError::NoPassword);
        }
        return Ok(FetchAuth {
            authfile: None,
            creds: Some((user, pass)),
        });
    }
    if a.login || a.username.is_some() {
        let (user, pass) = prompt(a.username.as_deref())?;
        return Ok(FetchAuth {
            authfile: None,
            creds: Some((user, pass)),
        });
    }
    Ok(FetchAuth::default())
}

/// Asks on `/dev/tty` for the user name (unless given) and the password (not echoed).
fn prompt(user: Option<&str>) -> Result<(String, String), CredentialsError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(CredentialsError::NoTerminal)?;
    let mut out = &tty;
    let mut input = io::BufReader::new(&tty);
    let user = match user {
        Some(u) => u.to_string(),
        None => {
            let _ = write!(out, "Username: ");
            let mut u = String::new();
            input
                .read_line(&mut u)
                .map_err(CredentialsError::ReadTerminal)?;
            u.trim().to_string()
        }
    };
    if user.is_empty() {
        return Err(CredentialsError::EmptyUser);
    }
    let _ = write!(out, "Password: ");
    let _ = out.flush();
    let saved = tcgetattr(&tty).map_err(CredentialsError::Termios)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &silent).map_err(CredentialsError::Termios)?;
    let mut pass = String::new();
    let read = input.read_line(&mut pass);
    // Echo comes back even when reading failed.
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writeln!(out);
    read.map_err(CredentialsError::ReadTerminal)?;
    Ok((user, pass.trim_end_matches(['\n', '\r']).to_string()))
}
