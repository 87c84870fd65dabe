//! pull, load, images, rmi: Sarus' verbs over the engine's import and store.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use egret_engine::config::Config;
use egret_engine::image::import::{self, PullOptions};
use egret_engine::image::progress::StderrProgress;
use egret_engine::image::reference::{ImageRef, DOCKER_HUB, LOAD_SERVER};
use egret_engine::image::registry::{FetchAuth, Skopeo};
use egret_engine::image::store::{IndexEntry, Store};
use egret_engine::slurm::store_bound;

/// What every command gets: the loaded config and the caller's identity.
pub struct Context {
    pub config: Config,
    /// The file `config` came from (the default path when none exists).
    pub config_path: PathBuf,
    pub verbose: bool,
    pub debug: bool,
    /// The real uid/gid: whose index `images`, `pull`, `load` and `rmi` work on.
    pub uid: u32,
    pub gid: u32,
}

impl Context {
    pub fn new(path: Option<&Path>, verbose: bool, debug: bool) -> Result<Context, String> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid().as_raw();
        // The config decides what runs as root: only root may point at another one.
        let env_path = std::env::var_os("EGRET_CONFIG").map(PathBuf::from);
        let chosen = match (path, env_path) {
            (Some(p), _) if !uid.is_root() => {
                return Err(format!(
                    "--config {}: only root may choose the config file; see 'egret --help'",
                    p.display()
                ))
            }
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) if uid.is_root() => Some(p),
            _ => None,
        };
        let default = Path::new(egret_engine::config::DEFAULT_CONFIG_PATH);
        let config = match &chosen {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None if default.exists() => Config::load(default).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        Ok(Context {
            config,
            config_path: chosen.unwrap_or_else(|| default.to_path_buf()),
            verbose,
            debug,
            uid: uid.as_raw(),
            gid,
        })
    }
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Registry user name (the password comes from --password-stdin or a --login prompt).
    #[arg(short = 'u', long, value_name = "USER")]
    username: Option<String>,
    /// Read the registry password from standard input (one line).
    #[arg(long, conflicts_with = "login")]
    password_stdin: bool,
    /// Prompt for the registry user name and password on the terminal.
    #[arg(long)]
    login: bool,
    /// Pull into the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// Where to download layers while importing (default: tempDir from the config).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// [REGISTRY/]REPOSITORY[:TAG][@DIGEST], or REGISTRY#REPOSITORY[:TAG] (enroot form).
    #[arg(value_name = "REF")]
    reference: String,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Load into the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// Where to unpack the archive's layers while importing (default: tempDir).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// A docker-archive (`docker save`) or OCI archive tar, optionally gzipped.
    #[arg(value_name = "ARCHIVE")]
    archive: PathBuf,
    /// The name to store it under; it is listed as load/library/NAME:TAG.
    #[arg(value_name = "NAME[:TAG]")]
    name: String,
}

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Show the manifest digests.
    #[arg(long)]
    digests: bool,
    /// List the centralized repository instead of your own images.
    #[arg(long)]
    centralized_repository: bool,
}

#[derive(clap::Args)]
pub struct RmiArgs {
    /// Remove from the centralized repository (admins).
    #[arg(long)]
    centralized_repository: bool,
    /// REPOSITORY[:TAG], REPOSITORY@DIGEST, REPOSITORY:TAG@DIGEST, or a digest alone (every
    /// name of it), as `egret images [--digests]` shows them.
    #[arg(value_name = "REF")]
    reference: String,
}

/// Every error names the command and where to read more, on one line.
pub(crate) fn usage(cmd: &str, msg: impl std::fmt::Display) -> String {
    let msg: String = msg
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{cmd}: {msg}; see 'egret {cmd} --help'")
}

fn need_root(cmd: &str) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(format!(
        "{cmd}: needs root (the store is root-owned); inside Slurm use srun --container-image; \
         see 'egret {cmd} --help'"
    ))
}

fn open_store(c: &Context, cmd: &str, centralized: bool) -> Result<Store, String> {
    let timings = &c.config.repository_metadata_lock_timings;
    if c.verbose || c.debug {
        let root = match centralized {
            true => central_dir(c, cmd)?,
            false => c.config.local_repository_base_dir.as_path(),
        };
        eprintln!(
            "egret: store {} (user {}), temp dir {}",
            root.display(),
            c.uid,
            c.config.temp_dir.display()
        );
    }
    let store = if centralized {
        Store::open_centralized(central_dir(c, cmd)?, timings)
    } else {
        Store::open(&c.config.local_repository_base_dir, c.uid, c.gid, timings)
    };
    store.map_err(|e| usage(cmd, e))
}

fn central_dir<'a>(c: &'a Context, cmd: &str) -> Result<&'a Path, String> {
    c.config
        .centralized_repository_dir
        .as_deref()
        .ok_or_else(|| {
            usage(
                cmd,
                "--centralized-repository: the config sets no centralizedRepositoryDir",
            )
        })
}

pub fn pull(c: &Context, a: PullArgs) -> Result<ExitCode, String> {
    let r = ImageRef::parse(&a.reference).map_err(|e| usage("pull", e))?;
    need_root("pull")?;
    let auth = credentials(&a).map_err(|e| usage("pull", e))?;
    let store = open_store(c, "pull", a.centralized_repository)?;
    let opts = PullOptions {
        auth,
        temp_dir: a.temp_dir,
        progress: Arc::new(StderrProgress::default()),
        ..PullOptions::default()
    };
    let fetcher = Skopeo::new(&c.config);
    let pulled =
        import::pull_image(&c.config, &store, &fetcher, &r, &opts).map_err(|e| usage("pull", e))?;
    if !a.centralized_repository {
        store_bound::apply(&c.config, &store, &pulled.image.squashfs);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sarus semantics: `--password-stdin` reads one line; `--login` (or a user name alone)
/// prompts on the terminal. The password never appears on a command line.
fn credentials(a: &PullArgs) -> Result<FetchAuth, String> {
    if a.password_stdin {
        let user = a
            .username
            .clone()
            .ok_or("--password-stdin needs --username")?;
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("--password-stdin: cannot read standard input: {e}"))?;
        let pass = line.trim_end_matches(['\n', '\r']).to_string();
        if pass.is_empty() {
            return Err("--password-stdin: standard input holds no password".into());
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

fn prompt(user: Option<&str>) -> Result<(String, String), String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| format!("--login: no terminal to prompt on ({e}); use --password-stdin"))?;
    let mut out = &tty;
    let mut input = std::io::BufReader::new(&tty);
    let user = match user {
        Some(u) => u.to_string(),
        None => {
            let _ = write!(out, "Username: ");
            let mut u = String::new();
            input
                .read_line(&mut u)
                .map_err(|e| format!("--login: {e}"))?;
            u.trim().to_string()
        }
    };
    if user.is_empty() {
        return Err("--login: empty user name".into());
    }
    let _ = write!(out, "Password: ");
    let _ = out.flush();
    let saved = tcgetattr(&tty).map_err(|e| format!("--login: {e}"))?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &silent).map_err(|e| format!("--login: {e}"))?;
    let mut pass = String::new();
    let read = input.read_line(&mut pass);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writeln!(out);
    read.map_err(|e| format!("--login: {e}"))?;
    Ok((user, pass.trim_end_matches(['\n', '\r']).to_string()))
}

pub fn load(c: &Context, a: LoadArgs) -> Result<ExitCode, String> {
    let name = load_name(&a.name).map_err(|e| usage("load", e))?;
    need_root("load")?;
    let archive = std::path::absolute(&a.archive)
        .map_err(|e| usage("load", format!("{}: {e}", a.archive.display())))?;
    if !archive.is_file() {
        return Err(usage(
            "load",
            format!("{}: no such archive file", archive.display()),
        ));
    }
    let store = open_store(c, "load", a.centralized_repository)?;
    let opts = PullOptions {
        temp_dir: a.temp_dir,
        progress: Arc::new(StderrProgress::default()),
        ..PullOptions::default()
    };
    let fetcher = Skopeo::new(&c.config);
    let loaded = import::load(&c.config, &store, &fetcher, &archive, &name, &opts)
        .map_err(|e| usage("load", e))?;
    if !a.centralized_repository {
        store_bound::apply(&c.config, &store, &loaded.image.squashfs);
    }
    Ok(ExitCode::SUCCESS)
}

/// NAME[:TAG] → `load/library/NAME:TAG` (Sarus' naming of loaded images).
fn load_name(name: &str) -> Result<ImageRef, String> {
    let r = ImageRef::parse(name).map_err(|e| e.to_string())?;
    if r.digest.is_some() {
        return Err(format!("NAME '{name}' must not contain a digest"));
    }
    let explicit_hub = name.starts_with("docker.io/") || name.starts_with("index.docker.io/");
    if r.registry == LOAD_SERVER {
        return Ok(r);
    }
    if r.registry != DOCKER_HUB || explicit_hub || name.contains('#') {
        return Err(format!(
            "NAME '{name}' must not name a registry: loaded images are stored as load/library/NAME"
        ));
    }
    Ok(ImageRef {
        registry: LOAD_SERVER.to_string(),
        ..r
    })
}

pub fn images(c: &Context, a: ImagesArgs) -> Result<ExitCode, String> {
    let timings = &c.config.repository_metadata_lock_timings;
    let store = if a.centralized_repository {
        Store::open_centralized_readonly(central_dir(c, "images")?, timings)
    } else {
        Store::open_readonly(&c.config.local_repository_base_dir, c.uid, c.gid, timings)
    };
    let entries = store.list().map_err(|e| usage("images", e))?;
    let present = |e: &IndexEntry| {
        store
            .image_paths(&e.registry_digest)
            .is_ok_and(|(sqfs, _)| sqfs.exists())
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .filter(|e| present(e))
        .map(|e| {
            let mut row = vec![
                e.short_repository(),
                if e.tag.is_empty() {
                    "<none>".into()
                } else {
                    e.tag.clone()
                },
            ];
            if a.digests {
                row.push(e.registry_digest.clone());
            }
            row.push(e.id.chars().take(12).collect());
            row.push(e.created.clone());
            row.push(e.datasize.clone());
            row.push(e.server.clone());
            row
        })
        .collect();
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE", "SERVER"]);
    print!("{}", table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn rmi(c: &Context, a: RmiArgs) -> Result<ExitCode, String> {
    // A digest alone (`sha256:…`, as `egret images --digests` shows): every name of it.
    let by_digest = a.reference.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    });
    let refs = if by_digest {
        need_root("rmi")?;
        let store = open_store(c, "rmi", a.centralized_repository)?;
        let names: Vec<ImageRef> = store
            .list()
            .map_err(|e| usage("rmi", e))?
            .into_iter()
            .filter(|e| e.registry_digest == a.reference)
            .filter_map(|e| ImageRef::parse(&e.unique_key).ok())
            .collect();
        if names.is_empty() {
            return Err(usage(
                "rmi",
                format!("no image of yours has digest {}", a.reference),
            ));
        }
        names
    } else {
        vec![ImageRef::parse(&a.reference).map_err(|e| usage("rmi", e))?]
    };
    need_root("rmi")?;
    let store = open_store(c, "rmi", a.centralized_repository)?;
    let mut removed = Vec::new();
    for r in &refs {
        match store.remove(r) {
            Ok(gone) => removed.extend(gone),
            // An earlier name of the same digest may have taken this one with it.
            Err(_) if by_digest && !removed.is_empty() => {}
            Err(e) => return Err(usage("rmi", e)),
        }
    }
    for e in removed {
        println!("removed {}", e.unique_key);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names() {
        assert_eq!(
            load_name("my_debian").unwrap().display(),
            "load/library/my_debian:latest"
        );
        assert_eq!(load_name("ns/app:2").unwrap().display(), "load/ns/app:2");
        assert_eq!(
            load_name("load/library/x:1").unwrap().display(),
            "load/library/x:1"
        );
        assert!(load_name("nvcr.io/nvidia/x")
            .unwrap_err()
            .contains("registry"));
        assert!(load_name("docker.io/x").unwrap_err().contains("registry"));
        let d = format!("x@sha256:{}", "a".repeat(64));
        assert!(load_name(&d).unwrap_err().contains("digest"));
        assert!(load_name("Bad").is_err());
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x\n");
    }
}
