//! The mount hook; see `egret_hooks::mounthook` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("mount", egret_hooks::mounthook::run)
}
