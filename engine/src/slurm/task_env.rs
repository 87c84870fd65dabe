//! The environment rules pyxis users rely on, applied to a Slurm task's environment.
//!
//! - `LANG`, `LANGUAGE` and `LC_ALL` stay outside (the host's locale rarely exists in the image
//!   and breaks its tools) unless the user names them in `--container-env`;
//! - an image made for PyTorch (its env has `PYTORCH_VERSION`) gets the variables
//!   `torch.distributed` reads, from the step: `MASTER_ADDR` (first node of the job),
//!   `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, each only when not set already.

/// Host variables that are not carried into the container unless named in `--container-env`.
pub const LOCALE_VARS: [&str; 3] = ["LANG", "LANGUAGE", "LC_ALL"];

/// Drops the locale variables the user did not ask for.
pub fn drop_locale(env: &mut Vec<(String, String)>, named: &[String]) {
    env.retain(|(k, _)| !LOCALE_VARS.contains(&k.as_str()) || named.iter().any(|n| n == k));
}

/// The PyTorch distributed variables to add to a container environment `final_env` (already
/// resolved: image, task, site and user rules), taking step facts from the task's `task_env`.
/// The step's umask as srun passes it (`SLURM_UMASK`, octal); `None` when absent or not a mode.
pub fn umask(env: &[(String, String)]) -> Option<u32> {
    env.iter()
        .find(|(k, _)| k == "SLURM_UMASK")
        .and_then(|(_, v)| u32::from_str_radix(v, 8).ok())
        .filter(|m| *m <= 0o777)
}

pub fn pytorch_vars(
    image_env: &[String],
    final_env: &[String],
    task_env: &[(String, String)],
) -> Vec<String> {
    if !image_env.iter().any(|e| e.starts_with("PYTORCH_VERSION=")) {
        return Vec::new();
    }
    let task = |k: &str| {
        task_env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let mut wanted: Vec<(&str, Option<String>)> = vec![
        (
            "MASTER_ADDR",
            task("SLURM_JOB_NODELIST")
                .or(task("SLURM_NODELIST"))
                .and_then(first_host),
        ),
        (
            "MASTER_PORT",
            task("SLURM_JOB_ID")
                .and_then(|j| j.parse::<u64>().ok())
                .map(|j| (j % 16384 + 49152).to_string()),
        ),
        ("WORLD_SIZE", task("SLURM_NTASKS").map(str::to_string)),
        ("RANK", task("SLURM_PROCID").map(str::to_string)),
        ("LOCAL_RANK", task("SLURM_LOCALID").map(str::to_string)),
    ];
    wanted.retain(|(k, v)| {
        v.is_some()
            && !final_env
                .iter()
                .any(|e| e.split_once('=').is_some_and(|(n, _)| n == *k))
    });
    wanted
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.unwrap_or_default()))
        .collect()
}

/// The first host of a Slurm host list: `n[1-2],x` → `n1`, `gpu[007-9]a` → `gpu007a`.
pub fn first_host(list: &str) -> Option<String> {
    nth_host(list, 0)
}

/// Host number `n` (from 0) of a Slurm host list such as `n[1-3,7],login[01-02]`; None when the
/// list is malformed or shorter. One bracket group per entry (what Slurm prints for one
/// dimension).
pub fn nth_host(list: &str, n: usize) -> Option<String> {
    let mut seen = 0usize;
    for entry in split_top_level(list) {
        let (prefix, ranges, suffix) = match (entry.find('['), entry.find(']')) {
            (Some(open), Some(close)) if open < close => (
                &entry[..open],
                Some(&entry[open + 1..close]),
                &entry[close + 1..],
            ),
            (None, None) => (entry, None, ""),
            _ => return None,
        };
        let Some(ranges) = ranges else {
            if entry.is_empty() {
                return None;
            }
            if seen == n {
                return Some(entry.to_string());
            }
            seen += 1;
            continue;
        };
        for range in ranges.split(',') {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
            if b < a {
                return None;
            }
            let count = b - a + 1;
            if n < seen + count {
                let width = lo.len();
                return Some(format!("{prefix}{:0width$}{suffix}", a + (n - seen)));
            }
            seen += count;
        }
    }
    None
}

/// The entries of a host list: commas inside brackets do not separate.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out
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

    #[test]
    fn umask_is_the_steps_octal_mode_or_none() {
        assert_eq!(umask(&kv(&[("SLURM_UMASK", "0027")])), Some(0o027));
        assert_eq!(umask(&kv(&[("SLURM_UMASK", "0000")])), Some(0));
        assert_eq!(umask(&kv(&[("SLURM_UMASK", "1777")])), None);
        assert_eq!(umask(&kv(&[("SLURM_UMASK", "09")])), None);
        assert_eq!(umask(&kv(&[("HOME", "/")])), None);
    }

    #[test]
    fn locale_stays_out_unless_named() {
        let mut env = kv(&[("LANG", "fr_FR.UTF-8"), ("LC_ALL", "C"), ("HOME", "/h")]);
        drop_locale(&mut env, &["LC_ALL".to_string()]);
        assert_eq!(env, kv(&[("LC_ALL", "C"), ("HOME", "/h")]));
    }

    #[test]
    fn first_host_of_host_lists() {
        for (list, host) in [
            ("n[1-2]", "n1"),
            ("n1,n2", "n1"),
            ("gpu[007-009,12]a,cpu1", "gpu007a"),
            ("node[3,5-6]", "node3"),
            ("login", "login"),
        ] {
            assert_eq!(first_host(list).as_deref(), Some(host), "{list}");
        }
        assert_eq!(first_host(""), None);
        assert_eq!(first_host("n[1-2"), None);
        assert_eq!(nth_host("n[1-2],login", 1).as_deref(), Some("n2"));
        assert_eq!(nth_host("n[1-2],login", 2).as_deref(), Some("login"));
        assert_eq!(nth_host("gpu[008-010,20]", 2).as_deref(), Some("gpu010"));
        assert_eq!(nth_host("gpu[008-010,20]", 3).as_deref(), Some("gpu20"));
        assert_eq!(nth_host("n[1-2]", 2), None);
    }

    #[test]
    fn pytorch_images_get_the_distributed_variables() {
        let task = kv(&[
            ("SLURM_JOB_NODELIST", "n[1-2]"),
            ("SLURM_JOB_ID", "20000"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "1"),
        ]);
        let image = vec!["PYTORCH_VERSION=2.3.0".to_string()];
        let got = pytorch_vars(&image, &["RANK=9".to_string()], &task);
        assert_eq!(
            got,
            [
                "MASTER_ADDR=n1",
                "MASTER_PORT=52768",
                "WORLD_SIZE=4",
                "LOCAL_RANK=1"
            ]
        );
        assert!(pytorch_vars(&[], &[], &task).is_empty());
    }
}
