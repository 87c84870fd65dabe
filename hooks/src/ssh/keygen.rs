//! `egret ssh-keygen`: the user's keys for the SSH hook, made as the user.

use egret_engine::container::user::UserIdentity;

use crate::ssh::{keys, Settings, SshError};

/// `egret-ssh-hook keygen [--overwrite]`, run by `egret ssh-keygen` as the user.
pub fn keygen_main(args: &[String]) -> std::process::ExitCode {
    match keygen_cmd(args) {
        Ok(msg) => {
            println!("{msg}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret ssh-keygen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn keygen_cmd(args: &[String]) -> Result<String, SshError> {
    let overwrite = match args {
        [] => false,
        [a] if a == "--overwrite" => true,
        other => {
            return Err(SshError::Setting {
                name: "arguments".into(),
                value: other.join(" "),
                what: "expected nothing or --overwrite",
            })
        }
    };
    // Plain user command: never with borrowed privileges.
    if nix::unistd::geteuid() != nix::unistd::getuid() {
        return Err(SshError::Root);
    }
    let settings = Settings::from_env(crate::hook_env)?;
    let user = UserIdentity::current_real()?;
    let dir = keys::keys_dir(settings.hook_base_dir.as_deref(), &user.name, &user.home);
    let dropbearkey = settings.program("dropbearkey")?;
    Ok(match keys::keygen(&dir, &dropbearkey, overwrite)? {
        keys::Keygen::Created => format!("SSH keys created in {}", dir.display()),
        keys::Keygen::Replaced => format!("SSH keys replaced in {}", dir.display()),
        keys::Keygen::Kept => format!(
            "SSH keys already exist in {} (kept; use --overwrite to replace them)",
            dir.display()
        ),
    })
}
