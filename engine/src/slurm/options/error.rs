//! Why an srun/sbatch/salloc option or its environment variable is refused.

use super::MAX_VALUE;
use crate::container::mounts::MountError;
use crate::image::reference::RefError;
use crate::slurm::named::NamedError;
use crate::slurm::unshare::UnshareError;

/// Why an option value (from the command line or an `EGRET_CONTAINER_*`/`PYXIS_CONTAINER_*`
/// variable) is refused; each is the user's one line (without `egret: `).
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// Slurm handed back an index that is not in `OPTIONS`.
    #[error("unknown option #{index}")]
    Unknown { index: usize },
    #[error("--{option} needs a value")]
    NeedsValue { option: &'static str },
    #[error("--{option}: empty value")]
    Empty { option: &'static str },
    #[error("--{option}: value longer than {MAX_VALUE} bytes")]
    TooLong { option: &'static str },
    #[error("--{option}: value contains a control character")]
    ControlCharacter { option: &'static str },
    /// A single-valued option given again with another value.
    #[error("--{option} given twice with different values ('{old}' and '{new}')")]
    Repeated {
        option: &'static str,
        old: String,
        new: String,
    },
    /// Both options of an on/off pair, e.g. `--container-writable and --container-readonly`.
    #[error("both {pair} were given; keep one")]
    BothGiven { pair: &'static str },
    #[error("--container-image={value}: {source}")]
    BadImage {
        value: String,
        #[source]
        source: RefError,
    },
    /// `dockerd://` and `podman://` (enroot's): there is no daemon to import from on the nodes.
    #[error(
        "--container-image={value}: egret does not import images from a local Docker or podman daemon ({transport}://); \
         push the image to a registry and use --container-image=REGISTRY#IMAGE, or make a squashfs file \
         (`egret import REF`, or `docker save` then `egret load` and `egret export`) and use --container-image=./FILE.sqsh"
    )]
    LocalDaemon { value: String, transport: String },
    #[error("--container-mounts: {0}")]
    BadMounts(#[source] MountError),
    #[error("--container-env: '{name}' is not a valid variable name")]
    BadEnvName { name: String },
    /// `--container-name`'s own error already names the option.
    #[error(transparent)]
    BadName(#[from] NamedError),
    #[error("--container-save={value}: names a directory; give a file name such as image.sqsh")]
    SaveIsDirectory { value: String },
    #[error("--mpi-hook={value}: not a valid MPI type name")]
    BadMpiType { value: String },
    #[error("--container-device={value}: {source}")]
    BadDevice {
        value: String,
        #[source]
        source: MountError,
    },
    #[error("--container-device={value}: {source}")]
    BadCdiDevice {
        value: String,
        #[source]
        source: crate::cdi::CdiError,
    },
    #[error("--container-annotation={value}: expected KEY=VALUE")]
    AnnotationNotKeyValue { value: String },
    #[error("--container-annotation={value}: empty key")]
    AnnotationEmptyKey { value: String },
    #[error(
        "--container-annotation: {key} given twice with different values ('{old}' and '{new}')"
    )]
    AnnotationRepeated {
        key: String,
        old: String,
        new: String,
    },
    #[error("--container-pid={value}: expected 'host' or 'private'")]
    BadPid { value: String },
    /// The only two values, so the message names both whichever came first.
    #[error("--container-pid given twice with different values ('host' and 'private')")]
    PidRepeated,
    #[error(
        "--container-ssh needs a private PID namespace: it cannot be combined with --container-pid=host"
    )]
    SshNeedsPrivatePid,
    /// `--container-unshare`'s own error already names the option.
    #[error(transparent)]
    BadUnshare(#[from] UnshareError),
    /// An option of `OPTIONS` that `set` has no arm for (a programming error).
    #[error("--{option}: not handled")]
    NotHandled { option: &'static str },
    /// An on/off option's variable with a value that is not a boolean.
    #[error("{var}={}: expected 1, true, yes, y, 0, false, no or n", .value.escape_debug())]
    EnvNotBool { var: String, value: String },
    /// A variable whose value the option refuses; the value is escaped to keep one line.
    #[error("{var}={}: {source}", .value.escape_debug())]
    Env {
        var: String,
        value: String,
        #[source]
        source: Box<OptionError>,
    },
    #[error("container options need --container-image (or --container-name)")]
    NeedsImage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::RefReason;

    fn text(e: OptionError) -> String {
        e.to_string()
    }

    fn repeated() -> OptionError {
        OptionError::Repeated {
            option: "container-workdir",
            old: "/a".into(),
            new: "/b".into(),
        }
    }

    // srun prints these lines (system tests grep them): each text is pinned byte for byte.
    #[test]
    fn every_variant_has_its_exact_text() {
        let cases = [
            (OptionError::Unknown { index: 99 }, "unknown option #99"),
            (
                OptionError::NeedsValue {
                    option: "container-image",
                },
                "--container-image needs a value",
            ),
            (
                OptionError::Empty {
                    option: "container-image",
                },
                "--container-image: empty value",
            ),
            (
                OptionError::TooLong {
                    option: "container-mounts",
                },
                "--container-mounts: value longer than 4096 bytes",
            ),
            (
                OptionError::ControlCharacter {
                    option: "container-image",
                },
                "--container-image: value contains a control character",
            ),
            (
                repeated(),
                "--container-workdir given twice with different values ('/a' and '/b')",
            ),
            (
                OptionError::BothGiven {
                    pair: "--container-writable and --container-readonly",
                },
                "both --container-writable and --container-readonly were given; keep one",
            ),
            (
                OptionError::BadImage {
                    value: "A".into(),
                    source: RefError {
                        reference: "A".into(),
                        reason: RefReason::MissingName,
                    },
                },
                "--container-image=A: invalid image reference 'A': missing image name",
            ),
            (
                OptionError::BadMounts(MountError::Parse {
                    item: "x".into(),
                    reason: "why".into(),
                }),
                "--container-mounts: 'x': why",
            ),
            (
                OptionError::LocalDaemon {
                    value: "dockerd://busybox".into(),
                    transport: "dockerd".into(),
                },
                "--container-image=dockerd://busybox: egret does not import images from a local Docker or podman daemon (dockerd://); \
                 push the image to a registry and use --container-image=REGISTRY#IMAGE, or make a squashfs file \
                 (`egret import REF`, or `docker save` then `egret load` and `egret export`) and use --container-image=./FILE.sqsh",
            ),
            (
                OptionError::BadEnvName { name: "1B".into() },
                "--container-env: '1B' is not a valid variable name",
            ),
            (
                OptionError::BadName(NamedError::BadName {
                    value: "../x".into(),
                }),
                "--container-name=../x: use up to 64 letters, digits, '.', '_' or '-' for the name",
            ),
            (
                OptionError::SaveIsDirectory {
                    value: "/d/".into(),
                },
                "--container-save=/d/: names a directory; give a file name such as image.sqsh",
            ),
            (
                OptionError::BadMpiType { value: "a b".into() },
                "--mpi-hook=a b: not a valid MPI type name",
            ),
            (
                OptionError::BadDevice {
                    value: "/dev/x".into(),
                    source: MountError::Parse {
                        item: "/dev/x".into(),
                        reason: "why".into(),
                    },
                },
                "--container-device=/dev/x: '/dev/x': why",
            ),
            (
                OptionError::AnnotationNotKeyValue { value: "k".into() },
                "--container-annotation=k: expected KEY=VALUE",
            ),
            (
                OptionError::AnnotationEmptyKey { value: "=v".into() },
                "--container-annotation==v: empty key",
            ),
            (
                OptionError::AnnotationRepeated {
                    key: "k".into(),
                    old: "v".into(),
                    new: "w".into(),
                },
                "--container-annotation: k given twice with different values ('v' and 'w')",
            ),
            (
                OptionError::BadPid {
                    value: "shared".into(),
                },
                "--container-pid=shared: expected 'host' or 'private'",
            ),
            (
                OptionError::PidRepeated,
                "--container-pid given twice with different values ('host' and 'private')",
            ),
            (
                OptionError::SshNeedsPrivatePid,
                "--container-ssh needs a private PID namespace: it cannot be combined with --container-pid=host",
            ),
            (
                OptionError::BadUnshare(UnshareError::UnknownNamespace {
                    value: "pid".into(),
                    name: "pid".into(),
                }),
                "--container-unshare=pid: unknown namespace 'pid' (use net, ipc or uts)",
            ),
            (
                OptionError::NotHandled {
                    option: "container-x",
                },
                "--container-x: not handled",
            ),
            (
                OptionError::EnvNotBool {
                    var: "PYXIS_CONTAINER_MOUNT_HOME".into(),
                    value: "a\tb".into(),
                },
                "PYXIS_CONTAINER_MOUNT_HOME=a\\tb: expected 1, true, yes, y, 0, false, no or n",
            ),
            (
                OptionError::Env {
                    var: "EGRET_CONTAINER_WORKDIR".into(),
                    value: "rel\n".into(),
                    source: Box::new(repeated()),
                },
                "EGRET_CONTAINER_WORKDIR=rel\\n: --container-workdir given twice with different values ('/a' and '/b')",
            ),
            (
                OptionError::NeedsImage,
                "container options need --container-image (or --container-name)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(text(e), want);
        }
    }

    #[test]
    fn nested_parsers_are_the_source() {
        use std::error::Error;
        let e = OptionError::BadDevice {
            value: "x".into(),
            source: MountError::Parse {
                item: "x".into(),
                reason: "why".into(),
            },
        };
        assert_eq!(e.source().unwrap().to_string(), "'x': why");
        let e = OptionError::Env {
            var: "V".into(),
            value: "v".into(),
            source: Box::new(OptionError::NeedsImage),
        };
        assert!(e.source().is_some());
    }
}
