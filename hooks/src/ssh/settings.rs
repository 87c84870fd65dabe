//! The admin's settings of the SSH hook (its JSON `env`) and the port of a container's daemon.

use std::path::PathBuf;

use crate::ssh::{SshError, PORT_ANNOTATION};

/// The port when neither the hook's JSON nor the user chose one (Sarus's).
pub const DEFAULT_PORT: u16 = 15263;

/// The admin's settings, from the hook's JSON `env`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hook_base_dir: Option<PathBuf>,
    pub dropbear_dir: PathBuf,
    pub port: u16,
    /// Add `SLURM_NODEID` to the port: for clusters that run several slurmd on one host.
    pub port_per_node: bool,
    pub ldd: PathBuf,
}

impl Settings {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SshError> {
        let abs = |name: &str, default: &str| -> Result<PathBuf, SshError> {
            let v = get(name).unwrap_or_else(|| default.to_string());
            let p = PathBuf::from(&v);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(SshError::Setting {
                    name: name.into(),
                    value: v,
                    what: "must be an absolute path",
                })
            }
        };
        let hook_base_dir = match get("HOOK_BASE_DIR") {
            Some(_) => Some(abs("HOOK_BASE_DIR", "")?),
            None => None,
        };
        let port = match get("SERVER_PORT_DEFAULT").or_else(|| get("SERVER_PORT")) {
            Some(v) => parse_port("SERVER_PORT_DEFAULT", &v)?,
            None => DEFAULT_PORT,
        };
        let port_per_node = get("SERVER_PORT_NODE_OFFSET")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        Ok(Settings {
            hook_base_dir,
            dropbear_dir: abs("DROPBEAR_DIR", "/usr")?,
            port,
            port_per_node,
            ldd: abs("LDD_PATH", "/usr/bin/ldd")?,
        })
    }

    /// A dropbear program: `<DROPBEAR_DIR>/bin/NAME` or `<DROPBEAR_DIR>/sbin/NAME`.
    pub fn program(&self, name: &str) -> Result<PathBuf, SshError> {
        ["bin", "sbin"]
            .iter()
            .map(|d| self.dropbear_dir.join(d).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| SshError::Missing {
                path: self.dropbear_dir.join("bin").join(name),
            })
    }
}

fn parse_port(name: &str, v: &str) -> Result<u16, SshError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p >= 1024 => Ok(p),
        _ => Err(SshError::Setting {
            name: name.into(),
            value: v.into(),
            what: "expected a port number between 1024 and 65535",
        }),
    }
}

/// The port of this container's daemon: the user's annotation, else the site's; plus the node
/// id where the site runs several slurmd per host.
pub fn port_for(
    settings: &Settings,
    annotation: Option<&str>,
    node_id: Option<&str>,
) -> Result<u16, SshError> {
    let base = match annotation {
        Some(v) => parse_port(PORT_ANNOTATION, v)?,
        None => settings.port,
    };
    if !settings.port_per_node {
        return Ok(base);
    }
    let node: u16 = node_id.and_then(|n| n.parse().ok()).unwrap_or(0);
    base.checked_add(node).ok_or_else(|| SshError::Setting {
        name: PORT_ANNOTATION.into(),
        value: base.to_string(),
        what: "plus the node id is beyond 65535",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SshError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn ports() {
        let s = settings(&[]).unwrap();
        assert_eq!(port_for(&s, None, Some("1")).unwrap(), DEFAULT_PORT);
        assert_eq!(port_for(&s, Some("20000"), None).unwrap(), 20000);
        assert!(port_for(&s, Some("22"), None)
            .unwrap_err()
            .to_string()
            .contains(PORT_ANNOTATION));
        let s = settings(&[
            ("SERVER_PORT_DEFAULT", "16000"),
            ("SERVER_PORT_NODE_OFFSET", "1"),
        ])
        .unwrap();
        assert_eq!(port_for(&s, None, Some("1")).unwrap(), 16001);
        assert_eq!(port_for(&s, Some("20000"), Some("3")).unwrap(), 20003);
        assert!(settings(&[("SERVER_PORT", "x")]).is_err());
        assert!(settings(&[("DROPBEAR_DIR", "usr")]).is_err());
        assert_eq!(settings(&[("SERVER_PORT", "17000")]).unwrap().port, 17000);
    }
}
