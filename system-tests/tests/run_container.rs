//! Root integration tests: a real squashfs, loop device, overlay and runc. The command, its
//! output, exit code, identity, environment and working directory, and nothing left behind.

use egret_test_support::engine_run as run_support;

use std::time::Duration;

use egret_engine::config::Config;
use egret_engine::container::env::EnvRequest;
use egret_engine::container::rootfs;
use egret_engine::container::runtime::{self, Runc};
use egret_engine::container::spec::{self, EntrypointChoice, SpecOptions};
use egret_engine::image::metadata::ImageMeta;
use run_support::*;

#[test]
fn output_and_exit_code() {
    let w = World::new(|_| {});
    let out = run(
        &w,
        &w.request(),
        &process(&["sh", "-c", "echo hello; echo oops >&2; exit 7"]),
    );
    assert_eq!((out.code, out.stdout.as_str()), (7, "hello\n"), "{out:?}");
    assert!(out.stderr.contains("oops"));
    w.assert_clean();
}

#[test]
fn identity_is_the_users_without_privileges() {
    let w = World::new(|_| {});
    let script =
        "id -u; id -g; id -G; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status";
    let out = run(&w, &w.request(), &process(&["sh", "-c", script]));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..3], ["4242", "4242", "4242"], "{out:?}");
    for l in &lines[3..] {
        let (k, v) = l.split_once(':').unwrap();
        let want = if k == "NoNewPrivs" {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(v.trim(), want, "{l}");
    }
    w.assert_clean();
}

#[test]
fn environment_precedence_end_to_end() {
    let mut w = World::new(|_| {});
    w.cfg.environment.set.insert("SITE".into(), "site".into());
    w.cfg
        .environment
        .prepend
        .insert("PATH".into(), "/site/bin".into());
    w.cfg.environment.unset.push("SECRET".into());
    let mut req = w.request();
    req.meta.env = vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()];
    let mut p = process(&["env"]);
    p.host_env = [
        ("A", "host"),
        ("B", "host"),
        ("SECRET", "s"),
        ("HOSTONLY", "h"),
        ("CUDA_VISIBLE_DEVICES", "2,10"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.user_env = vec![
        EnvRequest::FromHost("B".into()),
        EnvRequest::parse("C=x=y").unwrap(),
    ];
    let out = run(&w, &req, &p);
    let env = env_map(&out.stdout);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("A"), Some("image"), "{out:?}");
    assert_eq!(get("B"), Some("host"));
    assert_eq!(get("C"), Some("x=y"));
    assert_eq!(get("HOSTONLY"), Some("h"));
    assert_eq!(get("SITE"), Some("site"));
    assert_eq!(get("SECRET"), None);
    assert_eq!(get("PATH"), Some("/site/bin:/bin"));
    assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), Some("2,10"));
    assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("0,1"));
    w.assert_clean();
}

#[test]
fn working_directory_and_entrypoint() {
    let w = World::new(|_| {});
    let mut req = w.request();
    req.meta.working_dir = Some("/srv".into());
    req.meta.entrypoint = Some(vec!["/bin/echo".into(), "ep".into()]);
    req.meta.cmd = Some(vec!["default".into()]);
    assert_eq!(run(&w, &req, &process(&[])).stdout, "ep default\n");
    assert_eq!(run(&w, &req, &process(&["given"])).stdout, "ep given\n");
    let mut p = process(&["pwd"]);
    p.entrypoint = EntrypointChoice::Clear;
    assert_eq!(run(&w, &req, &p).stdout, "/srv\n", "the image's WorkingDir");
    p.cwd = Some("/does/not/exist/yet".into());
    assert_eq!(
        run(&w, &req, &p).stdout,
        "/does/not/exist/yet\n",
        "created by runc"
    );
    let out = run_with(
        &w,
        &w.request(),
        &process(&[]),
        &SpecOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(out.contains("no command"), "{out}");
    w.assert_clean();
}

#[test]
fn readonly_root_init_and_private_pid() {
    let w = World::new(|_| {});
    let mut req = w.request();
    req.readonly = true;
    req.init = true;
    let opts = SpecOptions {
        init: true,
        pid_host: false,
        ..SpecOptions::default()
    };
    let script = "touch /x 2>/dev/null && echo writable; cat /proc/$PPID/comm; echo $PPID; touch /tmp/y 2>/dev/null || echo ro-tmp";
    let out = run_with(&w, &req, &process(&["sh", "-c", script]), &opts, |_| {}).unwrap();
    assert_eq!(
        out.stdout, "init\n1\nro-tmp\n",
        "tini is PID 1 of its own namespace: {out:?}"
    );
    w.assert_clean();
}

#[test]
fn shipped_seccomp_profile_is_accepted_by_runc() {
    let mut w = World::new(|_| {});
    w.cfg.seccomp_profile =
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/seccomp/default.json").into());
    let out = run(&w, &w.request(), &process(&["sh", "-c", "echo ok"]));
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out:?}");
    w.assert_clean();
}

/// `run_foreground`: stdio inherited, exit code returned, signals passed on, state removed.
#[test]
fn foreground_exit_codes_and_signals() {
    let w = World::new(|_| {});
    let cfg: &Config = &w.cfg;
    let run_fg = |args: &[&str], signal_after: Option<Duration>| -> i32 {
        let (tx, rx) = std::sync::mpsc::channel();
        let req = w.request();
        let p = process(args);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                in_private_ns(|| {
                    let dir = cfg.oci_bundle_dir.join(runtime::random_hex());
                    let rootfs = rootfs::prepare_rootfs(cfg, &dir, &req).unwrap();
                    let spec = spec::build_spec(
                        cfg,
                        &rootfs,
                        &req.meta,
                        &req.user,
                        &p,
                        &SpecOptions::default(),
                    )
                    .unwrap();
                    spec::write_spec(&dir, &spec).unwrap();
                    tx.send(nix::sys::pthread::pthread_self()).unwrap();
                    let code = Runc::from_config(cfg)
                        .run_foreground(&runtime::container_id(), &dir)
                        .unwrap();
                    rootfs.teardown().unwrap();
                    code
                })
            });
            let runner = rx.recv().unwrap();
            if let Some(d) = signal_after {
                std::thread::sleep(d);
                // Directed at the runner thread only, as a terminal's Ctrl-C would reach egret.
                nix::sys::pthread::pthread_kill(runner, nix::sys::signal::Signal::SIGTERM).unwrap();
            }
            h.join().unwrap()
        })
    };
    assert_eq!(run_fg(&["sh", "-c", "exit 3"], None), 3);
    let start = std::time::Instant::now();
    assert_eq!(
        run_fg(&["sleep", "30"], Some(Duration::from_millis(1500))),
        128 + 15
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the signal reached the container"
    );
    w.assert_clean();
}

#[test]
fn image_metadata_user_is_ignored() {
    // HPC semantics: the container always runs as the job's user, whatever the image says.
    let w = World::new(|_| {});
    let mut req = w.request();
    req.meta = ImageMeta {
        user: Some("0:0".into()),
        ..req.meta
    };
    assert_eq!(run(&w, &req, &process(&["id", "-u"])).stdout, "4242\n");
    w.assert_clean();
}
