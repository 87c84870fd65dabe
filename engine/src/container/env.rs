//! The container's environment. Precedence, lowest to highest:
//!
//! 1. the host (task) environment;
//! 2. the image's `Env`;
//! 3. the Slurm step's own variables, as enroot's Slurm PMI hook (which pyxis sites install)
//!    writes them over the image's: the host's `SLURM_*`, `PMI_*` and `PMIX_*`, and for a PMIx
//!    step (`SLURM_MPI_TYPE` unset or `pmix*`) `PMIX_MCA_ptl`/`_psec`/`_gds` from the server's
//!    `PMIX_PTL_MODULE`/`PMIX_SECURITY_MODE`/`PMIX_GDS_MODULE` when the host does not set them;
//! 4. GPU selection, only for a task with GPUs: the task's `CUDA_VISIBLE_DEVICES` becomes
//!    `NVIDIA_VISIBLE_DEVICES` (what the GPU hook exposes) and the container's
//!    `CUDA_VISIBLE_DEVICES` counts from 0 in the numeric order of the host ids. A task without
//!    GPUs keeps the image's `CUDA_VERSION`, `NVIDIA_*`, ... as pyxis does; the NVIDIA hook is
//!    selected by an annotation only tasks with GPUs get, so an image's
//!    `NVIDIA_VISIBLE_DEVICES=all` reaches no hook;
//! 5. `TINI_SUBREAPER=1` with `--init`;
//! 6. the site's `environment` rules: set, prepend, append (`:`-joined), unset;
//! 7. the user's `--env NAME=VALUE`, an EDF's `[env]` (set, or unset by an empty value), and
//!    `--env NAME` / `--container-env NAME` (the host value), in that order.
//!
//! The image's ENTRYPOINT under srun sees less (see [`entrypoint_env`]): as with pyxis, the
//! host's other exported variables are added only after it, where it left them unset.
//!
//! Everything here is a pure function of its inputs.

use std::collections::BTreeMap;

use crate::config::EnvironmentRules;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("invalid variable name '{name}': {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("value of {name} contains a NUL byte")]
    BadValue { name: String },
}

/// A user's request about one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvRequest {
    /// `--env NAME=VALUE`.
    Set(String, String),
    /// `--env NAME` / `--container-env NAME`: the host's value over the image's; nothing if the
    /// host has no such variable.
    FromHost(String),
    /// An EDF's `NAME = ""`: no such variable in the container, whoever set it before.
    Unset(String),
}

impl EnvRequest {
    /// Parses `--env NAME=VALUE` or `--env NAME` (the value may contain `=`).
    pub fn parse(s: &str) -> Result<EnvRequest, EnvError> {
        match s.split_once('=') {
            Some((name, value)) => {
                check_name(name)?;
                check_value(name, value)?;
                Ok(EnvRequest::Set(name.to_string(), value.to_string()))
            }
            None => {
                check_name(s)?;
                Ok(EnvRequest::FromHost(s.to_string()))
            }
        }
    }
}

/// A name the kernel and shells can carry: non-empty, without `=` or NUL.
pub fn check_name(name: &str) -> Result<(), EnvError> {
    let bad = |reason| {
        Err(EnvError::BadName {
            name: name.escape_debug().to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.contains('=') {
        return bad("contains '='");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains a control character or a blank");
    }
    Ok(())
}

fn check_value(name: &str, value: &str) -> Result<(), EnvError> {
    if value.contains('\0') {
        return Err(EnvError::BadValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn valid(name: &str, value: &str) -> bool {
    check_name(name).is_ok() && check_value(name, value).is_ok()
}

/// The container environment, from lowest to highest precedence (see the module docs). Invalid
/// host or image entries are dropped; invalid site or user entries are errors.
pub fn container_env(
    host: &[(String, String)],
    image: &[(String, String)],
    site: &EnvironmentRules,
    user: &[EnvRequest],
    init: bool,
) -> Result<Vec<(String, String)>, EnvError> {
    build(host, host, image, site, user, init)
}

/// The host variables enroot (under pyxis) gives the entrypoint besides the ones named in
/// `--container-env`: the step's `SLURM_*`, `PMI_*`, `PMIX_*` (its Slurm PMI hook) less the
/// per-task ones pyxis keeps from enroot, and the terminal and login basics (`TERM`, and what
/// enroot-switchroot fills in from the passwd entry: `HOME`, `USER`, `LOGNAME`, `SHELL`).
fn passed_to_entrypoint(name: &str) -> bool {
    const PER_TASK: &[&str] = &[
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "SLURM_TASK_PID",
        "PMIX_RANK",
        "PMI_FD",
    ];
    const BASICS: &[&str] = &["TERM", "HOME", "USER", "LOGNAME", "SHELL"];
    if PER_TASK.contains(&name) {
        return false;
    }
    is_step_var(name) || BASICS.contains(&name)
}

/// Variables of the Slurm step that win over the image's (layer 3).
fn is_step_var(name: &str) -> bool {
    ["SLURM_", "PMI_", "PMIX_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// PATH for an entrypoint whose image sets none (the host's is not passed, as with enroot).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment pairs of a container process.
pub type EnvPairs = Vec<(String, String)>;

/// How a variable is set after the entrypoint, in front of the user's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterEntrypoint {
    /// A host variable the entrypoint did not see: set only where it left the name unset.
    IfUnset(String, String),
    /// `--container-env NAME` with a host value: the host's value, whatever the entrypoint did.
    Always(String, String),
}

/// The environment the image's ENTRYPOINT runs in, and what is set after it (pyxis's rules:
/// the entrypoint sees the image's environment, the step's Slurm/PMI variables, the variables
/// named in `--container-env` and egret's GPU, site and user layers; every other host variable
/// reaches only the user's command, and only where the image and the entrypoint left it unset;
/// the named ones keep the host's value).
pub fn entrypoint_env(
    host: &[(String, String)],
    image: &[(String, String)],
    site: &EnvironmentRules,
    user: &[EnvRequest],
    init: bool,
) -> Result<(EnvPairs, Vec<AfterEntrypoint>), EnvError> {
    let full = build(host, host, image, site, user, init)?;
    let passed: Vec<(String, String)> = host
        .iter()
        .filter(|(k, _)| passed_to_entrypoint(k))
        .cloned()
        .collect();
    let mut entry = build(&passed, host, image, site, user, init)?;
    if !entry.iter().any(|(k, _)| k == "PATH") {
        entry.push(("PATH".into(), DEFAULT_PATH.into()));
        entry.sort();
    }
    let mut after: Vec<AfterEntrypoint> = full
        .into_iter()
        .filter(|(k, _)| !entry.iter().any(|(e, _)| e == k))
        .map(|(k, v)| AfterEntrypoint::IfUnset(k, v))
        .collect();
    let host_value = |name: &str| host.iter().rev().find(|(k, _)| k == name);
    for req in user {
        if let EnvRequest::FromHost(name) = req {
            if let Some((k, v)) = host_value(name) {
                after.push(AfterEntrypoint::Always(k.clone(), v.clone()));
            }
        }
    }
    Ok((entry, after))
}

/// The layers of the module docs: `host` is layer 1, `host_all` what the later layers read of
/// the host (the GPU selection, `--container-env`).
fn build(
    host: &[(String, String)],
    host_all: &[(String, String)],
    image: &[(String, String)],
    site: &EnvironmentRules,
    user: &[EnvRequest],
    init: bool,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in host.iter().filter(|(k, v)| valid(k, v)) {
        env.insert(k.clone(), v.clone());
    }
    let host_value = |name: &str| {
        host_all
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for (k, v) in image.iter().filter(|(k, v)| valid(k, v)) {
        env.insert(k.clone(), v.clone());
    }
    step_vars(&mut env, host);
    gpu_adjust(&mut env, host_value("CUDA_VISIBLE_DEVICES"));
    if init {
        env.insert("TINI_SUBREAPER".into(), "1".into());
    }
    apply_site_rules(&mut env, site)?;
    for req in user {
        match req {
            EnvRequest::Set(k, v) => {
                check_name(k)?;
                check_value(k, v)?;
                env.insert(k.clone(), v.clone());
            }
            EnvRequest::FromHost(k) => {
                check_name(k)?;
                if let Some(v) = host_value(k) {
                    env.insert(k.clone(), v.to_string());
                }
            }
            EnvRequest::Unset(k) => {
                env.remove(k);
            }
        }
    }
    Ok(env.into_iter().collect())
}

/// Layer 3: the step's variables over the image's, and the PMIx MCA settings the PMIx client
/// reads, derived from what the server exported (as enroot's Slurm PMI hook does).
fn step_vars(env: &mut BTreeMap<String, String>, host: &[(String, String)]) {
    for (k, v) in host.iter().filter(|(k, v)| is_step_var(k) && valid(k, v)) {
        env.insert(k.clone(), v.clone());
    }
    let host_value = |name: &str| {
        host.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let pmix_step = host_value("SLURM_MPI_TYPE")
        .is_none_or(|t| t.is_empty() || t.starts_with("pmix"))
        && host.iter().any(|(k, _)| k.starts_with("PMIX_"));
    if !pmix_step {
        return;
    }
    for (mca, module) in PMIX_MCA {
        if let Some(v) = host_value(module).filter(|v| !v.is_empty() && valid(mca, v)) {
            if host_value(mca).is_none_or(str::is_empty) {
                env.insert(mca.to_string(), v.to_string());
            }
        }
    }
}

/// `(MCA variable, the server's variable it comes from)`.
pub const PMIX_MCA: [(&str, &str); 3] = [
    ("PMIX_MCA_ptl", "PMIX_PTL_MODULE"),
    ("PMIX_MCA_psec", "PMIX_SECURITY_MODE"),
    ("PMIX_MCA_gds", "PMIX_GDS_MODULE"),
];

/// Layer 4: GPU selection from the task's `CUDA_VISIBLE_DEVICES`; nothing changes for a task
/// without GPUs (the image's `NVIDIA_*`, `CUDA_*` stay).
pub fn gpu_adjust(env: &mut BTreeMap<String, String>, host_cvd: Option<&str>) {
    if let Some(cvd) = crate::hooks::select::task_gpus(host_cvd) {
        env.insert("NVIDIA_VISIBLE_DEVICES".into(), cvd.to_string());
        env.entry("NVIDIA_DRIVER_CAPABILITIES".into())
            .or_insert_with(|| "all".into());
        env.insert("CUDA_VISIBLE_DEVICES".into(), reindex_gpus(cvd));
    }
}

/// The container sees only the task's GPUs, numbered from 0 in the order of their host ids:
/// each host id becomes its rank among the sorted ids (`2,10` → `0,1`; `3,1` → `1,0`). Ids that
/// are not all numbers (UUIDs, MIG names) stay valid inside and are kept as they are.
pub fn reindex_gpus(cvd: &str) -> String {
    let ids: Vec<&str> = cvd.split(',').map(str::trim).collect();
    let Ok(nums) = ids
        .iter()
        .map(|i| i.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
    else {
        return cvd.to_string();
    };
    let mut sorted = nums.clone();
    sorted.sort_unstable();
    sorted.dedup();
    nums.iter()
        .map(|n| {
            sorted
                .binary_search(n)
                .map(|i| i.to_string())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Layer 6: the site's rules, in the order set, prepend, append, unset.
fn apply_site_rules(
    env: &mut BTreeMap<String, String>,
    rules: &EnvironmentRules,
) -> Result<(), EnvError> {
    for (k, v) in &rules.set {
        check_name(k)?;
        check_value(k, v)?;
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &rules.prepend {
        check_name(k)?;
        check_value(k, v)?;
        let new = match env.get(k).filter(|old| !old.is_empty()) {
            Some(old) => format!("{v}:{old}"),
            None => v.clone(),
        };
        env.insert(k.clone(), new);
    }
    for (k, v) in &rules.append {
        check_name(k)?;
        check_value(k, v)?;
        let new = match env.get(k).filter(|old| !old.is_empty()) {
            Some(old) => format!("{old}:{v}"),
            None => v.clone(),
        };
        env.insert(k.clone(), new);
    }
    for k in &rules.unset {
        check_name(k)?;
        env.remove(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn run(
        host: &[(&str, &str)],
        image: &[(&str, &str)],
        site: &EnvironmentRules,
        user: &[EnvRequest],
    ) -> Vec<(String, String)> {
        container_env(&kv(host), &kv(image), site, user, false).unwrap()
    }

    #[test]
    fn parse_requests() {
        assert_eq!(
            EnvRequest::parse("A=1").unwrap(),
            EnvRequest::Set("A".into(), "1".into())
        );
        assert_eq!(
            EnvRequest::parse("A=").unwrap(),
            EnvRequest::Set("A".into(), "".into())
        );
        assert_eq!(
            EnvRequest::parse("N=a=b").unwrap(),
            EnvRequest::Set("N".into(), "a=b".into())
        );
        assert_eq!(
            EnvRequest::parse("HOME").unwrap(),
            EnvRequest::FromHost("HOME".into())
        );
        assert!(EnvRequest::parse("=v")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(EnvRequest::parse("").is_err());
        assert!(EnvRequest::parse("A\0B=1")
            .unwrap_err()
            .to_string()
            .contains("NUL"));
        assert!(EnvRequest::parse("A=x\0")
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn image_over_host_user_over_all() {
        let env = run(
            &[("PATH", "/host/bin"), ("HOST_ONLY", "h"), ("X", "host")],
            &[("PATH", "/img/bin"), ("X", "img"), ("IMG_ONLY", "i")],
            &EnvironmentRules::default(),
            &[
                EnvRequest::FromHost("X".into()),
                EnvRequest::Set("U".into(), "u".into()),
            ],
        );
        assert_eq!(get(&env, "PATH"), Some("/img/bin"));
        assert_eq!(get(&env, "HOST_ONLY"), Some("h"));
        assert_eq!(get(&env, "IMG_ONLY"), Some("i"));
        assert_eq!(
            get(&env, "X"),
            Some("host"),
            "--env NAME takes the host value over the image"
        );
        assert_eq!(get(&env, "U"), Some("u"));
    }

    #[test]
    fn from_host_without_host_value_keeps_image() {
        let env = run(
            &[],
            &[("X", "img")],
            &EnvironmentRules::default(),
            &[EnvRequest::FromHost("X".into())],
        );
        assert_eq!(get(&env, "X"), Some("img"));
    }

    #[test]
    fn pmix_from_host_wins() {
        let env = run(
            &[("PMIX_SERVER_URI", "host")],
            &[("PMIX_SERVER_URI", "img"), ("PMIX_OTHER", "img")],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(get(&env, "PMIX_SERVER_URI"), Some("host"));
        assert_eq!(get(&env, "PMIX_OTHER"), Some("img"));
    }

    #[test]
    fn site_rules_then_user() {
        let mut site = EnvironmentRules::default();
        site.set.insert("S".into(), "site".into());
        site.set.insert("OVER".into(), "site".into());
        site.prepend.insert("PATH".into(), "/site/bin".into());
        site.append
            .insert("LD_LIBRARY_PATH".into(), "/site/lib".into());
        site.append.insert("EMPTY".into(), "/e".into());
        site.unset.push("SECRET".into());
        site.unset.push("GONE".into());
        let env = run(
            &[("SECRET", "s"), ("EMPTY", "")],
            &[
                ("PATH", "/img/bin"),
                ("LD_LIBRARY_PATH", "/img/lib"),
                ("OVER", "img"),
            ],
            &site,
            &[EnvRequest::Set("GONE".into(), "back".into())],
        );
        assert_eq!(get(&env, "S"), Some("site"));
        assert_eq!(get(&env, "OVER"), Some("site"));
        assert_eq!(get(&env, "PATH"), Some("/site/bin:/img/bin"));
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), Some("/img/lib:/site/lib"));
        assert_eq!(
            get(&env, "EMPTY"),
            Some("/e"),
            "no leading ':' on an empty value"
        );
        assert_eq!(get(&env, "SECRET"), None);
        assert_eq!(
            get(&env, "GONE"),
            Some("back"),
            "the user may set what the site unset"
        );
    }

    #[test]
    fn bad_site_or_user_names_are_errors_bad_image_entries_are_dropped() {
        let mut site = EnvironmentRules::default();
        site.set.insert("A=B".into(), "x".into());
        let e = container_env(&[], &[], &site, &[], false).unwrap_err();
        assert!(e.to_string().contains("A=B"), "{e}");
        let e = container_env(
            &[],
            &[],
            &EnvironmentRules::default(),
            &[EnvRequest::Set("".into(), "x".into())],
            false,
        );
        assert!(e.is_err());
        let env = run(
            &[("", "x")],
            &[("OK", "1"), ("BAD", "a\0b")],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(env, kv(&[("OK", "1")]));
    }

    #[test]
    fn init_sets_subreaper() {
        let env = container_env(&[], &[], &EnvironmentRules::default(), &[], true).unwrap();
        assert_eq!(get(&env, "TINI_SUBREAPER"), Some("1"));
    }

    #[test]
    fn gpu_reindexing_is_numeric() {
        assert_eq!(reindex_gpus("2,10"), "0,1");
        assert_eq!(reindex_gpus("10,2"), "1,0");
        assert_eq!(reindex_gpus("3,1,5"), "1,0,2");
        assert_eq!(reindex_gpus("1"), "0");
        assert_eq!(reindex_gpus("7,7"), "0,0");
        assert_eq!(reindex_gpus("GPU-1234,GPU-abcd"), "GPU-1234,GPU-abcd");
        assert_eq!(reindex_gpus("0,MIG-x"), "0,MIG-x");
    }

    #[test]
    fn gpus_from_the_task() {
        let env = run(
            &[("CUDA_VISIBLE_DEVICES", "2,10")],
            &[("CUDA_VERSION", "12.2"), ("NVIDIA_VISIBLE_DEVICES", "all")],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(get(&env, "NVIDIA_VISIBLE_DEVICES"), Some("2,10"));
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), Some("0,1"));
        assert_eq!(get(&env, "NVIDIA_DRIVER_CAPABILITIES"), Some("all"));
        assert_eq!(get(&env, "CUDA_VERSION"), Some("12.2"));
        let env = run(
            &[("CUDA_VISIBLE_DEVICES", "1")],
            &[("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(
            get(&env, "NVIDIA_DRIVER_CAPABILITIES"),
            Some("compute,utility")
        );
    }

    #[test]
    fn without_gpus_the_images_gpu_variables_stay() {
        for host in [
            vec![],
            vec![("CUDA_VISIBLE_DEVICES", "")],
            vec![("CUDA_VISIBLE_DEVICES", "NoDevFiles")],
        ] {
            let image = [
                ("CUDA_VERSION", "12.2"),
                ("NVIDIA_VISIBLE_DEVICES", "all"),
                ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
                ("NVIDIA_REQUIRE_CUDA", "cuda>=12.2"),
            ];
            let env = run(&host, &image, &EnvironmentRules::default(), &[]);
            for (k, v) in image {
                assert_eq!(get(&env, k), Some(v), "{k} with host {host:?}");
            }
            assert_eq!(
                get(&env, "CUDA_VISIBLE_DEVICES"),
                host.first().map(|(_, v)| *v),
                "the task's own value, not a computed one"
            );
        }
    }

    #[test]
    fn the_steps_variables_win_over_the_images() {
        let env = run(
            &[
                ("SLURM_JOB_ID", "7"),
                ("PMI_SIZE", "2"),
                ("PMIX_RANK", "1"),
                ("OTHER", "host"),
            ],
            &[
                ("SLURM_JOB_ID", "img"),
                ("PMI_SIZE", "img"),
                ("PMIX_RANK", "img"),
                ("OTHER", "img"),
            ],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(get(&env, "SLURM_JOB_ID"), Some("7"));
        assert_eq!(get(&env, "PMI_SIZE"), Some("2"));
        assert_eq!(get(&env, "PMIX_RANK"), Some("1"));
        assert_eq!(get(&env, "OTHER"), Some("img"));
    }

    #[test]
    fn pmix_mca_settings_come_from_the_servers_modules() {
        let server = [
            ("SLURM_MPI_TYPE", "pmix"),
            ("PMIX_SECURITY_MODE", "munge,native"),
            ("PMIX_GDS_MODULE", "ds21,ds12,hash"),
            ("PMIX_PTL_MODULE", "tcp,usock"),
        ];
        let env = run(&server, &[], &EnvironmentRules::default(), &[]);
        assert_eq!(get(&env, "PMIX_MCA_psec"), Some("munge,native"));
        assert_eq!(get(&env, "PMIX_MCA_gds"), Some("ds21,ds12,hash"));
        assert_eq!(get(&env, "PMIX_MCA_ptl"), Some("tcp,usock"));
        // The host's own setting stays; the image's does not win over the server's.
        let mut host = server.to_vec();
        host.push(("PMIX_MCA_psec", "native"));
        let env = run(
            &host,
            &[("PMIX_MCA_gds", "hash")],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(get(&env, "PMIX_MCA_psec"), Some("native"));
        assert_eq!(get(&env, "PMIX_MCA_gds"), Some("ds21,ds12,hash"));
        // Another MPI type, or no PMIx server: nothing derived.
        let mut pmi2 = server.to_vec();
        pmi2[0] = ("SLURM_MPI_TYPE", "pmi2");
        let env = run(&pmi2, &[], &EnvironmentRules::default(), &[]);
        assert_eq!(get(&env, "PMIX_MCA_psec"), None);
        let env = run(
            &[("SLURM_MPI_TYPE", "pmix")],
            &[],
            &EnvironmentRules::default(),
            &[],
        );
        assert_eq!(get(&env, "PMIX_MCA_psec"), None);
    }

    #[test]
    fn the_entrypoint_sees_the_container_env_not_the_hosts_exports() {
        let host = kv(&[
            ("DOCKER_TLS_VERIFY", "1"),
            ("PATH", "/host/bin"),
            ("HOME", "/home/u"),
            ("SLURM_JOB_ID", "7"),
            ("SLURM_PROCID", "3"),
            ("NAMED", "host"),
            ("FOO", "host"),
            ("CUDA_VISIBLE_DEVICES", "2"),
        ]);
        let image = kv(&[("FOO", "img"), ("NAMED", "img")]);
        let (entry, after) = entrypoint_env(
            &host,
            &image,
            &EnvironmentRules::default(),
            &[EnvRequest::FromHost("NAMED".into())],
            false,
        )
        .unwrap();
        assert_eq!(get(&entry, "DOCKER_TLS_VERIFY"), None);
        assert_eq!(get(&entry, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&entry, "HOME"), Some("/home/u"));
        assert_eq!(get(&entry, "SLURM_JOB_ID"), Some("7"));
        assert_eq!(get(&entry, "SLURM_PROCID"), None, "per task, as pyxis");
        assert_eq!(get(&entry, "FOO"), Some("img"));
        assert_eq!(get(&entry, "NAMED"), Some("host"));
        assert_eq!(get(&entry, "CUDA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(get(&entry, "NVIDIA_VISIBLE_DEVICES"), Some("2"));
        assert!(after.contains(&AfterEntrypoint::IfUnset(
            "DOCKER_TLS_VERIFY".into(),
            "1".into()
        )));
        assert!(after.contains(&AfterEntrypoint::IfUnset("SLURM_PROCID".into(), "3".into())));
        assert!(after.contains(&AfterEntrypoint::Always("NAMED".into(), "host".into())));
        assert!(
            !after
                .iter()
                .any(|a| matches!(a, AfterEntrypoint::IfUnset(k, _) if k == "FOO" || k == "PATH")),
            "{after:?}"
        );
    }

    /// The GPU env translation table: the task's CUDA_VISIBLE_DEVICES → the container's
    /// NVIDIA_VISIBLE_DEVICES (host ids) and CUDA_VISIBLE_DEVICES (re-indexed, numeric order),
    /// then the site's rules and the user's --env on top.
    #[test]
    fn gpu_env_translation_table() {
        let site_cvd = EnvironmentRules {
            set: [("CUDA_VISIBLE_DEVICES".to_string(), "9".to_string())].into(),
            ..EnvironmentRules::default()
        };
        let user_cvd = [EnvRequest::Set("CUDA_VISIBLE_DEVICES".into(), "7".into())];
        let none = EnvironmentRules::default();
        // (task value, site, user, expected NVIDIA_VISIBLE_DEVICES, expected CUDA_VISIBLE_DEVICES)
        type Row<'a> = (
            Option<&'a str>,
            &'a EnvironmentRules,
            &'a [EnvRequest],
            Option<&'a str>,
            Option<&'a str>,
        );
        let table: &[Row] = &[
            (Some("0"), &none, &[], Some("0"), Some("0")),
            (Some("2,10"), &none, &[], Some("2,10"), Some("0,1")),
            (Some("10,2"), &none, &[], Some("10,2"), Some("1,0")),
            (Some("3,1"), &none, &[], Some("3,1"), Some("1,0")),
            (Some(" 4,5 "), &none, &[], Some("4,5"), Some("0,1")),
            (
                Some("GPU-a1,GPU-b2"),
                &none,
                &[],
                Some("GPU-a1,GPU-b2"),
                Some("GPU-a1,GPU-b2"),
            ),
            // No GPU: the image's selection and the task's own value, untouched.
            (
                Some("NoDevFiles"),
                &none,
                &[],
                Some("all"),
                Some("NoDevFiles"),
            ),
            (Some(""), &none, &[], Some("all"), Some("")),
            (None, &none, &[], Some("all"), None),
            (Some("2,10"), &site_cvd, &[], Some("2,10"), Some("9")),
            (Some("2,10"), &site_cvd, &user_cvd, Some("2,10"), Some("7")),
        ];
        for (task, site, user, nvd, cvd) in table {
            let host: Vec<(&str, &str)> = task
                .map(|v| ("CUDA_VISIBLE_DEVICES", v))
                .into_iter()
                .collect();
            let env = run(&host, &[("NVIDIA_VISIBLE_DEVICES", "all")], site, user);
            assert_eq!(get(&env, "NVIDIA_VISIBLE_DEVICES"), *nvd, "task {task:?}");
            assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), *cvd, "task {task:?}");
        }
    }
}
