//! `egret env check NAME`: the environment an EDF resolves to, as srun would resolve it here
//! (this directory, this `EDF_PATH`, these variables), with the file and line of every value.
//! It reads the files as the user (this verb never has root).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use egret_engine::edf::{self, EdfError, Resolved, Sourced};

use crate::context::Context;

#[derive(clap::Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    cmd: EnvCmd,
}

#[derive(clap::Subcommand)]
enum EnvCmd {
    /// Print what `srun --environment=NAME` would get: image, mounts, workdir, env and
    /// annotations, and the file each came from.
    Check {
        /// A name in EDF_PATH (default ~/.edf) without `.toml`, /abs/path.toml or ./rel.toml.
        environment: String,
    },
}

pub fn env(c: &Context, a: EnvArgs) -> Result<ExitCode, EdfError> {
    let EnvCmd::Check { environment } = a.cmd;
    let vars: Vec<(String, String)> = c
        .caller
        .env
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
        .collect();
    let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let home = lookup("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| c.caller.identity.home.clone());
    let host = edf::Host {
        search: edf::SearchPath {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            home,
            edf_path: lookup("EDF_PATH"),
        },
        env: &lookup,
    };
    let r = edf::resolve(&environment, &host)?;
    print!("{}", format(&r));
    Ok(ExitCode::SUCCESS)
}

/// The listing: one `key: value  (file:line)` line per value, lists indented below their key.
pub fn format(r: &Resolved) -> String {
    fn from<T>(s: &Sourced<T>) -> String {
        format!("({}:{})", s.file, s.line)
    }
    let mut out = String::new();
    let _ = writeln!(out, "environment: {}", r.environment);
    let _ = writeln!(out, "files: {}", r.files.join(", "));
    match &r.image {
        Some(i) => writeln!(out, "image: {}  {}", i.value, from(i)),
        None => writeln!(out, "image: (none: srun needs --container-image)"),
    }
    .ok();
    match &r.workdir {
        Some(w) => writeln!(out, "workdir: {}  {}", w.value, from(w)),
        None => writeln!(out, "workdir: (the image's)"),
    }
    .ok();
    for (key, v, default) in [
        ("entrypoint", &r.entrypoint, "(the site's default)"),
        ("writable", &r.writable, "(true)"),
    ] {
        match v {
            Some(b) => writeln!(out, "{key}: {}  {}", b.value, from(b)),
            None => writeln!(out, "{key}: {default}"),
        }
        .ok();
    }
    let _ = writeln!(out, "mounts:");
    for m in &r.mounts {
        let _ = writeln!(out, "  {}  {}", m.value, from(m));
    }
    let _ = writeln!(out, "env:");
    for e in &r.env {
        match &e.value.value {
            Some(v) => writeln!(out, "  {}={}  {}", e.value.name, v, from(e)),
            None => writeln!(out, "  {} (unset)  {}", e.value.name, from(e)),
        }
        .ok();
    }
    let _ = writeln!(out, "annotations:");
    for a in &r.annotations {
        let _ = writeln!(out, "  {}={}  {}", a.value.0, a.value.1, from(a));
    }
    out
}
