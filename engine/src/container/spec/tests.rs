//! Golden checks of the key fields of the generated spec; runc itself validates it in
//! `engine/tests/run_*.rs`.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::container::rootfs::{DeviceRule, Rootfs};
use crate::hooks::annotations;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn meta() -> ImageMeta {
    ImageMeta {
        entrypoint: Some(s(&["/entry.sh"])),
        cmd: Some(s(&["serve", "--port=80"])),
        working_dir: Some("/srv".into()),
        env: s(&["PATH=/img/bin", "IMG=1"]),
        ..ImageMeta::default()
    }
}

fn user() -> UserIdentity {
    UserIdentity {
        uid: 4242,
        gid: 4343,
        groups: vec![4343, 27],
        name: "u".into(),
        home: "/home/u".into(),
    }
}

fn process(args: &[&str]) -> ProcessRequest {
    ProcessRequest {
        args: s(args),
        entrypoint: EntrypointChoice::Image,
        host_env: vec![
            ("HOME".into(), "/home/u".into()),
            ("PATH".into(), "/usr/bin".into()),
        ],
        user_env: vec![],
        cwd: None,
        terminal: false,
        umask: None,
    }
}

fn to_json(spec: &Spec) -> Value {
    serde_json::to_value(spec).unwrap()
}

fn build(rootfs: &Rootfs, p: &ProcessRequest, o: &SpecOptions) -> Value {
    to_json(&build_spec(&Config::default(), rootfs, &meta(), &user(), p, o).unwrap())
}

#[test]
fn entrypoint_and_cmd_semantics() {
    let m = meta();
    let cl = |args: &[&str], ep: EntrypointChoice| command_line(&m, &s(args), &ep).unwrap();
    assert_eq!(
        cl(&[], EntrypointChoice::Image),
        s(&["/entry.sh", "serve", "--port=80"])
    );
    assert_eq!(
        cl(&["ls", "-l"], EntrypointChoice::Image),
        s(&["/entry.sh", "ls", "-l"])
    );
    assert_eq!(
        cl(&[], EntrypointChoice::Override(s(&["cat"]))),
        s(&["cat"]),
        "a CLI entrypoint drops CMD"
    );
    assert_eq!(
        cl(&["/f"], EntrypointChoice::Override(s(&["cat", "-n"]))),
        s(&["cat", "-n", "/f"])
    );
    assert_eq!(cl(&["bash"], EntrypointChoice::Clear), s(&["bash"]));
    assert_eq!(cl(&["ls"], EntrypointChoice::Skip), s(&["ls"]));
    assert_eq!(cl(&[], EntrypointChoice::Skip), s(&["serve", "--port=80"]));
    assert!(matches!(
        command_line(&m, &[], &EntrypointChoice::Clear),
        Err(SpecError::NoCommand)
    ));
    let empty = ImageMeta::default();
    let e = command_line(&empty, &[], &EntrypointChoice::Image)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no command"), "{e}");
}

#[test]
fn working_directory() {
    let m = meta();
    assert_eq!(
        working_dir(&m, Some(Path::new("/w"))).unwrap(),
        Path::new("/w")
    );
    assert_eq!(working_dir(&m, None).unwrap(), Path::new("/srv"));
    assert_eq!(
        working_dir(
            &ImageMeta {
                working_dir: Some("rel".into()),
                ..meta()
            },
            None
        )
        .unwrap(),
        Path::new("/rel")
    );
    assert_eq!(
        working_dir(&ImageMeta::default(), None).unwrap(),
        Path::new("/")
    );
    assert!(working_dir(&m, Some(Path::new("w")))
        .unwrap_err()
        .to_string()
        .contains("absolute"));
}

#[test]
fn the_steps_umask_reaches_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let mut p = process(&["id"]);
    p.umask = Some(0o027);
    let j = build(&rootfs, &p, &SpecOptions::default());
    assert_eq!(j["process"]["user"]["umask"], json!(0o027));
}

#[test]
fn process_is_the_user_without_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let j = build(&rootfs, &process(&["id"]), &SpecOptions::default());
    let p = &j["process"];
    assert_eq!(
        p["user"],
        json!({"uid": 4242, "gid": 4343, "additionalGids": [4343, 27]})
    );
    assert_eq!(p["args"], json!(["/entry.sh", "id"]));
    assert_eq!(p["cwd"], json!("/srv"));
    assert_eq!(p["noNewPrivileges"], json!(true));
    assert_eq!(p["terminal"], json!(false));
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(p["capabilities"][set], json!([]), "{set}");
    }
    assert!(p.get("rlimits").is_none(), "rlimits are inherited");
    assert!(p.get("apparmorProfile").is_none());
    let env: Vec<&str> = p["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"PATH=/img/bin") && env.contains(&"IMG=1") && env.contains(&"HOME=/home/u"),
        "{env:?}"
    );
    assert_eq!(
        j["root"],
        json!({"path": dir.path().join("rootfs"), "readonly": false})
    );
    assert_eq!(j["ociVersion"], json!("1.0.2"));
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["linux", "mounts", "ociVersion", "process", "root"],
        "nothing else by default"
    );
}

#[test]
fn linux_section() {
    let dir = tempfile::tempdir().unwrap();
    let mut rootfs = Rootfs::for_tests(dir.path());
    rootfs.device_rules.push(DeviceRule {
        kind: crate::container::rootfs::DeviceKind::Block,
        major: 8,
        minor: 1,
        access: "r".into(),
    });
    let j = build(&rootfs, &process(&[]), &SpecOptions::default());
    let l = &j["linux"];
    assert_eq!(
        l["namespaces"],
        json!([{"type": "mount"}]),
        "host pid by default, never net/ipc/uts/user"
    );
    assert_eq!(l["rootfsPropagation"], json!("rslave"));
    assert_eq!(
        l["maskedPaths"].as_array().unwrap().len(),
        MASKED_PATHS.len()
    );
    assert!(l["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/sys")));
    let devices = l["resources"]["devices"].as_array().unwrap();
    assert_eq!(
        devices[0],
        json!({"allow": false, "access": "rwm"}),
        "deny all first"
    );
    assert!(devices.contains(&json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})));
    assert_eq!(
        devices.last().unwrap(),
        &json!({"allow": true, "type": "b", "major": 8, "minor": 1, "access": "r"})
    );
    assert!(
        l.get("cgroupsPath").is_none() && l.get("seccomp").is_none() && l.get("devices").is_none()
    );
    let dests: Vec<&str> = j["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup"
        ]
    );

    let opts = SpecOptions {
        pid_host: false,
        cgroups_path: Some("egret-1".into()),
        readonly_root: true,
        hostname: Some("c1".into()),
        annotations: [(annotations::MPI_ENABLED.to_string(), "true".to_string())].into(),
        ..SpecOptions::default()
    };
    let j = build(&rootfs, &process(&[]), &opts);
    assert_eq!(
        j["linux"]["namespaces"],
        json!([{"type": "mount"}, {"type": "pid"}, {"type": "uts"}])
    );
    assert_eq!(j["linux"]["cgroupsPath"], json!("egret-1"));
    assert_eq!(j["root"]["readonly"], json!(true));
    assert_eq!(j["hostname"], json!("c1"));
    assert_eq!(j["annotations"], json!({"com.hooks.mpi.enabled": "true"}));
}

#[test]
fn init_prefixes_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut rootfs = Rootfs::for_tests(dir.path());
    let opts = SpecOptions {
        init: true,
        ..SpecOptions::default()
    };
    let e = build_spec(
        &Config::default(),
        &rootfs,
        &meta(),
        &user(),
        &process(&["sh"]),
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, SpecError::InitNotPrepared));
    rootfs.init = true;
    let j = build(&rootfs, &process(&["sh"]), &opts);
    assert_eq!(
        j["process"]["args"],
        json!(["/dev/init", "--", "/entry.sh", "sh"])
    );
    assert!(j["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("TINI_SUBREAPER=1")));
}

#[test]
fn user_env_cwd_and_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let mut p = process(&["env"]);
    p.user_env = vec![
        EnvRequest::Set("A".into(), "1".into()),
        EnvRequest::FromHost("PATH".into()),
    ];
    p.cwd = Some("/work".into());
    p.terminal = true;
    let j = build(&rootfs, &p, &SpecOptions::default());
    let env = j["process"]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!("A=1")) && env.contains(&json!("PATH=/usr/bin")),
        "{env:?}"
    );
    assert_eq!(j["process"]["cwd"], json!("/work"));
    assert_eq!(j["process"]["terminal"], json!(true));
}

#[test]
fn hooks_seccomp_and_apparmor_from_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let hooks_dir = dir.path().join("hooks.d");
    std::fs::create_dir(&hooks_dir).unwrap();
    std::fs::write(
        hooks_dir.join("10-mpi.json"),
        r#"{"version":"1.0.0","hook":{"path":"/usr/libexec/egret/mpi_hook"},
            "when":{"annotations":{"^com.hooks.mpi.enabled$":"^true$"}},"stages":["prestart"]}"#,
    )
    .unwrap();
    std::fs::write(
        hooks_dir.join("20-py.json"),
        r#"{"version":"1.0.0","hook":{"path":"/bin/py_hook"},"when":{"commands":["python"]},"stages":["createContainer"]}"#,
    )
    .unwrap();
    let seccomp = dir.path().join("seccomp.json");
    std::fs::write(&seccomp, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kexec_load"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
    let cfg = Config {
        hooks_dir: Some(hooks_dir),
        seccomp_profile: Some(seccomp),
        apparmor_profile: Some("egret-default".into()),
        ..Config::default()
    };
    let rootfs = Rootfs::for_tests(dir.path());
    let opts = SpecOptions {
        annotations: [(annotations::MPI_ENABLED.to_string(), "true".to_string())].into(),
        ..SpecOptions::default()
    };
    let mut p = process(&["python3", "x.py"]);
    p.entrypoint = EntrypointChoice::Skip;
    let j = to_json(&build_spec(&cfg, &rootfs, &meta(), &user(), &p, &opts).unwrap());
    assert_eq!(
        j["hooks"]["prestart"],
        json!([{"path": "/usr/libexec/egret/mpi_hook"}])
    );
    assert_eq!(
        j["hooks"]["createContainer"],
        json!([{"path": "/bin/py_hook"}])
    );
    assert_eq!(
        j["linux"]["seccomp"]["defaultAction"],
        json!("SCMP_ACT_ALLOW")
    );
    assert_eq!(j["process"]["apparmorProfile"], json!("egret-default"));

    let j = to_json(
        &build_spec(
            &cfg,
            &rootfs,
            &meta(),
            &user(),
            &process(&["sh"]),
            &SpecOptions::default(),
        )
        .unwrap(),
    );
    assert!(j.get("hooks").is_none(), "nothing selected, no hooks key");

    let bad = Config {
        seccomp_profile: Some(dir.path().join("nope.json")),
        ..Config::default()
    };
    let e = build_spec(
        &bad,
        &rootfs,
        &meta(),
        &user(),
        &process(&["sh"]),
        &SpecOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope.json"), "{e}");
}

#[test]
fn the_shipped_seccomp_profile_and_config_parse() {
    let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
    load_seccomp(&etc.join("seccomp/default.json")).unwrap();
    let cfg = Config::load(&etc.join("egret.json")).unwrap();
    assert!(cfg.security_checks);
    assert_eq!(
        cfg.hooks_dir.as_deref(),
        Some(Path::new("/etc/egret/hooks.d"))
    );
    assert_eq!(
        cfg.seccomp_profile.as_deref(),
        Some(Path::new("/etc/egret/seccomp/default.json"))
    );
    assert!(cfg
        .user_mounts
        .not_allowed_prefixes_of_path
        .contains(&"/opt/egret".into()));
}

#[test]
fn cpu_pinning() {
    assert_eq!(ranges(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(ranges(&[5]), "5");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let mut spec = build_spec(
        &Config::default(),
        &rootfs,
        &meta(),
        &user(),
        &process(&[]),
        &SpecOptions::default(),
    )
    .unwrap();
    let mine = cpu_list(0).unwrap();
    assert!(!mine.is_empty());
    pin_cpus(&mut spec, &mine).unwrap();
    assert_eq!(
        to_json(&spec)["linux"]["resources"]["cpu"],
        json!({"cpus": mine})
    );
}

#[test]
fn write_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let spec = build_spec(
        &Config::default(),
        &rootfs,
        &meta(),
        &user(),
        &process(&[]),
        &SpecOptions::default(),
    )
    .unwrap();
    write_spec(dir.path(), &spec).unwrap();
    let f = dir.path().join("config.json");
    assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    let back: Spec = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn device_rules_present_in_the_runc_config() {
    // A selected hook that declares devices gets allow rules for them; an unselected one does
    // not, and neither do paths that are not devices.
    let dir = tempfile::tempdir().unwrap();
    let hooks_dir = dir.path().join("hooks.d");
    std::fs::create_dir(&hooks_dir).unwrap();
    std::fs::write(
        hooks_dir.join("12-mount.json"),
        r#"{"version":"1.0.0","hook":{"path":"/h/mount","args":["mount","--device=/dev/fuse:rw"],
            "env":["BIND_MOUNTS=/dev/full:/etc/hostname","DEVICES=/nonexistent"]},
            "when":{"annotations":{"^com.example.dev$":"^on$"}},"stages":["createContainer"]}"#,
    )
    .unwrap();
    std::fs::write(
        hooks_dir.join("13-off.json"),
        r#"{"version":"1.0.0","hook":{"path":"/h/off","args":["off","--device=/dev/kmsg"]},
            "when":{"always":false},"stages":["createContainer"]}"#,
    )
    .unwrap();
    let cfg = Config {
        hooks_dir: Some(hooks_dir),
        ..Config::default()
    };
    let rootfs = Rootfs::for_tests(dir.path());
    let on = SpecOptions {
        annotations: [("com.example.dev".to_string(), "on".to_string())].into(),
        ..SpecOptions::default()
    };
    let rules = |opts: &SpecOptions| -> Vec<Value> {
        let j =
            to_json(&build_spec(&cfg, &rootfs, &meta(), &user(), &process(&["sh"]), opts).unwrap());
        j["linux"]["resources"]["devices"]
            .as_array()
            .unwrap()
            .clone()
    };
    let base = rules(&SpecOptions::default());
    let with = rules(&on);
    assert_eq!(with.len(), base.len() + 2, "{with:#?}");
    assert_eq!(
        &with[..base.len()],
        &base[..],
        "hook rules come after the base rules"
    );
    assert_eq!(
        with[base.len()],
        json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"})
    );
    assert_eq!(
        with[base.len() + 1],
        json!({"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"})
    );
    assert!(!with
        .iter()
        .any(|r| r["major"] == json!(1) && r["minor"] == json!(11)));
}

#[test]
fn the_shipped_hook_files_parse_and_stay_off_by_default() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/hooks.d");
    let all = schema::load_dir(&dir).unwrap();
    assert!(!all.is_empty());
    // Nothing runs for a plain container: every shipped hook waits for an annotation (set by
    // an option, or by egret from a fact such as TIMESTAMP_HOOK_LOGFILE or /dev/kfd).
    let selected = select::select(&all, &BTreeMap::new(), Some("sh"), false);
    #[allow(deprecated)]
    let paths: Vec<String> = [
        selected.prestart(),
        selected.create_runtime(),
        selected.create_container(),
        selected.poststart(),
        selected.poststop(),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .map(|h| h.path().display().to_string())
    .collect();
    assert!(paths.is_empty(), "{paths:?} run without being asked for");
    let mut asked = BTreeMap::new();
    select::add_automatic_annotations(
        &mut asked,
        &[("TIMESTAMP_HOOK_LOGFILE".into(), "/tmp/ts.log".into())],
    );
    assert_eq!(
        asked
            .get(annotations::TIMESTAMP_ENABLED)
            .map(String::as_str),
        Some("true")
    );
    let selected = select::select(&all, &asked, Some("sh"), false);
    let n = selected.create_container().as_ref().map_or(0, |h| h.len());
    assert!(n >= 4, "{n} timestamp hooks");
}

#[test]
fn the_nvidia_hook_is_asked_for_only_by_tasks_with_gpus() {
    for (cvd, want) in [
        (Some("0,1"), Some("true")),
        (Some("NoDevFiles"), None),
        (Some(""), None),
        (None, None),
    ] {
        // The user's own annotation does not count.
        let mut asked: BTreeMap<String, String> =
            [(annotations::NVIDIA_ENABLED.to_string(), "true".to_string())].into();
        let env: Vec<(String, String)> = cvd
            .map(|v| ("CUDA_VISIBLE_DEVICES".to_string(), v.to_string()))
            .into_iter()
            .collect();
        select::add_automatic_annotations(&mut asked, &env);
        assert_eq!(
            asked.get(annotations::NVIDIA_ENABLED).map(String::as_str),
            want,
            "{cvd:?}"
        );
    }
}

#[test]
fn a_wrapped_entrypoint_runs_in_the_containers_env_between_the_two_steps() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::for_tests(dir.path());
    let mut p = process(&["id"]);
    p.host_env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
    let wrap = EntrypointWrap::after(3, false).unwrap();
    let (spec, script) = build_spec_wrapped(
        &Config::default(),
        &rootfs,
        &meta(),
        &user(),
        &p,
        &SpecOptions::default(),
        Some(&wrap),
    )
    .unwrap();
    let j = to_json(&spec);
    let args: Vec<String> = serde_json::from_value(j["process"]["args"].clone()).unwrap();
    assert_eq!(args[0], "/bin/sh");
    assert_eq!(args[4], "/entry.sh");
    assert_eq!(args.last().map(String::as_str), Some("id"));
    let env: Vec<String> = serde_json::from_value(j["process"]["env"].clone()).unwrap();
    assert!(env.contains(&"IMG=1".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("DOCKER_TLS_VERIFY=")),
        "{env:?}"
    );
    let script = script.unwrap();
    assert!(
        script.contains("[ -n \"${DOCKER_TLS_VERIFY+x}\" ] || export DOCKER_TLS_VERIFY='1'"),
        "{script}"
    );
    // Without the entrypoint running, nothing is wrapped.
    p.entrypoint = EntrypointChoice::Skip;
    let (spec, script) = build_spec_wrapped(
        &Config::default(),
        &rootfs,
        &meta(),
        &user(),
        &p,
        &SpecOptions::default(),
        Some(&wrap),
    )
    .unwrap();
    assert!(script.is_none());
    assert_eq!(to_json(&spec)["process"]["args"], json!(["id"]));
}
