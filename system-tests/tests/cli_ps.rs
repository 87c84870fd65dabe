//! `egret run --name`, `egret ps`, `egret kill`: Sarus's verbs for named CLI containers.

use egret_test_support as common;

use std::process::Stdio;
use std::time::Duration;

#[test]
fn named_run_is_listed_and_killed() {
    common::require_root();
    let image = common::registry_image("busybox");
    common::assert_success(&common::run(common::egret().args(["pull", &image])), "pull");
    let before = common::leak_snapshot();
    let name = format!("ps-test-{}", std::process::id());
    let mut child = common::egret()
        .args(["run", "--name", &name, &image, "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listed = || {
        let o = common::run(common::egret().arg("ps"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with(&name) && l.contains(&image) && l.contains("running"))
    };
    assert!(
        common::wait_for(Duration::from_secs(30), listed),
        "egret ps never listed {name}"
    );
    // The name is taken while it runs.
    let o = common::run(common::egret().args(["run", "--name", &name, &image, "true"]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("a container of that name is running"),
        "{err}"
    );
    common::assert_success(&common::run(common::egret().args(["kill", &name])), "kill");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM reaches the command");
    assert!(!listed());
    common::assert_no_leaks(&before);
    // Unknown names and bad names: one line each, naming the input and the help.
    for args in [
        vec!["kill", "no-such-container"],
        vec!["run", "--name", "../x", &image, "true"],
    ] {
        let o = common::run(common::egret().args(&args));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--help"), "{err}");
    }
}

#[test]
fn ps_and_kill_work_for_users_over_their_own_containers() {
    common::require_root();
    // The setuid egret: a user's ps lists (their containers only, see cli_user.rs), and kill
    // of a name that is not one of theirs is one line.
    let o = common::run_as_user(common::TEST_USER.name, &[common::EGRET_BIN, "ps"]);
    let out = common::assert_success(&o, "ps as a user");
    assert!(out.starts_with("NAME"), "{out}");
    let o = common::run_as_user(common::TEST_USER.name, &[common::EGRET_BIN, "kill", "x"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("x: no such running container"), "{err}");
}

#[test]
fn rmi_by_digest_removes_every_name_of_it() {
    common::require_root();
    let latest = common::registry_image("busybox");
    let multi = format!("{}/egret/busybox:multiarch", common::REGISTRY);
    for r in [&latest, &multi] {
        common::assert_success(&common::run(common::egret().args(["pull", r])), "pull");
    }
    let o = common::run(common::egret().args(["images", "--digests"]));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let digest = listing
        .lines()
        .find(|l| {
            l.starts_with("127.0.0.1:5000/egret/busybox ")
                && l.split_whitespace().nth(1) == Some("latest")
        })
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("busybox:latest with its digest")
        .to_string();
    let o = common::run(common::egret().args(["rmi", &digest]));
    let out = common::assert_success(&o, "rmi by digest");
    assert!(
        out.contains(":latest") && out.contains(":multiarch"),
        "{out}"
    );
    let o = common::run(common::egret().args(["images", "--digests"]));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&digest));
    let o = common::run(common::egret().args(["rmi", &digest]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("no image of yours has digest"),
        "{err}"
    );
    // Put them back for whatever runs next.
    for r in [&latest, &multi] {
        common::assert_success(&common::run(common::egret().args(["pull", r])), "pull");
    }
}

#[test]
fn run_errors_name_the_input_and_the_help() {
    common::require_root();
    let image = common::registry_image("busybox");
    let missing = format!("{}/egret/never-pushed", common::REGISTRY);
    let ctl_env = "A\u{1}B=1".to_string();
    // Sarus's texts (two lines) for a bad reference and a relative working directory.
    for (args, first, second) in [
        (
            vec!["UPPER::x", "true"],
            "Invalid image ID 'UPPER::x': ",
            "See 'egret help run'",
        ),
        (
            vec!["--workdir=rel", image.as_str(), "true"],
            "The working directory 'rel' is invalid, it needs to be an absolute path.",
            "See 'egret help run'",
        ),
    ] {
        let mut full = vec!["run"];
        full.extend(args.iter().copied());
        let o = common::run(common::egret().args(&full));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{args:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 2 && lines[0].starts_with(first) && lines[1] == second,
            "{args:?}: {err}"
        );
    }
    let o = common::run(common::egret().args(["run", "--mount=bad", image.as_str(), "true"]));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Invalid mount request 'bad': unknown key 'bad' (expected type, source, destination, readonly)\n",
        "Sarus's text"
    );
    for (args, needles) in [
        (
            vec![missing.as_str(), "true"],
            vec!["never-pushed", "egret pull"],
        ),
        (
            vec!["--env==x", image.as_str(), "true"],
            vec!["Error parsing environment variable requested from CLI '=x'"],
        ),
        (
            vec!["--env", ctl_env.as_str(), image.as_str(), "true"],
            vec!["control character"],
        ),
    ] {
        let mut full = vec!["run"];
        full.extend(args.iter().copied());
        let o = common::run(common::egret().args(&full));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err}");
        }
    }
}
