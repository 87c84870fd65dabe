//! The EDF as a whole: every key, inheritance (order, 10 levels, loops), expansion, the
//! errors, the hand-over to the nodes and the merge into the options.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::slurm::options::{index_of, ContainerOptions};

struct World {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".edf")).unwrap();
        fs::create_dir(dir.path().join("cwd")).unwrap();
        let mut env = HashMap::new();
        env.insert("SCRATCH".to_string(), "/scratch/u".to_string());
        env.insert("USER".to_string(), "u".to_string());
        World { dir, env }
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `~/.edf/NAME.toml`.
    fn edf(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home().join(".edf").join(format!("{name}.toml"));
        fs::write(&p, text).unwrap();
        p
    }

    fn resolve(&self, value: &str) -> Result<Resolved, String> {
        let env = |k: &str| self.env.get(k).cloned();
        let host = Host {
            search: SearchPath {
                cwd: self.home().join("cwd"),
                home: self.home().to_path_buf(),
                edf_path: None,
            },
            env: &env,
        };
        resolve(value, &host).map_err(|e| e.to_string())
    }
}

#[test]
fn every_key_is_read_expanded_and_placed() {
    let w = World::new();
    w.edf(
        "all",
        r#"image = "127.0.0.1:5000#egret/busybox"
mounts = ["${SCRATCH}:${SCRATCH}", "./data:/data:ro"]
workdir = "${SCRATCH}"
entrypoint = true
writable = false

[env]
MY_RUN = "production"
GONE = ""
HOSTUSER = "${USER}"

[annotations]
com.hooks.cxi.enabled = "false"

[annotations.com.hooks.ssh]
authorize_ssh_key = "/k/${USER}"
"#,
    );
    let r = w.resolve("all").unwrap();
    let file = "~/.edf/all.toml";
    assert_eq!(r.files, [file]);
    assert_eq!(
        r.image.as_ref().unwrap().value,
        "127.0.0.1:5000#egret/busybox"
    );
    assert_eq!(r.image.as_ref().unwrap().line, 1);
    let mounts: Vec<&str> = r.mounts.iter().map(|m| m.value.as_str()).collect();
    let data = format!("{}/cwd/data:/data:ro", w.home().display());
    assert_eq!(mounts, ["/scratch/u:/scratch/u", data.as_str()]);
    assert_eq!(r.workdir.as_ref().unwrap().value, "/scratch/u");
    assert_eq!(r.workdir.as_ref().unwrap().line, 3);
    assert!(r.entrypoint.as_ref().unwrap().value);
    assert!(!r.writable.as_ref().unwrap().value);
    let env: Vec<(&str, Option<&str>)> = r
        .env
        .iter()
        .map(|e| (e.value.name.as_str(), e.value.value.as_deref()))
        .collect();
    assert!(env.contains(&("MY_RUN", Some("production"))), "{env:?}");
    assert!(env.contains(&("GONE", None)), "{env:?}");
    assert!(env.contains(&("HOSTUSER", Some("u"))), "{env:?}");
    let ann: Vec<(&str, &str)> = r
        .annotations
        .iter()
        .map(|a| (a.value.0.as_str(), a.value.1.as_str()))
        .collect();
    assert!(ann.contains(&("com.hooks.cxi.enabled", "false")), "{ann:?}");
    assert!(
        ann.contains(&("com.hooks.ssh.authorize_ssh_key", "/k/u")),
        "{ann:?}"
    );
    let line = |key: &str| {
        r.annotations
            .iter()
            .find(|a| a.value.0 == key)
            .unwrap()
            .line
    };
    assert_eq!(line("com.hooks.cxi.enabled"), 13);
    assert_eq!(line("com.hooks.ssh.authorize_ssh_key"), 16);
}

#[test]
fn bases_come_first_in_order_and_the_file_itself_last() {
    let w = World::new();
    w.edf(
        "common",
        "image = \"127.0.0.1:5000#egret/busybox\"\nmounts = [\"/a:/a\"]\nworkdir = \"/common\"\n[env]\nA = \"common\"\nB = \"common\"\n",
    );
    w.edf(
        "ml",
        "image = \"127.0.0.1:5000#egret/glibc\"\nmounts = [\"/b:/b\"]\n[env]\nB = \"ml\"\n[annotations]\nx.y = \"ml\"\n",
    );
    w.edf(
        "job",
        "base_environment = [\"common\", \"ml\"]\nmounts = [\"/c:/c\"]\n[env]\nC = \"job\"\n[annotations]\nx.y = \"job\"\n",
    );
    let r = w.resolve("job").unwrap();
    assert_eq!(
        r.files,
        ["~/.edf/common.toml", "~/.edf/ml.toml", "~/.edf/job.toml"]
    );
    // Overwritten by the later base; the file itself gives none.
    assert_eq!(
        r.image.as_ref().unwrap().value,
        "127.0.0.1:5000#egret/glibc"
    );
    assert_eq!(r.image.as_ref().unwrap().file, "~/.edf/ml.toml");
    assert_eq!(r.workdir.as_ref().unwrap().value, "/common");
    // Appended.
    let mounts: Vec<&str> = r.mounts.iter().map(|m| m.value.as_str()).collect();
    assert_eq!(mounts, ["/a:/a", "/b:/b", "/c:/c"]);
    let env = |n: &str| {
        let e = r.env.iter().find(|e| e.value.name == n).unwrap();
        (e.value.value.clone().unwrap(), e.file.clone())
    };
    assert_eq!(env("A"), ("common".into(), "~/.edf/common.toml".into()));
    assert_eq!(env("B"), ("ml".into(), "~/.edf/ml.toml".into()));
    assert_eq!(env("C"), ("job".into(), "~/.edf/job.toml".into()));
    assert_eq!(r.annotations.len(), 1);
    assert_eq!(r.annotations[0].value.1, "job");
    // A single base may be a string; a base may be a path.
    let p = w.home().join("cwd/local.toml");
    fs::write(&p, "base_environment = \"common\"\nworkdir = \"/local\"\n").unwrap();
    let r = w.resolve("./local.toml").unwrap();
    assert_eq!(r.workdir.as_ref().unwrap().value, "/local");
    assert_eq!(r.image.as_ref().unwrap().file, "~/.edf/common.toml");
}

#[test]
fn ten_levels_of_bases_are_read_and_an_eleventh_is_refused() {
    let w = World::new();
    w.edf("l0", "image = \"127.0.0.1:5000#egret/busybox\"\n");
    for i in 1..=11 {
        w.edf(
            &format!("l{i}"),
            &format!("base_environment = \"l{}\"\n", i - 1),
        );
    }
    // l10 -> l9 -> ... -> l0: ten levels below the named file.
    let r = w.resolve("l10").unwrap();
    assert_eq!(r.files.len(), 11);
    assert_eq!(r.image.unwrap().file, "~/.edf/l0.toml");
    let e = w.resolve("l11").unwrap_err();
    assert!(
        e.starts_with("~/.edf/l1.toml:1: base_environment: base environments nested deeper than 10 levels: ~/.edf/l11.toml -> "),
        "{e}"
    );
}

#[test]
fn a_loop_of_bases_is_named() {
    let w = World::new();
    w.edf("a", "base_environment = \"b\"\n");
    w.edf(
        "b",
        "image = \"127.0.0.1:5000#egret/busybox\"\nbase_environment = [\"a\"]\n",
    );
    let e = w.resolve("a").unwrap_err();
    assert_eq!(
        e,
        "~/.edf/b.toml:2: base_environment: ~/.edf/a.toml includes itself: ~/.edf/a.toml -> ~/.edf/b.toml -> ~/.edf/a.toml"
    );
    w.edf("self", "base_environment = \"self\"\n");
    assert!(w.resolve("self").unwrap_err().contains("includes itself"));
    // The same base twice, not nested, is no loop.
    w.edf("c", "image = \"127.0.0.1:5000#egret/busybox\"\n");
    w.edf("twice", "base_environment = [\"c\", \"c\"]\n");
    assert!(w.resolve("twice").is_ok());
}

#[test]
fn env_entries_see_the_host_not_each_other() {
    let w = World::new();
    w.edf("base", "image = \"i.sqsh\"\n[env]\nFROM_BASE = \"x\"\n");
    w.edf(
        "top",
        "base_environment = \"base\"\n[env]\nUSES = \"${FROM_BASE}\"\n",
    );
    let e = w.resolve("top").unwrap_err();
    assert!(
        e.starts_with("~/.edf/top.toml:3: env.USES: undefined variable ${FROM_BASE}"),
        "{e}"
    );
}

/// Each error: the file, the line, the key, what is wrong.
#[test]
fn every_error_names_the_file_line_and_key() {
    let w = World::new();
    for (text, want) in [
        ("image = \"a\"\nmount = [\"/a:/a\"]\n", "~/.edf/e.toml:2: mount: unknown key"),
        ("[annotations]\nx = true\n", "~/.edf/e.toml:2: annotations.x: expected a string"),
        ("image = 3\n", "~/.edf/e.toml:1: image: expected a string"),
        ("writable = \"no\"\n", "~/.edf/e.toml:1: writable: expected true or false"),
        ("entrypoint = 1\n", "~/.edf/e.toml:1: entrypoint: expected true or false"),
        ("mounts = \"/a:/a\"\n", "~/.edf/e.toml:1: mounts: expected an array of strings"),
        ("mounts = [\"/a:/a\", 3]\n", "~/.edf/e.toml:1: mounts: expected an array of strings"),
        ("base_environment = 2\n", "~/.edf/e.toml:1: base_environment: expected a string or an array"),
        ("env = 1\n", "~/.edf/e.toml:1: env: expected a table"),
        ("[env]\nA = 1\n", "~/.edf/e.toml:2: env.A: expected a string"),
        ("[env]\n\"1A\" = \"x\"\n", "~/.edf/e.toml:2: env.1A: '1A' is not a valid variable name"),
        ("\n\nimage = \"${NOPE}\"\n", "~/.edf/e.toml:3: image: undefined variable ${NOPE}"),
        ("image = \"Upper/Case\"\n", "~/.edf/e.toml:1: image: "),
        ("image = \"\"\n", "~/.edf/e.toml:1: image: empty"),
        ("workdir = \"\"\n", "~/.edf/e.toml:1: workdir: empty"),
        ("mounts = [\"/a:/a:bogus\"]\n", "~/.edf/e.toml:1: mounts: '/a:/a:bogus': unknown mount flag 'bogus'"),
        ("mounts = [\"/d.sqsh:/data:sqsh\"]\n", "~/.edf/e.toml:1: mounts: '/d.sqsh:/data:sqsh': squashfs mounts (:sqsh) are not supported"),
        ("mounts = [\"/a,b:/a\"]\n", "~/.edf/e.toml:1: mounts: '/a,b:/a': one mount per entry"),
        ("mounts = [\"/a:/a\"]\nworkdir = \"/x\\u001b\"\n", "~/.edf/e.toml:2: workdir: contains a control character"),
        ("base_environment = \"missing\"\n", "~/.edf/e.toml:1: base_environment: --environment=missing: no missing.toml in ~/.edf"),
        ("image = \"a\"\nimage = \"b\"\n", "~/.edf/e.toml:2: "),
        ("image = \n", "~/.edf/e.toml:1: "),
    ] {
        w.edf("e", text);
        let e = w.resolve("e").unwrap_err();
        assert!(e.starts_with(want), "{text:?}:\n got {e}\nwant {want}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = w.resolve("nothere").unwrap_err();
    assert!(
        e.starts_with("--environment=nothere: no nothere.toml in ~/.edf"),
        "{e}"
    );
    let e = w.resolve("/no/such/file.toml").unwrap_err();
    assert_eq!(
        e,
        "/no/such/file.toml: No such file or directory (os error 2)"
    );
    fs::write(w.home().join(".edf/big.toml"), " ".repeat(MAX_FILE + 1)).unwrap();
    assert!(w.resolve("big").unwrap_err().contains("larger than"));
}

#[test]
fn the_handed_environment_is_checked_again_as_hostile_input() {
    let w = World::new();
    w.edf(
        "ok",
        "image = \"127.0.0.1:5000#egret/busybox\"\nmounts = [\"/a:/a\"]\n[env]\nA = \"1\"\n",
    );
    let r = w.resolve("ok").unwrap();
    let text = r.encode().unwrap();
    assert_eq!(Resolved::decode("ok", Some(&text)).unwrap(), r);
    // Missing, for another --environment, not ours, too long.
    for (name, handed, want) in [
        ("ok", None, "is not in the job's environment"),
        (
            "other",
            Some(text.clone()),
            "was resolved for --environment=ok",
        ),
        (
            "ok",
            Some("{\"environment\":\"ok\",\"evil\":1}".into()),
            "is not what srun writes",
        ),
        ("ok", Some("x".repeat(MAX_HANDED + 1)), "longer than"),
    ] {
        let e = Resolved::decode(name, handed.as_deref())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("--environment={name}: ")) && e.contains(want),
            "{e}"
        );
    }
    // Values srun would have refused, forged into the variable.
    for (field, bad) in [
        ("image", r#"{"value":"dockerd://x","file":"f","line":1}"#),
        ("workdir", r#"{"value":"/a\u0007","file":"f","line":1}"#),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[field] = serde_json::from_str(bad).unwrap();
        let e = Resolved::decode("ok", Some(&v.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("f:1: {field}: ")), "{e}");
    }
    let mut forged = r.clone();
    forged.mounts[0].value = "devpts:/dev/pts".into();
    assert!(Resolved::decode("ok", Some(&forged.encode().unwrap())).is_err());
    let mut forged = r.clone();
    forged.env[0].value.name = "A=B".into();
    assert!(Resolved::decode("ok", Some(&forged.encode().unwrap())).is_err());
    let mut forged = r;
    forged.annotations.push(Sourced {
        value: ("".into(), "x".into()),
        file: "f".into(),
        line: 1,
    });
    assert!(Resolved::decode("ok", Some(&forged.encode().unwrap())).is_err());
}

fn set(o: &mut ContainerOptions, name: &str, v: Option<&str>) {
    o.set(index_of(name).unwrap(), v).unwrap();
}

#[test]
fn the_command_line_wins_then_the_edf_then_the_variables() {
    let w = World::new();
    w.edf(
        "p",
        "image = \"127.0.0.1:5000#egret/busybox\"\nworkdir = \"/edf\"\nwritable = false\nentrypoint = true\nmounts = [\"/a:/a\", \"/b:/shared\"]\n[env]\nFOO = \"edf\"\nBAR = \"edf\"\n[annotations]\nk = \"edf\"\nj = \"edf\"\n",
    );
    let r = w.resolve("p").unwrap();
    let mut o = ContainerOptions::default();
    set(&mut o, "environment", Some("p"));
    set(&mut o, "container-workdir", Some("/cli"));
    set(&mut o, "container-writable", None);
    set(&mut o, "container-mounts", Some("/c:/shared"));
    set(&mut o, "container-env", Some("FOO"));
    set(&mut o, "container-annotation", Some("k=cli"));
    apply(&mut o, &r).unwrap();
    let vars: HashMap<&str, &str> = [
        ("PYXIS_CONTAINER_IMAGE", "127.0.0.1:5000#egret/glibc"),
        ("PYXIS_CONTAINER_ENV", "BAR,BAZ"),
        ("PYXIS_CONTAINER_MOUNT_HOME", "1"),
    ]
    .into_iter()
    .collect();
    o.apply_env(|k| vars.get(k).map(|v| v.to_string())).unwrap();
    o.finish().unwrap();
    assert_eq!(o.image.as_deref(), Some("127.0.0.1:5000#egret/busybox"));
    assert_eq!(o.workdir.as_deref(), Some("/cli"));
    assert_eq!(o.writable, Some(true));
    assert_eq!(o.entrypoint, Some(true));
    // The command line's /shared replaces the EDF's; the EDF's come first.
    assert_eq!(o.mounts.as_deref(), Some("/a:/a,/c:/shared"));
    assert_eq!(o.mount_home, Some(true));
    // --container-env FOO wins over the EDF's FOO (and replaces the variable's list).
    assert_eq!(o.env_names, ["FOO"]);
    use crate::container::env::EnvRequest as E;
    assert_eq!(
        crate::slurm::plan::user_env(&o),
        [
            E::Set("BAR".into(), "edf".into()),
            E::FromHost("FOO".into())
        ]
    );
    let ann: HashMap<_, _> = o.annotations.iter().cloned().collect();
    assert_eq!(ann["k"], "cli");
    assert_eq!(ann["j"], "edf");
    // Without the command line, the variable's BAR yields to the EDF's.
    let mut o = ContainerOptions::default();
    apply(&mut o, &r).unwrap();
    o.apply_env(|k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(o.env_names, ["BAZ"]);
    assert_eq!(
        crate::slurm::plan::user_env(&o),
        [
            E::Set("BAR".into(), "edf".into()),
            E::Set("FOO".into(), "edf".into()),
            E::FromHost("BAZ".into())
        ]
    );
}

#[test]
fn hook_annotations_become_the_options_they_stand_for() {
    let w = World::new();
    w.edf(
        "ssh",
        "image = \"127.0.0.1:5000#egret/busybox\"\n[annotations]\ncom.hooks.ssh.enabled = \"true\"\ncom.pyxis.entrypoint_log = \"true\"\n",
    );
    let r = w.resolve("ssh").unwrap();
    let mut o = ContainerOptions::default();
    apply(&mut o, &r).unwrap();
    assert!(o.ssh && o.entrypoint_log);
    let mut o = ContainerOptions::default();
    set(&mut o, "container-pid", Some("host"));
    let e = apply(&mut o, &r).unwrap_err().to_string();
    assert!(
        e.starts_with("~/.edf/ssh.toml:3: annotations.com.hooks.ssh.enabled: the SSH hook needs a private PID namespace"),
        "{e}"
    );
}
