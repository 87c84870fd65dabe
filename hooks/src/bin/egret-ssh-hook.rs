//! The SSH hook (createRuntime and poststop; `--container-ssh`), and `egret ssh-keygen`'s
//! helper (`egret-ssh-hook keygen [--overwrite]`, run as the user); see `egret_hooks::ssh`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("keygen") {
        return egret_hooks::ssh::keygen_main(&args[2..]);
    }
    egret_hooks::run_main("ssh", egret_hooks::ssh::hook)
}
