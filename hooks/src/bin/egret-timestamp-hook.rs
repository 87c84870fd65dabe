//! The timestamp hook; see `egret_hooks::timestamp` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("timestamp", egret_hooks::timestamp::run)
}
