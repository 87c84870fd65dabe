//! The mount hook; see `egret_hooks::mount_hook` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("mount", egret_hooks::mount_hook::run)
}
