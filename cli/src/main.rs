//! `egret`: a Sarus-compatible command line over the engine. Thin: parsing and printing only.

mod image_cmds;
mod ps_cmds;
mod run_cmds;
mod sqsh_cmds;
mod ssh_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Pull(image_cmds::PullArgs),
    /// Import a docker-archive or OCI archive tar into the store under NAME.
    Load(image_cmds::LoadArgs),
    /// List stored images.
    Images(image_cmds::ImagesArgs),
    /// Write an image from a registry to a portable squashfs file (any user; no store).
    Import(sqsh_cmds::ImportArgs),
    /// Write a stored image to a squashfs file.
    Export(sqsh_cmds::ExportArgs),
    /// Remove a stored image.
    Rmi(image_cmds::RmiArgs),
    /// Run a command in a container (root).
    Run(run_cmds::RunArgs),
    /// List the running containers started with `egret run` (root).
    Ps,
    /// Stop a running container by name: SIGTERM, then SIGKILL after 10 s (root).
    Kill(ps_cmds::KillArgs),
    /// List the configured OCI hooks.
    Hooks(run_cmds::HooksArgs),
    /// Make your SSH keys for `--container-ssh` (once; --overwrite replaces them).
    SshKeygen(ssh_cmds::SshKeygenArgs),
    /// Check that everything egret trusts as root is root-owned and not writable by others.
    Check,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = image_cmds::Context::new(cli.config.as_deref(), cli.verbose, cli.debug);
    let result = match cli.cmd {
        Cmd::Pull(a) => ctx.and_then(|c| image_cmds::pull(&c, a)),
        Cmd::Load(a) => ctx.and_then(|c| image_cmds::load(&c, a)),
        Cmd::Images(a) => ctx.and_then(|c| image_cmds::images(&c, a)),
        Cmd::Rmi(a) => ctx.and_then(|c| image_cmds::rmi(&c, a)),
        Cmd::Import(a) => ctx.and_then(|c| sqsh_cmds::import(&c, a)),
        Cmd::Export(a) => ctx.and_then(|c| sqsh_cmds::export(&c, a)),
        Cmd::Run(a) => ctx.and_then(|c| run_cmds::run(&c, a)),
        Cmd::Hooks(a) => ctx.and_then(|c| run_cmds::hooks(&c, a)),
        Cmd::Check => ctx.and_then(|c| run_cmds::check(&c)),
        Cmd::Ps => ctx.and_then(|c| ps_cmds::ps(&c)),
        Cmd::Kill(a) => ctx.and_then(|c| ps_cmds::kill(&c, a)),
        Cmd::SshKeygen(a) => ctx.and_then(|c| ssh_cmds::ssh_keygen(&c, a)),
        Cmd::Version => {
            println!("egret {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("egret: {msg}");
            ExitCode::FAILURE
        }
    }
}
