//! Attaching to running containers as with pyxis 0.24, through real `sbatch`/`srun`: an
//! unnamed step's container joined by its `JOBID.STEPID` name, the notice about
//! `--container-mounts` on a join, and many concurrent `:no_exec` steps sharing one named
//! container. Needs root and the cluster of `make up`.

use egret_test_support as common;

fn image() -> String {
    common::registry_image("busybox")
}

/// The first step waits (up to 30 s) for `file` in its own rootfs, then prints `saw-FILE`.
fn wait_for_file(file: &str) -> String {
    format!(
        "i=0; while [ ! -e {file} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         [ -e {file} ] && echo saw-$(basename {file})"
    )
}

/// Retries an `--overlap` step until the background step's container runs (up to 20 s).
fn until_running(step: &str) -> String {
    format!("i=0; while [ $i -lt 100 ]; do\n  {step} && break\n  sleep 0.2; i=$((i+1))\ndone\n")
}

#[test]
fn an_unnamed_running_container_is_joined_as_jobid_dot_stepid() {
    common::require_root();
    let img = image();
    // The unnamed step says its step id first (steps started meanwhile may take the next one).
    let script = format!(
        "#!/bin/sh\n\
         srun --container-image={img} sh -c 'echo $SLURM_STEP_ID; echo from-unnamed > /tmp/unnamed; {wait}' >bg.out &\n\
         i=0; while ! [ -s bg.out ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
         name=$SLURM_JOB_ID.$(head -n1 bg.out)\n\
         echo name=$name\n\
         {until}\
         srun --overlap --container-name=$name sh -c 'echo from-joiner > /tmp/joined'\n\
         wait\n\
         cat bg.out\n\
         srun --container-name=$name true 2>&1 || echo gone-refused\n\
         echo script-done\n",
        wait = wait_for_file("/tmp/joined"),
        until = until_running("srun --overlap --container-name=$name cat /tmp/unnamed 2>/dev/null"),
    );
    let (_, out) = common::sbatch_wait(&script);
    assert!(out.contains("script-done"), "{out}");
    // The joiner saw the unnamed step's file, and the unnamed step saw the joiner's.
    assert!(out.contains("from-unnamed"), "{out}");
    assert!(out.contains("saw-joined"), "{out}");
    // Once the step ended, nothing of it is left to join (nor to reuse: it was never saved).
    assert!(out.contains("gone-refused"), "{out}");
    assert!(out.contains("no container named"), "{out}");
}

#[test]
fn container_mounts_are_ignored_with_a_notice_when_attaching() {
    common::require_root();
    let img = image();
    let script = format!(
        "#!/bin/sh\n\
         srun --container-image={img} --container-name=att sh -c '{wait}' &\n\
         {until}\
         srun --overlap --container-name=att --container-mounts=/tmp:/mnt/egret_attach \
           sh -c '[ ! -e /mnt/egret_attach ] && echo not-mounted; touch /tmp/done'\n\
         wait\n\
         echo script-done\n",
        wait = wait_for_file("/tmp/done"),
        until = until_running("srun --overlap --container-name=att:exec true 2>/dev/null"),
    );
    let (_, out) = common::sbatch_wait(&script);
    assert!(out.contains("script-done"), "{out}");
    assert!(
        out.contains(
            "egret: warning: ignoring --container-mounts when attaching to a running container"
        ),
        "{out}"
    );
    assert!(out.contains("not-mounted"), "{out}");
    assert!(out.contains("saw-done"), "{out}");
}

#[test]
fn fifty_concurrent_no_exec_steps_share_one_container() {
    common::require_root();
    let img = image();
    // pyxis's concurrency test, on one container: 50 steps at once, each writes its own file
    // and reports its exit code; a later step counts the files.
    let script = format!(
        "#!/bin/sh\n\
         srun --container-image={img} --container-name=many mkdir /tmp/steps\n\
         for i in $(seq 1 50); do\n\
           (srun -n1 --overlap --container-name=many:no_exec sh -c \"touch /tmp/steps/$i; sleep 1\" \
              >/dev/null 2>err.$i; echo \"step $i rc=$?\"; cat err.$i) &\n\
         done\n\
         wait\n\
         srun --container-name=many sh -c 'echo files=$(ls /tmp/steps | wc -l)'\n\
         echo script-done\n"
    );
    let (_, out) = common::sbatch_wait(&script);
    assert!(out.contains("script-done"), "{out}");
    let ok = out
        .lines()
        .filter(|l| l.starts_with("step ") && l.ends_with(" rc=0"))
        .count();
    assert_eq!(ok, 50, "{out}");
    assert!(out.contains("files=50"), "{out}");
}
