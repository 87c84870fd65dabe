//! Which CDI devices a container gets: the task's GPUs, as Slurm's gres plugin gives them in
//! its environment, and the names a user asked for (`egret run --device`, srun
//! `--container-device`), which the site must allow.
//!
//! Slurm sets `CUDA_VISIBLE_DEVICES`, `ROCR_VISIBLE_DEVICES` and `GPU_DEVICE_ORDINAL` (the same
//! list, for NVIDIA, AMD and OpenCL programs) and `SLURM_STEP_GPUS` (`SLURM_JOB_GPUS` in a
//! batch script) with the node's GPU indices. With `ConstrainDevices=yes` in cgroup.conf the
//! first three count from 0 among the step's GPUs instead (`cdi.slurmGpuIndices: "local"`, the
//! default); without it they are the node's indices too (`"global"`).

use serde::Deserialize;

use super::spec;
use super::CdiError;
use crate::hooks::select::task_gpus;

/// The per-task variables, in the order their value is taken, with the CDI kind each names.
pub const TASK_VARS: &[(&str, Option<&str>)] = &[
    ("CUDA_VISIBLE_DEVICES", Some("nvidia.com/gpu")),
    ("ROCR_VISIBLE_DEVICES", Some("amd.com/gpu")),
    ("GPU_DEVICE_ORDINAL", None),
];

/// The GPU kinds egret maps a task's GPUs to.
pub const GPU_KINDS: &[&str] = &["nvidia.com/gpu", "amd.com/gpu"];

/// What the per-task variables count.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpuIndices {
    /// Positions among the step's GPUs (`SLURM_STEP_GPUS`): Slurm with `ConstrainDevices`.
    #[default]
    Local,
    /// The node's own indices.
    Global,
}

/// The task's GPUs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskGpus {
    /// Host ids (node indices, or UUIDs as given), in the task's order.
    pub ids: Vec<String>,
    /// The per-task variables the task has (they are renumbered in the container).
    pub vars: Vec<&'static str>,
    /// The kinds those variables name.
    pub kinds: Vec<&'static str>,
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The task's GPUs from its environment `env`; none when it has no GPU variable (or only
/// Slurm's empty / `NoDevFiles` values).
pub fn task(env: &[(String, String)], indices: GpuIndices) -> Result<TaskGpus, CdiError> {
    let mut out = TaskGpus::default();
    let mut first: Option<(&'static str, &str)> = None;
    for (var, kind) in TASK_VARS {
        if let Some(v) = task_gpus(value(env, var)) {
            out.vars.push(var);
            // GPU_DEVICE_ORDINAL names no vendor: it stands for both only when it is alone.
            match kind {
                Some(k) => out.kinds.push(k),
                None if out.kinds.is_empty() => out.kinds.extend(GPU_KINDS),
                None => {}
            }
            first.get_or_insert((var, v));
        }
    }
    let Some((var, v)) = first else {
        return Ok(out);
    };
    let ids = list(v);
    let step = value(env, "SLURM_STEP_GPUS")
        .or_else(|| value(env, "SLURM_JOB_GPUS"))
        .filter(|s| !s.trim().is_empty());
    out.ids = match (indices, step) {
        (GpuIndices::Local, Some(step)) => {
            let mut step_ids: Vec<u64> = Vec::new();
            for s in list(step) {
                step_ids.push(s.parse().map_err(|_| CdiError::TaskGpu {
                    id: s.clone(),
                    var: "SLURM_STEP_GPUS",
                    msg: "not a GPU index".into(),
                })?);
            }
            step_ids.sort_unstable();
            ids.iter()
                .map(|i| {
                    let pos: usize = i.parse().map_err(|_| CdiError::TaskGpu {
                        id: i.clone(),
                        var,
                        msg: "not a position among the step's GPUs (cdi.slurmGpuIndices is \"local\")".into(),
                    })?;
                    step_ids
                        .get(pos)
                        .map(|g| g.to_string())
                        .ok_or_else(|| CdiError::TaskGpu {
                            id: i.clone(),
                            var,
                            msg: format!("the step has only {} GPUs (SLURM_STEP_GPUS={step})", step_ids.len()),
                        })
                })
                .collect::<Result<_, _>>()?
        }
        _ => ids,
    };
    Ok(out)
}

/// The container's value of a renumbered variable: each host id becomes its rank among the
/// task's host ids (`2,10` -> `0,1`), as `CUDA_VISIBLE_DEVICES` always is.
pub fn renumbered(ids: &[String]) -> String {
    crate::container::env::reindex_gpus(&ids.join(","))
}

/// True when `s` is a CDI device name rather than a path (`--device` takes both).
pub fn is_cdi_name(s: &str) -> bool {
    !s.starts_with('/') && s.contains('=')
}

/// Checks a user's CDI name: its syntax, then the site's allow list, whose entries are full
/// names or `KIND=*` (every device of a kind).
pub fn check_allowed(name: &str, allowed: &[String]) -> Result<(), CdiError> {
    let (kind, _) = spec::split_qualified(name).ok_or_else(|| CdiError::BadName {
        name: name.escape_debug().to_string(),
    })?;
    let ok = allowed
        .iter()
        .any(|a| a == name || a.strip_suffix("=*").is_some_and(|k| k == kind) || a == "*");
    if ok {
        Ok(())
    } else {
        Err(CdiError::NotAllowed {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn global_indices_are_the_host_ids() {
        let t = task(&env(&[("CUDA_VISIBLE_DEVICES", "3,1")]), GpuIndices::Global).unwrap();
        assert_eq!(t.ids, ["3", "1"]);
        assert_eq!(t.vars, ["CUDA_VISIBLE_DEVICES"]);
        assert_eq!(t.kinds, ["nvidia.com/gpu"]);
        // No SLURM_STEP_GPUS: local indices cannot be mapped, the values are the host's.
        let t = task(&env(&[("CUDA_VISIBLE_DEVICES", "2")]), GpuIndices::Local).unwrap();
        assert_eq!(t.ids, ["2"]);
    }

    #[test]
    fn local_indices_map_through_the_step_gpus() {
        let e = env(&[
            ("SLURM_STEP_GPUS", "6,2,4"),
            ("CUDA_VISIBLE_DEVICES", "2,0"),
            ("ROCR_VISIBLE_DEVICES", "2,0"),
            ("GPU_DEVICE_ORDINAL", "2,0"),
        ]);
        let t = task(&e, GpuIndices::Local).unwrap();
        assert_eq!(t.ids, ["6", "2"]);
        assert_eq!(
            t.vars,
            [
                "CUDA_VISIBLE_DEVICES",
                "ROCR_VISIBLE_DEVICES",
                "GPU_DEVICE_ORDINAL"
            ]
        );
        assert_eq!(t.kinds, ["nvidia.com/gpu", "amd.com/gpu"]);
        assert_eq!(renumbered(&t.ids), "1,0");
        let t = task(&e, GpuIndices::Global).unwrap();
        assert_eq!(t.ids, ["2", "0"]);
        let bad = env(&[("SLURM_STEP_GPUS", "1"), ("CUDA_VISIBLE_DEVICES", "1")]);
        let e = task(&bad, GpuIndices::Local).unwrap_err().to_string();
        assert!(e.contains("the step has only 1 GPUs"), "{e}");
    }

    #[test]
    fn no_gpu_values() {
        for v in ["", "NoDevFiles", " "] {
            let t = task(&env(&[("CUDA_VISIBLE_DEVICES", v)]), GpuIndices::Local).unwrap();
            assert_eq!(t, TaskGpus::default());
        }
        let t = task(&env(&[("GPU_DEVICE_ORDINAL", "0")]), GpuIndices::Local).unwrap();
        assert_eq!(t.kinds, GPU_KINDS);
    }

    #[test]
    fn allow_list() {
        let allowed = vec!["nvidia.com/gpu=*".to_string(), "amd.com/gpu=1".to_string()];
        check_allowed("nvidia.com/gpu=3", &allowed).unwrap();
        check_allowed("amd.com/gpu=1", &allowed).unwrap();
        let e = check_allowed("amd.com/gpu=0", &allowed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not allowed"), "{e}");
        let e = check_allowed("nvidia.com/gpu=3", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cdi.allowedDevices"), "{e}");
        let e = check_allowed("gpu=0", &allowed).unwrap_err().to_string();
        assert!(e.contains("not a CDI device name"), "{e}");
        assert!(is_cdi_name("nvidia.com/gpu=0"));
        assert!(!is_cdi_name("/dev/fuse"));
        assert!(!is_cdi_name("/dev/a=b"));
    }
}
