//! Whether a manifest may be fetched without skopeo: only where skopeo's own configuration
//! would change nothing about the request (no mirror, no rewritten location, no block, no
//! credentials, no client certificate or private CA, no proxy). Anything else, or anything
//! this module cannot read, is left to skopeo. Read as the process's user (srun's), as skopeo
//! would read it.
//!
//! # References
//! containers-registries.conf(5) (`[[registry]]`: `prefix`, `location`, `insecure`, `blocked`,
//! `[[registry.mirror]]`; the user's file replacing the system one; `.d` drop-ins),
//! containers-auth.json(5) and skopeo-inspect(1) (the auth files searched),
//! containers-certs.d(5).

use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

/// How the registry is reached when skopeo's configuration leaves it plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// TLS, verified against the system's roots.
    Https,
    /// `insecure = true`: skopeo would accept plain HTTP.
    Http,
}

/// What the process's environment says, gathered once (the tests give their own).
#[derive(Debug, Default, Clone)]
pub struct Site {
    /// `registries.conf` texts in load order, each with its file (named in the reasons).
    pub registries_conf: Vec<(PathBuf, String)>,
    /// The auth files that exist, with their text.
    pub auth_files: Vec<(PathBuf, String)>,
    /// The `certs.d` directories that exist for the host.
    pub certs_dirs: Vec<PathBuf>,
    /// A proxy variable is set.
    pub proxy: bool,
}

impl Site {
    /// The environment of this process for registry `host` (`127.0.0.1:5000`, `docker.io`).
    pub fn of_process(host: &str) -> Site {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg_config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        let mut conf_files = Vec::new();
        if let Some(f) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            conf_files.push(PathBuf::from(f));
        } else {
            let user = xdg_config
                .as_ref()
                .map(|c| c.join("containers/registries.conf"));
            match user.filter(|u| u.exists()) {
                Some(u) => conf_files.push(u),
                None => conf_files.push(PathBuf::from("/etc/containers/registries.conf")),
            }
        }
        let mut dropin_dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
        dropin_dirs.extend(
            xdg_config
                .as_ref()
                .map(|c| c.join("containers/registries.conf.d")),
        );
        for dir in dropin_dirs {
            let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            names.sort();
            conf_files.extend(names);
        }
        let registries_conf = conf_files
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(&f).ok().map(|t| (f, t)))
            .collect();

        let mut auth = Vec::new();
        auth.extend(std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from));
        auth.extend(
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("containers/auth.json")),
        );
        auth.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::getuid()
        )));
        if let Some(c) = &xdg_config {
            auth.push(c.join("containers/auth.json"));
        }
        if let Some(h) = &home {
            auth.push(h.join(".docker/config.json"));
            auth.push(h.join(".dockercfg"));
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            auth.push(PathBuf::from(d).join("config.json"));
        }
        let auth_files = auth
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(&f).ok().map(|t| (f, t)))
            .collect();

        let mut certs = vec![
            PathBuf::from("/etc/containers/certs.d").join(host),
            PathBuf::from("/etc/docker/certs.d").join(host),
        ];
        certs.extend(xdg_config.map(|c| c.join("containers/certs.d").join(host)));
        let certs_dirs = certs.into_iter().filter(|d| d.exists()).collect();

        let proxy = [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        Site {
            registries_conf,
            auth_files,
            certs_dirs,
            proxy,
        }
    }
}

/// The scheme to use for `host/repository`, or why skopeo must do it.
pub fn plain_access(site: &Site, host: &str, repository: &str) -> Result<Scheme, String> {
    if site.proxy {
        return Err("a proxy is configured".into());
    }
    for (file, text) in &site.auth_files {
        // Conservative: any mention of the host, or a helper that may answer for any host.
        let docker_hub = host == "docker.io" && text.contains("docker.io");
        if text.contains(host)
            || docker_hub
            || text.contains("credsStore")
            || text.contains("credHelpers")
        {
            return Err(format!(
                "{} may hold credentials for {host}",
                file.display()
            ));
        }
    }
    let mut insecure = false;
    let name = format!("{host}/{repository}");
    for (file, text) in &site.registries_conf {
        let doc =
            DeTable::parse(text).map_err(|_| format!("{}: not parsed here", file.display()))?;
        for (k, v) in doc.get_ref().iter() {
            match (k.get_ref().as_ref(), v.get_ref()) {
                ("registry", DeValue::Array(entries)) => {
                    for e in entries.iter() {
                        let DeValue::Table(t) = e.get_ref() else {
                            return Err(format!(
                                "{}: a [[registry]] is not a table",
                                file.display()
                            ));
                        };
                        if let Some(entry_insecure) = registry_entry(t, &name)
                            .map_err(|why| format!("{}: {why}", file.display()))?
                        {
                            // Later files and entries override earlier ones, as in skopeo.
                            insecure = entry_insecure;
                        }
                    }
                }
                // The version 1 format (`[registries.insecure]`, `[registries.block]`) and the
                // credential helpers table name hosts in ways left to skopeo.
                ("registries", _) | ("credential-helpers", _) => {
                    return Err(format!(
                        "{}: [{}] is left to skopeo",
                        file.display(),
                        k.get_ref()
                    ));
                }
                _ => {}
            }
        }
    }
    if !site.certs_dirs.is_empty() {
        return Err(format!(
            "{} configures TLS for {host}",
            site.certs_dirs[0].display()
        ));
    }
    Ok(if insecure {
        Scheme::Http
    } else {
        Scheme::Https
    })
}

/// A `[[registry]]` entry: `None` when it does not match `name`, its `insecure` when it matches
/// and changes nothing else, an error when it would change the request (mirror, rewrite, block).
fn registry_entry(t: &DeTable, name: &str) -> Result<Option<bool>, String> {
    let text = |key: &str| match t.get(key).map(|v| v.get_ref()) {
        Some(DeValue::String(s)) => Some(s.to_string()),
        _ => None,
    };
    let flag = |key: &str| {
        matches!(
            t.get(key).map(|v| v.get_ref()),
            Some(DeValue::Boolean(true))
        )
    };
    let location = text("location").unwrap_or_default();
    let prefix = text("prefix").unwrap_or_else(|| location.clone());
    if prefix.is_empty() || !matches_prefix(name, &prefix) {
        return Ok(None);
    }
    if flag("blocked") {
        return Err(format!("{prefix} is blocked"));
    }
    if t.contains_key("mirror") {
        return Err(format!("{prefix} has mirrors"));
    }
    if location != prefix {
        return Err(format!("{prefix} is rewritten to {location}"));
    }
    Ok(Some(flag("insecure")))
}

/// Whether `prefix` names `name` or a namespace of it (a whole component, not a string start);
/// wildcard prefixes (`*.example.com`) are matched conservatively (any host under them).
fn matches_prefix(name: &str, prefix: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or("");
        return host.ends_with(&format!(".{domain}")) || host == domain;
    }
    name == prefix
        || name.strip_prefix(prefix).is_some_and(|rest| {
            rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@')
        })
}

/// Where a registry's API is (`docker.io` answers at `registry-1.docker.io`).
pub fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn site(conf: &[&str]) -> Site {
        Site {
            registries_conf: conf
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        Path::new(&format!("/c{i}.conf")).to_path_buf(),
                        t.to_string(),
                    )
                })
                .collect(),
            ..Site::default()
        }
    }

    #[test]
    fn a_plain_registry_is_https_and_an_insecure_one_http() {
        assert_eq!(
            plain_access(&site(&[]), "nvcr.io", "nvidia/pytorch"),
            Ok(Scheme::Https)
        );
        let conf = "[[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = true\n";
        assert_eq!(
            plain_access(&site(&[conf]), "127.0.0.1:5000", "egret/busybox"),
            Ok(Scheme::Http)
        );
        // Not a prefix of another host's name.
        assert_eq!(
            plain_access(&site(&[conf]), "127.0.0.1:50001", "x"),
            Ok(Scheme::Https)
        );
        // A later file overrides.
        let secure = "[[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = false\n";
        assert_eq!(
            plain_access(&site(&[conf, secure]), "127.0.0.1:5000", "x"),
            Ok(Scheme::Https)
        );
    }

    #[test]
    fn mirrors_rewrites_blocks_and_old_formats_are_left_to_skopeo() {
        let mirror = "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.example\"\n";
        assert!(
            plain_access(&site(&[mirror]), "docker.io", "library/alpine")
                .unwrap_err()
                .contains("mirrors")
        );
        let rewrite =
            "[[registry]]\nprefix = \"docker.io/library\"\nlocation = \"m.example/hub\"\n";
        assert!(
            plain_access(&site(&[rewrite]), "docker.io", "library/alpine")
                .unwrap_err()
                .contains("rewritten")
        );
        // The same rewrite leaves other namespaces alone.
        assert_eq!(
            plain_access(&site(&[rewrite]), "docker.io", "nvidia/cuda"),
            Ok(Scheme::Https)
        );
        let blocked = "[[registry]]\nlocation = \"evil.example\"\nblocked = true\n";
        assert!(plain_access(&site(&[blocked]), "evil.example", "x").is_err());
        let wildcard =
            "[[registry]]\nprefix = \"*.example.com\"\nlocation = \"mirror.example.org\"\n";
        assert!(plain_access(&site(&[wildcard]), "r.example.com", "x").is_err());
        let v1 = "[registries.insecure]\nregistries = [\"h:5000\"]\n";
        assert!(plain_access(&site(&[v1]), "h:5000", "x").is_err());
        assert!(plain_access(&site(&["not toml ["]), "h", "x").is_err());
    }

    #[test]
    fn credentials_certificates_and_proxies_are_left_to_skopeo() {
        let with_auth = |text: &str| Site {
            auth_files: vec![(
                PathBuf::from("/home/u/.docker/config.json"),
                text.to_string(),
            )],
            ..Site::default()
        };
        let hub = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#;
        assert!(plain_access(&with_auth(hub), "docker.io", "library/alpine").is_err());
        assert_eq!(
            plain_access(&with_auth(hub), "nvcr.io", "x"),
            Ok(Scheme::Https)
        );
        assert!(plain_access(&with_auth(r#"{"credsStore":"pass"}"#), "nvcr.io", "x").is_err());
        let certs = Site {
            certs_dirs: vec![PathBuf::from("/etc/containers/certs.d/r.example")],
            ..Site::default()
        };
        assert!(plain_access(&certs, "r.example", "x").is_err());
        let proxy = Site {
            proxy: true,
            ..Site::default()
        };
        assert!(plain_access(&proxy, "r.example", "x").is_err());
    }

    #[test]
    fn docker_hub_answers_at_its_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
