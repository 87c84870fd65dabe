//! `egret`: a Sarus-compatible command line over the engine. Thin: parsing, dispatch to
//! [`commands`], and the one place an error is printed (after `egret: `).

mod commands;
mod context;
mod privilege;
mod usage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    check, containers, env, hooks, run, squashfs_file, ssh_keygen, store, CommandError,
};
use context::Context;
use privilege::Caller;

#[derive(Parser)]
#[command(
    name = "egret",
    version,
    about = "Run OCI/Docker images as HPC containers"
)]
struct Cli {
    /// Config file (root only; users always get /etc/egret/egret.json).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// More output (INFO).
    #[arg(long, global = true)]
    verbose: bool,
    /// Much more output (DEBUG).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import an image from a registry into the store.
    Pull(store::pull::PullArgs),
    /// Import a docker-archive or OCI archive tar into the store under NAME.
    Load(store::load::LoadArgs),
    /// List stored images.
    Images(store::images::ImagesArgs),
    /// Write an image from a registry to a portable squashfs file (any user; no store).
    Import(squashfs_file::ImportArgs),
    /// Write a stored image to a squashfs file.
    Export(squashfs_file::ExportArgs),
    /// Remove a stored image.
    Rmi(store::rmi::RmiArgs),
    /// Run a command in a container (root).
    Run(run::RunArgs),
    /// List the running containers started with `egret run` (root).
    Ps,
    /// Stop a running container by name: SIGTERM, then SIGKILL after 10 s (root).
    Kill(containers::KillArgs),
    /// List the configured OCI hooks.
    Hooks(hooks::HooksArgs),
    /// Make your SSH keys for `--container-ssh` (once; --overwrite replaces them).
    SshKeygen(ssh_keygen::SshKeygenArgs),
    /// Environment definition files: `env check NAME` prints what `srun --environment=NAME` gets.
    Env(env::EnvArgs),
    /// Check that everything egret trusts as root is root-owned and not writable by others.
    Check,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // Before anything else (setuid: the effective uid becomes the caller's at once).
    let caller = match Caller::at_start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("egret: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match dispatch(cli, caller) {
        Ok(code) => code,
        Err(e) => {
            match e.sarus_text() {
                Some(text) => eprintln!("{text}"),
                None => eprintln!("egret: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// The command line, or what Sarus prints instead: its general help for `egret`, `egret help`
/// and `egret --help`, its texts for options and arguments it cannot take.
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verb = usage::verb(&args);
    let general = match verb {
        // Only global options (or none): anything else is clap's to answer or refuse.
        None => args
            .iter()
            .all(|a| ["--help", "-h", "--verbose", "--debug"].contains(&a.as_str())),
        Some("help") => args.iter().skip_while(|a| *a != "help").nth(1).is_none(),
        Some(_) => false,
    };
    if general {
        print!("{}", usage::general_help());
        return Err(ExitCode::SUCCESS);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match usage::parse_error(&e, &args) {
            Some(text) => {
                eprintln!("{text}");
                return Err(ExitCode::FAILURE);
            }
            None => e.exit(),
        },
    };
    // `run` takes everything from the image on as the command: an option before it that is
    // not one of run's reaches here as the "image".
    if let Cmd::Run(a) = &cli.cmd {
        if let Some(first) = a.args.first().filter(|f| f.starts_with('-')) {
            eprintln!("unrecognised option '{first}'\nSee 'egret help run'");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(cli)
}

/// The verbs that use root: the store, mounts and runc's state. The others never have it.
fn uses_privilege(cmd: &Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Pull(_)
            | Cmd::Load(_)
            | Cmd::Images(_)
            | Cmd::Rmi(_)
            | Cmd::Export(_)
            | Cmd::Run(_)
            | Cmd::Ps
            | Cmd::Kill(_)
    )
}

/// Runs the command. `version` needs no config (loading one prints nothing, so skipping it
/// changes nothing the user sees).
fn dispatch(cli: Cli, caller: Caller) -> Result<ExitCode, CommandError> {
    let privileged = uses_privilege(&cli.cmd);
    if !privileged {
        caller.drop_root()?;
    }
    if let Cmd::Version = cli.cmd {
        println!("egret {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let c = &Context::new(cli.config.as_deref(), cli.verbose, cli.debug, caller)?;
    if privileged && c.caller.is_setuid() {
        // A user's setuid egret acts only over an installation root alone can change. The
        // checks run as root (they look only at the admin's paths, named by root's config) so
        // that they can use and keep the root-only cache of a pass in runDir: microseconds
        // instead of a millisecond or more on every `egret run`; nothing else happens as root
        // before they pass.
        c.caller.become_root()?;
        c.check_installation()?;
    }
    use CommandError as E;
    match cli.cmd {
        Cmd::Pull(a) => store::pull::pull(c, a).map_err(E::Pull),
        Cmd::Load(a) => store::load::load(c, a).map_err(E::Load),
        Cmd::Images(a) => store::images::images(c, a).map_err(E::Images),
        Cmd::Rmi(a) => store::rmi::rmi(c, a).map_err(E::Rmi),
        Cmd::Import(a) => squashfs_file::import(c, a).map_err(E::Import),
        Cmd::Export(a) => squashfs_file::export(c, a).map_err(E::Export),
        Cmd::Run(a) => Ok(run::run(c, a)?),
        Cmd::Hooks(a) => Ok(hooks::hooks(c, a)?),
        Cmd::Check => Ok(check::check(c)),
        Cmd::Ps => containers::ps(c).map_err(E::Ps),
        Cmd::Kill(a) => containers::kill(c, a).map_err(E::Kill),
        Cmd::SshKeygen(a) => Ok(ssh_keygen::ssh_keygen(c, a)?),
        Cmd::Env(a) => Ok(env::env(c, a)?),
        Cmd::Version => Ok(ExitCode::SUCCESS), // answered above
    }
}
