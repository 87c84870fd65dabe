//! Image references: the Docker form (`alpine`, `host:5000/ns/img:tag@sha256:…`, `docker://…`)
//! and the enroot/pyxis form (`nvcr.io#nvidia/pytorch:24.01-py3`), plus squashfs file paths.
//!
//! A reference ends up in file names, index keys and skopeo arguments, so parsing is strict:
//! anything outside the distribution grammar is an error that says what was wrong, never a guess.

use std::fmt;
use std::path::PathBuf;

/// Docker Hub under its canonical name; `index.docker.io` and `registry-1.docker.io` map here.
pub const DOCKER_HUB: &str = "docker.io";
/// The server name Sarus gives to images imported from archives (`load/library/NAME:TAG`).
/// It is reserved: `load/x` always means a loaded image, never a Docker Hub namespace.
pub const LOAD_SERVER: &str = "load";

const MAX_REF_LEN: usize = 1024;
/// The distribution spec's limit for a repository name.
const MAX_REPOSITORY_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct RefError {
    /// The input, with control characters escaped so the message stays on one line.
    pub reference: String,
    #[source]
    pub reason: RefReason,
}

/// What is wrong with an image reference (the text after `invalid image reference '...': `).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefReason {
    #[error("empty reference")]
    Empty,
    #[error("longer than {MAX_REF_LEN} characters")]
    TooLong,
    #[error("contains whitespace or a control character ({found:?})")]
    Whitespace { found: char },
    #[error("'..' is not allowed")]
    DotDot,
    #[error("transport '{transport}://' is not supported (only docker://)")]
    Transport { transport: String },
    /// enroot's `dockerd://` and `podman://`: egret never talks to a container daemon.
    #[error(
        "egret does not import images from a local Docker or podman daemon ({transport}://); \
         push the image to a registry, or `docker save` it and use `egret load ARCHIVE NAME`"
    )]
    LocalDaemon { transport: String },
    /// enroot's `USER@REGISTRY#IMAGE`: credentials belong in the auth file.
    #[error(
        "a user name before the registry (USER@REGISTRY#...) is not supported; \
         put credentials in the registry auth file"
    )]
    UserBeforeRegistry,
    #[error("more than one '#'")]
    MoreThanOneHash,
    #[error("missing image name")]
    MissingName,
    /// The full form (registry, `library/`, `:latest` added) must stay within the bound too.
    #[error("longer than {MAX_REF_LEN} characters with its registry and tag")]
    FullFormTooLong,
    #[error("file path contains a control character")]
    FileControlCharacter,
    #[error("empty registry name")]
    EmptyRegistry,
    #[error("registry '{registry}' has an empty host name component")]
    RegistryEmptyLabel { registry: String },
    #[error("registry '{registry}' is not a valid host name")]
    RegistryBadHost { registry: String },
    #[error("registry '{registry}' has an invalid port")]
    RegistryBadPort { registry: String },
    #[error("repository name longer than {MAX_REPOSITORY_LEN} characters")]
    RepositoryTooLong,
    #[error("empty path component in repository name")]
    RepositoryEmptyComponent,
    #[error("repository name component '{component}' must be lowercase")]
    ComponentUppercase { component: String },
    #[error("repository name component '{component}' may only contain a-z, 0-9, '.', '_' and '-'")]
    ComponentBadCharacter { component: String },
    #[error("repository name component '{component}' must start and end with a letter or digit")]
    ComponentBadEnds { component: String },
    #[error("empty tag after ':'")]
    EmptyTag,
    #[error("tag longer than {MAX_TAG_LEN} characters")]
    TagTooLong,
    #[error("tag '{tag}' may only contain A-Z, a-z, 0-9, '_', '.' and '-' (not first)")]
    BadTag { tag: String },
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// Why a digest is refused: only `sha256:<64 lowercase hex digits>` is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest '{digest}' must look like sha256:<64 hex digits>")]
    NoAlgorithm { digest: String },
    #[error("digest algorithm '{algorithm}' is not supported (only sha256)")]
    Algorithm { algorithm: String },
    #[error("sha256 digest must have 64 hex digits, got {digits}")]
    Length { digits: usize },
    #[error("sha256 digest must be lowercase hexadecimal")]
    NotLowercaseHex,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io`, `nvcr.io`, `127.0.0.1:5000`, or `load` for archives.
    pub registry: String,
    /// Slash-separated lowercase path, e.g. `library/alpine` or `nvidia/pytorch`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given; `None` for a digest-only reference.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`. When present it is what gets pulled; the tag is only for display.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, RefError> {
        let fail = |reason: RefReason| RefError {
            reference: input.escape_debug().to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail(RefReason::Empty));
        }
        if input.len() > MAX_REF_LEN {
            return Err(fail(RefReason::TooLong));
        }
        if let Some(c) = input.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail(RefReason::Whitespace { found: c }));
        }
        if input.contains("..") {
            return Err(fail(RefReason::DotDot));
        }
        let s = input.strip_prefix("docker://").unwrap_or(input);
        if let Some((transport, _)) = s.split_once("://") {
            let transport = transport.to_string();
            return Err(fail(
                if matches!(transport.as_str(), "dockerd" | "podman") {
                    RefReason::LocalDaemon { transport }
                } else {
                    RefReason::Transport { transport }
                },
            ));
        }
        let (registry, rest) = match s.split_once('#') {
            Some((reg, rest)) => {
                // enroot: [USER@]REGISTRY#IMAGE. Credentials belong in the auth file, not here.
                if reg.contains('@') {
                    return Err(fail(RefReason::UserBeforeRegistry));
                }
                if rest.contains('#') {
                    return Err(fail(RefReason::MoreThanOneHash));
                }
                check_registry(reg).map_err(fail)?;
                (Some(reg), rest)
            }
            None => (None, s),
        };
        let (name, digest) = match rest.rsplit_once('@') {
            Some((name, d)) => {
                check_digest(d).map_err(|e| fail(e.into()))?;
                (name, Some(d.to_string()))
            }
            None => (rest, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let t = &name[last_slash + i + 1..];
                check_tag(t).map_err(fail)?;
                (&name[..last_slash + i], Some(t.to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(fail(RefReason::MissingName));
        }
        let (registry, repository) = match registry {
            Some(r) => (r.to_string(), name.to_string()),
            None => match name.split_once('/') {
                Some((first, path)) if is_registry_component(first) => {
                    check_registry(first).map_err(fail)?;
                    (first.to_string(), path.to_string())
                }
                _ => (DOCKER_HUB.to_string(), name.to_string()),
            },
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&repository).map_err(fail)?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        let r = ImageRef {
            registry,
            repository,
            tag,
            digest,
        };
        // The bound holds for the full form too (registry, `library/`, `:latest` added), so
        // what egret prints and stores always parses back.
        if r.display().len() > MAX_REF_LEN {
            return Err(fail(RefReason::FullFormTooLong));
        }
        Ok(r)
    }

    /// The skopeo source: pinned to the digest when there is one (the tag is then ignored).
    pub fn transport_ref(&self) -> String {
        format!("docker://{}", self.pinned_name())
    }

    /// `registry/repository@digest` or `registry/repository:tag`.
    pub fn pinned_name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}/{}@{d}", self.registry, self.repository),
            (None, Some(t)) => format!("{}/{}:{t}", self.registry, self.repository),
            (None, None) => format!("{}/{}", self.registry, self.repository),
        }
    }

    /// The normalized full form, keeping a tag next to a digest for the reader. A registry that
    /// does not look like a host (`enroot`'s `gitlab#repo`) keeps the `#`, so the text parses
    /// back to the same image rather than to one on Docker Hub.
    pub fn display(&self) -> String {
        let mut s = if self.registry != DOCKER_HUB && !is_registry_component(&self.registry) {
            format!("{}#{}", self.registry, self.repository)
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The repository as `sarus images` (1.7) prints it: Docker Hub's images without their
    /// server (and `library/`), every other server's with it, loaded images with their `load/`
    /// server, so the name can be typed back as it is shown.
    pub fn short_repository(&self) -> String {
        short_repository(&self.registry, &self.repository)
    }
}

/// See [`ImageRef::short_repository`]; shared with the store's index entries.
pub fn short_repository(registry: &str, repository: &str) -> String {
    match registry {
        DOCKER_HUB => repository
            .strip_prefix("library/")
            .unwrap_or(repository)
            .to_string(),
        _ => format!("{registry}/{repository}"),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Docker's rule: the first path component names a registry when it looks like a host.
fn is_registry_component(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first == LOAD_SERVER
}

fn check_registry(reg: &str) -> Result<(), RefReason> {
    if reg.is_empty() {
        return Err(RefReason::EmptyRegistry);
    }
    let registry = || reg.to_string();
    let (host, port) = match reg.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (reg, None),
    };
    if host.is_empty() || host.split('.').any(|label| label.is_empty()) {
        return Err(RefReason::RegistryEmptyLabel {
            registry: registry(),
        });
    }
    let label_ok = |l: &str| {
        l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.split('.').all(label_ok) {
        return Err(RefReason::RegistryBadHost {
            registry: registry(),
        });
    }
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(RefReason::RegistryBadPort {
                registry: registry(),
            });
        }
    }
    Ok(())
}

fn check_repository(repo: &str) -> Result<(), RefReason> {
    if repo.len() > MAX_REPOSITORY_LEN {
        return Err(RefReason::RepositoryTooLong);
    }
    for comp in repo.split('/') {
        if comp.is_empty() {
            return Err(RefReason::RepositoryEmptyComponent);
        }
        let component = || comp.to_string();
        if comp.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(RefReason::ComponentUppercase {
                component: component(),
            });
        }
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !comp
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
        {
            return Err(RefReason::ComponentBadCharacter {
                component: component(),
            });
        }
        let first = comp.chars().next().expect("non-empty");
        let last = comp.chars().next_back().expect("non-empty");
        if !alnum(first) || !alnum(last) {
            return Err(RefReason::ComponentBadEnds {
                component: component(),
            });
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), RefReason> {
    if tag.is_empty() {
        return Err(RefReason::EmptyTag);
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(RefReason::TagTooLong);
    }
    let mut chars = tag.chars();
    let first = chars.next().expect("non-empty");
    if !(first.is_ascii_alphanumeric() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(RefReason::BadTag {
            tag: tag.to_string(),
        });
    }
    Ok(())
}

/// Only sha256 is accepted: it is what registries use and what the store is keyed by.
pub fn check_digest(d: &str) -> Result<(), DigestError> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(DigestError::NoAlgorithm {
            digest: d.to_string(),
        });
    };
    if algo != "sha256" {
        return Err(DigestError::Algorithm {
            algorithm: algo.to_string(),
        });
    }
    if hex.len() != 64 {
        return Err(DigestError::Length { digits: hex.len() });
    }
    if !hex
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(DigestError::NotLowercaseHex);
    }
    Ok(())
}

/// What `--container-image` names: a registry image or a squashfs file the user already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Registry(ImageRef),
    SquashfsFile(PathBuf),
}

impl ImageSource {
    /// pyxis semantics: a path-looking value or a `.sqsh`/`.squashfs` name is a file.
    pub fn parse(s: &str) -> Result<ImageSource, RefError> {
        let is_path = s.starts_with('/')
            || s.starts_with("./")
            || s.starts_with("../")
            || s.ends_with(".sqsh")
            || s.ends_with(".squashfs");
        if is_path {
            if s.chars().any(|c| c.is_control()) {
                return Err(RefError {
                    reference: s.escape_debug().to_string(),
                    reason: RefReason::FileControlCharacter,
                });
            }
            Ok(ImageSource::SquashfsFile(PathBuf::from(s)))
        } else {
            ImageRef::parse(s).map(ImageSource::Registry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    // Users read these after `invalid image reference '...': `: each text is pinned.
    #[test]
    fn every_reason_has_its_exact_text() {
        let s = String::from;
        let cases = [
            (RefReason::Empty, s("empty reference")),
            (RefReason::TooLong, s("longer than 1024 characters")),
            (
                RefReason::Whitespace { found: '\n' },
                s("contains whitespace or a control character ('\\n')"),
            ),
            (RefReason::DotDot, s("'..' is not allowed")),
            (
                RefReason::Transport {
                    transport: s("oci"),
                },
                s("transport 'oci://' is not supported (only docker://)"),
            ),
            (
                RefReason::LocalDaemon {
                    transport: s("podman"),
                },
                s("egret does not import images from a local Docker or podman daemon (podman://); push the image to a registry, or `docker save` it and use `egret load ARCHIVE NAME`"),
            ),
            (
                RefReason::UserBeforeRegistry,
                s("a user name before the registry (USER@REGISTRY#...) is not supported; put credentials in the registry auth file"),
            ),
            (RefReason::MoreThanOneHash, s("more than one '#'")),
            (RefReason::MissingName, s("missing image name")),
            (
                RefReason::FullFormTooLong,
                s("longer than 1024 characters with its registry and tag"),
            ),
            (
                RefReason::FileControlCharacter,
                s("file path contains a control character"),
            ),
            (RefReason::EmptyRegistry, s("empty registry name")),
            (
                RefReason::RegistryEmptyLabel { registry: s("a..b") },
                s("registry 'a..b' has an empty host name component"),
            ),
            (
                RefReason::RegistryBadHost { registry: s("a_b") },
                s("registry 'a_b' is not a valid host name"),
            ),
            (
                RefReason::RegistryBadPort { registry: s("h:x") },
                s("registry 'h:x' has an invalid port"),
            ),
            (
                RefReason::RepositoryTooLong,
                s("repository name longer than 255 characters"),
            ),
            (
                RefReason::RepositoryEmptyComponent,
                s("empty path component in repository name"),
            ),
            (
                RefReason::ComponentUppercase { component: s("Ab") },
                s("repository name component 'Ab' must be lowercase"),
            ),
            (
                RefReason::ComponentBadCharacter { component: s("a!") },
                s("repository name component 'a!' may only contain a-z, 0-9, '.', '_' and '-'"),
            ),
            (
                RefReason::ComponentBadEnds { component: s("-a") },
                s("repository name component '-a' must start and end with a letter or digit"),
            ),
            (RefReason::EmptyTag, s("empty tag after ':'")),
            (RefReason::TagTooLong, s("tag longer than 128 characters")),
            (
                RefReason::BadTag { tag: s("-x") },
                s("tag '-x' may only contain A-Z, a-z, 0-9, '_', '.' and '-' (not first)"),
            ),
            (
                RefReason::Digest(DigestError::NoAlgorithm { digest: s("abc") }),
                s("digest 'abc' must look like sha256:<64 hex digits>"),
            ),
            (
                DigestError::Algorithm {
                    algorithm: s("md5"),
                }
                .into(),
                s("digest algorithm 'md5' is not supported (only sha256)"),
            ),
            (
                DigestError::Length { digits: 3 }.into(),
                s("sha256 digest must have 64 hex digits, got 3"),
            ),
            (
                DigestError::NotLowercaseHex.into(),
                s("sha256 digest must be lowercase hexadecimal"),
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.to_string(), want);
        }
        assert_eq!(
            ImageRef::parse("al pine").unwrap_err().to_string(),
            "invalid image reference 'al pine': contains whitespace or a control character (' ')"
        );
    }

    fn err(s: &str) -> String {
        ImageRef::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(p("alpine").display(), "docker.io/library/alpine:latest");
        assert_eq!(
            p("library/alpine:3.19").display(),
            "docker.io/library/alpine:3.19"
        );
        assert_eq!(p("ubuntu:22.04").tag.as_deref(), Some("22.04"));
        assert_eq!(p("user/img").repository, "user/img");
        assert_eq!(p("index.docker.io/alpine").registry, "docker.io");
        assert_eq!(p("docker.io/alpine").repository, "library/alpine");
    }

    #[test]
    fn registries_with_ports_and_paths() {
        let r = p("host:5000/ns/img:tag");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("host:5000", "ns/img")
        );
        assert_eq!(r.tag.as_deref(), Some("tag"));
        let r = p("localhost/img");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "img")
        );
        let r = p("nvcr.io/nvidia/pytorch:24.01-py3");
        assert_eq!(r.registry, "nvcr.io");
        assert_eq!(
            r.transport_ref(),
            "docker://nvcr.io/nvidia/pytorch:24.01-py3"
        );
        // A port-looking suffix without a registry part is a tag.
        assert_eq!(p("img:5000").tag.as_deref(), Some("5000"));
        assert_eq!(p("a/b/c/d").repository, "a/b/c/d");
    }

    #[test]
    fn digests() {
        let r = p(&format!("img@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(
            r.transport_ref(),
            format!("docker://docker.io/library/img@{D}")
        );
        let r = p(&format!("img:1.0@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(
            r.transport_ref(),
            format!("docker://docker.io/library/img@{D}")
        );
        assert_eq!(r.display(), format!("docker.io/library/img:1.0@{D}"));
        let r = p(&format!("localhost:5000/x/y@{D}"));
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(
            p("alpine").with_digest(D).pinned_name(),
            format!("docker.io/library/alpine@{D}")
        );
    }

    #[test]
    fn docker_transport_prefix() {
        assert_eq!(
            p("docker://alpine:3").display(),
            "docker.io/library/alpine:3"
        );
        assert_eq!(
            p("docker://127.0.0.1:5000/egret/busybox").registry,
            "127.0.0.1:5000"
        );
        assert!(err("oci:///tmp/x").contains("transport"));
        assert!(err("http://host/img").contains("transport"));
        for daemon in ["dockerd://busybox", "podman://localhost/app:1"] {
            let e = ImageSource::parse(daemon).unwrap_err();
            assert!(
                matches!(e.reason, RefReason::LocalDaemon { .. }),
                "{daemon}: {e}"
            );
        }
    }

    #[test]
    fn enroot_form() {
        let r = p("nvcr.io#nvidia/pytorch:24.01-py3");
        assert_eq!(r.registry, "nvcr.io");
        assert_eq!(r.repository, "nvidia/pytorch");
        assert_eq!(r.tag.as_deref(), Some("24.01-py3"));
        let r = p("127.0.0.1:5000#egret/busybox");
        assert_eq!(r.display(), "127.0.0.1:5000/egret/busybox:latest");
        assert_eq!(p("docker.io#alpine").repository, "library/alpine");
        assert_eq!(
            p(&format!("reg.example#a/b@{D}")).digest.as_deref(),
            Some(D)
        );
        assert!(err("user@nvcr.io#nvidia/pytorch").contains("USER@"));
        assert!(err("#img").contains("empty registry"));
        assert!(err("a#b#c").contains("'#'"));
        // Found by fuzzing: a one-word registry must print back to itself, not to Docker Hub.
        let r = p("j#34");
        assert_eq!(r.display(), "j#34:latest");
        assert_eq!(p(&r.display()), r);
        assert!(err("reg.io#").contains("missing image name"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(err("").contains("empty"));
        assert!(err("Alpine").contains("lowercase"));
        assert!(err("host/Ns/img").contains("lowercase"));
        assert!(err("a/../b").contains(".."));
        assert!(err("a//b").contains("empty path component"));
        assert!(err("a/b/").contains("empty path component"));
        assert!(err("/a").contains("empty path component"));
        assert!(err("al pine").contains("whitespace"));
        assert!(err("alpine\n").contains("control"));
        assert!(
            !err("alpine\n").contains('\n'),
            "the message must stay on one line"
        );
        assert!(err("alpine:").contains("empty tag"));
        assert!(err("alpine:-x").contains("tag"));
        assert!(err(&format!("alpine:{}", "a".repeat(129))).contains("tag longer"));
        assert!(err(&"a".repeat(2000)).contains("longer than"));
        // Short enough as typed, too long once `:latest` is added: refused, not stored.
        let near = format!("{}.u/a", "a".repeat(MAX_REF_LEN - 4));
        assert!(err(&near).contains("with its registry and tag"), "{near}");
        assert!(err(&format!("a/{}", "b".repeat(300))).contains("repository name longer"));
        assert!(err("-alpine").contains("start and end"));
        assert!(err("alp!ne").contains("may only contain"));
        assert!(err("host:99999/img").contains("port"));
        assert!(err("ho_st.io/img").contains("host name"));
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(err("img@md5:abc").contains("algorithm"));
        assert!(err("img@sha256:abc").contains("64 hex"));
        assert!(err(&format!("img@sha256:{}", "g".repeat(64))).contains("hexadecimal"));
        assert!(err(&format!("img@sha256:{}", "A".repeat(64))).contains("hexadecimal"));
        assert!(err("img@").contains("digest"));
        assert!(err("img@sha512:00").contains("algorithm"));
    }

    #[test]
    fn load_server_is_a_registry() {
        let r = p("load/library/my_debian");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("load", "library/my_debian")
        );
        assert_eq!(r.short_repository(), "load/library/my_debian");
        assert_eq!(p("alpine").short_repository(), "alpine");
        assert_eq!(
            p("127.0.0.1:5000/egret/busybox").short_repository(),
            "127.0.0.1:5000/egret/busybox"
        );
    }

    #[test]
    fn sources() {
        assert_eq!(
            ImageSource::parse("/scratch/x.sqsh").unwrap(),
            ImageSource::SquashfsFile("/scratch/x.sqsh".into())
        );
        assert!(matches!(
            ImageSource::parse("./img").unwrap(),
            ImageSource::SquashfsFile(_)
        ));
        assert!(matches!(
            ImageSource::parse("../img").unwrap(),
            ImageSource::SquashfsFile(_)
        ));
        assert!(matches!(
            ImageSource::parse("img.squashfs").unwrap(),
            ImageSource::SquashfsFile(_)
        ));
        assert!(matches!(
            ImageSource::parse("alpine").unwrap(),
            ImageSource::Registry(_)
        ));
        assert!(matches!(
            ImageSource::parse("nvcr.io#nvidia/pytorch").unwrap(),
            ImageSource::Registry(_)
        ));
        assert!(ImageSource::parse("Bad").is_err());
    }
}
