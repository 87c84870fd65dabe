//! The native MPI hook (MPICH ABI); see `egret_hooks::mpi` and the admin guide.

use std::process::ExitCode;

fn main() -> ExitCode {
    egret_hooks::run_main("mpi", egret_hooks::mpi::run)
}
