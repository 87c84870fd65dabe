//! `--container-name=NAME[:auto|create|exec|no_exec]` through real `sbatch`/`srun`: modes, a
//! second `srun --overlap` step joining a running container, per-node containers on the
//! two-node cluster, a non-root user. Needs root and the cluster of `make up`.

use egret_test_support as common;

use std::path::Path;
use std::time::Duration;

fn job_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("job="))
        .expect("job id line")
        .trim()
        .to_string()
}

fn assert_removed_after_job(uid: u32, job: &str) {
    let dir = format!("/var/lib/egret/containers/{uid}/{job}");
    assert!(
        common::wait_for(Duration::from_secs(30), || !Path::new(&dir).exists()),
        "{dir} survived the job"
    );
}

#[test]
fn modes_create_exec_and_no_exec() {
    common::require_root();
    let img = common::registry_image("busybox");
    let script = format!(
        "#!/bin/sh\necho job=$SLURM_JOB_ID\n\
         srun --container-image={img} --container-name=c1:create sh -c 'echo one > /tmp/f'\n\
         srun --container-image={img} --container-name=c1:create true || echo create-refused\n\
         srun --container-name=c1:exec true || echo exec-refused\n\
         srun --container-name=c1:no_exec cat /tmp/f\n\
         srun --container-name=c1 cat /tmp/f\n\
         srun --container-name=nope:exec true || echo nope-refused\n\
         srun --container-name=c1:sometimes true || echo mode-refused\n\
         echo script-done\n"
    );
    // sbatch --wait may report a failed step's exit code: the script's own end is the signal.
    let (_, out) = common::sbatch_wait(&script);
    assert!(out.contains("script-done"), "{out}");
    for needle in [
        "container 'c1' already exists (mode create)",
        "create-refused",
        "container 'c1' is not running (mode exec)",
        "exec-refused",
        "nope-refused",
        "the mode must be auto, create, exec or no_exec",
        "mode-refused",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert_eq!(out.lines().filter(|l| *l == "one").count(), 2, "{out}");
    assert_removed_after_job(0, &job_id(&out));
}

#[test]
fn an_overlap_step_joins_the_running_container() {
    common::require_root();
    let user = common::TEST_USER;
    let img = common::registry_image("busybox");
    // Step 1 runs the container and waits for a file only step 2 writes; step 2 joins it
    // (same root filesystem), a no_exec step meanwhile shares its files (pyxis: a fresh
    // container on the running one's files).
    let script = format!(
        "#!/bin/sh\necho job=$SLURM_JOB_ID\n\
         srun --container-image={img} --container-name=shared sh -c \
           'echo from-first > /tmp/first; i=0; while [ ! -e /tmp/second ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/second' &\n\
         i=0; while [ $i -lt 100 ]; do\n\
           srun --overlap --container-name=shared:exec cat /tmp/first 2>/dev/null && break\n\
           sleep 0.2; i=$((i+1))\n\
         done\n\
         srun --overlap --container-name=shared:no_exec sh -c 'test -e /tmp/first && echo no-exec-shared'\n\
         srun --overlap --container-name=shared sh -c 'echo from-second > /tmp/second'\n\
         wait\n\
         srun --container-name=shared:no_exec cat /tmp/second && echo script-done\n"
    );
    let (_, out) = common::sbatch_wait_as(user, &script, &[]);
    assert!(out.contains("script-done"), "{out}");
    assert!(out.contains("from-first"), "{out}");
    assert!(out.contains("no-exec-shared"), "{out}");
    // Printed by the first step (it saw the second step's write) and by the last one.
    assert_eq!(out.matches("from-second").count(), 2, "{out}");
    assert_removed_after_job(user.uid, &job_id(&out));
}

#[test]
fn each_node_keeps_its_own_named_container() {
    common::require_root();
    let img = common::registry_image("busybox");
    let script = format!(
        "#!/bin/sh\necho job=$SLURM_JOB_ID\n\
         srun -N2 -n2 --container-image={img} --container-name=multi sh -c 'echo node=$SLURM_NODEID > /tmp/id'\n\
         srun -N2 -n2 --container-name=multi sh -c 'echo \"$SLURM_NODEID saw $(cat /tmp/id)\"'\n"
    );
    let (code, out) = common::sbatch_wait_with(&script, &["-N2"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 saw node=0") && out.contains("1 saw node=1"),
        "{out}"
    );
    assert_removed_after_job(0, &job_id(&out));
}

#[test]
fn scancel_removes_the_named_containers_of_the_job() {
    common::require_root();
    let img = common::registry_image("busybox");
    let dir = common::scratch_dir(None);
    let script = dir.join("named.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsrun --container-image={img} --container-name=doomed sh -c 'echo x > /tmp/x'\n\
             srun --container-name=doomed sleep 300\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("sbatch")
        .args(["--parsable", "-o", "/dev/null"])
        .arg(&script)
        .output()
        .expect("sbatch");
    assert!(out.status.success(), "{}", common::describe(&out));
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let named = format!("/var/lib/egret/containers/0/{job}");
    // Wait until a step has run on the container, then cancel the job.
    assert!(
        common::wait_for(Duration::from_secs(60), || {
            std::fs::read_dir(format!("{named}/n1/doomed"))
                .map(|d| d.flatten().any(|e| e.file_name() == "running.json"))
                .unwrap_or(false)
        }),
        "the named container never ran"
    );
    let before = std::process::Command::new("scancel")
        .arg(&job)
        .status()
        .expect("scancel");
    assert!(before.success());
    assert_removed_after_job(0, &job);
    assert!(
        common::wait_for(Duration::from_secs(30), || common::processes_named(&[
            "runc",
            "egret-launcher"
        ])
        .is_empty()),
        "processes left: {:?}",
        common::processes_named(&["runc", "egret-launcher"])
    );
}

/// Adds an argument to egret's plugstack.conf line for the life of the guard.
struct PlugstackArg {
    original: String,
}

const PLUGSTACK: &str = "/etc/slurm/plugstack.conf.d/egret.conf";

impl PlugstackArg {
    fn add(arg: &str) -> PlugstackArg {
        let original = std::fs::read_to_string(PLUGSTACK).expect("egret's plugstack.conf");
        let changed = original
            .lines()
            .map(|l| {
                if l.contains("spank_egret.so") {
                    format!("{l} {arg}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        std::fs::write(PLUGSTACK, changed).unwrap();
        PlugstackArg { original }
    }
}

impl Drop for PlugstackArg {
    fn drop(&mut self) {
        let _ = std::fs::write(PLUGSTACK, &self.original);
    }
}

#[test]
fn global_scope_keeps_named_containers_across_jobs() {
    common::require_root();
    let img = format!("--container-image={}", common::registry_image("busybox"));
    let name = format!("glob-{}", std::process::id());
    let opt = format!("--container-name={name}");
    let global = Path::new("/var/lib/egret/containers/0/global");
    {
        let _scope = PlugstackArg::add("container_scope=global");
        // Two jobs (each srun is its own job): the second finds what the first wrote.
        // Named containers are per node: both jobs on n1.
        common::srun_ok(&["-w", "n1", &img, &opt, "sh", "-c", "echo kept > /tmp/state"]);
        let out = common::srun_ok(&["-w", "n1", &opt, "cat", "/tmp/state"]);
        assert_eq!(out.trim(), "kept");
    }
    // Back in job scope, the same name is a new container of the new job.
    let o = common::srun(&["-w", "n1", &opt, "true"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("no container named"),
        "{err}"
    );
    // Global containers stay until the site removes them.
    let kept: Vec<_> = std::fs::read_dir(global)
        .unwrap()
        .flatten()
        .map(|node| node.path().join(&name))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    for p in kept {
        std::fs::remove_dir_all(p).unwrap();
    }
}
