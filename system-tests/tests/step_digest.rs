//! One digest per step, through real srun: srun resolves the step's tag (as the user) and
//! every node runs what it resolved; a node that has the image asks no registry; where srun
//! cannot resolve, the nodes do, as before. The tag that moves is a test-only one, pushed to
//! the local registry by each test under a name of its own.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::TEST_USER;

/// A tag of the test repository no other test uses: `egret/step-digest:NAME-PID`.
fn test_tag(name: &str) -> String {
    format!(
        "{}/egret/step-digest:{name}-{}",
        common::REGISTRY,
        std::process::id()
    )
}

/// Points `tag` at the test image `image` (a registry-side copy: the tag moves).
fn push(image: &str, tag: &str) {
    let o = common::run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", common::registry_image(image)),
        &format!("docker://{tag}"),
    ]));
    common::assert_success(&o, &format!("skopeo copy {image} to {tag}"));
}

/// The manifest digest `tag` names in the registry now.
fn digest_of(tag: &str) -> String {
    let (name, t) = tag.rsplit_once(':').unwrap();
    let name = name
        .strip_prefix(&format!("{}/egret/", common::REGISTRY))
        .unwrap();
    common::registry_digest(name, t)
}

/// Runs `args` as the test user in `dir` with `env`.
fn user_srun(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut argv = vec!["srun"];
    argv.extend_from_slice(args);
    common::run(&mut common::user_command(TEST_USER.name, dir, env, &argv))
}

/// Each task's `ID=` of /etc/os-release and the reference the step was handed.
const SHOW: &str = "grep ^ID= /etc/os-release; echo \"step=$EGRET_STEP_IMAGE\"";

#[test]
fn a_tag_moved_between_two_steps_is_picked_up_by_the_second() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let tag = test_tag("moved");
    let opt = format!("--container-image={tag}");
    for (image, id) in [
        ("busybox", "egret-busybox"),
        ("entrypoint", "egret-entrypoint"),
    ] {
        push(image, &tag);
        let want = digest_of(&tag);
        let o = user_srun(&dir, &[], &["-n1", &opt, "sh", "-c", SHOW]);
        let out = common::assert_success(&o, &format!("the step after pushing {image}"));
        assert!(out.contains(&format!("ID={id}\n")), "{image}: {out}");
        assert!(
            out.contains(&format!("step={tag}@{want}\n")),
            "the step was not handed the digest the tag names now ({want}): {out}"
        );
    }
}

/// The tag flips between two images while 2-node steps launch: within each step both tasks
/// run one image, the one srun resolved.
#[test]
fn all_tasks_of_a_two_node_step_run_the_same_digest() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let tag = test_tag("flipping");
    push("busybox", &tag);
    let opt = format!("--container-image={tag}");
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, tag) = (stop.clone(), tag.clone());
        std::thread::spawn(move || {
            for image in ["entrypoint", "busybox"].iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                push(image, &tag);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut handed = 0;
    for _ in 0..6 {
        let o = user_srun(&dir, &[], &["-N2", "-n2", &opt, "sh", "-c", SHOW]);
        let out = common::assert_success(&o, "a 2-node step while the tag moves");
        let ids: Vec<&str> = out.lines().filter(|l| l.starts_with("ID=")).collect();
        let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step=")).collect();
        assert_eq!(ids.len(), 2, "{out}");
        assert_eq!(steps.len(), 2, "{out}");
        assert_eq!(steps[0], steps[1], "{out}");
        // srun may fail to resolve while the registry is being pushed to (then the nodes
        // resolve, as when it cannot reach the registry); when it did, both ran its digest.
        if steps[0].contains("@sha256:") {
            handed += 1;
            assert_eq!(ids[0], ids[1], "the two nodes ran different images: {out}");
        }
        seen.insert(ids[0].to_string());
    }
    assert!(
        handed >= 3,
        "srun handed a digest over in only {handed} of 6 steps"
    );
    stop.store(true, Ordering::SeqCst);
    flipper.join().unwrap();
    eprintln!("images run while the tag moved: {seen:?}");
}

/// The user agents of the registry's requests for `tag`'s manifest by tag since `mark`.
fn tag_requests_since(tag: &str, mark: u64) -> Vec<String> {
    let (name, t) = tag.rsplit_once(':').unwrap();
    let path = format!(
        "/v2/{}/manifests/{t} ",
        name.strip_prefix(&format!("{}/", common::REGISTRY))
            .unwrap()
    );
    let log = fs::read(common::multi::REGISTRY_LOG).unwrap();
    String::from_utf8_lossy(&log[mark as usize..])
        .lines()
        .filter(|l| l.contains(&path))
        .map(|l| l.rsplit('"').nth(1).unwrap_or("").to_string())
        .collect()
}

/// Runs a one-task step on `tag` as the test user with `env`, checks it was handed the digest
/// `want`, and returns the user agents of the requests for the tag's manifest it made (once
/// the registry, which logs a request when it has answered it, is done logging).
fn tag_agents_of_step(
    dir: &Path,
    env: &[(&str, &str)],
    tag: &str,
    want: &str,
    what: &str,
) -> Vec<String> {
    let opt = format!("--container-image={tag}");
    let mark = common::multi::registry_log_mark();
    let o = user_srun(dir, env, &["-n1", &opt, "sh", "-c", SHOW]);
    let out = common::assert_success(&o, what);
    assert!(
        out.contains(&format!("step={tag}@{want}\n")),
        "{what}: {out}"
    );
    common::multi::registry_log_settled_mark();
    tag_requests_since(tag, mark)
}

/// srun asks a registry that skopeo's configuration leaves plain itself (skopeo's start-up was
/// most of srun's wait), and leaves one its user has credentials for to skopeo.
#[test]
fn srun_asks_a_plain_registry_itself_and_one_with_credentials_through_skopeo() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let tag = test_tag("direct");
    push("busybox", &tag);
    let want = digest_of(&tag);
    let agents = tag_agents_of_step(&dir, &[], &tag, &want, "a step on a plain registry");
    assert!(
        !agents.is_empty() && agents.iter().all(|a| a.starts_with("egret/")),
        "the tag's manifest was not asked for by srun itself: {agents:?}"
    );
    // With credentials for the registry in the user's auth file, skopeo asks.
    let w = SkopeoWitness::install(&dir, "egret-step-digest-direct", false);
    let env = [("REGISTRY_AUTH_FILE", w.auth.to_str().unwrap())];
    let agents = tag_agents_of_step(
        &dir,
        &env,
        &tag,
        &want,
        "a step with credentials for the registry",
    );
    assert!(
        !agents.is_empty() && agents.iter().all(|a| a.starts_with("skopeo/")),
        "with credentials the tag was not resolved by skopeo: {agents:?}"
    );
    assert!(
        w.take().iter().any(|c| c == "srun"),
        "srun's skopeo did not use the credentials"
    );
}

/// A credential helper for the test registry that writes the name of the process that
/// started skopeo (`srun`, or a node's `egret-launcher`) to a log (and, with `fail_in_srun`,
/// fails the registry request when that is srun), and removes itself.
struct SkopeoWitness {
    helper: PathBuf,
    log: PathBuf,
    auth: PathBuf,
}

impl SkopeoWitness {
    fn install(dir: &Path, name: &str, fail_in_srun: bool) -> SkopeoWitness {
        let log = dir.join(format!("{name}.log"));
        let helper = PathBuf::from(format!("/usr/local/bin/docker-credential-{name}"));
        fs::write(
            &helper,
            format!(
                "#!/bin/sh\npp=$(awk '/^PPid:/ {{print $2}}' /proc/$PPID/status)\n\
                 cat /proc/$pp/comm >> {log}\ncat >/dev/null\n\
                 if {fail} && [ \"$(cat /proc/$pp/comm)\" = srun ]; then \
                 echo 'the witness refuses srun' >&2; exit 1; fi\n\
                 printf '{{\"ServerURL\":\"{reg}\",\"Username\":\"u\",\"Secret\":\"s\"}}'\n",
                log = log.display(),
                fail = fail_in_srun,
                reg = common::REGISTRY,
            ),
        )
        .unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
        let auth = dir.join(format!("{name}-auth.json"));
        fs::write(
            &auth,
            format!(r#"{{"credHelpers": {{"{}": "{name}"}}}}"#, common::REGISTRY),
        )
        .unwrap();
        for p in [&auth, &dir.to_path_buf()] {
            std::os::unix::fs::chown(p, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
        }
        SkopeoWitness { helper, log, auth }
    }

    /// Who ran skopeo since the last call, one line each.
    fn take(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }
}

impl Drop for SkopeoWitness {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.helper);
    }
}

#[test]
fn a_step_whose_tag_is_stored_runs_no_skopeo_on_the_nodes() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let tag = test_tag("stored");
    push("busybox", &tag);
    let w = SkopeoWitness::install(&dir, "egret-step-digest-test", false);
    let env = [("REGISTRY_AUTH_FILE", w.auth.to_str().unwrap())];
    let opt = format!("--container-image={tag}");
    // The first step stores the image on both nodes (fetched by digest there).
    let o = user_srun(&dir, &env, &["-N2", "-n2", &opt, "true"]);
    common::assert_success(&o, "the first step");
    let first = w.take();
    assert!(
        first.iter().any(|c| c == "srun"),
        "srun did not resolve the tag (the witness saw {first:?}): the trap is not armed"
    );
    let o = user_srun(&dir, &env, &["-N2", "-n2", &opt, "sh", "-c", SHOW]);
    let out = common::assert_success(&o, "the second step");
    assert!(out.contains("ID=egret-busybox"), "{out}");
    let second = w.take();
    assert_eq!(
        second,
        vec!["srun".to_string()],
        "skopeo ran once, in srun, and on no node"
    );
}

/// When srun cannot resolve the tag (here: the user's credential helper fails in srun only,
/// as a registry the submit node cannot reach would), the step still runs: each node resolves
/// the tag itself, as before.
#[test]
fn when_srun_cannot_resolve_the_tag_the_nodes_do() {
    common::require_root();
    let dir = common::scratch_dir(Some(TEST_USER));
    let tag = test_tag("fallback");
    push("busybox", &tag);
    let w = SkopeoWitness::install(&dir, "egret-step-fallback-test", true);
    let env = [("REGISTRY_AUTH_FILE", w.auth.to_str().unwrap())];
    let opt = format!("--container-image={tag}");
    let o = user_srun(&dir, &env, &["-N2", "-n2", &opt, "sh", "-c", SHOW]);
    let out = common::assert_success(&o, "a step srun could not resolve");
    assert_eq!(out.matches("ID=egret-busybox").count(), 2, "{out}");
    assert_eq!(
        out.matches("step=\n").count(),
        2,
        "nothing handed over: {out}"
    );
    let ran = w.take();
    let in_srun = ran.iter().filter(|c| *c == "srun").count();
    let on_nodes = ran.iter().filter(|c| *c == "egret-launcher").count();
    assert!(
        in_srun == 1 && on_nodes >= 2 && in_srun + on_nodes == ran.len(),
        "srun should have tried once, then each node resolved the tag itself: {ran:?}"
    );
}
