use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::*;

/// A registry on 127.0.0.1 that answers `handler(request line, headers)` to each connection;
/// returns its address and the requests it saw.
fn serve(
    handler: impl Fn(&str, &[String], &str) -> String + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                headers.push(h.trim().to_string());
            }
            log.lock().unwrap().push(line.trim().to_string());
            let here = listener.local_addr().unwrap().to_string();
            let answer = handler(line.trim(), &headers, &here);
            let mut s = stream;
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (addr, seen)
}

fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn reference(registry: &str, tag: &str) -> ImageRef {
    ImageRef::parse(&format!("{registry}/egret/busybox:{tag}")).unwrap()
}

const MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

#[test]
fn an_open_registry_answers_the_tag_with_its_manifest_bytes() {
    let (addr, seen) = serve(|line, headers, _| {
        let accepts = headers.iter().any(|h| {
            h.to_ascii_lowercase().starts_with("accept:") && h.contains("image.index.v1+json")
        });
        if line.starts_with("GET /v2/egret/busybox/manifests/v2 ") && accepts {
            reply(
                "200 OK",
                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                MANIFEST,
            )
        } else {
            reply("404 Not Found", "", "")
        }
    });
    let got = get(
        &reference(&addr, "v2"),
        Scheme::Http,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(got, MANIFEST.as_bytes());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn a_token_registry_is_asked_for_an_anonymous_pull_token_first() {
    let (addr, seen) = serve(|line, headers, here| {
        let bearer = headers.iter().any(|h| h == "Authorization: Bearer t0k");
        if line.starts_with("GET /token?") {
            assert!(
                line.contains("scope=repository%3Aegret%2Fbusybox%3Apull"),
                "{line}"
            );
            assert!(line.contains("service=reg"), "{line}");
            reply("200 OK", "", r#"{"token":"t0k"}"#)
        } else if bearer {
            reply("200 OK", "", MANIFEST)
        } else {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{here}/token\",service=\"reg\",scope=\"repository:egret/busybox:pull\"\r\n"
            );
            reply("401 Unauthorized", &challenge, "")
        }
    });
    let got = get(
        &reference(&addr, "latest"),
        Scheme::Http,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(got, MANIFEST.as_bytes());
    assert_eq!(seen.lock().unwrap().len(), 3, "{:?}", seen.lock().unwrap());
}

#[test]
fn credentials_a_missing_tag_and_no_registry_are_errors() {
    let (addr, _) = serve(|_, _, _| {
        reply(
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"r\"\r\n",
            "",
        )
    });
    let e = get(&reference(&addr, "x"), Scheme::Http, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(e, ManifestGetError::Skopeo(_)), "{e}");
    let (addr, _) = serve(|_, _, _| reply("404 Not Found", "", ""));
    let e = get(&reference(&addr, "x"), Scheme::Http, Duration::from_secs(5)).unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
    // Nobody listens: a transport error, quickly.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = get(
        &reference(&format!("127.0.0.1:{port}"), "x"),
        Scheme::Http,
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(matches!(e, ManifestGetError::Request { .. }), "{e}");
}

#[test]
fn bearer_challenges_parse_quoted_and_bare_values() {
    let p = bearer_params(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#).unwrap();
    assert_eq!(
        p[0],
        ("realm".into(), "https://auth.docker.io/token".into())
    );
    assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
    assert_eq!(p[2].1, "repository:library/alpine:pull");
    let p = bearer_params("Bearer realm=https://r/t, service=s").unwrap();
    assert_eq!(
        p,
        vec![
            ("realm".into(), "https://r/t".into()),
            ("service".into(), "s".into())
        ]
    );
    assert!(bearer_params("Basic realm=\"x\"").is_none());
}
