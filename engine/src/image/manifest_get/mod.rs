//! A tag's manifest without skopeo: one HTTP request (two more for an anonymous token), as the
//! caller. srun resolves each step's tag before the step is launched, and skopeo, a Go program,
//! takes 10 ms before it sends anything (15-20 ms in all against a local registry); this, run
//! as `egret-launcher inspect-tag REF` ([`inspect_tag_main`]), about 2. A process of its own
//! rather than a thread of srun's: srun changes its environment while it creates the step, and
//! TLS and name resolution read it.
//!
//! Only for what skopeo would do the same way ([`policy::plain_access`]); anything else
//! (credentials, mirrors, a client certificate, a proxy) returns [`ManifestGetError::Skopeo`]
//! and the caller runs skopeo. The bytes are the caller's to resolve and are trusted by nobody:
//! nodes check what they fetch against the digest they chose themselves.
//!
//! # References
//! The OCI distribution spec (`GET /v2/<name>/manifests/<reference>`, the `Accept` media types),
//! Docker's token authentication (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`).

pub mod policy;

use std::io::Read;
use std::time::Duration;

use crate::image::reference::ImageRef;

pub use policy::{Scheme, Site};

/// A manifest or index is small; a registry that sends more is not one we want to parse.
const MAX_MANIFEST: u64 = 4 << 20;

/// The manifest media types accepted, indexes first (as skopeo lists them, schema 1 aside).
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The `User-Agent` of these requests.
pub const USER_AGENT: &str = concat!("egret/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ManifestGetError {
    /// Left to skopeo: the reason, for the log.
    #[error("{0}")]
    Skopeo(String),
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
}

/// The raw manifest (or index) bytes `r`'s tag names now, asked of `scheme://host`.
pub fn get(r: &ImageRef, scheme: Scheme, timeout: Duration) -> Result<Vec<u8>, ManifestGetError> {
    let host = policy::api_host(&r.registry);
    let reference = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let proto = match scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
    };
    let url = format!("{proto}://{host}/v2/{}/manifests/{reference}", r.repository);
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(4)
        // Named in the registry's log (the tests tell it from skopeo's requests by it).
        .user_agent(USER_AGENT)
        // No proxy from the environment: policy refused those already, and this keeps it so.
        .try_proxy_from_env(false)
        .build();
    let request = |token: Option<&str>| {
        let mut req = agent.get(&url).set("Accept", ACCEPT);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        req.call().map_err(Box::new)
    };
    let response = match request(None).map_err(|e| *e) {
        Ok(resp) => resp,
        Err(ureq::Error::Status(401, resp)) => {
            let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
            let token = anonymous_token(&agent, &challenge, &r.repository)?;
            request(Some(&token)).map_err(|e| request_error(&url, *e))?
        }
        Err(e) => return Err(request_error(&url, e)),
    };
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut body)
        .map_err(|e| ManifestGetError::Request {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    if body.len() as u64 > MAX_MANIFEST {
        return Err(ManifestGetError::Request {
            url,
            detail: "the manifest is larger than 4 MiB".into(),
        });
    }
    Ok(body)
}

/// Exit status of [`inspect_tag_main`] when skopeo must answer instead (nothing on stdout).
pub const EXIT_USE_SKOPEO: i32 = 3;

/// `egret-launcher inspect-tag REF`, as the user: the raw manifest on stdout and 0; or
/// [`EXIT_USE_SKOPEO`] where skopeo's configuration applies; or 1 when the request failed.
/// Either way the reason goes to stderr.
pub fn inspect_tag_main(reference: &str, timeout: Duration) -> i32 {
    let r = match ImageRef::parse(reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let site = Site::of_process(&r.registry);
    let scheme = match policy::plain_access(&site, &r.registry, &r.repository) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("{why}");
            return EXIT_USE_SKOPEO;
        }
    };
    match get(&r, scheme, timeout) {
        Ok(raw) => match std::io::Write::write_all(&mut std::io::stdout().lock(), &raw) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stdout: {e}");
                1
            }
        },
        Err(ManifestGetError::Skopeo(why)) => {
            eprintln!("{why}");
            EXIT_USE_SKOPEO
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn request_error(url: &str, e: ureq::Error) -> ManifestGetError {
    let detail = match e {
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
        ureq::Error::Transport(t) => t.to_string(),
    };
    ManifestGetError::Request {
        url: url.to_string(),
        detail,
    }
}

/// An anonymous pull token from the realm a `Bearer` challenge names; other schemes (Basic:
/// credentials needed) are skopeo's.
fn anonymous_token(
    agent: &ureq::Agent,
    challenge: &str,
    repository: &str,
) -> Result<String, ManifestGetError> {
    let params = bearer_params(challenge)
        .ok_or_else(|| ManifestGetError::Skopeo(format!("authentication '{challenge}'")))?;
    let realm = params
        .iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| ManifestGetError::Skopeo("a Bearer challenge without realm".into()))?;
    if !realm.starts_with("https://") && !realm.starts_with("http://") {
        return Err(ManifestGetError::Skopeo(format!("token realm {realm}")));
    }
    let scope = format!("repository:{repository}:pull");
    let mut req = agent.get(&realm).query("scope", &scope);
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
        req = req.query("service", service);
    }
    let answer: serde_json::Value = req
        .call()
        .map_err(|e| request_error(&realm, e))?
        .into_json()
        .map_err(|e| ManifestGetError::Request {
            url: realm.clone(),
            detail: e.to_string(),
        })?;
    answer
        .get("token")
        .or_else(|| answer.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| ManifestGetError::Request {
            url: realm,
            detail: "no token in the answer".into(),
        })
}

/// The parameters of a `Bearer k="v",k2="v2"` challenge (None for another scheme).
fn bearer_params(challenge: &str) -> Option<Vec<(String, String)>> {
    let rest = challenge.trim().strip_prefix("Bearer ")?;
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (quoted[..end].to_string(), &quoted[end + 1..])
            }
            None => match after.find(',') {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            },
        };
        out.push((key, value));
        s = tail.trim_start_matches(',').trim();
    }
    Some(out)
}

#[cfg(test)]
mod tests;
