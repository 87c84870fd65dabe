//! Which hooks a container gets: the conditions of each hooks.d file against the container's
//! annotations, command and bind mounts.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::{Hook, Hooks};

use crate::hooks::annotations::{AMDGPU_ENABLED, NVIDIA_ENABLED, TIMESTAMP_ENABLED};
use crate::hooks::schema::{HookConfig, Stage, When};

/// Annotations egret derives from facts rather than options, so that hooks with nothing to do
/// are not even started (every hook is an exec per container): the timestamp hooks when the
/// container's environment names `TIMESTAMP_HOOK_LOGFILE`, the NVIDIA hook when the task has
/// GPUs, the AMD GPU hook when the host has `/dev/kfd`. An annotation the user gave is kept.
pub fn add_automatic_annotations(
    annotations: &mut BTreeMap<String, String>,
    env: &[(String, String)],
) {
    if env
        .iter()
        .any(|(k, v)| k == "TIMESTAMP_HOOK_LOGFILE" && !v.is_empty())
    {
        annotations
            .entry(TIMESTAMP_ENABLED.into())
            .or_insert_with(|| "true".into());
    }
    let cvd = env
        .iter()
        .rev()
        .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
        .map(|(_, v)| v.as_str());
    // egret's fact, never the user's: the NVIDIA hook with an image's
    // NVIDIA_VISIBLE_DEVICES=all on a task without GPUs would expose every GPU of the node.
    if task_gpus(cvd).is_some() {
        annotations.insert(NVIDIA_ENABLED.into(), "true".into());
    } else {
        annotations.remove(NVIDIA_ENABLED);
    }
    if Path::new("/dev/kfd").exists() {
        annotations
            .entry(AMDGPU_ENABLED.into())
            .or_insert_with(|| "true".into());
    }
}

/// The task's GPUs from its `CUDA_VISIBLE_DEVICES` (unset, empty and Slurm's `NoDevFiles` all
/// mean "no GPU").
pub fn task_gpus(cvd: Option<&str>) -> Option<&str> {
    cvd.map(str::trim)
        .filter(|v| !v.is_empty() && *v != "NoDevFiles")
}

impl When {
    /// True when every condition given holds.
    pub fn matches(
        &self,
        annotations: &BTreeMap<String, String>,
        command: Option<&str>,
        has_bind_mounts: bool,
    ) -> bool {
        if let Some(always) = self.always {
            if !always {
                return false;
            }
        }
        if let Some(want) = self.has_bind_mounts {
            if !(want && has_bind_mounts) {
                return false;
            }
        }
        for (_, _, key, value) in &self.annotations {
            if !annotations
                .iter()
                .any(|(k, v)| key.is_match(k) && value.is_match(v))
            {
                return false;
            }
        }
        if !self.commands.is_empty() {
            let Some(cmd) = command else { return false };
            if !self.commands.iter().any(|re| re.is_match(cmd)) {
                return false;
            }
        }
        true
    }
}

/// The hooks a container with these annotations, command (`args[0]` of the user's process) and
/// bind mounts gets, per stage, in file order.
pub fn select(
    hooks: &[HookConfig],
    annotations: &BTreeMap<String, String>,
    command: Option<&str>,
    has_bind_mounts: bool,
) -> Hooks {
    let mut per_stage: BTreeMap<&'static str, Vec<Hook>> = BTreeMap::new();
    for h in hooks
        .iter()
        .filter(|h| h.when.matches(annotations, command, has_bind_mounts))
    {
        for st in &h.stages {
            per_stage
                .entry(st.as_str())
                .or_default()
                .push(h.hook.clone());
        }
    }
    let mut out = Hooks::default();
    let mut take = |st: Stage| per_stage.remove(st.as_str());
    #[allow(deprecated)] // prestart: still what runc 1.1 and the MPI/GPU hooks use.
    out.set_prestart(take(Stage::Prestart));
    out.set_create_runtime(take(Stage::CreateRuntime));
    out.set_create_container(take(Stage::CreateContainer));
    out.set_start_container(take(Stage::StartContainer));
    out.set_poststart(take(Stage::Poststart));
    out.set_poststop(take(Stage::Poststop));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::annotations::{MPI_ENABLED, MPI_TYPE};
    use crate::hooks::fixtures::{ann, parse, ALWAYS, MPI};
    use crate::hooks::schema::load_dir;

    #[test]
    fn all_conditions_must_match() {
        let h = parse(
            "x.json",
            r#"{"version":"1.0.0","hook":{"path":"/x"},
                "when":{"always":true,"annotations":{"^a$":"^1$"},"commands":["^/usr/bin/python"],"hasBindMounts":true},
                "stages":["prestart"]}"#,
        )
        .unwrap();
        let a = ann(&[("a", "1"), ("b", "2")]);
        assert!(h.when.matches(&a, Some("/usr/bin/python3"), true));
        assert!(!h.when.matches(&a, Some("/bin/sh"), true));
        assert!(!h.when.matches(&a, None, true));
        assert!(!h.when.matches(&a, Some("/usr/bin/python3"), false));
        assert!(!h
            .when
            .matches(&ann(&[("a", "2")]), Some("/usr/bin/python3"), true));
        let never = parse("n.json", r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"always":false},"stages":["prestart"]}"#).unwrap();
        assert!(!never.when.matches(&a, None, true));
        let nobind = parse("n.json", r#"{"version":"1.0.0","hook":{"path":"/x"},"when":{"hasBindMounts":false},"stages":["prestart"]}"#).unwrap();
        assert!(!nobind.when.matches(&a, None, false));
    }

    #[test]
    fn selection_per_stage_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("B-always.json"), ALWAYS).unwrap();
        std::fs::write(dir.path().join("a-mpi.json"), MPI).unwrap();
        std::fs::write(
            dir.path().join("c-always2.json"),
            ALWAYS.replace("/bin/ts", "/bin/ts2"),
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a hook").unwrap();
        let hooks = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a-mpi", "B-always", "c-always2"]);

        let sel = select(&hooks, &ann(&[]), Some("/bin/true"), false);
        let paths = |v: &Option<Vec<Hook>>| -> Vec<String> {
            v.iter()
                .flatten()
                .map(|h| h.path().display().to_string())
                .collect()
        };
        assert_eq!(paths(sel.create_runtime()), ["/bin/ts", "/bin/ts2"]);
        assert_eq!(paths(sel.poststop()), ["/bin/ts", "/bin/ts2"]);
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert!(pre.is_none(), "MPI hook not requested");
        let sel = select(
            &hooks,
            &ann(&[(MPI_ENABLED, "true"), (MPI_TYPE, "mpich")]),
            None,
            false,
        );
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert_eq!(paths(pre), ["/opt/egret/bin/mpi_hook"]);
        let sel = select(
            &hooks,
            &ann(&[(MPI_ENABLED, "true"), (MPI_TYPE, "openmpi")]),
            None,
            false,
        );
        #[allow(deprecated)]
        let pre = sel.prestart();
        assert!(pre.is_none());

        let bad = dir.path().join("d.json");
        std::fs::write(&bad, "{").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("d.json"), "{e}");
        let e = load_dir(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
