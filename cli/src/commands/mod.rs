//! One module per verb of `egret`, each with its own error enum. [`CommandError`] is what
//! leaves a command: `main` prints it once, after `egret: `.

pub mod check;
pub mod containers;
pub mod env;
pub mod hooks;
pub mod run;
pub mod squashfs_file;
pub mod ssh_keygen;
pub mod store;

use crate::context::ContextError;

/// A command's failure, as the user reads it (without the `egret: ` that `main` adds).
///
/// The store, squashfs-file and container verbs show their errors as [`usage_line`]s (the
/// command, the problem, where to read more); the others' errors are complete sentences.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Privilege(#[from] crate::privilege::PrivilegeError),
    #[error("{}", usage_line("pull", .0))]
    Pull(#[source] store::pull::PullError),
    #[error("{}", usage_line("load", .0))]
    Load(#[source] store::load::LoadError),
    #[error("{}", usage_line("images", .0))]
    Images(#[source] store::images::ImagesError),
    #[error("{}", usage_line("rmi", .0))]
    Rmi(#[source] store::rmi::RmiError),
    #[error("{}", usage_line("import", .0))]
    Import(#[source] squashfs_file::SquashfsFileError),
    #[error("{}", usage_line("export", .0))]
    Export(#[source] squashfs_file::SquashfsFileError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Hooks(#[from] egret_engine::hooks::schema::HooksError),
    #[error("{}", usage_line("ps", .0))]
    Ps(#[source] containers::ContainersError),
    #[error("{}", usage_line("kill", .0))]
    Kill(#[source] containers::ContainersError),
    #[error(transparent)]
    SshKeygen(#[from] ssh_keygen::SshKeygenError),
    #[error(transparent)]
    Env(#[from] egret_engine::edf::EdfError),
}

impl CommandError {
    /// Sarus's text for the errors scripts written for `sarus` recognise (a bad image
    /// reference, a relative working directory), egret's reason kept on the first line; `None`
    /// for the others, which are egret's one `egret: ` line.
    pub fn sarus_text(&self) -> Option<String> {
        use run::{ImageError, OptionError, RunError};
        let (verb, reference) = match self {
            CommandError::Pull(store::pull::PullError::Reference(r)) => ("pull", r),
            CommandError::Rmi(store::rmi::RmiError::Reference(r)) => ("rmi", r),
            CommandError::Load(store::load::LoadError::Name(r)) => ("load", r),
            CommandError::Run(RunError::Image(ImageError::Reference(r))) => ("run", r),
            // Sarus's one line for a --mount it cannot parse.
            CommandError::Run(RunError::Option(OptionError::Mount(
                egret_engine::container::mounts::MountError::Parse { item, reason },
            ))) => {
                let reason = match reason.as_str() {
                    "missing 'type=bind'" => "'type' must be specified",
                    other => other,
                };
                return Some(format!("Invalid mount request '{item}': {reason}"));
            }
            // Sarus's lines for a --device and an --env it cannot take.
            CommandError::Run(RunError::Option(OptionError::Device(
                egret_engine::container::mounts::MountError::Parse { item, reason },
            ))) => return Some(format!("Invalid device request '{item}': {reason}")),
            CommandError::Run(RunError::Option(OptionError::Env { input, .. }))
                if input.is_empty() =>
            {
                return Some(
                    "Invalid environment variable requested from CLI: empty option value".into(),
                )
            }
            CommandError::Run(RunError::Option(OptionError::Env { input, source })) => {
                return Some(format!(
                    "Error parsing environment variable requested from CLI '{}': {source}",
                    input.escape_debug()
                ))
            }
            CommandError::Run(RunError::Option(OptionError::Workdir(w))) => {
                return Some(format!(
                    "The working directory '{}' is invalid, it needs to be an absolute path.\n\
                     See 'egret help run'",
                    w.display()
                ))
            }
            _ => return None,
        };
        Some(format!(
            "Invalid image ID '{}': {}\nSee 'egret help {verb}'",
            reference.reference, reference.reason
        ))
    }
}

/// `CMD: PROBLEM; see 'egret CMD --help'`, on one line: control characters of the problem
/// (a registry's multi-line answer, say) become spaces.
pub fn usage_line(command: &str, problem: impl std::fmt::Display) -> String {
    let problem: String = problem
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{command}: {problem}; see 'egret {command} --help'")
}
