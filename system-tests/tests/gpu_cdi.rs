//! GPUs through CDI and egret's NVIDIA support, with fake device nodes (nodes of a major number
//! no driver serves: opening one fails with ENXIO when the device cgroup lets it through, EPERM
//! when it does not) and a fake driver library: the test machines have no GPU.
//!
//! The srun tests give the task the variables Slurm's gres plugin would set
//! (`CUDA_VISIBLE_DEVICES`, `ROCR_VISIBLE_DEVICES`, `GPU_DEVICE_ORDINAL`, `SLURM_STEP_GPUS`)
//! in srun's environment (which srun exports to the tasks; `--export=VAR=1,0` cannot carry a
//! comma): the test cluster has no gres configured. Their spec files go to
//! `/run/egret-cdi-test`, the spec directory the test machine's egret.json adds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use egret_test_support as common;
use egret_test_support::sandbox::{stderr, Sandbox};

const TEST_SPEC_DIR: &str = "/run/egret-cdi-test";

/// A CDI spec (YAML) of `kind` with devices 0..4, each one fake node `/dev/{prefix}N`.
fn spec_yaml(kind: &str, prefix: &str, nodes: &[PathBuf]) -> String {
    let mut s = format!(
        "cdiVersion: \"0.6.0\"\nkind: {kind}\ncontainerEdits:\n  env:\n    - SPEC_KIND={kind}\ndevices:\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        s.push_str(&format!(
            "  - name: \"{i}\"\n    containerEdits:\n      env: [\"HAS_{i}=yes\"]\n      deviceNodes:\n        - path: /dev/{prefix}{i}\n          hostPath: {}\n",
            n.display()
        ));
    }
    s
}

fn fake_nodes(dir: &Path, n: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| common::driverless_char_device(dir, 200 + i))
        .collect()
}

/// What the container sees of `/dev/{prefix}0..3`: `N:enxio` (usable), `N:eperm`, or absent.
const PROBE: &str = "for i in 0 1 2 3; do for p in $PREFIXES; do f=/dev/$p$i; [ -c $f ] || continue; if (exec 3<$f) 2>/tmp/e; then echo $p$i:open; elif grep -q 'No such device' /tmp/e; then echo $p$i:enxio; else echo $p$i:eperm; fi; done; done; echo CUDA=$CUDA_VISIBLE_DEVICES ROCR=$ROCR_VISIBLE_DEVICES ORD=$GPU_DEVICE_ORDINAL KIND=$SPEC_KIND HAS=$HAS_0$HAS_1$HAS_2$HAS_3";

#[test]
fn egret_run_device_by_cdi_name_is_checked_against_the_allow_list() {
    let sb = Sandbox::with(|dir, cfg| {
        cfg["cdi"] = serde_json::json!({
            "specDirs": [dir.join("cdi")],
            "allowedDevices": ["egret-test.example/gpu=1"],
        });
    });
    fs::create_dir(sb.path("cdi")).unwrap();
    let nodes = fake_nodes(&sb.dir, 4);
    fs::write(
        sb.path("cdi/test.yaml"),
        spec_yaml("egret-test.example/gpu", "vgpu", &nodes),
    )
    .unwrap();
    let busybox = sb.pull("busybox");
    let script = PROBE.replace("$PREFIXES", "vgpu");
    let out = sb.run_ok(&[
        "--device=egret-test.example/gpu=1",
        &busybox,
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(
        out,
        "vgpu1:enxio\nCUDA= ROCR= ORD= KIND=egret-test.example/gpu HAS=yes\n"
    );
    // Not in the allow list, and an unknown device: one line each, no container.
    let out = sb.run(&["--device=egret-test.example/gpu=0", &busybox, "true"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("CDI device 'egret-test.example/gpu=0' is not allowed here"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // A host path still works as before beside the CDI names.
    let out = sb.run_ok(&[
        &format!("--device={}:/dev/plain", nodes[2].display()),
        &busybox,
        "sh",
        "-c",
        "test -c /dev/plain && echo plain",
    ]);
    assert_eq!(out, "plain\n");
    sb.assert_no_leftovers();
}

#[test]
fn egret_run_bad_spec_is_one_line_naming_file_and_field() {
    let sb = Sandbox::with(|dir, cfg| {
        cfg["cdi"] = serde_json::json!({
            "specDirs": [dir.join("cdi")],
            "allowedDevices": ["egret-test.example/gpu=*"],
        });
    });
    fs::create_dir(sb.path("cdi")).unwrap();
    let bad = sb.path("cdi/bad.json");
    fs::write(
        &bad,
        r#"{"cdiVersion":"0.6.0","kind":"egret-test.example/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"dev/x"}]}}]}"#,
    )
    .unwrap();
    let busybox = sb.pull("busybox");
    let out = sb.run(&["--device=egret-test.example/gpu=0", &busybox, "true"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "CDI spec {}: field devices[0].containerEdits.deviceNodes[0].path: 'dev/x' must be an absolute path",
            bad.display()
        )),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// A shared object whose soname is `soname`, built with the machine's C compiler.
fn fake_library(dir: &Path, soname: &str) -> PathBuf {
    let src = dir.join("fake.c");
    fs::write(&src, "int cuInit(unsigned f) { (void)f; return 0; }\n").unwrap();
    let out = dir.join(soname);
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(ok.success(), "cc failed");
    out
}

#[test]
fn egret_run_without_a_spec_brings_the_task_nvidia_gpus() {
    let sb = Sandbox::with(|dir, cfg| {
        cfg["cdi"] = serde_json::json!({"specDirs": [dir.join("cdi")]});
        cfg["nvidia"] = serde_json::json!({
            "devDir": dir.join("dev"),
            "libraryList": dir.join("nvliblist.conf"),
            "ldCache": dir.join("ld.so.cache"),
        });
    });
    let dev = sb.path("dev");
    fs::create_dir(&dev).unwrap();
    let nodes = fake_nodes(&sb.dir, 3);
    for (name, n) in ["nvidia0", "nvidia1", "nvidiactl"].iter().zip(&nodes) {
        fs::rename(n, dev.join(name)).unwrap();
    }
    let lib = sb.path("lib");
    fs::create_dir(&lib).unwrap();
    fake_library(&lib, "libcuda.so.1");
    let ok = Command::new("/sbin/ldconfig")
        .arg("-C")
        .arg(sb.path("ld.so.cache"))
        .arg("-f")
        .arg("/dev/null")
        .arg(&lib)
        .status()
        .unwrap();
    assert!(ok.success());
    let smi = sb.path("nvidia-smi");
    fs::write(&smi, "#!/bin/sh\necho fake nvidia-smi\n").unwrap();
    fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::write(
        sb.path("nvliblist.conf"),
        format!(
            "# test list\n{}\nlibcuda.so\nlibnvidia-ml.so\n",
            smi.display()
        ),
    )
    .unwrap();
    let busybox = sb.pull("busybox");
    let script = format!(
        "{}; nvidia-smi; cmp /usr/local/nvidia/lib64/libcuda.so.1 /host-lib && echo lib-same; ls /usr/local/nvidia/lib64; echo LD=$LD_LIBRARY_PATH",
        PROBE.replace("$PREFIXES", "nvidia")
    );
    let out = sb
        .cmd(&[
            "run",
            &format!(
                "--mount=type=bind,src={}/libcuda.so.1,dst=/host-lib",
                lib.display()
            ),
            &busybox,
            "sh",
            "-c",
            &script,
        ])
        .env("CUDA_VISIBLE_DEVICES", "1")
        // cargo's own library path would follow egret's in the container.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = common::assert_success(&out, "egret run with CUDA_VISIBLE_DEVICES=1");
    assert_eq!(
        text,
        "nvidia1:enxio\nCUDA=0 ROCR= ORD= KIND= HAS=\nfake nvidia-smi\nlib-same\nlibcuda.so.1\nLD=/usr/local/nvidia/lib64\n"
    );
    // A GPU the node lacks: one line.
    let out = sb
        .cmd(&["run", &busybox, "true"])
        .env("CUDA_VISIBLE_DEVICES", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the task's GPU 5 has no device node"),
        "{}",
        stderr(&out)
    );
    sb.assert_no_leftovers();
}

/// The test spec directory, emptied now and when dropped.
struct TestSpecs;

impl TestSpecs {
    fn new() -> TestSpecs {
        let _ = fs::remove_dir_all(TEST_SPEC_DIR);
        fs::create_dir(TEST_SPEC_DIR).unwrap();
        fs::set_permissions(
            TEST_SPEC_DIR,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        TestSpecs
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = Path::new(TEST_SPEC_DIR).join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for TestSpecs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(TEST_SPEC_DIR);
    }
}

/// `srun ARGS` as root with the variables `env` added to what it exports to the tasks.
fn srun_env(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    common::require_installed_build();
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", "120", "srun"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run(&mut cmd)
}

fn busybox() -> String {
    format!("--container-image={}", common::registry_image("busybox"))
}

#[test]
fn srun_task_gpus_from_gres_variables_nvidia_and_amd() {
    common::require_installed_build();
    let specs = TestSpecs::new();
    let scratch = common::scratch_dir(None);
    let nodes = fake_nodes(&scratch, 4);
    specs.write("nv.yaml", &spec_yaml("nvidia.com/gpu", "nvidia", &nodes));
    specs.write("amd.json", &spec_json("amd.com/gpu", "amdgpu", &nodes));
    let probe = PROBE.replace("$PREFIXES", "nvidia amdgpu");
    // NVIDIA, as Slurm with ConstrainDevices sets it for the step's GPUs 1 and 3 (positions 1,0
    // among them: this task got both, in that order).
    let img = busybox();
    let out = srun_env(
        &[("CUDA_VISIBLE_DEVICES", "1,0"), ("SLURM_STEP_GPUS", "1,3")],
        &["-n1", &img, "sh", "-c", &probe],
    );
    let out = common::assert_success(&out, "srun with CUDA_VISIBLE_DEVICES=1,0");
    assert_eq!(
        out,
        "nvidia1:enxio\nnvidia3:enxio\nCUDA=1,0 ROCR= ORD= KIND=nvidia.com/gpu HAS=yesyes\n"
    );
    // AMD: ROCR_VISIBLE_DEVICES and GPU_DEVICE_ORDINAL, renumbered from 0; two tasks.
    let out = srun_env(
        &[
            ("ROCR_VISIBLE_DEVICES", "0"),
            ("GPU_DEVICE_ORDINAL", "0"),
            ("SLURM_STEP_GPUS", "2"),
        ],
        &["-n2", &img, "sh", "-c", &probe],
    );
    let out = common::assert_success(&out, "srun with ROCR_VISIBLE_DEVICES=0");
    // The two tasks' lines may interleave.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "CUDA= ROCR=0 ORD=0 KIND=amd.com/gpu HAS=yes",
            "CUDA= ROCR=0 ORD=0 KIND=amd.com/gpu HAS=yes",
            "amdgpu2:enxio",
            "amdgpu2:enxio",
        ]
    );
    drop(specs);
    let _ = fs::remove_dir_all(&scratch);
}

#[test]
fn srun_refuses_a_spec_others_can_write() {
    common::require_installed_build();
    let specs = TestSpecs::new();
    let scratch = common::scratch_dir(None);
    let nodes = fake_nodes(&scratch, 4);
    let p = specs.write("nv.yaml", &spec_yaml("nvidia.com/gpu", "nvidia", &nodes));
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let img = busybox();
    let out = common::srun(&["-n1", "--export=ALL,CUDA_VISIBLE_DEVICES=0", &img, "true"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!(
            "CDI spec {}: refused, must not be writable by group or others (mode 0666)",
            p.display()
        )),
        "{e}"
    );
    // An explicit CDI name the site does not allow: refused too.
    fs::remove_file(&p).unwrap();
    let out = common::srun(&["-n1", "--container-device=nvidia.com/gpu=0", &img, "true"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("CDI device 'nvidia.com/gpu=0' is not allowed here"),
        "{e}"
    );
    drop(specs);
    let _ = fs::remove_dir_all(&scratch);
}

/// [`spec_yaml`]'s spec as JSON (the AMD file is JSON, the NVIDIA one YAML: both formats
/// through srun).
fn spec_json(kind: &str, prefix: &str, nodes: &[PathBuf]) -> String {
    let devices: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "name": i.to_string(),
                "containerEdits": {
                    "env": [format!("HAS_{i}=yes")],
                    "deviceNodes": [{"path": format!("/dev/{prefix}{i}"), "hostPath": n}],
                },
            })
        })
        .collect();
    serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": kind,
        "containerEdits": {"env": [format!("SPEC_KIND={kind}")]},
        "devices": devices,
    })
    .to_string()
}
