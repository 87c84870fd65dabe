//! The `srun`/`sbatch`/`salloc` options egret adds, with pyxis's names and meanings so job
//! scripts written for pyxis run unchanged. Reading `OPTIONS` tells a user what the product does.
//!
//! Values are validated where the user typed them (srun/sbatch, before the job is queued) and
//! again in slurmstepd, where they arrive through the environment and must be treated as hostile.

use serde::{Deserialize, Serialize};

use crate::image::reference::RefReason;

mod error;

pub use self::error::OptionError;

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
    opt!("container-entrypoint-log", "", None,
        "[egret] show the output of the image's ENTRYPOINT (on stderr); without it the output is hidden unless the entrypoint fails"),
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
    opt!("container-remap-root", "", None,
        "[egret] run as root inside a user namespace mapped to you (never real root; the image's files stay read-only)"),
    opt!("no-container-remap-root", "", None,
        "[egret] run as yourself inside the container (default)"),
    opt!("container-name", "NAME[:auto|create|exec|no_exec]", Required,
        "[egret] name the container so later steps of the job reuse it (auto: join it while it runs, else reuse, else create)"),
    opt!("container-save", "PATH", Required,
        "[egret] at the end of the step, save the container's root filesystem to this squashfs file (yours; runnable with --container-image=PATH)"),
    opt!("mpi-hook", "TYPE", Optional,
        "[egret] enable the native MPI hook (and the glibc hook where configured); TYPE picks the MPI"),
    opt!("container-device", "HOST[:CTR][:rwm][,...]", Required,
        "[egret] make host devices available in the container"),
    opt!("container-annotation", "KEY=VALUE[,KEY=VALUE...]", Required,
        "[egret] add OCI annotations to the container"),
    opt!("container-pid", "host|private", Required,
        "[egret] PID namespace: the host's (default) or a private one"),
    opt!("container-unshare", "net,ipc,uts", Required,
        "[egret] namespaces of the step's own, shared by its tasks on a node (net: loopback only; ipc: private /dev/shm and SysV IPC; uts: own hostname)"),
    opt!("container-init", "", None,
        "[egret] run an init process (tini) that reaps zombies (PID 1 with --container-pid=private)"),
    opt!("container-ssh", "", None,
        "[egret] SSH between the step's containers (keys: egret ssh-keygen); implies --container-pid=private"),
    opt!("environment", "NAME|PATH", Required,
        "[egret] run in the environment an EDF (CSCS's TOML file) defines: /abs.toml, ./rel.toml, or NAME.toml in EDF_PATH (default ~/.edf)"),
];

/// The validated container settings of one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerOptions {
    pub image: Option<String>,
    pub mounts: Option<String>,
    pub workdir: Option<String>,
    pub env_names: Vec<String>,
    pub entrypoint: Option<bool>,
    /// `--container-entrypoint-log` (pyxis): the entrypoint's output goes to the task's stderr
    /// instead of being kept and shown only if the entrypoint fails.
    #[serde(default)]
    pub entrypoint_log: bool,
    /// None: default (writable).
    pub writable: Option<bool>,
    pub mount_home: Option<bool>,
    /// `--container-remap-root`: uid 0 in a user namespace mapped to the user.
    #[serde(default)]
    pub remap_root: Option<bool>,
    pub name: Option<String>,
    /// `--container-save`: where node 0 writes the step's root filesystem.
    pub save: Option<String>,
    /// Some("") enables the hook with the site's default MPI type.
    pub mpi_hook: Option<String>,
    pub devices: Option<String>,
    pub annotations: Vec<(String, String)>,
    pub pid_private: Option<bool>,
    /// `--container-unshare`: validated `net,ipc,uts` subset.
    #[serde(default)]
    pub unshare: Option<String>,
    pub init: bool,
    /// `--container-ssh`: the SSH and Slurm sync hooks, in a private PID namespace.
    #[serde(default)]
    pub ssh: bool,
    /// `--environment` (or `EGRET_ENVIRONMENT`): the EDF the step's settings come from (see
    /// `crate::edf`; srun resolved it, the nodes never read the file).
    #[serde(default)]
    pub environment: Option<String>,
    /// The EDF's `[env]`: set (None: unset) in the container over the image's.
    #[serde(default)]
    pub edf_env: Vec<(String, Option<String>)>,
}

/// Longest value we accept for any option: a path or a list of them, not a payload.
pub(crate) const MAX_VALUE: usize = 4096;

impl ContainerOptions {
    /// True when this step runs in a container.
    pub fn active(&self) -> bool {
        self.image.is_some() || self.name.is_some()
    }

    /// Records option number `index` of `OPTIONS` with its value, as pyxis does: Slurm may
    /// report an option twice (22.05 fires remote callbacks twice), so the same value again is
    /// fine, but two different values of a single-valued option, or both options of a pair
    /// (`--container-writable` and `--container-readonly`), are an error. List options
    /// (`--container-mounts`, `--container-env`, `--container-device`,
    /// `--container-annotation`) accumulate.
    pub fn set(&mut self, index: usize, value: Option<&str>) -> Result<(), OptionError> {
        let spec = OPTIONS.get(index).ok_or(OptionError::Unknown { index })?;
        let name = spec.name;
        let value = match (spec.arg, value) {
            (Arg::Required, None) => return Err(OptionError::NeedsValue { option: name }),
            (Arg::Required, Some("")) => return Err(OptionError::Empty { option: name }),
            (_, Some(v)) => Some(check_value(name, v)?),
            (_, None) => None,
        };
        let v = || value.clone().unwrap_or_default();
        match name {
            "container-image" => {
                crate::image::reference::ImageSource::parse(&v()).map_err(|source| match source
                    .reason
                {
                    RefReason::LocalDaemon { transport } => OptionError::LocalDaemon {
                        value: v(),
                        transport,
                    },
                    _ => OptionError::BadImage { value: v(), source },
                })?;
                set_once(&mut self.image, name, v())?;
            }
            "container-mounts" => {
                crate::container::mounts::pyxis::parse(&v(), std::path::Path::new("/"))
                    .map_err(OptionError::BadMounts)?;
                append_list(&mut self.mounts, &v());
            }
            // As in pyxis, a relative value starts at the container's `/` (see
            // `plan::workdir`); whether it exists is known only in the container.
            "container-workdir" => set_once(&mut self.workdir, name, v())?,
            "container-env" => {
                for n in v().split(',') {
                    if !valid_env_name(n) {
                        return Err(OptionError::BadEnvName {
                            name: n.to_string(),
                        });
                    }
                    if !self.env_names.iter().any(|e| e == n) {
                        self.env_names.push(n.to_string());
                    }
                }
            }
            "container-entrypoint" => set_flag(&mut self.entrypoint, true, PAIR_ENTRYPOINT)?,
            "container-entrypoint-log" => self.entrypoint_log = true,
            "no-container-entrypoint" => set_flag(&mut self.entrypoint, false, PAIR_ENTRYPOINT)?,
            "container-writable" => set_flag(&mut self.writable, true, PAIR_WRITABLE)?,
            "container-readonly" => set_flag(&mut self.writable, false, PAIR_WRITABLE)?,
            "container-mount-home" => set_flag(&mut self.mount_home, true, PAIR_HOME)?,
            "no-container-mount-home" => set_flag(&mut self.mount_home, false, PAIR_HOME)?,
            "container-remap-root" => set_flag(&mut self.remap_root, true, PAIR_REMAP)?,
            "no-container-remap-root" => set_flag(&mut self.remap_root, false, PAIR_REMAP)?,
            "container-name" => {
                super::named::parse_name(&v())?;
                set_once(&mut self.name, name, v())?;
            }
            "container-save" => {
                if v().ends_with('/') {
                    return Err(OptionError::SaveIsDirectory { value: v() });
                }
                set_once(&mut self.save, name, v())?;
            }
            "mpi-hook" => {
                let t = v();
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(OptionError::BadMpiType { value: t });
                }
                set_once(&mut self.mpi_hook, name, t)?;
            }
            "container-device" => {
                for d in v().split(',') {
                    if crate::cdi::select::is_cdi_name(d) {
                        // A CDI name: its syntax here, the site's allow list on the node.
                        crate::cdi::select::check_allowed(d, &["*".to_string()]).map_err(
                            |source| OptionError::BadCdiDevice {
                                value: d.to_string(),
                                source,
                            },
                        )?;
                        continue;
                    }
                    crate::container::mounts::parse_device(d).map_err(|source| {
                        OptionError::BadDevice {
                            value: d.to_string(),
                            source,
                        }
                    })?;
                }
                append_list(&mut self.devices, &v());
            }
            "container-annotation" => {
                for kv in v().split(',') {
                    let (k, val) =
                        kv.split_once('=')
                            .ok_or_else(|| OptionError::AnnotationNotKeyValue {
                                value: kv.to_string(),
                            })?;
                    if k.is_empty() {
                        return Err(OptionError::AnnotationEmptyKey {
                            value: kv.to_string(),
                        });
                    }
                    match self.annotations.iter().find(|(ok, _)| ok == k) {
                        Some((_, old)) if old != val => {
                            return Err(OptionError::AnnotationRepeated {
                                key: k.to_string(),
                                old: old.clone(),
                                new: val.to_string(),
                            })
                        }
                        Some(_) => {}
                        None => self.annotations.push((k.to_string(), val.to_string())),
                    }
                }
            }
            "container-pid" => {
                let private = match v().as_str() {
                    "host" => false,
                    "private" => true,
                    other => {
                        return Err(OptionError::BadPid {
                            value: other.to_string(),
                        })
                    }
                };
                if self.pid_private.is_some_and(|p| p != private) {
                    return Err(OptionError::PidRepeated);
                }
                if self.ssh && !private {
                    return Err(OptionError::SshNeedsPrivatePid);
                }
                self.pid_private = Some(private);
            }
            "container-unshare" => {
                super::unshare::parse(&v())?;
                set_once(&mut self.unshare, name, v())?;
            }
            "container-init" => self.init = true,
            "environment" => set_once(&mut self.environment, name, v())?,
            "container-ssh" => {
                // Its daemon must die with the container: a private PID namespace.
                if self.pid_private == Some(false) {
                    return Err(OptionError::SshNeedsPrivatePid);
                }
                self.ssh = true;
            }
            _ => return Err(OptionError::NotHandled { option: name }),
        }
        Ok(())
    }

    /// Fills the options the command line left unset from `EGRET_CONTAINER_<NAME>` or, for job
    /// scripts written for pyxis, `PYXIS_CONTAINER_<NAME>` (`--container-mount-home` reads
    /// `..._MOUNT_HOME`, `--mpi-hook` reads `..._MPI_HOOK`). On/off options take 1/true/yes/y or
    /// 0/false/no/n. `lookup` is the environment of the context: the process's in srun and
    /// sbatch, the job's in slurmstepd.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), OptionError> {
        for (index, spec) in OPTIONS.iter().enumerate() {
            // `--environment`'s variables are read first (`environment_from_env`): the EDF
            // must be merged before these defaults fill what is left.
            if spec.name.starts_with("no-") || spec.name == "environment" {
                continue;
            }
            let suffix = spec
                .name
                .trim_start_matches("container-")
                .to_ascii_uppercase()
                .replace('-', "_");
            let found = ["EGRET_CONTAINER_", "PYXIS_CONTAINER_"]
                .iter()
                .map(|prefix| format!("{prefix}{suffix}"))
                .find_map(|var| lookup(&var).map(|val| (var, val)));
            let Some((var, val)) = found else { continue };
            if self.is_set(spec.name) {
                continue;
            }
            let err = |e: OptionError| OptionError::Env {
                var: var.clone(),
                value: val.clone(),
                source: Box::new(e),
            };
            if spec.arg == Arg::None {
                let on = parse_bool(&val).ok_or_else(|| OptionError::EnvNotBool {
                    var: var.clone(),
                    value: val.clone(),
                })?;
                let target = match (spec.name, on) {
                    (n, true) => Some(n.to_string()),
                    ("container-readonly", false) => Some("container-writable".to_string()),
                    ("container-writable", false) => Some("container-readonly".to_string()),
                    (n, false) => {
                        let no = format!("no-{n}");
                        index_of(&no).map(|_| no)
                    }
                };
                if let Some(t) = target.and_then(|t| index_of(&t)) {
                    self.set(t, None).map_err(err)?;
                }
            } else if spec.name == "container-env" {
                // A default: the EDF's [env] wins over it for the names both give.
                let names: Vec<&str> = val
                    .split(',')
                    .filter(|n| !self.edf_env.iter().any(|(e, _)| e == n))
                    .collect();
                if !names.is_empty() {
                    self.set(index, Some(&names.join(","))).map_err(err)?;
                }
            } else {
                self.set(index, Some(&val)).map_err(err)?;
            }
        }
        Ok(())
    }

    /// `--environment` from the first of `crate::edf::ENV_DEFAULTS` that is set, when the
    /// command line gave none.
    pub fn environment_from_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), OptionError> {
        if self.environment.is_some() {
            return Ok(());
        }
        let found = crate::edf::ENV_DEFAULTS
            .iter()
            .find_map(|var| lookup(var).map(|val| (var.to_string(), val)));
        if let Some((var, value)) = found {
            let index = index_of("environment").expect("in OPTIONS");
            self.set(index, Some(&value))
                .map_err(|e| OptionError::Env {
                    var,
                    value,
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    /// Whether the command line (or `#SBATCH`) already gave option `name`.
    fn is_set(&self, name: &str) -> bool {
        match name {
            "container-image" => self.image.is_some(),
            "container-mounts" => self.mounts.is_some(),
            "container-workdir" => self.workdir.is_some(),
            "container-env" => !self.env_names.is_empty(),
            "container-entrypoint" => self.entrypoint.is_some(),
            "container-entrypoint-log" => self.entrypoint_log,
            "container-writable" | "container-readonly" => self.writable.is_some(),
            "container-mount-home" => self.mount_home.is_some(),
            "container-remap-root" => self.remap_root.is_some(),
            "container-name" => self.name.is_some(),
            "container-save" => self.save.is_some(),
            "mpi-hook" => self.mpi_hook.is_some(),
            "container-device" => self.devices.is_some(),
            "container-annotation" => !self.annotations.is_empty(),
            "container-pid" => self.pid_private.is_some(),
            "container-unshare" => self.unshare.is_some(),
            "container-init" => self.init,
            "container-ssh" => self.ssh,
            "environment" => self.environment.is_some(),
            _ => false,
        }
    }

    /// Checks that only make sense once every option is known.
    pub fn finish(&self) -> Result<(), OptionError> {
        if !self.active() {
            let used = self.mounts.is_some()
                || self.workdir.is_some()
                || !self.env_names.is_empty()
                || self.mpi_hook.is_some()
                || self.save.is_some()
                || self.unshare.is_some()
                || self.ssh
                || self.devices.is_some();
            if used {
                return Err(OptionError::NeedsImage);
            }
        }
        Ok(())
    }
}

const PAIR_ENTRYPOINT: &str = "--container-entrypoint and --no-container-entrypoint";
const PAIR_WRITABLE: &str = "--container-writable and --container-readonly";
const PAIR_HOME: &str = "--container-mount-home and --no-container-mount-home";
const PAIR_REMAP: &str = "--container-remap-root and --no-container-remap-root";

/// A single-valued option: a repeat must carry the same value.
fn set_once(
    slot: &mut Option<String>,
    option: &'static str,
    value: String,
) -> Result<(), OptionError> {
    match slot {
        Some(old) if *old != value => Err(OptionError::Repeated {
            option,
            old: old.clone(),
            new: value,
        }),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// One of a pair of on/off options: giving both is an error.
fn set_flag(slot: &mut Option<bool>, on: bool, pair: &'static str) -> Result<(), OptionError> {
    if slot.is_some_and(|old| old != on) {
        return Err(OptionError::BothGiven { pair });
    }
    *slot = Some(on);
    Ok(())
}

/// A comma-separated list option: new entries are appended, repeats are dropped.
fn append_list(slot: &mut Option<String>, value: &str) {
    let mut items: Vec<String> = slot
        .as_deref()
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for item in value.split(',') {
        if !items.iter().any(|i| i == item) {
            items.push(item.to_string());
        }
    }
    *slot = Some(items.join(","));
}

/// pyxis's booleans for environment variables.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" => Some(true),
        "0" | "false" | "no" | "n" => Some(false),
        _ => None,
    }
}

fn check_value(option: &'static str, v: &str) -> Result<String, OptionError> {
    if v.len() > MAX_VALUE {
        return Err(OptionError::TooLong { option });
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(OptionError::ControlCharacter { option });
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
        o.set(index_of(name).unwrap(), v).map_err(|e| e.to_string())
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
            ("container-image", Some("dockerd://busybox")),
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
        assert!(o
            .finish()
            .unwrap_err()
            .to_string()
            .contains("--container-image"));
    }

    #[test]
    fn repeats_must_agree_and_pairs_conflict() {
        let mut o = ContainerOptions::default();
        set(&mut o, "container-workdir", Some("/a")).unwrap();
        set(&mut o, "container-workdir", Some("/a")).unwrap();
        let e = set(&mut o, "container-workdir", Some("/b")).unwrap_err();
        assert!(
            e.contains("given twice") && e.contains("'/a'") && e.contains("'/b'"),
            "{e}"
        );
        set(&mut o, "container-writable", None).unwrap();
        let e = set(&mut o, "container-readonly", None).unwrap_err();
        assert!(
            e.contains("--container-writable and --container-readonly"),
            "{e}"
        );
        set(&mut o, "no-container-entrypoint", None).unwrap();
        assert!(set(&mut o, "container-entrypoint", None).is_err());
        set(&mut o, "container-pid", Some("host")).unwrap();
        assert!(set(&mut o, "container-pid", Some("private")).is_err());
    }

    #[test]
    fn ssh_implies_a_private_pid_namespace() {
        for order in [
            ["container-ssh", "container-pid"],
            ["container-pid", "container-ssh"],
        ] {
            let mut o = ContainerOptions::default();
            let mut r = Ok(());
            for n in order {
                let v = (n == "container-pid").then_some("host");
                r = r.and_then(|_| set(&mut o, n, v));
            }
            let e = r.unwrap_err();
            assert!(
                e.contains("--container-pid=host") && !e.contains('\n'),
                "{e}"
            );
        }
        let mut o = ContainerOptions::default();
        set(&mut o, "container-ssh", None).unwrap();
        set(&mut o, "container-pid", Some("private")).unwrap();
        assert!(
            o.ssh
                && o.finish()
                    .unwrap_err()
                    .to_string()
                    .contains("--container-image")
        );
        let mut o = ContainerOptions::default();
        o.apply_env(env_of(&[("EGRET_CONTAINER_SSH", "1")]))
            .unwrap();
        assert!(o.ssh);
    }

    #[test]
    fn list_options_accumulate_without_repeats() {
        let mut o = ContainerOptions::default();
        set(&mut o, "container-mounts", Some("/a:/a")).unwrap();
        set(&mut o, "container-mounts", Some("/b:/b,/a:/a")).unwrap();
        assert_eq!(o.mounts.as_deref(), Some("/a:/a,/b:/b"));
        set(&mut o, "container-env", Some("A,B")).unwrap();
        set(&mut o, "container-env", Some("B,C")).unwrap();
        assert_eq!(o.env_names, ["A", "B", "C"]);
        set(&mut o, "container-annotation", Some("k=v")).unwrap();
        set(&mut o, "container-annotation", Some("k=v")).unwrap();
        assert!(set(&mut o, "container-annotation", Some("k=w")).is_err());
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_fills_what_the_command_line_left_unset() {
        let mut o = ContainerOptions::default();
        set(&mut o, "container-workdir", Some("/cli")).unwrap();
        o.apply_env(env_of(&[
            ("PYXIS_CONTAINER_IMAGE", "127.0.0.1:5000#egret/busybox"),
            ("PYXIS_CONTAINER_WORKDIR", "/env"),
            ("PYXIS_CONTAINER_MOUNT_HOME", "yes"),
            ("PYXIS_CONTAINER_READONLY", "1"),
            ("PYXIS_CONTAINER_ENTRYPOINT", "n"),
            ("PYXIS_CONTAINER_ENV", "A,B"),
        ]))
        .unwrap();
        assert_eq!(o.image.as_deref(), Some("127.0.0.1:5000#egret/busybox"));
        assert_eq!(o.workdir.as_deref(), Some("/cli"));
        assert_eq!(o.mount_home, Some(true));
        assert_eq!(o.writable, Some(false));
        assert_eq!(o.entrypoint, Some(false));
        assert_eq!(o.env_names, ["A", "B"]);
    }

    #[test]
    fn egret_variables_win_over_pyxis_ones() {
        let mut o = ContainerOptions::default();
        o.apply_env(env_of(&[
            ("PYXIS_CONTAINER_WORKDIR", "/pyxis"),
            ("EGRET_CONTAINER_WORKDIR", "/egret"),
            ("PYXIS_CONTAINER_WRITABLE", "false"),
        ]))
        .unwrap();
        assert_eq!(o.workdir.as_deref(), Some("/egret"));
        assert_eq!(o.writable, Some(false));
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (k, v) in [
            ("PYXIS_CONTAINER_MOUNT_HOME", "maybe"),
            ("PYXIS_CONTAINER_WORKDIR", "a\u{1b}b"),
            ("EGRET_CONTAINER_IMAGE", ""),
            ("PYXIS_CONTAINER_PID", "shared"),
        ] {
            let mut o = ContainerOptions::default();
            let e = o.apply_env(env_of(&[(k, v)])).unwrap_err().to_string();
            assert!(e.starts_with(k) && !e.contains('\n'), "{k}: {e}");
        }
    }
}
