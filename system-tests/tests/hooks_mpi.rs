//! The native MPI hook (`egret-mpi-hook`, etc/hooks.d/05-mpi-mpich.json) under real Slurm and
//! real runc: the egret/mpich image carries Debian's MPICH 4.0.2 (`libmpich.so.12`), the host's
//! "native" MPICH is the 5.0.2 PyPI wheel in /opt/egret-test/mpich-host (`libmpi.so.12`, from
//! scripts/mpi-fixture.sh). `mpi-report` (tests/mpi/report.c) prints per rank the MPI library
//! version and the mount source of the libmpi file it mapped.
//!
//! Run with `make test` (after `make up`); every test needs root and fails loudly without it.

use egret_test_support as common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use common::sandbox::{stderr, Sandbox};

/// The host library the installed hook JSON names.
const HOST_LIB: &str = "/opt/egret-test/mpich-host/lib/libmpi.so.12";
const HOST_VERSION: &str = "5.0.2";
const IMAGE_LIB: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12.2.2";
const IMAGE_VERSION: &str = "4.0.2";
const HOOK: &str = "/usr/local/libexec/egret/hooks/egret-mpi-hook";
/// Debian's UCX modules in the image, and the host UCX's the hook JSON names.
const UCX_MODULES: &str = "/usr/lib/x86_64-linux-gnu/ucx";
const HOST_UCX_MODULES: &str = "/opt/egret-test/mpich-host/lib/mpich/ucx";

/// One test at a time: leak checks count machine-wide resources.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mpich() -> String {
    format!("--container-image={}", common::registry_image("mpich"))
}

fn srun(args: &[&str]) -> Output {
    common::require_root();
    Command::new("timeout")
        .arg(common::SLURM_TIMEOUT_S.to_string())
        .arg("srun")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("srun runs")
}

/// One `mpi-report` line, as key=value fields.
#[derive(Debug)]
struct Rank {
    rank: u32,
    size: u32,
    sum: u32,
    node: String,
    lib: String,
    mount: String,
    version: String,
}

fn ranks(out: &str) -> Vec<Rank> {
    let mut v: Vec<Rank> = out
        .lines()
        .filter(|l| l.starts_with("rank="))
        .map(|l| {
            // version= comes last and holds blanks
            let (fields, version) = l.split_once(" version=").expect("version=");
            let get = |k: &str| -> String {
                fields
                    .split(' ')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("no {k}= in {l}"))
                    .to_string()
            };
            Rank {
                rank: get("rank").parse().unwrap(),
                size: get("size").parse().unwrap(),
                sum: get("sum").parse().unwrap(),
                node: get("node"),
                lib: get("lib"),
                mount: get("mount"),
                version: version.to_string(),
            }
        })
        .collect();
    v.sort_by_key(|r| r.rank);
    v
}

fn assert_four_ranks_on_two_nodes(o: &Output) -> Vec<Rank> {
    let out = common::assert_success(o, "srun -N2 -n4 --mpi=pmi2 mpi-report");
    let r = ranks(&out);
    assert_eq!(
        r.iter().map(|r| r.rank).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{out}"
    );
    for x in &r {
        assert_eq!((x.size, x.sum), (4, 6), "{out}");
    }
    let mut nodes: Vec<&str> = r.iter().map(|x| x.node.as_str()).collect();
    nodes.dedup();
    assert!(nodes.contains(&"n1") && nodes.contains(&"n2"), "{out}");
    r
}

#[test]
fn the_mpi_hook_is_listed() {
    let _s = serial();
    common::require_root();
    let out = common::assert_success(
        &common::run(common::egret().args(["hooks", "--mpi"])),
        "egret hooks --mpi",
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["05-mpi-mpich", "^mpich$", "(default)"]),
        "{out}"
    );
    let out = common::assert_success(&common::run(common::egret().arg("hooks")), "egret hooks");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["05-mpi-mpich", HOOK, "createContainer"]),
        "{out}"
    );
}

/// The acceptance test: with --mpi-hook every rank of a two-node step runs on the host's MPICH,
/// bind-mounted over the image's library; the user is an ordinary one.
#[test]
fn with_the_hook_every_rank_loads_the_host_mpich() {
    let _s = serial();
    common::require_root();
    let before = common::leak_snapshot();
    let o = common::srun_as(
        common::TEST_USER.name,
        &[
            "-N2",
            "-n4",
            "--mpi=pmi2",
            &mpich(),
            "--mpi-hook",
            "mpi-report",
        ],
    );
    for r in assert_four_ranks_on_two_nodes(&o) {
        assert!(r.version.contains(HOST_VERSION), "{r:?}");
        // The loader opened the image's file name, which is now the host library.
        assert_eq!(r.lib, IMAGE_LIB, "{r:?}");
        assert!(r.mount.ends_with("/mpich-host/lib/libmpi.so.12"), "{r:?}");
    }
    common::assert_no_leaks(&before);

    // An explicit type works like the default one.
    let o = srun(&[
        "-n2",
        "--mpi=pmi2",
        &mpich(),
        "--mpi-hook=mpich",
        "mpi-report",
    ]);
    let out = common::assert_success(&o, "--mpi-hook=mpich");
    let r = ranks(&out);
    assert_eq!(r.len(), 2, "{out}");
    assert!(r.iter().all(|r| r.version.contains(HOST_VERSION)), "{out}");
}

/// The image carries Debian's UCX with its transport modules in `UCX_MODULES` (as any stock
/// image with libmpich12 does); the host MPICH brings its own UCX. The host libucs, bound over
/// the image's, loads the modules beside it: without the hook's module dir (the host's own
/// modules bound over the image's) every rank crashed in `MPI_Init`. `mpi-collectives`
/// checks the results of MPI_Allreduce, MPI_Bcast and MPI_Alltoall.
#[test]
fn with_the_image_s_own_ucx_the_host_mpich_runs_real_collectives() {
    let _s = serial();
    common::require_root();
    let before = common::leak_snapshot();
    // The image does have its own modules, and with the hook they are the host's.
    let o = srun(&[&mpich(), "ls", UCX_MODULES]);
    let out = common::assert_success(&o, "ls the image's UCX modules");
    assert!(out.contains("libuct_cma.so.0"), "{out}");
    let o = srun(&[
        &mpich(),
        "--mpi-hook",
        "grep",
        &format!(" {UCX_MODULES} "),
        "/proc/self/mountinfo",
    ]);
    let out = common::assert_success(&o, "the module dir's mount");
    assert!(out.contains(HOST_UCX_MODULES), "{out}");

    let image = mpich();
    for shape in [&["-n2"][..], &["-N2", "-n4"][..]] {
        let mut args = shape.to_vec();
        args.extend_from_slice(&["--mpi=pmi2", &image, "--mpi-hook", "mpi-collectives"]);
        let o = common::srun_as(common::TEST_USER.name, &args);
        let out = common::assert_success(
            &o,
            &format!("srun {} --mpi-hook mpi-collectives", shape.join(" ")),
        );
        let size = shape[shape.len() - 1].trim_start_matches("-n");
        assert!(
            out.contains(&format!("collectives ok size={size}")),
            "{out}"
        );
        assert!(!out.contains("FAILED"), "{out}");
    }
    common::assert_no_leaks(&before);
}

#[test]
fn without_the_hook_the_ranks_use_the_image_mpich() {
    let _s = serial();
    let o = srun(&["-N2", "-n4", "--mpi=pmi2", &mpich(), "mpi-report"]);
    for r in assert_four_ranks_on_two_nodes(&o) {
        assert!(r.version.contains(IMAGE_VERSION), "{r:?}");
        assert_eq!(
            (r.lib.as_str(), r.mount.as_str()),
            (IMAGE_LIB, "-"),
            "{r:?}"
        );
    }
}

/// The same program on the host itself, with the host library (what the benchmark compares).
#[test]
fn natively_the_host_mpich_runs_the_same_program() {
    let _s = serial();
    let o = Command::new("timeout")
        .arg(common::SLURM_TIMEOUT_S.to_string())
        .args(["srun", "-N2", "-n4", "--mpi=pmi2"])
        .arg("/opt/egret-test/mpi/bin/mpi-report")
        .env("LD_LIBRARY_PATH", "/opt/egret-test/mpich-host/lib")
        .stdin(Stdio::null())
        .output()
        .expect("srun runs");
    for r in assert_four_ranks_on_two_nodes(&o) {
        assert!(r.version.contains(HOST_VERSION), "{r:?}");
        assert_eq!(r.lib, HOST_LIB, "{r:?}");
    }
}

/// The one line egret's hook failure gives (after runc's own), and a nonzero exit.
fn hook_error_line(o: &Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} should fail\n{}",
        common::describe(o)
    );
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("egret")).collect();
    assert_eq!(lines.len(), 1, "{what}: one egret line expected\n{err}");
    lines[0].to_string()
}

#[test]
fn an_image_without_dynamic_mpi_is_refused_in_one_line() {
    let _s = serial();
    let before = common::leak_snapshot();
    for image in ["glibc", "busybox"] {
        // Stored first: on an empty store the step's stderr would also hold the import's lines.
        common::stored_for_root(image);
        let img = format!("--container-image={}", common::registry_image(image));
        let o = srun(&[&img, "--mpi-hook", "true"]);
        let line = hook_error_line(&o, image);
        assert!(
            line.starts_with("egret mpi: error: the image has no MPI library in its linker cache")
                && line.contains("ldconfig"),
            "{image}: {line}"
        );
    }
    common::assert_no_leaks(&before);
}

#[test]
fn an_mpi_type_no_hook_serves_is_refused_in_one_line() {
    let _s = serial();
    let before = common::leak_snapshot();
    let o = srun(&[&mpich(), "--mpi-hook=unknowntype", "true"]);
    let line = hook_error_line(&o, "--mpi-hook=unknowntype");
    assert_eq!(
        line,
        "egret: --mpi-hook=unknowntype: no MPI hook serves this MPI type (MPI types configured: mpich)"
    );
    common::assert_no_leaks(&before);
}

/// `egret run` with a sandbox hooks.d: the hook JSON decides the host library and the mode.
fn sandbox_with_hook(env: &[String]) -> Sandbox {
    let sb = Sandbox::with(|_, cfg| cfg["defaultMPIType"] = "mpich".into());
    let mut all = vec!["LDCONFIG_PATH=/sbin/ldconfig".to_string()];
    all.extend_from_slice(env);
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": {"path": HOOK, "env": all, "timeout": 60},
        "when": {"annotations": {
            "^com.hooks.mpi.enabled$": "^true$",
            "^com.hooks.mpi.type$": "^mpich$"}},
        "stages": ["createContainer"]
    });
    fs::write(
        sb.path("hooks.d").join("05-mpi.json"),
        serde_json::to_vec_pretty(&hook).unwrap(),
    )
    .unwrap();
    sb
}

/// `egret run` passes runc's log on (JSON-escaped): the hook's message is found inside it.
fn run_hook_error(o: &Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} should fail\n{}",
        common::describe(o)
    );
    let err = stderr(o);
    let at = err
        .find("egret mpi: error: ")
        .unwrap_or_else(|| panic!("{what}: no hook error\n{err}"));
    let line = err[at..].lines().next().unwrap();
    line.split("\\n")
        .next()
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

fn run_with_mpi(sb: &Sandbox, image: &str, cmd: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--annotation",
        "com.hooks.mpi.enabled=true",
        "--annotation",
        "com.hooks.mpi.type=mpich",
        image,
    ];
    args.extend_from_slice(cmd);
    sb.egret(&args)
}

#[test]
fn an_incompatible_abi_is_refused_naming_both_versions_and_the_mode() {
    let _s = serial();
    let deps = "MPI_DEPENDENCY_LIBS=/opt/egret-test/mpich-host/lib/mpich/libfabric.so.1";
    // A host library of another major version (only its name matters to the check).
    let libdir = common::scratch_dir(None);
    let fake = libdir.join("libmpi.so.40.1.0");
    fs::copy(HOST_LIB, &fake).unwrap();
    let sb = sandbox_with_hook(&[format!("MPI_LIBS={}", fake.display()), deps.to_string()]);
    let image = common::registry_image("mpich");
    sb.ok(&["pull", &image]);
    let before = common::leak_snapshot();
    let o = run_with_mpi(&sb, &image, &["true"]);
    let line = run_hook_error(&o, "major 40 over 12");
    for needle in [
        "not ABI-compatible",
        "(40.1.0)",
        IMAGE_LIB,
        "(12.2.2)",
        "'major'",
    ] {
        assert!(line.contains(needle), "{needle}: {line}");
    }

    // strict: the host's 12 (12.0) against the image's 12.2.2.
    let sb = sandbox_with_hook(&[
        format!("MPI_LIBS={HOST_LIB}"),
        deps.to_string(),
        "MPI_COMPATIBILITY_TYPE=strict".to_string(),
    ]);
    sb.ok(&["pull", &image]);
    let o = run_with_mpi(&sb, &image, &["true"]);
    let line = run_hook_error(&o, "strict 12 over 12.2.2");
    for needle in ["(12)", "(12.2.2)", "'strict'"] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
    // full: the same pair is a partial match, replaced with a warning; the container runs.
    // BIND_MOUNTS: a directory and a device node the default device rules do not allow.
    fs::write(libdir.join("marker"), "bound\n").unwrap();
    let sb = sandbox_with_hook(&[
        format!("MPI_LIBS={HOST_LIB}"),
        deps.to_string(),
        "MPI_COMPATIBILITY_TYPE=full".to_string(),
        format!("BIND_MOUNTS={}:/dev/fuse", libdir.display()),
    ]);
    sb.ok(&["pull", &image]);
    let script = format!(
        "cat /proc/self/mountinfo; cat {}/marker; exec 3<>/dev/fuse && echo fuse-opened",
        libdir.display()
    );
    let o = run_with_mpi(&sb, &image, &["bash", "-c", &script]);
    let out = common::assert_success(&o, "full mode");
    assert!(
        out.lines().any(
            |l| l.contains(" /opt/egret-test/mpich-host/lib/libmpi.so.12 ")
                && l.contains(&format!(" {IMAGE_LIB} "))
        ),
        "host library not mounted over the image's:\n{out}"
    );
    assert!(
        out.contains("\nbound\n") && out.ends_with("fuse-opened\n"),
        "{out}"
    );
    common::assert_no_leaks(&before);
    fs::remove_dir_all(&libdir).unwrap();
}
