//! `egret check` and `securityChecks`: everything egret trusts as root must be root-owned and
//! not writable by group or others, up to `/`.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[test]
fn the_installed_configuration_passes() {
    common::require_root();
    let o = common::egret().arg("check").output().unwrap();
    assert!(o.status.success(), "{}", common::describe(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no problems found"));
}

#[test]
fn an_old_runc_is_a_warning_naming_its_version_and_the_cves() {
    common::require_root();
    // The installed runc (Debian 12's 1.1.5+ds1) predates the upstream fixes; the warning
    // judges the version number only and leaves the exit status to the other checks.
    let version = String::from_utf8_lossy(
        &std::process::Command::new("/usr/bin/runc")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .next()
    .unwrap()
    .strip_prefix("runc version ")
    .unwrap()
    .to_string();
    assert_eq!(version, "1.1.5+ds1", "this test expects Debian 12's runc");
    let o = common::egret().arg("check").output().unwrap();
    assert!(o.status.success(), "{}", common::describe(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let warning = out
        .lines()
        .find(|l| l.starts_with("egret check: warning: /usr/bin/runc: "))
        .unwrap_or_else(|| panic!("{out}"));
    for needle in [
        "runc version 1.1.5+ds1",
        "CVE-2024-21626",
        "CVE-2025-31133",
        "CVE-2025-52565",
        "CVE-2025-52881",
        "upstream version number",
        "1.2.8, 1.3.3, 1.4.0 or later",
        "backported",
    ] {
        assert!(warning.contains(needle), "{needle:?} not in {warning}");
    }
    assert!(out.contains("no problems found"), "{out}");
}

#[test]
fn a_misconfigured_install_names_each_violation() {
    common::require_root();
    // Under /var/tmp (sticky): root's own directory there cannot be swapped by users, but
    // what is writable or someone else's below it can.
    let dir = Path::new("/var/tmp").join(format!("egret-check-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("hooks.d")).unwrap();
    let runc = dir.join("runc");
    fs::copy("/usr/bin/runc", &runc).unwrap();
    fs::set_permissions(&runc, fs::Permissions::from_mode(0o777)).unwrap();
    let hook = dir.join("hooks.d/10-user.json");
    fs::write(
        &hook,
        r#"{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":["prestart"]}"#,
    )
    .unwrap();
    std::os::unix::fs::chown(
        &hook,
        Some(common::TEST_USER.uid),
        Some(common::TEST_USER.gid),
    )
    .unwrap();
    // A store someone else owns, and a runDir anyone may write.
    let store = dir.join("store");
    fs::create_dir_all(store.join("images")).unwrap();
    std::os::unix::fs::chown(&store, Some(common::TEST_USER.uid), None).unwrap();
    let run_dir = dir.join("run");
    fs::create_dir_all(&run_dir).unwrap();
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.join("egret.json");
    fs::write(
        &config,
        format!(
            r#"{{"securityChecks": true, "runcPath": "{}", "hooksDir": "{}", "localRepositoryBaseDir": "{}", "runDir": "{}"}}"#,
            runc.display(),
            dir.join("hooks.d").display(),
            store.display(),
            run_dir.display()
        ),
    )
    .unwrap();

    let o = common::egret()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!o.status.success(), "{out}");
    let line = |path: &Path, rule: &str| {
        out.lines()
            .any(|l| l.contains(&format!("{}:", path.display())) && l.contains(rule))
    };
    assert!(
        line(&runc, "must not be writable by group or others (mode 0777)"),
        "{out}"
    );
    assert!(
        line(&hook, "must be owned by root (owner uid is 4242)"),
        "{out}"
    );
    assert!(
        !line(Path::new("/var/tmp"), "must not be writable"),
        "a sticky parent of root's own directory is no violation: {out}"
    );
    assert!(
        line(&store, "must be owned by root (owner uid is 4242)"),
        "{out}"
    );
    assert!(
        line(
            &run_dir,
            "must not be writable by group or others (mode 0777)"
        ),
        "{out}"
    );

    // With securityChecks on, a run refuses to start, in one line.
    let o = common::egret()
        .arg("--config")
        .arg(&config)
        .args(["run", &common::registry_image("busybox"), "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.lines().count() == 1 && err.contains("security check"),
        "{err}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sarus_json_with_keys_egret_does_not_use_loads_with_one_warning_per_key() {
    common::require_root();
    // The keys of Sarus 1.6's sample sarus.json that egret has no use for.
    let sarus_only = [
        ("umociPath", serde_json::json!("/opt/sarus/bin/umoci")),
        ("rootfsFolder", serde_json::json!("rootfs")),
        ("enablePMIxv3Support", serde_json::json!(false)),
        (
            "containersPolicy",
            serde_json::json!({"path": "/opt/sarus/etc/policy.json", "enforce": false}),
        ),
    ];
    let sb = common::sandbox::Sandbox::with(|_, cfg| {
        for (key, value) in &sarus_only {
            cfg[*key] = value.clone();
        }
    });
    let (out, err) = sb.ok(&["images"]);
    assert!(
        out.starts_with("REPOSITORY"),
        "the listing still runs: {out}"
    );
    for (key, _) in &sarus_only {
        let line = format!(
            "egret: warning: config {}: key '{key}' is a Sarus setting egret does not use; ignored",
            sb.config.display()
        );
        assert_eq!(err.matches(&line).count(), 1, "{line:?} once in:\n{err}");
    }
    assert_eq!(err.lines().count(), sarus_only.len(), "{err}");

    // A key neither egret nor Sarus knows is still refused, naming it.
    let sb = common::sandbox::Sandbox::with(|_, cfg| cfg["bogusKey"] = serde_json::json!(1));
    let o = sb.egret(&["images"]);
    assert!(!o.status.success());
    assert!(
        common::sandbox::stderr(&o).contains("bogusKey"),
        "{}",
        common::describe(&o)
    );
}
