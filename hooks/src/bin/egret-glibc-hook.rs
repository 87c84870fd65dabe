//! The glibc hook; see `egret_hooks::glibc` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("glibc", egret_hooks::glibc::run)
}
