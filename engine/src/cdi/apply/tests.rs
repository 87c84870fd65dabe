use super::*;
use oci_spec::runtime::{ProcessBuilder, SpecBuilder};
use std::os::unix::fs::{symlink, PermissionsExt};

/// A spec file defining `kind` devices 0..4 whose nodes are the host's /dev/null.
fn gpu_spec(kind: &str, env: &str) -> String {
    let devices: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#"{{"name":"{i}","containerEdits":{{"deviceNodes":[{{"path":"/dev/g{i}","hostPath":"/dev/null","permissions":"rw"}}],"env":["WHICH_{i}=1"]}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"cdiVersion":"0.5.0","kind":"{kind}","devices":[{}],
            "containerEdits":{{"env":["{env}"],"mounts":[{{"hostPath":"/etc/hostname","containerPath":"/etc/drv"}}],
            "hooks":[{{"hookName":"createContainer","path":"/bin/true"}}]}}}}"#,
        devices.join(",")
    )
}

struct Site {
    dir: tempfile::TempDir,
    cfg: Config,
}

fn site(files: &[(&str, String)]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut cfg = Config::default();
    cfg.cdi.spec_dirs = vec![dir.path().join("missing"), dir.path().to_path_buf()];
    cfg.security_checks = false;
    cfg.nvidia.dev_dir = dir.path().join("no-dev");
    Site { dir, cfg }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn oci() -> Spec {
    let p = ProcessBuilder::default()
        .env(vec![
            "CUDA_VISIBLE_DEVICES=0,1".to_string(),
            "PATH=/bin".to_string(),
        ])
        .build()
        .unwrap();
    let mut s = SpecBuilder::default().process(p).build().unwrap();
    s.set_hooks(None);
    s
}

fn env_of(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().env().clone().unwrap()
}

fn var(s: &Spec, k: &str) -> Option<String> {
    env_of(s)
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(&format!("{k}=")).map(String::from))
}

#[test]
fn task_gpus_select_devices_renumbered_from_zero() {
    let s = site(&[("nv.json", gpu_spec("nvidia.com/gpu", "NV=1"))]);
    // Slurm with ConstrainDevices: positions among the step's GPUs 1 and 3.
    let e = env(&[("CUDA_VISIBLE_DEVICES", "1,0"), ("SLURM_STEP_GPUS", "3,1")]);
    let plan = plan(&s.cfg, &e, &[]).unwrap();
    assert!(plan.nvidia && !plan.amd);
    let mut spec = oci();
    apply(&mut spec, &plan).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let paths: Vec<String> = linux
        .devices()
        .iter()
        .flatten()
        .map(|d| d.path().display().to_string())
        .collect();
    assert_eq!(paths, ["/dev/g3", "/dev/g1"]);
    let d = &linux.devices().as_ref().unwrap()[0];
    assert_eq!((d.major(), d.minor()), (1, 3));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert!(rules.iter().any(|r| r.major() == Some(1)
        && r.minor() == Some(3)
        && r.access().as_deref() == Some("rw")));
    // Host order from 0: 3 -> 1, 1 -> 0.
    assert_eq!(var(&spec, "CUDA_VISIBLE_DEVICES").as_deref(), Some("1,0"));
    assert_eq!(var(&spec, "WHICH_3").as_deref(), Some("1"));
    assert_eq!(var(&spec, "WHICH_0"), None);
    assert_eq!(var(&spec, "NV").as_deref(), Some("1"));
    // The file's own edits once.
    let mounts: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/etc/drv"))
        .collect();
    assert_eq!(mounts.len(), 1);
    assert!(mounts[0]
        .options()
        .as_ref()
        .unwrap()
        .contains(&"rbind".to_string()));
    let hooks = spec
        .hooks()
        .as_ref()
        .unwrap()
        .create_container()
        .clone()
        .unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].path(), Path::new("/bin/true"));
}

#[test]
fn amd_gpus_from_rocr_visible_devices() {
    let s = site(&[
        ("amd.yaml", gpu_spec("amd.com/gpu", "AMD=1")),
        ("nv.json", gpu_spec("nvidia.com/gpu", "NV=1")),
    ]);
    let e = env(&[("ROCR_VISIBLE_DEVICES", "2"), ("GPU_DEVICE_ORDINAL", "2")]);
    let plan = plan(&s.cfg, &e, &[]).unwrap();
    assert!(plan.amd && !plan.nvidia);
    let mut spec = oci();
    apply(&mut spec, &plan).unwrap();
    assert_eq!(var(&spec, "ROCR_VISIBLE_DEVICES").as_deref(), Some("0"));
    assert_eq!(var(&spec, "GPU_DEVICE_ORDINAL").as_deref(), Some("0"));
    assert_eq!(var(&spec, "AMD").as_deref(), Some("1"));
    assert_eq!(var(&spec, "NV"), None);
}

#[test]
fn a_later_file_wins_and_unknown_devices_are_errors() {
    let s = site(&[
        ("a.json", gpu_spec("nvidia.com/gpu", "FROM=a")),
        ("b.json", gpu_spec("nvidia.com/gpu", "FROM=b")),
    ]);
    let plan1 = plan(&s.cfg, &env(&[("CUDA_VISIBLE_DEVICES", "0")]), &[]).unwrap();
    let mut spec = oci();
    apply(&mut spec, &plan1).unwrap();
    assert_eq!(var(&spec, "FROM").as_deref(), Some("b"));
    let e = plan(&s.cfg, &env(&[("CUDA_VISIBLE_DEVICES", "7")]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CDI device 'nvidia.com/gpu=7' is not defined"),
        "{e}"
    );
    assert!(e.contains(&s.dir.path().display().to_string()), "{e}");
}

#[test]
fn named_devices_must_be_allowed() {
    let mut s = site(&[("nv.json", gpu_spec("nvidia.com/gpu", "NV=1"))]);
    let asked = vec!["nvidia.com/gpu=2".to_string()];
    let e = plan(&s.cfg, &[], &asked).unwrap_err().to_string();
    assert!(e.contains("not allowed"), "{e}");
    s.cfg.cdi.allowed_devices = vec!["nvidia.com/gpu=*".into()];
    let p = plan(&s.cfg, &[], &asked).unwrap();
    let mut spec = oci();
    apply(&mut spec, &p).unwrap();
    assert_eq!(var(&spec, "WHICH_2").as_deref(), Some("1"));
    // A named device does not renumber the caller's variables.
    assert_eq!(var(&spec, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0,1"));
}

#[test]
fn nothing_is_read_without_gpus_or_names() {
    let mut cfg = Config::default();
    cfg.cdi.spec_dirs = vec![PathBuf::from("/proc/self/mem")];
    let p = plan(&cfg, &env(&[("CUDA_VISIBLE_DEVICES", "NoDevFiles")]), &[]).unwrap();
    assert!(p.is_empty());
}

#[test]
fn specs_others_can_change_are_refused() {
    let mut s = site(&[("nv.json", gpu_spec("nvidia.com/gpu", "NV=1"))]);
    s.cfg.security_checks = true;
    let f = s.dir.path().join("nv.json");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = plan(&s.cfg, &env(&[("CUDA_VISIBLE_DEVICES", "0")]), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "CDI spec {}: refused, must not be writable by group or others (mode 0666) (spec files are root's configuration)",
            f.display()
        )
    );
}

#[test]
fn without_a_spec_the_nvidia_support_binds_the_task_gpus() {
    let s = site(&[]);
    let dev = s.dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    symlink("/dev/null", dev.join("nvidiactl")).unwrap();
    symlink("/dev/zero", dev.join("nvidia1")).unwrap();
    symlink("/dev/full", dev.join("nvidia-uvm")).unwrap();
    let smi = s.dir.path().join("nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\n").unwrap();
    let list = s.dir.path().join("list.conf");
    std::fs::write(&list, format!("{}\nlibcuda.so\n", smi.display())).unwrap();
    let mut cfg = s.cfg.clone();
    cfg.nvidia.dev_dir = dev.clone();
    cfg.nvidia.library_list = list;
    cfg.nvidia.ld_cache = s.dir.path().join("no-cache");
    let p = plan(&cfg, &env(&[("CUDA_VISIBLE_DEVICES", "1")]), &[]).unwrap();
    assert!(p.nvidia);
    let mut spec = oci();
    apply(&mut spec, &p).unwrap();
    let devices: Vec<String> = spec
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .iter()
        .flatten()
        .map(|d| d.path().display().to_string())
        .collect();
    assert_eq!(
        devices,
        ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    );
    assert!(spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/usr/bin/nvidia-smi")));
    assert_eq!(var(&spec, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0"));
    assert_eq!(
        var(&spec, "LD_LIBRARY_PATH").as_deref(),
        Some(nvidia::LIB_DIR)
    );
    // A GPU the node lacks is an error; fallback off, nothing at all.
    let e = plan(&cfg, &env(&[("CUDA_VISIBLE_DEVICES", "0")]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("the task's GPU 0 has no device node"), "{e}");
    cfg.nvidia.fallback = false;
    assert!(plan(&cfg, &env(&[("CUDA_VISIBLE_DEVICES", "1")]), &[])
        .unwrap()
        .is_empty());
}
