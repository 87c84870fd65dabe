//! The AMD GPU hook; see `egret_hooks::amdgpu` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("amdgpu", egret_hooks::amdgpu::run)
}
