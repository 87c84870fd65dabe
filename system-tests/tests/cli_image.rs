//! The installed `egret` CLI's image verbs, end to end: `pull`, `images`, `rmi`, `load`, against
//! the local registry, real skopeo and mksquashfs.
//!
//! Every test works in a store of its own: a copy of /etc/egret/egret.json whose store, temp,
//! bundle and runc directories point into a scratch directory, passed with `egret --config`
//! (root only). The shared store of the machine is never touched. Tests run one at a time (they
//! compare machine-wide counts of mounts and loop devices before and after).
//!
//! Run with `make test` or `cargo test --release --test cli_image` as root, after `make up`.

use egret_test_support as common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One test at a time: leak checks count machine-wide resources.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

use common::sandbox::{stderr, Sandbox};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines an import prints while it works (not errors).
const PROGRESS: &[&str] = &[
    "egret: resolving ",
    "egret: downloading ",
    "egret: squashing ",
    "egret: reading ",
    "egret: waiting for ",
];

/// A failed command: non-zero, nothing on stdout, and exactly one line on stderr that is not
/// progress, the last one, which starts with `prefix`. Returns that line.
fn assert_one_error_line(out: &Output, prefix: &str, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail\n{}",
        common::describe(out)
    );
    let err = stderr(out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !PROGRESS.iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: expected exactly one error line\n{}",
        common::describe(out)
    );
    assert_eq!(
        err.lines().last(),
        Some(errors[0]),
        "{what}: the error must be the last line\n{}",
        common::describe(out)
    );
    assert!(
        errors[0].starts_with(prefix),
        "{what}: error line should start with '{prefix}'\n{}",
        common::describe(out)
    );
    errors[0].to_string()
}

fn busybox() -> String {
    common::registry_image("busybox")
}

/// The REPOSITORY column of `egret images` for an image of the test registry.
fn listed(images: &str, repo: &str, tag: &str) -> bool {
    images.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 2 && cols[0] == repo && cols[1] == tag
    })
}

#[test]
fn pull_stores_the_image_and_images_lists_it_with_its_digest() {
    let _s = serial();
    let sb = Sandbox::new();
    let before = common::leak_snapshot();
    let (out, err) = sb.ok(&["pull", &busybox()]);
    // Sarus's header on stdout (scripts read it); the progress on stderr.
    let digest = common::registry_digest("busybox", "latest");
    let header: Vec<&str> = out.lines().collect();
    assert_eq!(header.len(), 5, "{out}");
    assert_eq!(
        header[0],
        format!("# image            : {}:latest", busybox())
    );
    for (line, key) in header[1..4].iter().zip([
        "# cache directory  : \"",
        "# temp directory   : \"",
        "# images directory : \"",
    ]) {
        assert!(line.starts_with(key), "{line:?} is not {key:?}");
    }
    assert_eq!(header[4], format!("# image digest     : {digest}"));
    assert!(
        err.contains("egret: downloading") && err.contains("egret: stored"),
        "{err}"
    );
    assert!(err.contains(&digest), "the stored digest is shown: {err}");
    let stem = digest.replacen(':', "-", 1);
    assert_eq!(
        sb.image_files(),
        vec![format!("{stem}.meta"), format!("{stem}.squashfs")]
    );

    let images = sb.images(&[]);
    let header: Vec<&str> = images.lines().next().unwrap_or("").split("   ").collect();
    assert!(
        header.iter().any(|h| h.trim() == "REPOSITORY") && !images.contains("DIGEST"),
        "{images}"
    );
    assert!(
        listed(&images, "127.0.0.1:5000/egret/busybox", "latest"),
        "{images}"
    );
    assert!(images.contains(common::REGISTRY), "SERVER column: {images}");
    let with_digests = sb.images(&["--digests"]);
    assert!(with_digests.lines().next().unwrap().contains("DIGEST"));
    let row = with_digests
        .lines()
        .find(|l| l.starts_with("127.0.0.1:5000/egret/busybox "))
        .unwrap_or_else(|| panic!("no busybox row: {with_digests}"));
    assert!(row.contains(&digest), "{with_digests}");

    // A second pull resolves the tag again, finds the digest stored and downloads nothing.
    let (out, err) = sb.ok(&["pull", &busybox()]);
    assert!(
        err.contains("is up to date") && !err.contains("downloading"),
        "{err}"
    );
    assert_eq!(
        out.lines().last(),
        Some(
            format!(
                "Image for {}:latest is already available and up to date",
                busybox()
            )
            .as_str()
        ),
        "{out}"
    );
    assert_eq!(sb.image_files().len(), 2);
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn enroot_and_digest_references_reach_the_same_stored_image() {
    let _s = serial();
    let sb = Sandbox::new();
    let digest = common::registry_digest("busybox", "latest");
    sb.ok(&["pull", &busybox()]);
    let enroot = format!("{}#egret/busybox", common::REGISTRY);
    let (_, err) = sb.ok(&["pull", &enroot]);
    assert!(err.contains("is up to date"), "{err}");
    let pinned = format!("{}@{digest}", busybox());
    let (_, err) = sb.ok(&["pull", &pinned]);
    assert!(err.contains("is up to date"), "{err}");
    // One image file, two index entries (by tag and by digest).
    assert_eq!(sb.image_files().len(), 2, "{:?}", sb.image_files());
    let images = sb.images(&[]);
    assert!(
        listed(&images, "127.0.0.1:5000/egret/busybox", "latest"),
        "{images}"
    );
    assert!(
        listed(&images, "127.0.0.1:5000/egret/busybox", "<none>"),
        "{images}"
    );
}

#[test]
fn rmi_removes_the_image_and_its_files() {
    let _s = serial();
    let sb = Sandbox::new();
    sb.ok(&["pull", &busybox()]);
    let (out, _) = sb.ok(&["rmi", &busybox()]);
    assert!(
        out.contains(&format!("removed {}:latest", busybox())),
        "{out}"
    );
    let images = sb.images(&[]);
    assert_eq!(
        images.lines().count(),
        1,
        "only the header is left: {images}"
    );
    assert!(sb.image_files().is_empty(), "{:?}", sb.image_files());
    // Gone means gone: run and a second rmi say so in one line.
    let o = sb.egret(&["run", &busybox(), "true"]);
    let line = assert_one_error_line(&o, "egret: ", "run of a removed image");
    assert!(
        line.contains("not available") && line.contains("egret pull"),
        "{line}"
    );
    let o = sb.egret(&["rmi", &busybox()]);
    let line = assert_one_error_line(&o, "egret: rmi: ", "rmi of a removed image");
    assert!(line.contains("not in the store"), "{line}");
}

#[test]
fn rmi_keeps_an_image_another_name_still_uses() {
    let _s = serial();
    let sb = Sandbox::new();
    sb.ok(&["pull", &busybox()]);
    // busybox:multiarch is an index whose amd64 manifest is busybox:latest's.
    let multiarch = format!("{}:multiarch", busybox());
    sb.ok(&["pull", &multiarch]);
    assert_eq!(sb.image_files().len(), 2, "one digest stored once");
    sb.ok(&["rmi", &busybox()]);
    assert_eq!(sb.image_files().len(), 2, "still used by :multiarch");
    let (out, _) = sb.ok(&["run", &multiarch, "cat", "/data/hello.txt"]);
    assert_eq!(out, "hello from busybox image\n");
    sb.ok(&["rmi", &multiarch]);
    assert!(sb.image_files().is_empty(), "{:?}", sb.image_files());
}

#[test]
fn bad_reference_missing_image_and_unreachable_registry_are_one_line() {
    let _s = serial();
    let sb = Sandbox::new();
    // A reference that does not parse: Sarus's two lines, egret's reason on the first.
    for (reference, needle) in [
        ("Bad/Ref", "must be lowercase"),
        ("127.0.0.1:5000/egret/busybox:bad tag", "whitespace"),
    ] {
        let o = sb.egret(&["pull", reference]);
        assert!(!o.status.success());
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 2
                && lines[0].starts_with(&format!("Invalid image ID '{reference}': "))
                && lines[0].contains(needle)
                && lines[1] == "See 'egret help pull'",
            "{reference}: {err}"
        );
        assert!(stdout(&o).is_empty(), "{reference}: {}", stdout(&o));
    }
    let cases = [
        ("127.0.0.1:5000/egret/doesnotexist", "not found"),
        ("127.0.0.1:5000/egret/busybox:nosuchtag", "not found"),
        ("127.0.0.1:1/egret/busybox", "unreachable"),
    ];
    for (reference, needle) in cases {
        let o = sb.egret(&["pull", reference]);
        let line = assert_one_error_line(&o, "egret: pull: ", reference);
        assert!(line.contains(needle), "{reference}: {line}");
        // At most Sarus's header (printed before the registry answers), never a digest.
        let out = stdout(&o);
        assert!(
            out.lines().all(|l| l.starts_with("# ")) && !out.contains("# image digest"),
            "{reference}: {out}"
        );
        sb.assert_no_leftovers();
        assert!(
            sb.image_files().is_empty(),
            "{reference}: {:?}",
            sb.image_files()
        );
    }
    let images = sb.images(&[]);
    assert_eq!(images.lines().count(), 1, "nothing recorded: {images}");
}

#[test]
fn failed_conversion_leaves_nothing_behind() {
    let _s = serial();
    let sb = Sandbox::with(|dir, cfg| {
        let fake = dir.join("failing-mksquashfs");
        fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho 'simulated failure' >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        cfg["mksquashfsPath"] = fake.to_str().unwrap().into();
    });
    let o = sb.egret(&["pull", &busybox()]);
    let line = assert_one_error_line(&o, "egret: pull: ", "pull with a failing mksquashfs");
    assert!(line.contains("simulated failure"), "{line}");
    sb.assert_no_leftovers();
    assert!(sb.image_files().is_empty(), "{:?}", sb.image_files());
    assert_eq!(sb.images(&[]).lines().count(), 1);
}

#[test]
fn concurrent_pulls_of_a_new_image_download_it_once() {
    let _s = serial();
    // mksquashfs made slow, so the first import still holds the image's lock when the second
    // pull asks for it.
    let sb = Sandbox::with(|dir, cfg| {
        let slow = dir.join("slow-mksquashfs");
        fs::write(
            &slow,
            "#!/bin/sh\nsleep 3\nexec /usr/bin/mksquashfs \"$@\"\n",
        )
        .unwrap();
        fs::set_permissions(&slow, fs::Permissions::from_mode(0o755)).unwrap();
        cfg["mksquashfsPath"] = slow.to_str().unwrap().into();
    });
    let image = common::registry_image("multilayer");
    let mut first = sb
        .cmd(&["pull", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first pull");
    let mut first_err = BufReader::new(first.stderr.take().unwrap());
    let mut first_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        let n = first_err.read_line(&mut line).expect("read the first pull");
        assert!(
            n > 0 && Instant::now() < deadline,
            "the first pull ended before squashing: {first_lines:?}"
        );
        first_lines.push(line.trim_end().to_string());
        if line.starts_with("egret: squashing") {
            break;
        }
    }
    // The first pull is converting now (for 3 s at least), holding the image's lock.
    let second = sb.egret(&["pull", &image]);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut first_err, &mut rest).unwrap();
    first_lines.extend(rest.lines().map(str::to_string));
    let status = first.wait().unwrap();
    let first_text = first_lines.join("\n");
    assert!(status.success(), "first pull failed:\n{first_text}");
    let second_text = common::assert_success(&second, "second pull");
    assert!(
        second_text.starts_with("# image            : "),
        "{second_text}"
    );
    let second_err = stderr(&second);

    let downloads = [&first_text, &second_err]
        .iter()
        .filter(|t| t.contains("egret: downloading"))
        .count();
    assert_eq!(
        downloads, 1,
        "exactly one download\n--- first ---\n{first_text}\n--- second ---\n{second_err}"
    );
    assert!(first_text.contains("egret: stored"), "{first_text}");
    assert!(
        second_err.contains("egret: waiting for another import of")
            && (second_err.contains("is up to date")
                || second_err.contains("was imported by another process")),
        "the second pull waits, then reuses the image:\n{second_err}"
    );
    assert_eq!(sb.image_files().len(), 2, "{:?}", sb.image_files());
    assert!(listed(
        &sb.images(&[]),
        "127.0.0.1:5000/egret/multilayer",
        "latest"
    ));
    sb.assert_no_leftovers();
}

#[test]
fn loaded_docker_archive_runs_as_load_library_name() {
    let _s = serial();
    let sb = Sandbox::new();
    let archive = sb.path("busybox.tar");
    let dest = format!("docker-archive:{}:busybox:latest", archive.display());
    let src = format!("docker://{}", busybox());
    let o =
        common::run(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &src, &dest]));
    common::assert_success(&o, "skopeo copy to a docker-archive");

    let before = common::leak_snapshot();
    let (out, err) = sb.ok(&["load", archive.to_str().unwrap(), "busybox"]);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("docker-archive") && err.contains("egret: stored load/library/busybox:latest"),
        "{err}"
    );
    let images = sb.images(&[]);
    assert!(
        listed(&images, "load/library/busybox", "latest"),
        "{images}"
    );
    let (out, _) = sb.ok(&["run", "load/library/busybox", "cat", "/etc/os-release"]);
    assert!(out.contains("ID=egret-busybox"), "{out}");
    // The same archive under another name and tag: stored once, listed twice.
    let (_, err) = sb.ok(&["load", archive.to_str().unwrap(), "mybox:v1"]);
    assert!(err.contains("is up to date"), "{err}");
    assert!(listed(&sb.images(&[]), "load/library/mybox", "v1"));
    assert_eq!(sb.image_files().len(), 2);
    sb.ok(&["rmi", "load/library/mybox:v1"]);
    sb.ok(&["rmi", "load/library/busybox"]);
    assert!(sb.image_files().is_empty(), "{:?}", sb.image_files());
    sb.assert_no_leftovers();
    common::assert_no_leaks(&before);
}

#[test]
fn load_refuses_what_is_not_an_image_archive_in_one_line() {
    let _s = serial();
    let sb = Sandbox::new();
    let junk = sb.path("junk.tar");
    fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let o = sb.egret(&["load", junk.to_str().unwrap(), "junk"]);
    let line = assert_one_error_line(&o, "egret: load: ", "load of junk");
    assert!(line.contains("junk.tar"), "{line}");
    let missing = sb.path("missing.tar");
    let o = sb.egret(&["load", missing.to_str().unwrap(), "x"]);
    let line = assert_one_error_line(&o, "egret: load: ", "load of a missing file");
    assert!(line.contains("missing.tar"), "{line}");
    // A registry in the name is refused: loaded images live under load/.
    let o = sb.egret(&["load", junk.to_str().unwrap(), "nvcr.io/nvidia/x"]);
    let line = assert_one_error_line(&o, "egret: load: ", "load under a registry name");
    assert!(line.contains("load/library/NAME"), "{line}");
    sb.assert_no_leftovers();
    assert!(sb.image_files().is_empty());
}

#[test]
fn users_cannot_choose_the_config_or_write_the_centralized_repository() {
    let _s = serial();
    let sb = Sandbox::new();
    let cfg = sb.config.to_str().unwrap().to_string();
    let o = common::run_as_user(
        common::TEST_USER.name,
        &[common::EGRET_BIN, "--config", &cfg, "images"],
    );
    let line = assert_one_error_line(&o, "egret: --config", "--config as a user");
    assert!(line.contains("only root"), "{line}");
    // Users read the site's centralized repository; only root fills it (Sarus's rule).
    let o = common::run_as_user(
        common::TEST_USER.name,
        &[
            common::EGRET_BIN,
            "pull",
            "--centralized-repository",
            &busybox(),
        ],
    );
    let line = assert_one_error_line(&o, "egret: pull: ", "pull into the centralized repository");
    assert!(line.contains("read-only for users"), "{line}");
}
