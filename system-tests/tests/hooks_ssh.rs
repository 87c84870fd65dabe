//! `--container-ssh` and `egret ssh-keygen` under real srun on the two-node test cluster, as
//! the ordinary user `egretuser`: a login from the container on node 1 into the container on
//! node 2, with the environment replayed and no daemon left after the step; the clear errors
//! for missing keys and for `--container-pid=host`.
//!
//! n1 and n2 share one host here, so the shipped 07-ssh.json sets `SERVER_PORT_NODE_OFFSET`:
//! node N's daemon listens on 15263 + N.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{describe, TEST_USER};

const BASE_PORT: u16 = 15263;

fn keys_dir() -> PathBuf {
    Path::new(TEST_USER.home).join(".oci-hooks/ssh/keys")
}

fn keygen(args: &[&str]) -> Output {
    let mut cmd = vec![common::EGRET_BIN, "ssh-keygen"];
    cmd.extend_from_slice(args);
    common::run_as_user(TEST_USER.name, &cmd)
}

fn busybox() -> String {
    format!("--container-image={}", common::registry_image("busybox"))
}

fn dropbear_processes() -> Vec<(u32, String)> {
    common::processes_named(&["dropbear"])
}

#[test]
fn keygen_is_a_user_command_and_keeps_keys_unless_told() {
    common::require_root();
    let o = keygen(&["--overwrite"]);
    let text = common::assert_success(&o, "egret ssh-keygen --overwrite");
    assert!(text.contains(&keys_dir().display().to_string()), "{text}");
    let client = keys_dir().join("id_dropbear");
    let first = fs::read(&client).unwrap();
    for f in ["host_key", "id_dropbear", "authorized_keys"] {
        let md = fs::metadata(keys_dir().join(f)).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (TEST_USER.uid, 0o600), "{f}");
    }
    let o = keygen(&[]);
    let text = common::assert_success(&o, "egret ssh-keygen");
    assert!(text.contains("already exist"), "{text}");
    assert_eq!(
        fs::read(&client).unwrap(),
        first,
        "kept without --overwrite"
    );
    let o = keygen(&["--overwrite"]);
    common::assert_success(&o, "egret ssh-keygen --overwrite");
    assert_ne!(
        fs::read(&client).unwrap(),
        first,
        "replaced with --overwrite"
    );
}

#[test]
fn ssh_from_node_1_lands_in_the_container_of_node_2() {
    common::require_root();
    common::assert_success(&keygen(&[]), "egret ssh-keygen");
    assert!(
        dropbear_processes().is_empty(),
        "a dropbear runs before the test: {:?}",
        dropbear_processes()
    );
    // Node 2's task writes a file only its container has and waits for node 1's login to
    // tell it to end; node 1's task logs in there and reads it, with node 2's environment.
    let script = format!(
        r#"if [ "$SLURM_NODEID" = 1 ]; then
    echo "only-in-node-2" > /tmp/marker
    i=0; while [ ! -e /tmp/done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    test -e /tmp/done && echo node2-released
else
    test ! -e /tmp/marker && echo no-marker-on-node-1
    ssh -p {} 127.0.0.1 'cat /tmp/marker; echo "env node=$SLURM_NODEID procid=$SLURM_PROCID var=[$EGRET_TEST_VAR] path=$PATH"; touch /tmp/done'
    echo "ssh-exit=$?"
fi"#,
        BASE_PORT + 1
    );
    let value = r#"a b 'c' "d" $e `f`"#;
    let var = format!("EGRET_TEST_VAR={value}");
    let timeout = common::SLURM_TIMEOUT_S.to_string();
    let o = common::run_as_user(
        TEST_USER.name,
        &[
            "env",
            &var,
            "timeout",
            &timeout,
            "srun",
            "-N2",
            "-n2",
            "--container-ssh",
            &busybox(),
            "sh",
            "-c",
            &script,
        ],
    );
    let text = describe(&o);
    assert!(o.status.success(), "{text}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no-marker-on-node-1"), "{text}");
    assert!(
        out.contains("only-in-node-2"),
        "the login reached node 2's container\n{text}"
    );
    assert!(
        out.contains(&format!("env node=1 procid=1 var=[{value}]")),
        "node 2's environment is replayed, quoting intact\n{text}"
    );
    assert!(
        out.contains("ssh-exit=0") && out.contains("node2-released"),
        "{text}"
    );
    // The container's PATH, not dropbear's default.
    let path_line = out.lines().find(|l| l.starts_with("env ")).unwrap();
    assert!(!path_line.contains("/usr/games"), "{path_line}");
    // The daemons end with their containers.
    assert!(
        common::wait_for(Duration::from_secs(15), || dropbear_processes().is_empty()),
        "dropbear left running: {:?}",
        dropbear_processes()
    );
    // The user's real home got no key material.
    assert!(!Path::new(TEST_USER.home)
        .join(".ssh/authorized_keys")
        .exists());
}

/// Moves the user's keys away for a test and always puts them back.
struct KeysAway {
    away: PathBuf,
}

impl KeysAway {
    fn new() -> KeysAway {
        let away = keys_dir().with_file_name("keys.test-away");
        let _ = fs::remove_dir_all(&away);
        fs::rename(keys_dir(), &away).expect("move the keys away");
        KeysAway { away }
    }
}

impl Drop for KeysAway {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(keys_dir());
        let _ = fs::rename(&self.away, keys_dir());
    }
}

#[test]
fn without_keys_the_step_fails_saying_to_run_ssh_keygen() {
    common::require_root();
    common::assert_success(&keygen(&[]), "egret ssh-keygen");
    let _away = KeysAway::new();
    let o = common::srun_as(
        TEST_USER.name,
        &[
            "-N1",
            "-n1",
            "--container-ssh",
            &busybox(),
            "echo",
            "app-ran",
        ],
    );
    let text = describe(&o);
    assert!(!o.status.success(), "{text}");
    assert!(!text.contains("app-ran"), "{text}");
    assert!(
        text.contains(&format!(
            "no SSH keys in {}: run `egret ssh-keygen` first",
            keys_dir().display()
        )),
        "{text}"
    );
}

#[test]
fn ssh_with_the_hosts_pid_namespace_is_refused_before_queueing() {
    common::require_root();
    let before = common::next_job_id();
    let o = common::srun_as(
        TEST_USER.name,
        &[
            "--container-ssh",
            "--container-pid=host",
            &busybox(),
            "true",
        ],
    );
    let text = describe(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("--container-ssh needs a private PID namespace"),
        "{text}"
    );
    assert_eq!(common::next_job_id(), before, "no job was queued\n{text}");
}

#[test]
fn the_keys_directory_is_private() {
    common::require_root();
    common::assert_success(&keygen(&[]), "egret ssh-keygen");
    let md = fs::metadata(keys_dir()).unwrap();
    assert_eq!(md.uid(), TEST_USER.uid);
    assert_eq!(md.permissions().mode() & 0o077, 0, "{:o}", md.mode());
}
