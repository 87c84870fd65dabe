//! The Slurm global sync hook under real srun, runc and the installed hooks.d: every task's
//! application starts only after the last task's container exists, and a task that never comes
//! makes the others fail with one clear line after `SYNC_TIMEOUT_S`, leaving no files behind.
//!
//! A task is made late by a test-only hook (installed into /etc/egret/hooks.d for the test and
//! always removed again) that sleeps in the `createRuntime` stage of the task with
//! `SLURM_PROCID=2`, ordered before the sync hook. (srun --multi-prog cannot be used: egret
//! runs the job's argv, which is the multi-prog file.)

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::describe;

const HOOKS_D: &str = "/etc/egret/hooks.d";
/// Root-owned, so egret's security checks accept the test hook's program.
const TEST_BIN_DIR: &str = "/usr/local/libexec/egret-tests-sync";
const SYNC_HOOK: &str = "/usr/local/libexec/egret/hooks/egret-slurm-sync-hook";
const LATE_ANNOTATION: &str = "com.egret.test.late";
const SHORT_ANNOTATION: &str = "com.egret.test.sync-short";

/// Delays the container of task `LATE_PROCID` by `LATE_S` seconds, then writes the time.
const LATE_HOOK: &str = r#"#!/bin/sh
# egret test hook: make one task of the step late (reads all of stdin, as hooks must)
bundle=$(jq -r .bundle)
if jq -e --arg v "SLURM_PROCID=$LATE_PROCID" '.process.env | index($v)' "$bundle/config.json" >/dev/null; then
    sleep "$LATE_S"
    date +%s.%N > "$OUT"
fi
"#;

/// Test files in hooks.d and the test hook's program; removed on drop, also when the test
/// fails.
struct TestHooks {
    files: Vec<PathBuf>,
}

impl TestHooks {
    fn install(late_s: u32, out: &Path, short_timeout_s: Option<u32>) -> TestHooks {
        common::require_root();
        assert!(
            Path::new(SYNC_HOOK).is_file(),
            "{SYNC_HOOK} is not installed: run `make install`"
        );
        let mut t = TestHooks { files: Vec::new() };
        fs::create_dir_all(TEST_BIN_DIR).unwrap();
        fs::set_permissions(TEST_BIN_DIR, fs::Permissions::from_mode(0o755)).unwrap();
        let script = Path::new(TEST_BIN_DIR).join("late-hook.sh");
        t.put(&script, LATE_HOOK, 0o755);
        let late = serde_json::json!({
            "version": "1.0.0",
            "hook": {
                "path": script,
                "env": [
                    "PATH=/usr/bin:/bin",
                    "LATE_PROCID=2",
                    format!("LATE_S={late_s}"),
                    format!("OUT={}", out.display()),
                ],
                "timeout": 60
            },
            "when": {"annotations": {format!("^{LATE_ANNOTATION}$"): "^yes$"}},
            "stages": ["createRuntime"]
        });
        // 08: after the SSH hook (07), before the sync hooks (09).
        t.put(
            &Path::new(HOOKS_D).join("08-test-late.json"),
            &late.to_string(),
            0o644,
        );
        if let Some(s) = short_timeout_s {
            let short = serde_json::json!({
                "version": "1.0.0",
                "hook": {"path": SYNC_HOOK, "env": [format!("SYNC_TIMEOUT_S={s}")]},
                "when": {"annotations": {format!("^{SHORT_ANNOTATION}$"): "^yes$"}},
                "stages": ["createRuntime"]
            });
            t.put(
                &Path::new(HOOKS_D).join("09-test-sync-short.json"),
                &short.to_string(),
                0o644,
            );
        }
        t
    }

    fn put(&mut self, path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        self.files.push(path.to_path_buf());
    }
}

impl Drop for TestHooks {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        let _ = fs::remove_dir(TEST_BIN_DIR);
    }
}

fn glibc_image() -> String {
    format!("--container-image={}", common::registry_image("glibc"))
}

/// root's sync directory (the hook's default base: the user's home).
fn sync_dir(job: &str) -> PathBuf {
    PathBuf::from(format!(
        "/root/.oci-hooks/slurm-global-sync/job-{job}.step-0"
    ))
}

#[test]
fn every_task_starts_after_the_late_task_arrived() {
    let scratch = common::scratch_dir(None);
    let out = scratch.join("late-end");
    let _hooks = TestHooks::install(4, &out, None);
    let annotations = format!(
        "--container-annotation=com.hooks.slurm-global-sync.enabled=true,{LATE_ANNOTATION}=yes"
    );
    let o = common::srun(&[
        "-N2",
        "-n3",
        &glibc_image(),
        &annotations,
        "bash",
        "-c",
        "echo start $SLURM_PROCID $EPOCHREALTIME $SLURM_JOB_ID",
    ]);
    let stdout = common::assert_success(&o, "srun with the sync hook");
    let late_end: f64 = fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("the late hook did not run ({e})\n{}", describe(&o)))
        .trim()
        .parse()
        .unwrap();
    let starts: Vec<(String, f64, String)> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == "start")
                .then(|| (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string()))
        })
        .collect();
    assert_eq!(starts.len(), 3, "{}", describe(&o));
    for (procid, t, _) in &starts {
        assert!(
            *t >= late_end,
            "task {procid} started at {t}, before the late task arrived at {late_end}\n{}",
            describe(&o)
        );
    }
    // Task 0 removed the step's directory once everybody had left.
    let dir = sync_dir(&starts[0].2);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_task_that_never_arrives_fails_the_step_with_one_clear_line() {
    let scratch = common::scratch_dir(None);
    let out = scratch.join("late-end");
    // Task 2 arrives 8 s late; the others give up after 3 s (and task 2 after 3 more).
    let _hooks = TestHooks::install(8, &out, Some(3));
    let annotations =
        format!("--container-annotation={SHORT_ANNOTATION}=yes,{LATE_ANNOTATION}=yes");
    let o = common::srun(&[
        "-N2",
        "-n3",
        &glibc_image(),
        &annotations,
        "bash",
        "-c",
        "echo app-started $SLURM_PROCID",
    ]);
    let text = describe(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        !text.contains("app-started"),
        "no application may start\n{text}"
    );
    let prefix = "timed out after 3 s waiting for the tasks of step ";
    let job = text
        .split(prefix)
        .nth(1)
        .and_then(|r| r.split(".0 to start").next())
        .unwrap_or_else(|| panic!("no timeout message\n{text}"))
        .to_string();
    assert!(
        text.contains(&format!(
            "{prefix}{job}.0 to start: 2 of 3 tasks arrived (missing: 2)"
        )),
        "{text}"
    );
    // The late task finds nobody and says so too.
    assert!(
        text.contains("1 of 3 tasks arrived (missing: 0,1)"),
        "{text}"
    );
    let dir = sync_dir(&job);
    assert!(!dir.exists(), "{} left behind: {text}", dir.display());
}
