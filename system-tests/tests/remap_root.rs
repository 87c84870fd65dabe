//! `--container-remap-root` as pyxis's: a root that owns the image and can install packages,
//! mount inside its own namespace and hand a named container on to steps without remap, while
//! staying the user on the host. Real `srun`/`sbatch` as an ordinary user; needs root and the
//! cluster of `make up` (with the `egret/debian` image for the package install).

use egret_test_support as common;

use std::process::Output;

fn image(name: &str) -> String {
    format!("--container-image={}", common::registry_image(name))
}

fn ok(o: &Output) -> String {
    common::assert_success(o, "srun")
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim).collect()
}

#[test]
fn remapped_root_owns_and_writes_the_image_files() {
    let user = common::TEST_USER;
    let script = "\
        stat -c '%u:%g' /etc/os-release /bin/busybox; \
        [ -w /etc/os-release ] && echo writable; \
        echo changed >> /etc/os-release && tail -n1 /etc/os-release; \
        touch /bin/new-tool && echo created-in-bin; \
        chown 5:5 /bin/new-tool && echo chown-ok; \
        stat -c '%u' /etc/passwd; \
        mkdir -p /mnt/t && mount -t tmpfs none /mnt/t \
          && touch /mnt/t/x && echo mounted; \
        grep '^Seccomp:' /proc/self/status; \
        mv /proc /proc-moved 2>/dev/null && echo moved-proc || echo proc-kept";
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "--container-remap-root",
            "sh",
            "-c",
            script,
        ],
    ));
    assert_eq!(
        lines(&out),
        [
            "0:0",
            "0:0",
            "writable",
            "changed",
            "created-in-bin",
            "chown-ok",
            "0",
            "mounted",
            "Seccomp:\t2",
            "proc-kept",
        ],
        "{out}"
    );
    // The image itself is unchanged for the next container, and without remap its files are
    // root's again (the user's writes were the step's own).
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "sh",
            "-c",
            "stat -c '%u' /etc/os-release; grep -c changed /etc/os-release; touch /etc/x 2>/dev/null || echo refused",
        ],
    ));
    assert_eq!(lines(&out), ["0", "0", "refused"], "{out}");
}

#[test]
fn remapped_root_installs_packages_with_apt() {
    let user = common::TEST_USER;
    let script = "set -e; apt-get update -qq >/dev/null; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends file >/dev/null; \
        file --version | head -n1 | cut -d- -f1; \
        stat -c '%u' /var/lib/apt/lists/lock; \
        file -b /bin/true | cut -d, -f1";
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("debian"),
            "--container-remap-root",
            "bash",
            "-c",
            script,
        ],
    ));
    assert_eq!(
        lines(&out),
        ["file", "0", "ELF 64-bit LSB pie executable"],
        "{out}"
    );
}

#[test]
fn a_named_container_keeps_what_remapped_root_installed() {
    let user = common::TEST_USER;
    let dir = common::scratch_dir(Some(user));
    let saved = dir.join("saved.sqsh");
    let img = common::registry_image("busybox");
    let script = format!(
        "#!/bin/sh\n\
         srun --container-image={img} --container-name=rr --container-remap-root \
           sh -c 'echo tool > /usr/bin/rr-tool && chmod 755 /usr/bin/rr-tool && echo ok'\n\
         srun --container-name=rr sh -c 'cat /usr/bin/rr-tool; stat -c %u /usr/bin/rr-tool; id -u'\n\
         srun --container-name=rr --container-remap-root --container-save={saved} \
           sh -c 'stat -c %u /usr/bin/rr-tool'\n\
         srun --container-image={saved} sh -c 'cat /usr/bin/rr-tool; stat -c %u:%g /usr/bin/rr-tool /etc/os-release'\n",
        saved = saved.display()
    );
    let (code, out) = common::sbatch_wait_as(user, &script, &[]);
    assert_eq!(code, 0, "{out}");
    let uid = user.uid.to_string();
    // The job's output file has srun's and egret's own lines too.
    let commands: Vec<&str> = lines(&out)
        .into_iter()
        .filter(|l| !l.starts_with("srun:") && !l.starts_with("egret:"))
        .collect();
    assert_eq!(
        commands,
        [
            "ok",
            "tool",
            uid.as_str(),
            uid.as_str(),
            "0",
            "tool",
            "0:0",
            "0:0"
        ],
        "step 2 is the user, owning what remapped root wrote (as under pyxis); the saved image is root's again\n{out}"
    );
}

#[test]
fn the_mounted_home_is_remapped_root_s_home() {
    let user = common::TEST_USER;
    let marker = std::path::Path::new(user.home).join(".egret-remap-home-marker");
    std::fs::write(&marker, "mine\n").unwrap();
    std::os::unix::fs::chown(&marker, Some(user.uid), Some(user.gid)).unwrap();
    let script =
        "echo $HOME; cat $HOME/.egret-remap-home-marker; stat -c %u $HOME/.egret-remap-home-marker";
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "--container-mount-home",
            "--container-remap-root",
            "sh",
            "-c",
            script,
        ],
    ));
    assert_eq!(lines(&out), ["/root", "mine", "0"], "{out}");
    let out = ok(&common::srun_as(
        user.name,
        &[
            &image("busybox"),
            "--container-mount-home",
            "sh",
            "-c",
            script,
        ],
    ));
    let uid = user.uid.to_string();
    assert_eq!(lines(&out), [user.home, "mine", uid.as_str()], "{out}");
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn the_ssh_hook_runs_on_a_container_remapped_root_built() {
    let user = common::TEST_USER;
    // The user's keys (kept when they exist).
    let o = common::run(&mut common::user_command(
        user.name,
        std::path::Path::new("/"),
        &[],
        &[common::EGRET_BIN, "ssh-keygen"],
    ));
    common::assert_success(&o, "egret ssh-keygen");
    let img = common::registry_image("debian");
    let script = format!(
        "#!/bin/sh\n\
         srun --container-image={img} --container-name=rrssh --container-remap-root \
           sh -c 'echo installed > /usr/local/bin/rr-marker'\n\
         srun --container-name=rrssh --container-ssh sh -c 'cat /usr/local/bin/rr-marker; id -u'\n"
    );
    let (code, out) = common::sbatch_wait_as(user, &script, &[]);
    assert_eq!(code, 0, "{out}");
    let commands: Vec<&str> = lines(&out)
        .into_iter()
        .filter(|l| !l.starts_with("srun:") && !l.starts_with("egret:"))
        .collect();
    let uid = user.uid.to_string();
    assert_eq!(commands, ["installed", uid.as_str()], "{out}");
}
