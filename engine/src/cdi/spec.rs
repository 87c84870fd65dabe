//! One CDI spec file: its fields (as the CDI specification names them), read from JSON or YAML,
//! and the checks that make a mistake one line naming the file and the field.
//!
//! Unknown fields are errors, as in the reference implementation: a misspelt `deviceNodes`
//! must not silently give a container no device. A field newer than the file's `cdiVersion`
//! is an error too (the table of "Released versions" in the specification says which version
//! brought which field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::CdiError;

/// The versions egret reads: 0.3.0 (the first tagged one) to 0.8.0, and 1.0.0, which moved
/// code but changed no field. 1.1.0's `netDevices` is not supported.
pub const SUPPORTED: &[(u32, u32)] = &[(0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (0, 8), (1, 0)];

/// The OCI hook stages a CDI hook may name.
pub const HOOK_STAGES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub intel_rdt: Option<IntelRdt>,
    #[serde(default, rename = "additionalGids")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// The path in the container.
    pub path: String,
    /// The node on the host (`path` when unset).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `b`, `u` or `p`; the host node's when unset.
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    #[serde(default)]
    pub major: Option<i64>,
    #[serde(default)]
    pub minor: Option<i64>,
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Device cgroup access, a subset of `rwm`; `rwm` when unset or empty.
    #[serde(default)]
    pub permissions: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

impl DeviceNode {
    /// The node on the host.
    pub fn host(&self) -> &str {
        self.host_path.as_deref().unwrap_or(&self.path)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntelRdt {
    #[serde(default, rename = "closID")]
    pub clos_id: Option<String>,
    #[serde(default, rename = "l3CacheSchema")]
    pub l3_cache_schema: Option<String>,
    #[serde(default, rename = "memBwSchema")]
    pub mem_bw_schema: Option<String>,
    #[serde(default, rename = "enableCMT")]
    pub enable_cmt: Option<bool>,
    #[serde(default, rename = "enableMBM")]
    pub enable_mbm: Option<bool>,
}

/// Reads and checks the spec at `path`: YAML for `.yaml`/`.yml`, JSON otherwise.
pub fn read(path: &Path) -> Result<Spec, CdiError> {
    let text = std::fs::read_to_string(path).map_err(|source| CdiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and checks `text`, the content of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Spec, CdiError> {
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let spec: Spec = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| parse_error(path, e.to_string()))?
    } else {
        serde_json::from_str(text).map_err(|e| parse_error(path, e.to_string()))?
    };
    validate(path, &spec)?;
    Ok(spec)
}

fn parse_error(path: &Path, msg: String) -> CdiError {
    CdiError::Parse {
        path: path.to_path_buf(),
        // One line: serde_yaml_ng may add the location after a newline.
        msg: msg.replace('\n', " "),
    }
}

/// `(major, minor)` of a `MAJOR.MINOR.PATCH` version.
fn version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.strip_prefix('v').unwrap_or(v).split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().unwrap_or("0");
    patch.parse::<u32>().ok()?;
    parts.next().is_none().then_some((major, minor))
}

/// What a spec got wrong, before the file name is added.
struct Problem {
    field: String,
    msg: String,
}

fn problem(field: impl Into<String>, msg: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Every check of the specification on `spec`; the first failure names its field.
pub fn validate(path: &Path, spec: &Spec) -> Result<(), CdiError> {
    check(spec).map_err(|p| CdiError::Invalid {
        path: PathBuf::from(path),
        field: p.field,
        msg: p.msg,
    })
}

fn check(spec: &Spec) -> Result<(), Problem> {
    let have = version(&spec.cdi_version)
        .filter(|v| SUPPORTED.contains(v))
        .ok_or_else(|| {
            problem(
                "cdiVersion",
                format!(
                    "'{}' is not a version egret reads (0.3.0 to 0.8.0, 1.0.0)",
                    spec.cdi_version
                ),
            )
        })?;
    let needs = |field: &str, min: (u32, u32)| -> Result<(), Problem> {
        if have < min {
            return Err(problem(
                field,
                format!(
                    "needs cdiVersion {}.{}.0 or later (the file says {})",
                    min.0, min.1, spec.cdi_version
                ),
            ));
        }
        Ok(())
    };
    let (_, class) = check_kind(&spec.kind).map_err(|m| problem("kind", m))?;
    if class.contains('.') {
        needs("kind", (0, 6))?;
    }
    if !spec.annotations.is_empty() {
        needs("annotations", (0, 6))?;
    }
    if spec.devices.is_empty() {
        return Err(problem("devices", "a spec must define at least one device"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in spec.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        check_name(&d.name).map_err(|m| problem(format!("{at}.name"), m))?;
        if d.name.starts_with(|c: char| c.is_ascii_digit()) {
            needs(&format!("{at}.name"), (0, 5))?;
        }
        if !seen.insert(d.name.as_str()) {
            return Err(problem(
                format!("{at}.name"),
                format!("device '{}' is defined twice", d.name),
            ));
        }
        if !d.annotations.is_empty() {
            needs(&format!("{at}.annotations"), (0, 6))?;
        }
        check_edits(&d.container_edits, &format!("{at}.containerEdits"), &needs)?;
    }
    check_edits(&spec.container_edits, "containerEdits", &needs)
}

/// Fails when the file's version predates `(major, minor)`, which `field` needs.
type Needs<'a> = dyn Fn(&str, (u32, u32)) -> Result<(), Problem> + 'a;

fn check_edits(e: &ContainerEdits, at: &str, needs: &Needs<'_>) -> Result<(), Problem> {
    for (i, kv) in e.env.iter().enumerate() {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains('\0') && !kv.contains('\0') => {}
            _ => {
                return Err(problem(
                    format!("{at}.env[{i}]"),
                    format!("'{}' is not NAME=VALUE", kv.escape_debug()),
                ))
            }
        }
    }
    for (i, n) in e.device_nodes.iter().enumerate() {
        let f = format!("{at}.deviceNodes[{i}]");
        absolute(&n.path).map_err(|m| problem(format!("{f}.path"), m))?;
        if let Some(h) = &n.host_path {
            needs(&format!("{f}.hostPath"), (0, 5))?;
            absolute(h).map_err(|m| problem(format!("{f}.hostPath"), m))?;
        }
        if let Some(t) = &n.typ {
            if !["c", "b", "u", "p"].contains(&t.as_str()) {
                return Err(problem(
                    format!("{f}.type"),
                    format!("'{t}' is not one of c, b, u, p"),
                ));
            }
        }
        if let Some(p) = &n.permissions {
            let ok = p.chars().all(|c| "rwm".contains(c))
                && p.chars().enumerate().all(|(j, c)| !p[..j].contains(c));
            if !ok {
                return Err(problem(
                    format!("{f}.permissions"),
                    format!("'{p}' is not a subset of 'rwm'"),
                ));
            }
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        let f = format!("{at}.mounts[{i}]");
        if m.host_path.is_empty() {
            return Err(problem(format!("{f}.hostPath"), "empty"));
        }
        absolute(&m.container_path).map_err(|msg| problem(format!("{f}.containerPath"), msg))?;
        if m.typ.is_some() {
            needs(&format!("{f}.type"), (0, 4))?;
        }
    }
    for (i, h) in e.hooks.iter().enumerate() {
        let f = format!("{at}.hooks[{i}]");
        if !HOOK_STAGES.contains(&h.hook_name.as_str()) {
            return Err(problem(
                format!("{f}.hookName"),
                format!(
                    "'{}' is not an OCI hook stage ({})",
                    h.hook_name,
                    HOOK_STAGES.join(", ")
                ),
            ));
        }
        absolute(&h.path).map_err(|m| problem(format!("{f}.path"), m))?;
        if h.timeout.is_some_and(|t| t <= 0) {
            return Err(problem(format!("{f}.timeout"), "must be greater than zero"));
        }
    }
    if e.intel_rdt.is_some() {
        needs(&format!("{at}.intelRdt"), (0, 7))?;
    }
    if !e.additional_gids.is_empty() {
        needs(&format!("{at}.additionalGids"), (0, 7))?;
    }
    Ok(())
}

fn absolute(p: &str) -> Result<(), String> {
    if p.starts_with('/') && !p.contains('\0') {
        Ok(())
    } else {
        Err(format!("'{}' must be an absolute path", p.escape_debug()))
    }
}

/// `VENDOR/CLASS`: VENDOR a DNS subdomain, CLASS (and a device's name) alphanumerics with
/// `-`, `_` and `.` between, at most 63 characters. Returns the two parts.
pub fn check_kind(kind: &str) -> Result<(&str, &str), String> {
    let bad = || {
        format!(
            "'{}' is not VENDOR/CLASS (e.g. nvidia.com/gpu)",
            kind.escape_debug()
        )
    };
    let (vendor, class) = kind.split_once('/').ok_or_else(bad)?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if vendor.is_empty() || vendor.len() > 253 || !vendor.split('.').all(label_ok) {
        return Err(bad());
    }
    check_name(class).map_err(|_| bad())?;
    Ok((vendor, class))
}

/// A device name (and a kind's class): alphanumerics at both ends, `-`, `_`, `.` between.
pub fn check_name(name: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = name.len() <= 63
        && alnum(name.chars().next())
        && alnum(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' must be alphanumerics with -, _ or . between (at most 63)",
            name.escape_debug()
        ))
    }
}

/// Splits a qualified device name `VENDOR/CLASS=NAME` into kind and name, when it is one.
pub fn split_qualified(s: &str) -> Option<(&str, &str)> {
    let (kind, name) = s.split_once('=')?;
    (check_kind(kind).is_ok() && check_name(name).is_ok()).then_some((kind, name))
}

#[cfg(test)]
mod tests;
