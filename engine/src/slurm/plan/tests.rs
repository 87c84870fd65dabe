use std::path::{Path, PathBuf};

use super::*;
use crate::config::MountFlags;
use crate::container::mounts::pyxis;

fn env(vars: &[&str]) -> Vec<String> {
    vars.iter().map(|v| v.to_string()).collect()
}

fn site(destination: &str) -> SiteMount {
    SiteMount {
        kind: "bind".into(),
        source: PathBuf::from(destination),
        destination: PathBuf::from(destination),
        flags: MountFlags::default(),
    }
}

fn hello(env: &[&str], fds: &[i32]) -> Hello {
    Hello {
        local_id: 0,
        global_id: 0,
        argv: vec!["hostname".into()],
        env: env.iter().map(|v| v.to_string()).collect(),
        fds: fds.to_vec(),
        tty: false,
    }
}

#[test]
fn the_job_directory_is_the_submit_directory_or_the_root() {
    assert_eq!(
        job_cwd(&env(&["A=1", "SLURM_SUBMIT_DIR=/home/u/job"])),
        Path::new("/home/u/job")
    );
    assert_eq!(job_cwd(&env(&["SLURM_SUBMIT_DIRX=/x"])), Path::new("/"));
}

#[test]
fn the_node_name_prefers_the_step_node_list() {
    let vars = env(&["SLURMD_NODENAME=login", "SLURM_STEP_NODELIST=n[1-3]"]);
    assert_eq!(node_name(&vars, 1), "n2");
    assert_eq!(node_name(&env(&["SLURMD_NODENAME=login"]), 4), "login");
    for unsafe_name in [
        "SLURMD_NODENAME=../x",
        "SLURMD_NODENAME=a/b",
        "SLURMD_NODENAME=",
    ] {
        assert_eq!(node_name(&env(&[unsafe_name]), 0), "local", "{unsafe_name}");
    }
}

#[test]
fn mounts_are_sorted_and_umount_takes_only_site_mounts() {
    let cwd = Path::new("/home/u");
    let entries = pyxis::parse("/data:/data:ro,tmpfs:/scratch,umount:/opt", cwd).unwrap();
    let plan = plan_mounts(
        entries,
        &UserMountRules::default(),
        vec![site("/opt"), site("/apps")],
    )
    .unwrap();
    assert_eq!(plan.binds.len(), 1);
    assert_eq!(plan.binds[0].destination, Path::new("/data"));
    assert!(plan.binds[0].readonly);
    assert_eq!(plan.extras.len(), 1);
    assert_eq!(plan.tmpfs.len(), 1);
    assert_eq!(plan.tmpfs[0].0, Path::new("/scratch"));
    assert_eq!(plan.site_mounts, vec![site("/apps")]);

    let entries = pyxis::parse("umount:/nothing", cwd).unwrap();
    let e = plan_mounts(entries, &UserMountRules::default(), vec![site("/opt")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--container-mounts: umount:/nothing: the site mounts nothing there"
    );
}

#[test]
fn a_denied_destination_is_refused_with_the_option_name() {
    let rules = UserMountRules {
        not_allowed_paths: vec![PathBuf::from("/etc/shadow")],
        ..UserMountRules::default()
    };
    let entries = pyxis::parse("/tmp/x:/etc/shadow", Path::new("/")).unwrap();
    let e = plan_mounts(entries, &rules, Vec::new()).unwrap_err();
    assert!(e.to_string().starts_with("--container-mounts: "), "{e}");
}

#[test]
fn devices_are_listed_by_comma() {
    assert!(plan_devices(None).unwrap().is_empty());
    assert_eq!(plan_devices(Some("/dev/fuse,/dev/kvm")).unwrap().len(), 2);
    let e = plan_devices(Some("/dev/fuse,dev")).unwrap_err().to_string();
    assert!(e.starts_with("--container-device=dev: "), "{e}");
}

#[test]
fn only_node_0_saves() {
    let opts = ContainerOptions {
        save: Some("out.sqsh".into()),
        ..ContainerOptions::default()
    };
    assert_eq!(save_here(&opts, 0), Some("out.sqsh"));
    assert_eq!(save_here(&opts, 1), None);
}

#[test]
fn pmi_descriptors_are_renumbered_from_3() {
    let h = hello(
        &["PMI_FD=9", "PMIX_FD=12", "OTHER=9", "NOEQUALS"],
        &[0, 1, 2, 12, 9],
    );
    let vars = task_vars(&h);
    assert_eq!(
        vars,
        vec![
            ("PMI_FD".to_string(), "4".to_string()),
            ("PMIX_FD".to_string(), "3".to_string()),
            ("OTHER".to_string(), "9".to_string()),
        ]
    );
}

#[test]
fn the_process_follows_the_options() {
    let opts = ContainerOptions {
        entrypoint: Some(true),
        workdir: Some("/work".into()),
        env_names: vec!["HOME".into()],
        ..ContainerOptions::default()
    };
    let p = process_request(
        &hello(&[], &[0, 1, 2]),
        &opts,
        vec![("A".into(), "1".into())],
    );
    assert_eq!(p.args, vec!["hostname"]);
    assert!(matches!(p.entrypoint, EntrypointChoice::Image));
    assert_eq!(p.cwd, Some(PathBuf::from("/work")));
    assert_eq!(p.host_env, vec![("A".to_string(), "1".to_string())]);
    assert_eq!(p.user_env.len(), 1);
    let plain = process_request(&hello(&[], &[]), &ContainerOptions::default(), Vec::new());
    assert!(matches!(plain.entrypoint, EntrypointChoice::Skip));
    assert_eq!(plain.cwd, None);
}

#[test]
fn a_relative_workdir_starts_at_the_containers_root() {
    for (value, want) in [
        ("/work", "/work"),
        ("rel/dir", "/rel/dir"),
        ("./x/", "/x"),
        ("../../up", "/up"),
        (".", "/"),
        ("/a/../b", "/b"),
    ] {
        let opts = ContainerOptions {
            workdir: Some(value.into()),
            ..ContainerOptions::default()
        };
        assert_eq!(workdir(&opts), Some(PathBuf::from(want)), "{value}");
    }
}

#[test]
fn mpi_and_ssh_turn_on_their_hooks() {
    let mpi = ContainerOptions {
        mpi_hook: Some(String::new()),
        ..ContainerOptions::default()
    };
    let a = annotations(&mpi, Some("pmix"), &[], 7, 2);
    assert_eq!(a["com.hooks.mpi.enabled"], "true");
    assert_eq!(a["com.hooks.mpi.type"], "pmix");
    assert_eq!(a["com.hooks.glibc.enabled"], "true");
    assert_eq!(a["com.egret.job"], "7.2");
    let untyped = annotations(&mpi, None, &[], 7, 2);
    assert!(!untyped.contains_key("com.hooks.mpi.type"));

    let ssh = ContainerOptions {
        ssh: true,
        ..ContainerOptions::default()
    };
    let a = annotations(&ssh, None, &[], 1, 0);
    assert_eq!(a["com.hooks.ssh.enabled"], "true");
    assert_eq!(a["com.hooks.slurm-global-sync.enabled"], "true");
    assert!(!a.contains_key("com.hooks.mpi.enabled"));
    let s = spec_options(&ssh, "egret-1.0.0.0", a);
    assert!(
        !s.pid_host,
        "ssh needs a pid namespace of the container's own"
    );
    assert_eq!(s.cgroups_path.as_deref(), Some("egret-1.0.0.0"));
}

#[test]
fn the_host_pid_namespace_is_the_default() {
    let s = spec_options(&ContainerOptions::default(), "id", BTreeMap::new());
    assert!(s.pid_host);
    assert!(!s.readonly_root);
    let private = ContainerOptions {
        pid_private: Some(true),
        writable: Some(false),
        ..ContainerOptions::default()
    };
    let s = spec_options(&private, "id", BTreeMap::new());
    assert!(!s.pid_host);
    assert!(s.readonly_root);
}

#[test]
fn the_mounted_home_is_at_root_for_remapped_root() {
    let home = Path::new("/home/u");
    assert_eq!(mounted_home(&ContainerOptions::default(), home), None);
    let mount = ContainerOptions {
        mount_home: Some(true),
        ..ContainerOptions::default()
    };
    assert_eq!(mounted_home(&mount, home), Some(PathBuf::from("/home/u")));
    let remapped = ContainerOptions {
        remap_root: Some(true),
        ..mount
    };
    assert_eq!(mounted_home(&remapped, home), Some(PathBuf::from("/root")));
}
