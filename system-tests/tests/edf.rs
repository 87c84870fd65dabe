//! Environment definition files (`--environment`, CSCS's EDF) through real `srun` and
//! `sbatch`, as the ordinary test user: every key in the container, the search path
//! (`EDF_PATH`, `~/.edf`, `./relative`, absolute, `EGRET_ENVIRONMENT`), inheritance,
//! `${VAR}` expansion, precedence with the `--container-*` options and the `PYXIS_` defaults,
//! each error before the job is queued, `egret env check`, and two EDFs from CSCS's
//! documentation, unchanged.
//!
//! Each test gets its own `HOME` (a fresh directory of the test user's), so its `~/.edf` is
//! its own.

use egret_test_support as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{describe, TEST_USER};

/// A home of the test user's, with `~/.edf`.
struct Home {
    dir: PathBuf,
}

impl Home {
    fn new() -> Home {
        common::require_root();
        let dir = common::scratch_dir(Some(TEST_USER));
        let h = Home { dir };
        h.mkdir(".edf");
        h
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    fn mkdir(&self, sub: &str) -> PathBuf {
        let p = self.path(sub);
        fs::create_dir_all(&p).unwrap();
        chown(&p);
        p
    }

    /// Writes `sub` (relative to the home), the test user's, readable by them only.
    fn write(&self, sub: &str, text: &str) -> PathBuf {
        let p = self.path(sub);
        fs::write(&p, text).unwrap();
        chown(&p);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// `~/.edf/NAME.toml`.
    fn edf(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!(".edf/{name}.toml"), text)
    }

    /// `CMD ARGS` as the test user in `cwd` with this `HOME`, `env` added, and none of the
    /// caller's container defaults.
    fn command(&self, cwd: &Path, env: &[(&str, &str)], argv: &[&str]) -> Command {
        // runuser sets HOME to the password database's: `env` sets this one after it.
        let home = format!("HOME={}", self.dir.display());
        let mut all = vec!["env", home.as_str()];
        all.extend_from_slice(argv);
        let mut cmd = common::user_command(TEST_USER.name, cwd, env, &all);
        for (k, _) in std::env::vars() {
            let ours = k.starts_with("PYXIS_CONTAINER_")
                || k.starts_with("EGRET_CONTAINER_")
                || ["EDF_PATH", "EGRET_ENVIRONMENT", "EGRET_EDF"].contains(&k.as_str());
            if ours && !env.iter().any(|(e, _)| *e == k) {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    fn srun_in(&self, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut argv = vec!["srun"];
        argv.extend_from_slice(args);
        common::run(&mut self.command(cwd, env, &argv))
    }

    fn srun(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.srun_in(&self.dir, env, args)
    }

    /// `sbatch --wait NAME.sh` (the script `text`) as the test user; the job's output.
    fn sbatch_wait(&self, name: &str, text: &str) -> String {
        let script = self.write(&format!("{name}.sh"), text);
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
        let out = self.path(&format!("{name}.out"));
        let output = format!("--output={}", out.display());
        let argv = ["sbatch", "--wait", &output, script.to_str().unwrap()];
        let o = common::run(&mut self.command(&self.dir, &[], &argv));
        assert!(o.status.success(), "{}", describe(&o));
        fs::read_to_string(&out).unwrap()
    }

    fn ok(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let o = self.srun(env, args);
        assert!(o.status.success(), "srun {args:?}\n{}", describe(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn chown(p: &Path) {
    std::os::unix::fs::chown(p, Some(TEST_USER.uid), Some(TEST_USER.gid)).unwrap();
}

/// The busybox test image in enroot's form (`REGISTRY#IMAGE`), as CSCS's EDFs write them.
fn busybox() -> String {
    format!("{}#egret/busybox", common::REGISTRY)
}

/// `o` failed saying `want`, and no job was queued since job id `before` was next.
fn refused(o: &Output, want: &str, before: usize) {
    assert!(!o.status.success(), "{}", describe(o));
    assert!(stderr(o).contains(want), "want {want}\n{}", describe(o));
    assert_eq!(common::next_job_id(), before, "a job was queued");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_key_reaches_the_container() {
    let h = Home::new();
    let data = h.mkdir("data");
    h.write("data/f", "from-data\n");
    let work = h.mkdir("work");
    h.mkdir("work/rw");
    h.edf(
        "keys",
        &format!(
            r#"image = "{}"
mounts = ["${{DATA}}:/data:ro", "./rw:/rw"]
workdir = "/data"
writable = false
entrypoint = false

[env]
FROM_EDF = "v-${{TAG}}"
GONE = ""
"#,
            busybox()
        ),
    );
    let data_s = data.display().to_string();
    let env = [("DATA", data_s.as_str()), ("TAG", "t1"), ("GONE", "host")];
    let o = h.srun_in(
        &work,
        &env,
        &[
            "--environment=keys",
            "sh",
            "-c",
            "pwd; cat f; echo $FROM_EDF; echo ${GONE-unset}; \
             touch /rw/made && echo rw-ok; \
             touch /data/x 2>/dev/null || echo data-ro; \
             touch /new 2>/dev/null || echo root-ro",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/data\nfrom-data\nv-t1\nunset\nrw-ok\ndata-ro\nroot-ro\n"
    );
    // The relative mount source is the srun's working directory's, not the EDF's.
    assert!(work.join("rw/made").exists());
}

#[test]
fn the_entrypoint_and_its_log_annotation() {
    let h = Home::new();
    let image = format!("{}#egret/cudaenv", common::REGISTRY);
    h.edf(
        "entry",
        &format!(
            "image = \"{image}\"\nentrypoint = true\n[annotations]\ncom.pyxis.entrypoint_log = \"true\"\n"
        ),
    );
    h.edf(
        "noentry",
        &format!("image = \"{image}\"\nentrypoint = false\n"),
    );
    let o = h.srun(
        &[],
        &[
            "--environment=entry",
            "sh",
            "-c",
            "echo ${FROM_ENTRY:-none}",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "set-by-entry\n");
    assert!(stderr(&o).contains("entry-stdout"), "{}", describe(&o));
    let out = h.ok(
        &[],
        &[
            "--environment=noentry",
            "sh",
            "-c",
            "echo ${FROM_ENTRY:-none}",
        ],
    );
    assert_eq!(out, "none\n");
}

#[test]
fn an_annotation_turns_a_hook_off() {
    let h = Home::new();
    h.edf("on", &format!("image = \"{}\"\n", busybox()));
    h.edf(
        "off",
        "base_environment = \"on\"
[annotations]
com.hooks.timestamp.enabled = \"false\"
",
    );
    for (edf, written) in [("on", true), ("off", false)] {
        let log = h.path(&format!("{edf}.log"));
        let export = format!("--export=ALL,TIMESTAMP_HOOK_LOGFILE={}", log.display());
        let env_opt = format!("--environment={edf}");
        h.ok(&[], &[&export, &env_opt, "true"]);
        assert_eq!(log.exists(), written, "{edf}");
    }
}

#[test]
fn the_search_path_edf_path_the_default_relative_and_absolute_paths() {
    let h = Home::new();
    let mark = |m: &str| format!("image = \"{}\"\n[env]\nMARK = \"{m}\"\n", busybox());
    h.edf("here", &mark("default"));
    h.mkdir("a");
    h.mkdir("b");
    h.write("a/both.toml", &mark("a"));
    h.write("b/both.toml", &mark("b"));
    h.write("b/onlyb.toml", &mark("onlyb"));
    let cwd = h.mkdir("proj");
    h.write("proj/local.toml", &mark("relative"));
    let abs = h.write("abs.toml", &mark("absolute"));
    let path = format!("{}:{}", h.path("a").display(), h.path("b").display());
    let show = ["sh", "-c", "echo $MARK"];
    let run = |env: &[(&str, &str)], value: Option<&str>| {
        let opt = value.map(|v| format!("--environment={v}"));
        let mut args: Vec<&str> = opt.iter().map(String::as_str).collect();
        args.extend(show);
        let o = h.srun_in(&cwd, env, &args);
        assert!(o.status.success(), "{value:?} {env:?}\n{}", describe(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(run(&[], Some("here")), "default");
    assert_eq!(run(&[("EDF_PATH", &path)], Some("both")), "a");
    assert_eq!(run(&[("EDF_PATH", &path)], Some("onlyb")), "onlyb");
    assert_eq!(run(&[], Some("./local.toml")), "relative");
    assert_eq!(run(&[], Some(abs.to_str().unwrap())), "absolute");
    // The variable stands for the option; the option wins over it.
    assert_eq!(run(&[("EGRET_ENVIRONMENT", "here")], None), "default");
    assert_eq!(
        run(&[("EGRET_ENVIRONMENT", "./local.toml")], Some("here")),
        "default"
    );
    // EDF_PATH replaces ~/.edf.
    let before = common::next_job_id();
    let o = h.srun_in(
        &cwd,
        &[("EDF_PATH", &path)],
        &["--environment=here", "true"],
    );
    refused(
        &o,
        "--environment=here: no here.toml in ~/a, ~/b (EDF_PATH)",
        before,
    );
}

#[test]
fn inheritance_appends_mounts_and_env_and_overwrites_the_rest() {
    let h = Home::new();
    let (one, two) = (h.mkdir("one"), h.mkdir("two"));
    h.write("one/f", "1\n");
    h.write("two/f", "2\n");
    h.edf(
        "common",
        &format!(
            "image = \"{}\"\nworkdir = \"/one\"\nmounts = [\"${{HOME}}/one:/one\"]\n[env]\nA = \"common\"\nB = \"common\"\n",
            busybox()
        ),
    );
    h.edf(
        "mid",
        "base_environment = \"common\"\nmounts = [\"${HOME}/two:/two\"]\n[env]\nB = \"mid\"\n",
    );
    h.edf(
        "top",
        "base_environment = [\"mid\"]\nworkdir = \"/two\"\n[env]\nC = \"${NOT_SET:-dflt}-$${LITERAL}\"\n",
    );
    let out = h.ok(
        &[],
        &[
            "--environment=top",
            "sh",
            "-c",
            "pwd; cat /one/f /two/f; echo $A $B $C",
        ],
    );
    assert_eq!(out, "/two\n1\n2\ncommon mid dflt-${LITERAL}\n");
    let _ = (one, two);
}

#[test]
fn the_command_line_wins_then_the_edf_then_the_pyxis_variables() {
    let h = Home::new();
    let (edfdir, clidir) = (h.mkdir("edfdir"), h.mkdir("clidir"));
    h.write("edfdir/who", "edf\n");
    h.write("clidir/who", "cli\n");
    h.edf(
        "p",
        &format!(
            "image = \"{}\"\nworkdir = \"/m\"\nmounts = [\"{}:/m\"]\n[env]\nFOO = \"edf\"\n",
            busybox(),
            edfdir.display()
        ),
    );
    let show = [
        "sh",
        "-c",
        "pwd; cat /m/who; echo $FOO; cat /hello 2>/dev/null || echo no-hello",
    ];
    let run = |env: &[(&str, &str)], opts: &[&str]| {
        let mut args = vec!["--environment=p"];
        args.extend_from_slice(opts);
        args.extend(show);
        h.ok(env, &args)
    };
    assert_eq!(run(&[], &[]), "/m\nedf\nedf\nno-hello\n");
    // The PYXIS_ defaults lose to the EDF.
    let sqsh = common::users_squashfs(&h.dir, "cli.sqsh", "from-cli-image");
    let sqsh_s = sqsh.display().to_string();
    assert_eq!(
        run(
            &[
                ("PYXIS_CONTAINER_WORKDIR", "/"),
                ("PYXIS_CONTAINER_IMAGE", &sqsh_s),
                ("FOO", "host"),
                ("PYXIS_CONTAINER_ENV", "FOO")
            ],
            &[]
        ),
        "/m\nedf\nedf\nno-hello\n"
    );
    // The command line wins: image, workdir, a mount at the same destination, --container-env.
    let image = format!("--container-image={sqsh_s}");
    let mount = format!("--container-mounts={}:/m", clidir.display());
    let o = h.srun(
        &[("FOO", "host")],
        &[
            "--environment=p",
            &image,
            "--container-workdir=/",
            &mount,
            "--container-env=FOO",
            "sh",
            "-c",
            "pwd; cat /m/who; echo $FOO; cat /hello",
        ],
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "/\ncli\nhost\nfrom-cli-image"
    );
}

/// An EDF's text, srun's extra options, extra variables, the line egret must print.
type Case<'a> = (String, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Each mistake: one line of egret's naming the file, line and key, and no job queued.
#[test]
fn each_error_is_one_line_before_queueing() {
    let h = Home::new();
    let img = format!("image = \"{}\"\n", busybox());
    h.edf("loop_a", "base_environment = \"loop_b\"\n");
    h.edf("loop_b", "base_environment = \"loop_a\"\n");
    h.edf("noimage", "workdir = \"/tmp\"\n");
    let cases: Vec<Case> = vec![
        (format!("{img}mount = [\"/a:/a\"]\n"), vec![], vec![], "~/.edf/e.toml:2: mount: unknown key"),
        (format!("{img}writable = \"no\"\n"), vec![], vec![], "~/.edf/e.toml:2: writable: expected true or false"),
        (format!("{img}[env]\nX = 1\n"), vec![], vec![], "~/.edf/e.toml:3: env.X: expected a string"),
        (format!("{img}mounts = [\"${{NOPE}}:/x\"]\n"), vec![], vec![], "~/.edf/e.toml:2: mounts: undefined variable ${NOPE}"),
        (format!("{img}mounts = [\"/tmp:/x:bogus\"]\n"), vec![], vec![], "~/.edf/e.toml:2: mounts: '/tmp:/x:bogus': unknown mount flag 'bogus'"),
        (format!("{img}mounts = [\"/d.sqsh:/data:sqsh\"]\n"), vec![], vec![], "~/.edf/e.toml:2: mounts: '/d.sqsh:/data:sqsh': squashfs mounts (:sqsh) are not supported"),
        ("image = \"UPPER/Case::x\"\n".into(), vec![], vec![], "~/.edf/e.toml:1: image: "),
        (format!("{img}workdir = [\n"), vec![], vec![], "~/.edf/e.toml:"),
        ("base_environment = \"loop_a\"\n".into(), vec![], vec![], "~/.edf/loop_b.toml:1: base_environment: ~/.edf/loop_a.toml includes itself"),
        ("base_environment = \"gone\"\n".into(), vec![], vec![], "~/.edf/e.toml:1: base_environment: --environment=gone: no gone.toml in ~/.edf"),
        ("base_environment = \"noimage\"\n".into(), vec![], vec![], "--environment=e: the environment names no image"),
        (format!("{img}[annotations]\ncom.hooks.ssh.enabled = \"true\"\n"), vec!["--container-pid=host"], vec![], "~/.edf/e.toml:3: annotations.com.hooks.ssh.enabled: the SSH hook needs a private PID namespace"),
        (img.clone(), vec![], vec![("EDF_PATH", "relative/dir")], "EDF_PATH=relative/dir: 'relative/dir' is not an absolute directory"),
        (img.clone(), vec!["--environment=other"], vec![], "--environment given twice with different values"),
    ];
    for (text, extra, env, want) in cases {
        h.edf("e", &text);
        let mut args = vec!["--environment=e"];
        args.extend(extra.iter().copied());
        args.push("true");
        let before = common::next_job_id();
        let o = h.srun(&env, &args);
        let err = stderr(&o);
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("egret:")).collect();
        assert!(!o.status.success(), "{text:?}\n{}", describe(&o));
        assert_eq!(ours.len(), 1, "{text:?}: {err}");
        assert!(
            ours[0].contains(want),
            "{text:?}\n got {}\nwant {want}",
            ours[0]
        );
        assert_eq!(common::next_job_id(), before, "{text:?}: a job was queued");
    }
    let o = h.srun(&[], &["--environment=nowhere", "true"]);
    assert!(
        stderr(&o).contains("--environment=nowhere: no nowhere.toml in ~/.edf"),
        "{}",
        describe(&o)
    );
    // sbatch refuses before queueing too.
    h.edf("e", &format!("{img}bogus = 1\n"));
    let script = h.write("job.sh", "#!/bin/sh\ntrue\n");
    let before = common::next_job_id();
    let mut cmd = h.command(
        &h.dir,
        &[],
        &["sbatch", "--environment=e", script.to_str().unwrap()],
    );
    refused(
        &common::run(&mut cmd),
        "~/.edf/e.toml:2: bogus: unknown key",
        before,
    );
}

#[test]
fn sbatch_runs_the_script_and_its_steps_in_the_environment() {
    let h = Home::new();
    h.edf(
        "batch",
        &format!("image = \"{}\"\n[env]\nMARK = \"edf-mark\"\n", busybox()),
    );
    let script =
        "#!/bin/sh\n#SBATCH --environment=batch\ngrep ^ID= /etc/os-release\necho script $MARK\n";
    assert_eq!(
        h.sbatch_wait("job", script),
        "ID=egret-busybox\nscript edf-mark\n"
    );
    // A step of a plain batch script names its own environment.
    let script = "#!/bin/sh\nsrun --environment=batch sh -c 'echo step $MARK'\n";
    assert_eq!(h.sbatch_wait("job2", script), "step edf-mark\n");
}

#[test]
fn egret_env_check_prints_each_value_and_its_file() {
    let h = Home::new();
    h.edf(
        "base",
        &format!("image = \"{}\"\nmounts = [\"${{HOME}}:/h\"]\n", busybox()),
    );
    h.edf("top", "base_environment = \"base\"\nworkdir = \"/h\"\n[env]\nX = \"1\"\n[annotations]\ncom.hooks.timestamp.enabled = \"false\"\n");
    let mut cmd = h.command(&h.dir, &[], &[common::EGRET_BIN, "env", "check", "top"]);
    let o = common::run(&mut cmd);
    assert!(o.status.success(), "{}", describe(&o));
    let home = h.dir.display().to_string();
    let want = format!(
        "environment: top\nfiles: ~/.edf/base.toml, ~/.edf/top.toml\nimage: {}  (~/.edf/base.toml:1)\n\
         workdir: /h  (~/.edf/top.toml:2)\nentrypoint: (the site's default)\nwritable: (true)\n\
         mounts:\n  {home}:/h  (~/.edf/base.toml:2)\nenv:\n  X=1  (~/.edf/top.toml:4)\n\
         annotations:\n  com.hooks.timestamp.enabled=false  (~/.edf/top.toml:6)\n",
        busybox()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    h.edf("bad", "image = \"x\"\nwritable = 1\n");
    let mut cmd = h.command(&h.dir, &[], &[common::EGRET_BIN, "env", "check", "bad"]);
    let o = common::run(&mut cmd);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o),
        "egret: ~/.edf/bad.toml:2: writable: expected true or false (a TOML boolean, without quotes)\n"
    );
}

/// CSCS's "manually pulled image" EDF (an `enroot import`ed file in `${SCRATCH}`), unchanged.
#[test]
fn cscss_squashfs_edf_runs_unchanged() {
    let h = Home::new();
    let scratch = h.mkdir("scratch");
    common::users_squashfs(
        &scratch,
        "nvidia+cuda+11.8.0-cudnn8-devel-ubuntu22.04.sqsh",
        "cuda-file",
    );
    h.edf(
        "cuda",
        "image = \"${SCRATCH}/nvidia+cuda+11.8.0-cudnn8-devel-ubuntu22.04.sqsh\"\n",
    );
    let s = scratch.display().to_string();
    let out = h.ok(&[("SCRATCH", &s)], &["--environment=cuda", "cat", "/hello"]);
    assert_eq!(out, "cuda-file");
}

/// The first EDF of CSCS's documentation (their quick start's `~/.edf/ubuntu.toml`),
/// unchanged. Its `library/ubuntu:24.04` is Docker Hub's: the test user's registries.conf
/// mirrors docker.io to the local registry, which gets busybox under that name.
#[test]
fn cscss_quick_start_edf_runs_unchanged() {
    let h = Home::new();
    let o = common::run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", common::registry_image("busybox")),
        &format!("docker://{}/library/ubuntu:24.04", common::REGISTRY),
    ]));
    common::assert_success(&o, "skopeo copy busybox to library/ubuntu:24.04");
    let mirror = format!(
        "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
        common::REGISTRY
    );
    // srun resolves the tag with the srun's HOME, the nodes with the password database's.
    let real = Path::new(TEST_USER.home).join(".config/containers");
    let _cleanup = RemoveOnDrop(real.join("registries.conf"));
    for dir in [h.path(".config/containers"), real.clone()] {
        fs::create_dir_all(&dir).unwrap();
        for d in [dir.parent().unwrap(), &dir] {
            chown(d);
        }
        fs::write(dir.join("registries.conf"), &mirror).unwrap();
        chown(&dir.join("registries.conf"));
    }
    // Verbatim from CSCS's quick start.
    h.edf(
        "ubuntu",
        "image = \"library/ubuntu:24.04\"\nmounts = [\"${SCRATCH}:${SCRATCH}\"]\nworkdir = \"${SCRATCH}\"\n",
    );
    let scratch = h.mkdir("scratch");
    h.write("scratch/note", "in-scratch\n");
    let s = scratch.display().to_string();
    let out = h.ok(
        &[("SCRATCH", &s)],
        &[
            "--environment=ubuntu",
            "sh",
            "-c",
            "pwd; cat note; grep ^ID= /etc/os-release",
        ],
    );
    assert_eq!(out, format!("{s}\nin-scratch\nID=egret-busybox\n"));
}

/// Removes the test user's registries.conf, and its directories if nothing else is in them.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        let containers = self.0.parent().unwrap();
        let _ = fs::remove_dir(containers);
        let _ = fs::remove_dir(containers.parent().unwrap());
    }
}
