//! `egret.json`: the site configuration, with the Sarus keys that apply to egret.
//!
//! Unknown keys and ill-typed values are errors that name the key: a typo in an admin's file must
//! never silently turn a security setting off.

mod node_dirs;
pub mod security;

pub use node_dirs::{is_plain_name, local_node_name};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the CLI looks when neither `--config` nor `EGRET_CONFIG` (root only) says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/egret/egret.json";

/// Keys of Sarus's `sarus.json` that egret has no use for (umoci, the rootfs folder name, SELinux
/// labels, skopeo's policy and registries files, PMIx v3 hooks): a site's existing file loads,
/// and each key is reported once as a warning (`Config::warnings`) instead of failing every job.
const SARUS_ONLY_KEYS: &[&str] = &[
    "umociPath",
    "rootfsFolder",
    "enablePMIxv3Support",
    "selinuxLabel",
    "selinuxMountLabel",
    "containersPolicy",
    "containersRegistries.dPath",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Check that the config, runtimes, hooks and bundle dir are root-owned and not writable by
    /// group or others before doing anything privileged.
    #[serde(default = "yes")]
    pub security_checks: bool,
    /// Mount point of the per-container in-memory bundle (inside a private mount namespace).
    #[serde(rename = "OCIBundleDir", default = "default_bundle_dir")]
    pub oci_bundle_dir: PathBuf,
    #[serde(default)]
    pub prefix_dir: Option<PathBuf>,
    /// Scratch space for imports (downloaded blobs live here while an import runs).
    #[serde(default = "default_temp_dir")]
    pub temp_dir: PathBuf,
    /// Root of the image store: content-addressed squashfs files plus one index per user.
    #[serde(default = "default_repo_dir")]
    pub local_repository_base_dir: PathBuf,
    /// Bound on the store's image files, in bytes: after each import or use, least-recently-used
    /// images beyond it are deleted (never one a named container uses). Unbounded when unset.
    #[serde(default)]
    pub local_repository_max_bytes: Option<u64>,
    /// A read-only-for-users store managed by the admin (`--centralized-repository`).
    #[serde(default)]
    pub centralized_repository_dir: Option<PathBuf>,
    #[serde(default = "default_skopeo")]
    pub skopeo_path: PathBuf,
    #[serde(default = "default_mksquashfs")]
    pub mksquashfs_path: PathBuf,
    /// Extra options for mksquashfs (compression is the main import cost: see `make bench`).
    #[serde(default = "default_mksquashfs_options")]
    pub mksquashfs_options: String,
    /// A static init (tini) bind-mounted into the container for `--init`.
    #[serde(default = "default_init")]
    pub init_path: PathBuf,
    #[serde(default = "default_runc")]
    pub runc_path: PathBuf,
    /// runc's state directory (`runc --root`).
    #[serde(default = "default_runc_root")]
    pub runc_root: PathBuf,
    /// Where the plugin keeps per-step sockets (root-owned, cleaned at step end).
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Writable layers of named containers (`--container-name`), kept until the job ends.
    #[serde(default = "default_containers_dir")]
    pub containers_dir: PathBuf,
    #[serde(default = "default_ramfs")]
    pub ram_filesystem_type: RamFilesystemType,
    #[serde(default)]
    pub hooks_dir: Option<PathBuf>,
    #[serde(default)]
    pub site_mounts: Vec<SiteMount>,
    #[serde(default)]
    pub site_devices: Vec<SiteDevice>,
    /// CDI specs and the devices users may name (see `crate::cdi`).
    #[serde(default)]
    pub cdi: CdiConfig,
    /// The built-in NVIDIA support of nodes without a CDI spec for their NVIDIA GPUs.
    #[serde(default)]
    pub nvidia: NvidiaConfig,
    #[serde(default)]
    pub environment: EnvironmentRules,
    #[serde(default)]
    pub user_mounts: UserMountRules,
    #[serde(default)]
    pub seccomp_profile: Option<PathBuf>,
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    #[serde(rename = "defaultMPIType", default)]
    pub default_mpi_type: Option<String>,
    #[serde(default)]
    pub repository_metadata_lock_timings: LockTimings,
    /// How a user's `.sqsh` file given as the image is handled: re-imported into the store (read
    /// as the user, never kernel-mounted as root), or refused.
    #[serde(default)]
    pub user_squashfs: UserSquashfsPolicy,
    #[serde(default = "default_sqfs2tar")]
    pub sqfs2tar_path: PathBuf,
    /// Every node sees this store (it is on a filesystem the nodes share): the first node's
    /// import serves them all. With node-local stores (false), the first node of a multi-node
    /// step imports and hands the squashfs to the others with `sbcast` (see `slurm::fanout`).
    #[serde(default)]
    pub local_repository_shared: bool,
    /// Slurm's file broadcast, run as the user (node-local stores, multi-node steps).
    #[serde(default = "default_sbcast")]
    pub sbcast_path: PathBuf,
    /// munge and unmunge: root's signature on what the first node tells the others.
    #[serde(default = "default_munge")]
    pub munge_path: PathBuf,
    #[serde(default = "default_unmunge")]
    pub unmunge_path: PathBuf,
    /// The Sarus-only keys the file set (sorted), which egret ignored.
    #[serde(skip)]
    pub ignored_sarus_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RamFilesystemType {
    Tmpfs,
    Ramfs,
}

impl RamFilesystemType {
    pub fn as_str(self) -> &'static str {
        match self {
            RamFilesystemType::Tmpfs => "tmpfs",
            RamFilesystemType::Ramfs => "ramfs",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UserSquashfsPolicy {
    /// Read the user's file as the user (`sqfs2tar`), re-squash it with egret's own pipeline
    /// into the store (cached per file), and run that: root never kernel-mounts user data.
    #[default]
    Import,
    Deny,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteMount {
    #[serde(rename = "type", default = "bind")]
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(default)]
    pub flags: MountFlags,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MountFlags {
    /// Sarus writes `"readonly": ""` (a flag without value); `true`/`false` are accepted too.
    #[serde(default, deserialize_with = "flag")]
    pub readonly: bool,
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d).map_err(|_| {
        serde::de::Error::custom("siteMounts flags.readonly: expected \"\" (Sarus) or true/false")
    })? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) if t.is_empty() => Ok(true),
        Flag::Text(t) => Err(serde::de::Error::custom(format!(
            "siteMounts flags.readonly: expected \"\" (Sarus) or true/false, got \"{t}\""
        ))),
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteDevice {
    pub source: PathBuf,
    #[serde(default)]
    pub destination: Option<PathBuf>,
    /// A subset of `rwm`; defaults to `rwm`.
    #[serde(default)]
    pub access: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CdiConfig {
    /// Spec directories, lowest priority first: a device defined again later wins.
    #[serde(default = "default_cdi_dirs")]
    pub spec_dirs: Vec<PathBuf>,
    /// The CDI names users may ask for by name (`KIND=NAME`, `KIND=*`, `*`); none by default.
    /// A task's own GPUs (Slurm's) need no entry.
    #[serde(default)]
    pub allowed_devices: Vec<String>,
    /// What Slurm's per-task GPU variables count (see `crate::cdi::select`).
    #[serde(default)]
    pub slurm_gpu_indices: crate::cdi::select::GpuIndices,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: default_cdi_dirs(),
            allowed_devices: Vec::new(),
            slurm_gpu_indices: Default::default(),
        }
    }
}

fn default_cdi_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NvidiaConfig {
    /// Bring a task's NVIDIA GPUs in without a CDI spec (as Apptainer's `--nv`).
    #[serde(default = "yes")]
    pub fallback: bool,
    /// The driver's libraries and programs to bind (Apptainer's nvliblist.conf format); the
    /// built-in list when the file does not exist.
    #[serde(default = "default_nvliblist")]
    pub library_list: PathBuf,
    /// Where the device nodes are (tests point it at fake nodes).
    #[serde(default = "default_dev")]
    pub dev_dir: PathBuf,
    /// The linker cache the libraries are looked up in.
    #[serde(default = "default_ld_cache")]
    pub ld_cache: PathBuf,
    #[serde(default = "default_ldconfig")]
    pub ldconfig: PathBuf,
}

impl Default for NvidiaConfig {
    fn default() -> Self {
        NvidiaConfig {
            fallback: true,
            library_list: default_nvliblist(),
            dev_dir: default_dev(),
            ld_cache: default_ld_cache(),
            ldconfig: default_ldconfig(),
        }
    }
}

fn default_nvliblist() -> PathBuf {
    PathBuf::from("/etc/egret/nvliblist.conf")
}
fn default_dev() -> PathBuf {
    PathBuf::from("/dev")
}
fn default_ld_cache() -> PathBuf {
    PathBuf::from("/etc/ld.so.cache")
}
fn default_ldconfig() -> PathBuf {
    PathBuf::from("/sbin/ldconfig")
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRules {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub prepend: BTreeMap<String, String>,
    #[serde(default)]
    pub append: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserMountRules {
    #[serde(default)]
    pub not_allowed_prefixes_of_path: Vec<PathBuf>,
    #[serde(default)]
    pub not_allowed_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockTimings {
    #[serde(default = "default_lock_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_lock_warning")]
    pub warning_ms: u64,
}

impl Default for LockTimings {
    fn default() -> Self {
        LockTimings {
            timeout_ms: default_lock_timeout(),
            warning_ms: default_lock_warning(),
        }
    }
}

fn yes() -> bool {
    true
}
fn bind() -> String {
    "bind".into()
}
fn default_bundle_dir() -> PathBuf {
    "/var/lib/egret/bundle".into()
}
fn default_temp_dir() -> PathBuf {
    "/var/tmp".into()
}
fn default_repo_dir() -> PathBuf {
    "/var/lib/egret/store".into()
}
fn default_skopeo() -> PathBuf {
    "/usr/bin/skopeo".into()
}
fn default_mksquashfs() -> PathBuf {
    "/usr/bin/mksquashfs".into()
}
fn default_mksquashfs_options() -> String {
    "-comp zstd -Xcompression-level 3".into()
}
fn default_init() -> PathBuf {
    "/usr/bin/tini-static".into()
}
fn default_runc() -> PathBuf {
    "/usr/bin/runc".into()
}
fn default_runc_root() -> PathBuf {
    "/run/egret/runc".into()
}
fn default_run_dir() -> PathBuf {
    "/run/egret".into()
}
fn default_sbcast() -> PathBuf {
    "/usr/bin/sbcast".into()
}
fn default_munge() -> PathBuf {
    "/usr/bin/munge".into()
}
fn default_unmunge() -> PathBuf {
    "/usr/bin/unmunge".into()
}
fn default_sqfs2tar() -> PathBuf {
    "/usr/bin/sqfs2tar".into()
}
fn default_containers_dir() -> PathBuf {
    "/var/lib/egret/containers".into()
}
fn default_ramfs() -> RamFilesystemType {
    RamFilesystemType::Tmpfs
}
fn default_lock_timeout() -> u64 {
    300_000
}
fn default_lock_warning() -> u64 {
    10_000
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_str("{}", Path::new("<default>")).expect("empty config is valid")
    }
}

impl Config {
    /// Reads and validates a config file. The bytes are read once, so a security check made on
    /// the same open file (see `security`) sees exactly what was parsed.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_str(&text, path)
    }

    /// Reads a config file for the processes of Slurm node `node`: `%n` in the node-local
    /// directories becomes its name (see `node_dirs`).
    pub fn load_on(path: &Path, node: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::load(path)?;
        node_dirs::expand(&mut cfg, node);
        Ok(cfg)
    }

    pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |msg: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let mut ignored = Vec::new();
        if let Some(obj) = value.as_object_mut() {
            obj.retain(|key, _| {
                let sarus_only = SARUS_ONLY_KEYS.contains(&key.as_str());
                if sarus_only {
                    ignored.push(key.clone());
                }
                !sarus_only
            });
        }
        let mut cfg: Config = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        cfg.ignored_sarus_keys = ignored;
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    /// One line per Sarus-only key the file set, for the program that loaded it to print or log
    /// (the engine itself never writes to a terminal).
    pub fn warnings<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = String> + 'a {
        self.ignored_sarus_keys.iter().map(move |key| {
            format!(
                "warning: config {}: key '{key}' is a Sarus setting egret does not use; ignored",
                path.display()
            )
        })
    }

    fn validate(&self) -> Result<(), String> {
        let absolute = [
            ("OCIBundleDir", &self.oci_bundle_dir),
            ("tempDir", &self.temp_dir),
            ("localRepositoryBaseDir", &self.local_repository_base_dir),
            ("skopeoPath", &self.skopeo_path),
            ("mksquashfsPath", &self.mksquashfs_path),
            ("initPath", &self.init_path),
            ("runcPath", &self.runc_path),
            ("runcRoot", &self.runc_root),
            ("runDir", &self.run_dir),
            ("containersDir", &self.containers_dir),
            ("sqfs2tarPath", &self.sqfs2tar_path),
            ("sbcastPath", &self.sbcast_path),
            ("mungePath", &self.munge_path),
            ("unmungePath", &self.unmunge_path),
        ];
        for (key, p) in absolute {
            if !p.is_absolute() {
                return Err(format!(
                    "key '{key}' must be an absolute path, got '{}'",
                    p.display()
                ));
            }
        }
        for m in &self.site_mounts {
            if m.kind != "bind" {
                return Err(format!(
                    "siteMounts: type '{}' is not supported (only 'bind')",
                    m.kind
                ));
            }
            if !m.source.is_absolute() || !m.destination.is_absolute() {
                return Err("siteMounts: source and destination must be absolute paths".into());
            }
        }
        for d in &self.site_devices {
            if !d.source.is_absolute() {
                return Err(format!(
                    "siteDevices: source '{}' must be absolute",
                    d.source.display()
                ));
            }
            if let Some(a) = &d.access {
                if a.is_empty() || !a.chars().all(|c| "rwm".contains(c)) {
                    return Err(format!(
                        "siteDevices: access '{a}' must be a subset of 'rwm'"
                    ));
                }
            }
        }
        let n = &self.nvidia;
        let cdi_paths = self.cdi.spec_dirs.iter().map(|d| ("cdi.specDirs", d));
        let nvidia_paths = [
            ("nvidia.libraryList", &n.library_list),
            ("nvidia.devDir", &n.dev_dir),
            ("nvidia.ldCache", &n.ld_cache),
            ("nvidia.ldconfig", &n.ldconfig),
        ];
        for (key, p) in cdi_paths.chain(nvidia_paths) {
            if !p.is_absolute() {
                return Err(format!(
                    "key '{key}' must be an absolute path, got '{}'",
                    p.display()
                ));
            }
        }
        for a in &self.cdi.allowed_devices {
            let kind_only = a.strip_suffix("=*");
            let ok = a == "*"
                || kind_only.is_some_and(|k| crate::cdi::spec::check_kind(k).is_ok())
                || crate::cdi::spec::split_qualified(a).is_some();
            if !ok {
                return Err(format!(
                    "cdi.allowedDevices: '{a}' is not KIND=NAME, KIND=* or * (e.g. nvidia.com/gpu=*)"
                ));
            }
        }
        if self.repository_metadata_lock_timings.timeout_ms == 0 {
            return Err("repositoryMetadataLockTimings.timeoutMs must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse_str(s, Path::new("t.json"))
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = parse("{}").unwrap();
        assert!(c.security_checks);
        assert_eq!(c.runc_path, PathBuf::from("/usr/bin/runc"));
        assert_eq!(c.ram_filesystem_type, RamFilesystemType::Tmpfs);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(r#"{"securityCheck": true}"#).unwrap_err().to_string();
        assert!(e.contains("securityCheck"), "{e}");
    }

    #[test]
    fn ill_typed_key_is_named() {
        let e = parse(r#"{"securityChecks": "yes"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("securityChecks") || e.contains("boolean"), "{e}");
    }

    #[test]
    fn sarus_only_keys_are_ignored_and_reported() {
        let c = parse(
            r#"{"umociPath": "/usr/bin/umoci", "enablePMIxv3Support": true,
                "rootfsFolder": "rootfs", "securityChecks": false}"#,
        )
        .unwrap();
        assert!(!c.security_checks, "the keys egret uses are still read");
        assert_eq!(
            c.ignored_sarus_keys,
            ["enablePMIxv3Support", "rootfsFolder", "umociPath"]
        );
        let w: Vec<String> = c.warnings(Path::new("/etc/egret/egret.json")).collect();
        assert_eq!(w.len(), 3);
        assert_eq!(
            w[2],
            "warning: config /etc/egret/egret.json: key 'umociPath' is a Sarus setting egret does not use; ignored"
        );
        assert!(parse("{}").unwrap().ignored_sarus_keys.is_empty());
    }

    #[test]
    fn a_real_unknown_key_is_still_an_error() {
        let e = parse(r#"{"umociPath": "/usr/bin/umoci", "bogusKey": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogusKey"), "{e}");
    }

    #[test]
    fn sarus_style_config_parses() {
        let c = parse(
            r#"{"securityChecks": false, "OCIBundleDir": "/var/egret/bundle",
                "siteMounts": [{"type":"bind","source":"/scratch","destination":"/scratch","flags":{"readonly":true}}],
                "siteDevices": [{"source":"/dev/fuse","access":"rw"}],
                "environment": {"set":{"A":"1"},"prepend":{"PATH":"/opt/bin"},"append":{},"unset":["X"]},
                "userMounts": {"notAllowedPrefixesOfPath":["/etc"],"notAllowedPaths":["/opt"]},
                "defaultMPIType": "mpich",
                "repositoryMetadataLockTimings": {"timeoutMs": 1000, "warningMs": 100}}"#,
        )
        .unwrap();
        assert!(c.site_mounts[0].flags.readonly);
        assert_eq!(c.default_mpi_type.as_deref(), Some("mpich"));
        assert_eq!(c.user_mounts.not_allowed_paths, vec![PathBuf::from("/opt")]);
    }

    #[test]
    fn sarus_readonly_flag_without_value() {
        let c = parse(r#"{"siteMounts":[{"type":"bind","source":"/a","destination":"/a","flags":{"readonly":""}}]}"#)
            .unwrap();
        assert!(c.site_mounts[0].flags.readonly);
        let e = parse(r#"{"siteMounts":[{"type":"bind","source":"/a","destination":"/a","flags":{"readonly":"no"}}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
    }

    #[test]
    fn relative_paths_rejected() {
        let e = parse(r#"{"runcPath": "runc"}"#).unwrap_err().to_string();
        assert!(e.contains("runcPath"), "{e}");
    }

    #[test]
    fn bad_device_access_rejected() {
        let e = parse(r#"{"siteDevices":[{"source":"/dev/null","access":"rwx"}]}"#).unwrap_err();
        assert!(e.to_string().contains("rwm"));
    }
}
