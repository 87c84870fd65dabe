//! The `srun`/`sbatch`/`salloc` options egret adds, with pyxis's names and meanings so job
//! scripts written for pyxis run unchanged. Reading `OPTIONS` tells a user what the product does.
//!
//! Values are validated where the user typed them (srun/sbatch, before the job is queued) and
//! again in slurmstepd, where they arrive through the environment and must be treated as hostile.

use serde::{Deserialize, Serialize};

/// How an option takes its value (SPANK `has_arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    None,
    Required,
    Optional,
}

pub struct OptionSpec {
    pub name: &'static str,
    pub arginfo: &'static str,
    pub usage: &'static str,
    pub arg: Arg,
}

macro_rules! opt {
    ($name:expr, $arginfo:expr, $arg:ident, $usage:expr) => {
        OptionSpec {
            name: $name,
            arginfo: $arginfo,
            usage: $usage,
            arg: Arg::$arg,
        }
    };
}

/// Every option, in the order `srun --help` shows them. The index is the SPANK `val`.
pub const OPTIONS: &[OptionSpec] = &[
    opt!("container-image", "[REGISTRY#]IMAGE[:TAG]|PATH", Required,
        "[egret] the image to run the job's tasks in (Docker or enroot reference, or a .sqsh file)"),
    opt!("container-mounts", "SRC[:DST[:FLAGS]][,SRC...]", Required,
        "[egret] bind mounts into the container; FLAGS ro or rw, joined with +"),
    opt!("container-workdir", "PATH", Required,
        "[egret] working directory inside the container"),
    opt!("container-env", "NAME[,NAME...]", Required,
        "[egret] take these variables from the task's environment over the image's"),
    opt!("container-entrypoint", "", None,
        "[egret] run the image's ENTRYPOINT before the command"),
    opt!("no-container-entrypoint", "", None,
        "[egret] do not run the image's ENTRYPOINT (default)"),
    opt!("container-writable", "", None,
        "[egret] make the container filesystem writable (default; changes vanish at step end)"),
    opt!("container-readonly", "", None,
        "[egret] make the container filesystem read-only"),
    opt!("container-mount-home", "", None,
        "[egret] bind mount the user's home directory"),
    opt!("no-container-mount-home", "", None,
        "[egret] do not bind mount the user's home directory (default)"),
    opt!("container-name", "NAME", Required,
        "[egret] name the container so later steps of the job can reuse it"),
    opt!("mpi-hook", "TYPE", Optional,
        "[egret] enable the native MPI hook (and the glibc hook where configured); TYPE picks the MPI"),
    opt!("container-device", "HOST[:CTR][:rwm][,...]", Required,
        "[egret] make host devices available in the container"),
    opt!("container-annotation", "KEY=VALUE[,KEY=VALUE...]", Required,
        "[egret] add OCI annotations to the container"),
    opt!("container-pid", "host|private", Required,
        "[egret] PID namespace: the host's (default) or a private one"),
    opt!("container-init", "", None,
        "[egret] run an init process (tini) that reaps zombies (PID 1 with --container-pid=private)"),
];

/// The validated container settings of one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerOptions {
    pub image: Option<String>,
    pub mounts: Option<String>,
    pub workdir: Option<String>,
    pub env_names: Vec<String>,
    pub entrypoint: Option<bool>,
    /// None: default (writable).
    pub writable: Option<bool>,
    pub mount_home: Option<bool>,
    pub name: Option<String>,
    /// Some("") enables the hook with the site's default MPI type.
    pub mpi_hook: Option<String>,
    pub devices: Option<String>,
    pub annotations: Vec<(String, String)>,
    pub pid_private: Option<bool>,
    pub init: bool,
}

/// Longest value we accept for any option: a path or a list of them, not a payload.
const MAX_VALUE: usize = 4096;

impl ContainerOptions {
    /// True when this step runs in a container.
    pub fn active(&self) -> bool {
        self.image.is_some() || self.name.is_some()
    }

    /// Records option number `index` of `OPTIONS` with its value. Idempotent: Slurm 22.05 fires
    /// remote callbacks twice, and a later value (the command line over `#SBATCH`) wins.
    pub fn set(&mut self, index: usize, value: Option<&str>) -> Result<(), String> {
        let spec = OPTIONS
            .get(index)
            .ok_or_else(|| format!("unknown option #{index}"))?;
        let name = spec.name;
        let value = match (spec.arg, value) {
            (Arg::Required, None) => return Err(format!("--{name} needs a value")),
            (Arg::Required, Some("")) => return Err(format!("--{name}: empty value")),
            (_, Some(v)) => Some(check_value(name, v)?),
            (_, None) => None,
        };
        let v = || value.clone().unwrap_or_default();
        match name {
            "container-image" => {
                crate::reference::ImageSource::parse(&v())
                    .map_err(|e| format!("--container-image={}: {e}", v()))?;
                self.image = value;
            }
            "container-mounts" => {
                crate::mounts::parse_pyxis_mounts(&v(), std::path::Path::new("/"))
                    .map_err(|e| format!("--container-mounts: {e}"))?;
                self.mounts = value;
            }
            "container-workdir" => {
                if !v().starts_with('/') {
                    return Err(format!(
                        "--container-workdir={}: must be an absolute path",
                        v()
                    ));
                }
                self.workdir = value;
            }
            "container-env" => {
                let names: Vec<String> = v().split(',').map(str::to_string).collect();
                for n in &names {
                    if !valid_env_name(n) {
                        return Err(format!(
                            "--container-env: '{n}' is not a valid variable name"
                        ));
                    }
                }
                self.env_names = names;
            }
            "container-entrypoint" => self.entrypoint = Some(true),
            "no-container-entrypoint" => self.entrypoint = Some(false),
            "container-writable" => self.writable = Some(true),
            "container-readonly" => self.writable = Some(false),
            "container-mount-home" => self.mount_home = Some(true),
            "no-container-mount-home" => self.mount_home = Some(false),
            "container-name" => {
                let n = v();
                if n.len() > 64
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    || n.starts_with('.')
                {
                    return Err(format!(
                        "--container-name={n}: use up to 64 letters, digits, '.', '_' or '-'"
                    ));
                }
                self.name = value;
            }
            "mpi-hook" => {
                let t = v();
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(format!("--mpi-hook={t}: not a valid MPI type name"));
                }
                self.mpi_hook = Some(t);
            }
            "container-device" => {
                for d in v().split(',') {
                    crate::mounts::parse_device(d)
                        .map_err(|e| format!("--container-device={d}: {e}"))?;
                }
                self.devices = value;
            }
            "container-annotation" => {
                let mut out = Vec::new();
                for kv in v().split(',') {
                    let (k, val) = kv.split_once('=').ok_or_else(|| {
                        format!("--container-annotation={kv}: expected KEY=VALUE")
                    })?;
                    if k.is_empty() {
                        return Err(format!("--container-annotation={kv}: empty key"));
                    }
                    out.push((k.to_string(), val.to_string()));
                }
                self.annotations = out;
            }
            "container-pid" => {
                self.pid_private = Some(match v().as_str() {
                    "host" => false,
                    "private" => true,
                    other => {
                        return Err(format!(
                            "--container-pid={other}: expected 'host' or 'private'"
                        ))
                    }
                })
            }
            "container-init" => self.init = true,
            _ => return Err(format!("--{name}: not handled")),
        }
        Ok(())
    }

    /// Checks that only make sense once every option is known.
    pub fn finish(&self) -> Result<(), String> {
        if !self.active() {
            let used = self.mounts.is_some()
                || self.workdir.is_some()
                || !self.env_names.is_empty()
                || self.mpi_hook.is_some()
                || self.devices.is_some();
            if used {
                return Err(
                    "container options need --container-image (or --container-name)".into(),
                );
            }
        }
        Ok(())
    }
}

fn check_value(name: &str, v: &str) -> Result<String, String> {
    if v.len() > MAX_VALUE {
        return Err(format!("--{name}: value longer than {MAX_VALUE} bytes"));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(format!("--{name}: value contains a control character"));
    }
    Ok(v.to_string())
}

pub fn valid_env_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Position of an option in `OPTIONS` by name.
pub fn index_of(name: &str) -> Option<usize> {
    OPTIONS.iter().position(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(o: &mut ContainerOptions, name: &str, v: Option<&str>) -> Result<(), String> {
        o.set(index_of(name).unwrap(), v)
    }

    #[test]
    fn option_names_fit_spank() {
        for o in OPTIONS {
            assert!(
                o.name.len() < 75 && o.usage.starts_with("[egret]"),
                "{}",
                o.name
            );
        }
    }

    #[test]
    fn image_and_flags() {
        let mut o = ContainerOptions::default();
        assert!(!o.active());
        set(
            &mut o,
            "container-image",
            Some("127.0.0.1:5000#egret/busybox"),
        )
        .unwrap();
        set(&mut o, "container-readonly", None).unwrap();
        set(&mut o, "container-pid", Some("private")).unwrap();
        assert!(o.active());
        assert_eq!(o.writable, Some(false));
        assert_eq!(o.pid_private, Some(true));
        // Idempotent: the same value twice is fine.
        set(
            &mut o,
            "container-image",
            Some("127.0.0.1:5000#egret/busybox"),
        )
        .unwrap();
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let mut o = ContainerOptions::default();
        for (n, v) in [
            ("container-image", Some("")),
            ("container-image", Some("a\nb")),
            ("container-workdir", Some("rel/dir")),
            ("container-env", Some("A,1B")),
            ("container-pid", Some("shared")),
            ("container-annotation", Some("novalue")),
            ("container-name", Some("../x")),
        ] {
            let e = set(&mut o, n, v).unwrap_err();
            assert!(!e.contains('\n') && e.contains(n), "{n}: {e}");
        }
    }

    #[test]
    fn options_without_image_are_refused() {
        let mut o = ContainerOptions::default();
        set(&mut o, "container-workdir", Some("/tmp")).unwrap();
        assert!(o.finish().unwrap_err().contains("--container-image"));
    }
}
