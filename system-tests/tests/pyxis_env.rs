//! pyxis 0.24's environment, entrypoint and PMIx rules under real `srun --container-image`, as
//! an ordinary user: which of the image's and the host's variables the command and the image's
//! ENTRYPOINT see, what of the entrypoint's output is shown, and what a PMIx step gets.
//!
//! The `cudaenv` image (scripts/build-test-images.py) carries a CUDA image's variables and an
//! entrypoint that writes `entry-stdout` / `entry-stderr`, reports what it saw on stderr
//! (`entry-saw TLS=... NAMED=... FOO=...`), exports `FROM_ENTRY` and `FOO=entry`, and fails
//! with exit code 7 when it sees `ENTRY_FAIL`.

use egret_test_support as common;

use std::path::Path;
use std::process::Output;

use common::{describe, TEST_USER};

fn cudaenv() -> String {
    format!("--container-image={}", common::registry_image("cudaenv"))
}

/// `srun ARGS` as the test user with `env` added and no container defaults of the caller's.
fn srun(env: &[(&str, &str)], args: &[&str]) -> Output {
    common::require_root();
    let mut argv = vec!["srun"];
    argv.extend_from_slice(args);
    let mut cmd = common::user_command(TEST_USER.name, Path::new("/"), env, &argv);
    for (k, _) in std::env::vars() {
        if (k.starts_with("PYXIS_CONTAINER_") || k.starts_with("EGRET_CONTAINER_"))
            && !env.iter().any(|(e, _)| *e == k)
        {
            cmd.env_remove(k);
        }
    }
    common::run(&mut cmd)
}

fn ok(o: &Output) -> (String, String) {
    assert!(o.status.success(), "{}", describe(o));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_task_without_gpus_keeps_the_images_cuda_and_nvidia_variables() {
    let (out, _) = ok(&srun(
        &[],
        &[
            &cudaenv(),
            "sh",
            "-c",
            "echo $CUDA_VERSION $NVIDIA_VISIBLE_DEVICES $NVIDIA_DRIVER_CAPABILITIES \"$NVIDIA_REQUIRE_CUDA\"",
        ],
    ));
    assert_eq!(out, "12.2.0 all compute,utility cuda>=12.2\n");
}

#[test]
fn the_image_wins_except_for_the_names_in_container_env() {
    let host = [("FOO", "host"), ("NAMED", "host"), ("HOSTONLY", "h")];
    let cmd = ["sh", "-c", "echo \"$FOO $NAMED $HOSTONLY\""];
    let run = |env: &[(&str, &str)], opts: &[&str]| {
        let mut e = host.to_vec();
        e.extend_from_slice(env);
        let mut args = vec![cudaenv()];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&srun(&e, &args)).0
    };
    assert_eq!(run(&[], &[]), "image image h\n");
    assert_eq!(run(&[], &["--container-env=NAMED"]), "image host h\n");
    assert_eq!(
        run(&[("PYXIS_CONTAINER_ENV", "NAMED,FOO")], &[]),
        "host host h\n"
    );
    assert_eq!(
        run(&[("EGRET_CONTAINER_ENV", "FOO")], &[]),
        "host image h\n"
    );
    // The command line replaces the variable's list, as any other option's default.
    assert_eq!(
        run(
            &[("PYXIS_CONTAINER_ENV", "FOO")],
            &["--container-env=NAMED"]
        ),
        "image host h\n"
    );
}

#[test]
fn the_entrypoints_output_is_hidden_and_the_commands_is_not() {
    let (out, err) = ok(&srun(
        &[("FOO", "host")],
        &[
            &cudaenv(),
            "--container-entrypoint",
            "sh",
            "-c",
            "echo cmd-out; echo cmd-err >&2; echo \"$FROM_ENTRY $FOO\"",
        ],
    ));
    assert_eq!(out, "cmd-out\nset-by-entry entry\n", "stderr: {err}");
    assert!(err.contains("cmd-err"), "{err}");
    assert!(!err.contains("entry-stderr"), "{err}");
}

#[test]
fn the_entrypoint_log_goes_to_stderr_when_asked() {
    for (env, opts) in [
        (
            vec![],
            vec!["--container-entrypoint", "--container-entrypoint-log"],
        ),
        (
            vec![
                ("PYXIS_CONTAINER_ENTRYPOINT", "1"),
                ("PYXIS_CONTAINER_ENTRYPOINT_LOG", "1"),
            ],
            vec![],
        ),
    ] {
        let mut args = vec![cudaenv()];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.extend(["echo".to_string(), "cmd-out".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, err) = ok(&srun(&env, &args));
        assert_eq!(out, "cmd-out\n", "{env:?} stderr: {err}");
        assert!(
            err.contains("entry-stdout\n") && err.contains("entry-stderr\n"),
            "{env:?}: {err}"
        );
    }
}

#[test]
fn the_entrypoint_sees_the_container_env_not_the_hosts_exports() {
    let (out, err) = ok(&srun(
        &[("DOCKER_TLS_VERIFY", "1"), ("NAMED", "host")],
        &[
            &cudaenv(),
            "--container-entrypoint",
            "--container-entrypoint-log",
            "--container-env=NAMED",
            "sh",
            "-c",
            "echo \"tls=$DOCKER_TLS_VERIFY named=$NAMED\"",
        ],
    ));
    assert!(
        err.contains("entry-saw TLS=unset NAMED=host FOO=image"),
        "{err}"
    );
    assert_eq!(out, "tls=1 named=host\n", "the command still gets them");
}

#[test]
fn a_failing_entrypoint_shows_its_output_and_the_hint() {
    let o = srun(
        &[("ENTRY_FAIL", "1")],
        &[
            &cudaenv(),
            "--container-entrypoint",
            "--container-env=ENTRY_FAIL",
            "echo",
            "never",
        ],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(7), "{}", describe(&o));
    assert!(!out.contains("never"), "{out}");
    assert!(
        err.contains("egret: the image's entrypoint failed (exit code 7)"),
        "{err}"
    );
    assert!(err.contains("egret:     entry-failing"), "{err}");
    assert!(err.contains("--no-container-entrypoint"), "{err}");
}

#[test]
fn a_pmix_step_gets_the_mca_settings_and_the_servers_directory() {
    let (out, err) = ok(&srun(
        &[],
        &[
            "--mpi=pmix",
            &cudaenv(),
            "sh",
            "-c",
            "echo psec=$PMIX_MCA_psec gds=$PMIX_MCA_gds; \
             test -d \"$PMIX_SERVER_TMPDIR\" && echo dir=yes; \
             grep -q \" ${PMIX_SERVER_TMPDIR%/} .*noexec\" /proc/self/mountinfo && echo noexec=yes",
        ],
    ));
    assert!(
        out.contains("psec=munge,native gds=ds21,ds12,hash"),
        "{out}\n{err}"
    );
    assert!(out.contains("dir=yes"), "{out}\n{err}");
    assert!(out.contains("noexec=yes"), "{out}\n{err}");
}
