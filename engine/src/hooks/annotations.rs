//! Every OCI annotation key egret sets or reads. `com.hooks.*` keys are what the hooks.d files of
//! a site match on (and what the hooks themselves read); `com.egret.*` keys are egret's own
//! records on a container.

/// Requests the MPI hook (`--mpi-hook`).
pub const MPI_ENABLED: &str = "com.hooks.mpi.enabled";
/// The MPI type the MPI hook must serve (`--mpi-hook=TYPE`, or the site's `defaultMPIType`).
pub const MPI_TYPE: &str = "com.hooks.mpi.type";
/// Set by egret when the container's environment names `TIMESTAMP_HOOK_LOGFILE`.
pub const TIMESTAMP_ENABLED: &str = "com.hooks.timestamp.enabled";
/// Set by egret when the host has `/dev/kfd`.
pub const AMDGPU_ENABLED: &str = "com.hooks.amdgpu.enabled";
/// Set by egret when the task has GPUs (Slurm gave it a `CUDA_VISIBLE_DEVICES`): what a site's
/// NVIDIA hook is selected by, so that an image's `NVIDIA_VISIBLE_DEVICES=all` on a task
/// without GPUs reaches no hook.
pub const NVIDIA_ENABLED: &str = "com.hooks.nvidia.enabled";
/// Requests the glibc hook.
pub const GLIBC_ENABLED: &str = "com.hooks.glibc.enabled";
/// Requests the SSH hook (`--container-ssh`).
pub const SSH_ENABLED: &str = "com.hooks.ssh.enabled";
/// The port the SSH hook's daemon listens on.
pub const SSH_PORT: &str = "com.hooks.ssh.port";
/// A public key the SSH hook adds to the container's `authorized_keys`.
pub const SSH_AUTHORIZE_KEY: &str = "com.hooks.ssh.authorize_ssh_key";
/// Requests the Slurm global sync hook (every task of the step waits for every node).
pub const SLURM_GLOBAL_SYNC_ENABLED: &str = "com.hooks.slurm-global-sync.enabled";
/// The log level of every hook (`error|warn|info|debug` or `0..3`).
pub const LOGGING_LEVEL: &str = "com.hooks.logging.level";
/// The image a container runs (what `egret ps` shows).
pub const IMAGE: &str = "com.egret.image";
/// The Slurm job a container belongs to.
pub const JOB: &str = "com.egret.job";
/// The uid of the user an `egret run` container was started for (set by egret last, over any
/// value of the user's): who may see it in `egret ps` and stop it with `egret kill`.
pub const OWNER: &str = "com.egret.owner";
