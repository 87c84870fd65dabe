//! What `egret` prints when it is asked for help or cannot parse its command line: Sarus's
//! texts, spelled `egret`, since scripts written for `sarus` read them. (Errors of a verb that
//! parsed are egret's own one line, `egret: …`.)

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The verbs and what each does, in the order `egret help` lists them.
const COMMANDS: &[(&str, &str)] = &[
    ("help", "Print help message about a command"),
    (
        "check",
        "Check that everything egret trusts as root is root-owned",
    ),
    (
        "env",
        "Show what an environment definition file (EDF) resolves to",
    ),
    ("export", "Write a stored image to a squashfs file"),
    ("hooks", "List configured hooks"),
    ("images", "List images"),
    (
        "import",
        "Write an image from a registry to a squashfs file",
    ),
    ("kill", "Stop a running container"),
    (
        "load",
        "Load the contents of a tarball to create a filesystem image",
    ),
    ("ps", "List running containers"),
    ("pull", "Pull an image from a registry"),
    ("rmi", "Remove an image"),
    ("run", "Run a command in a new container"),
    (
        "ssh-keygen",
        "Generate the SSH keys in the local repository",
    ),
    ("version", "Show the egret version information"),
];

/// Verbs that take no option at all (their clap errors become Sarus's "doesn't support").
const WITHOUT_OPTIONS: &[&str] = &["version", "ps", "check", "help"];
/// Verbs whose last argument is an image reference.
const WITH_REFERENCE: &[&str] = &["pull", "rmi", "load", "import", "export"];

/// For `VERB ... REF OPTION`, the reference the option follows (Sarus's "Invalid image ID").
fn after_a_reference<'a>(args: &'a [String], verb: &str, option: &str) -> Option<&'a str> {
    if !WITH_REFERENCE.contains(&verb) {
        return None;
    }
    let at = args.iter().position(|a| a == verb)?;
    let opt = args.iter().skip(at).position(|a| a == option)? + at;
    args[at + 1..opt]
        .iter()
        .rev()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
}

/// `egret`, `egret help`, `egret --help`: the general help, as `sarus --help` prints it.
pub fn general_help() -> String {
    let mut s = String::from(
        "Usage: egret COMMAND\n\n\
         Run OCI/Docker images as HPC containers (Sarus's command line)\n\n\
         Options:\n  \
         --config FILE   Configuration file (root only)\n  \
         --verbose       Print more information\n  \
         --debug         Print much more information\n  \
         --version       Print the version\n  \
         --help          Print this help\n\n\
         Commands:\n",
    );
    for (name, what) in COMMANDS {
        s.push_str(&format!("  {name}: {what}\n"));
    }
    s.push_str("\nSee 'egret help COMMAND' for the options of a command.\n");
    s
}

/// The verb of the command line (`args` without the program name): the first word that is not
/// a global option or its value.
pub fn verb(args: &[String]) -> Option<&str> {
    let mut words = args.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "--config" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
    None
}

fn context(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        other => Some(other.to_string()),
    }
}

/// Sarus's wording of a command-line error (stderr, exit code 1), or `None` for what is not an
/// error (help and version requests, which clap prints itself).
pub fn parse_error(err: &clap::Error, args: &[String]) -> Option<String> {
    let verb = verb(args);
    let see = |v: &str| format!("See 'egret help {v}'");
    let arg = context(err, ContextKind::InvalidArg).unwrap_or_default();
    // clap names an option with its value placeholder (`--x <X>`); Sarus names it as typed.
    let option = arg.split_whitespace().next().unwrap_or("").to_string();
    let text = match (err.kind(), verb) {
        (ErrorKind::DisplayHelp | ErrorKind::DisplayVersion, _) => return None,
        (ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, None) => return None,
        (ErrorKind::InvalidSubcommand, _) => {
            let name = context(err, ContextKind::InvalidSubcommand).unwrap_or_default();
            format!("'{name}' is not an egret command\nSee 'egret help'")
        }
        (ErrorKind::UnknownArgument, None) => {
            format!("unrecognised option '{option}'\nSee 'egret help'")
        }
        (ErrorKind::UnknownArgument, Some(v)) if option.starts_with('-') => {
            match (
                WITHOUT_OPTIONS.contains(&v),
                after_a_reference(args, v, &option),
            ) {
                (true, _) => format!("Command '{v}' doesn't support options\n{}", see(v)),
                // `egret pull alpine --x`: Sarus reads it as a reference with options.
                (false, Some(reference)) => format!(
                    "Invalid image ID [\"{reference}\", \"{option}\"]\n\
                     The image ID is expected to be a single token without options\n{}",
                    see(v)
                ),
                (false, None) => format!("unrecognised option '{option}'\n{}", see(v)),
            }
        }
        (
            ErrorKind::UnknownArgument
            | ErrorKind::MissingRequiredArgument
            | ErrorKind::WrongNumberOfValues
            | ErrorKind::TooManyValues
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
            Some(v),
        ) => format!("Bad number of arguments for command '{v}'\n{}", see(v)),
        (_, v) => {
            // Any other clap error: its own first line, without clap's `error: `.
            let first = err.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            match v {
                Some(v) => format!("{first}\n{}", see(v)),
                None => format!("{first}\nSee 'egret help'"),
            }
        }
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    #[command(name = "egret")]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<String>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Images {
            #[arg(long)]
            digests: bool,
        },
        Load {
            archive: String,
            name: String,
        },
        Version,
    }

    fn error_of(line: &[&str]) -> String {
        let args: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        let argv = std::iter::once("egret".to_string()).chain(args.iter().cloned());
        let err = Cli::try_parse_from(argv).unwrap_err();
        parse_error(&err, &args).unwrap_or_else(|| format!("no error for {line:?}"))
    }

    #[test]
    fn errors_use_sarus_texts() {
        Cli::command().debug_assert();
        assert_eq!(
            error_of(&["--invalid-option"]),
            "unrecognised option '--invalid-option'\nSee 'egret help'"
        );
        assert_eq!(
            error_of(&["invalid-command"]),
            "'invalid-command' is not an egret command\nSee 'egret help'"
        );
        assert_eq!(
            error_of(&["images", "--invalid-option"]),
            "unrecognised option '--invalid-option'\nSee 'egret help images'"
        );
        assert_eq!(
            error_of(&["--config", "/x", "load", "archive.tar"]),
            "Bad number of arguments for command 'load'\nSee 'egret help load'"
        );
        assert_eq!(
            error_of(&["load", "archive.tar", "name", "extra"]),
            "Bad number of arguments for command 'load'\nSee 'egret help load'"
        );
        assert_eq!(
            error_of(&["version", "--invalid-option"]),
            "Command 'version' doesn't support options\nSee 'egret help version'"
        );
        assert_eq!(
            error_of(&["images", "extra-argument"]),
            "Bad number of arguments for command 'images'\nSee 'egret help images'"
        );
        assert_eq!(
            error_of(&["load", "archive.tar", "alpine", "--invalid-option"]),
            "Invalid image ID [\"alpine\", \"--invalid-option\"]\n\
             The image ID is expected to be a single token without options\n\
             See 'egret help load'"
        );
        assert_eq!(
            error_of(&["version", "extra-argument"]),
            "Bad number of arguments for command 'version'\nSee 'egret help version'"
        );
    }

    #[test]
    fn the_general_help_starts_as_sarus_does() {
        let h = general_help();
        assert!(h.starts_with("Usage: egret COMMAND\n"), "{h}");
        for (name, _) in COMMANDS {
            assert!(h.contains(&format!("  {name}: ")), "{name} in {h}");
        }
    }

    #[test]
    fn the_verb_skips_global_options() {
        let v = |a: &[&str]| {
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            verb(&a).map(String::from)
        };
        assert_eq!(
            v(&["--verbose", "--config", "run", "pull"]).as_deref(),
            Some("pull")
        );
        assert_eq!(v(&["--debug"]), None);
    }
}
