//! A private egret configuration, store, bundle, runc and hooks directory under a scratch
//! directory, for the CLI tests (`egret --config`): they never touch the shared store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate as common;

/// A private egret configuration and store under a scratch directory.
pub struct Sandbox {
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Sandbox {
    #[allow(clippy::new_without_default)] // it creates directories: not a plain value
    pub fn new() -> Sandbox {
        Sandbox::with(|_, _| {})
    }

    /// `edit` gets the scratch directory and the config (already pointing into it).
    pub fn with(edit: impl FnOnce(&Path, &mut serde_json::Value)) -> Sandbox {
        common::require_root();
        let dir = common::scratch_dir(None);
        for sub in ["store", "tmp", "bundle", "runc", "hooks.d"] {
            fs::create_dir(dir.join(sub)).expect("create sandbox directory");
        }
        let text = fs::read_to_string(common::EGRET_CONFIG).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (run `make install`)",
                common::EGRET_CONFIG
            )
        });
        let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("egret.json is JSON");
        let at = |sub: &str| serde_json::Value::from(dir.join(sub).to_str().expect("utf-8"));
        cfg["localRepositoryBaseDir"] = at("store");
        cfg["tempDir"] = at("tmp");
        cfg["OCIBundleDir"] = at("bundle");
        // The sandbox lives under /tmp, which the security checks rightly refuse as a parent of
        // anything root trusts; tests/cli_check.rs covers the checks.
        cfg["securityChecks"] = serde_json::Value::Bool(false);
        cfg["runcRoot"] = at("runc");
        cfg["hooksDir"] = at("hooks.d");
        edit(&dir, &mut cfg);
        let config = dir.join("egret.json");
        fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).expect("write egret.json");
        Sandbox { dir, config }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = common::egret();
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    pub fn egret(&self, args: &[&str]) -> Output {
        common::run(&mut self.cmd(args))
    }

    /// Runs `egret ARGS`, which must succeed; returns (stdout, stderr).
    pub fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.egret(args);
        let stdout = common::assert_success(&out, &format!("egret {}", args.join(" ")));
        (stdout, stderr(&out))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kept for a look when the test failed.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sorted entry names of `dir` (none when it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    names.sort();
    names
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The verbs the CLI tests use, and their leak check.
impl Sandbox {
    /// `egret pull 127.0.0.1:5000/egret/NAME`, which must succeed; returns the reference.
    pub fn pull(&self, name: &str) -> String {
        let image = common::registry_image(name);
        self.ok(&["pull", &image]);
        image
    }

    /// `egret images` (with `extra` flags), which must succeed.
    pub fn images(&self, extra: &[&str]) -> String {
        let mut args = vec!["images"];
        args.extend_from_slice(extra);
        self.ok(&args).0
    }

    /// The files of `images/` in the store (squashfs and .meta of every stored digest).
    pub fn image_files(&self) -> Vec<String> {
        names_in(&self.path("store/images"))
    }

    /// `egret run ARGS` (ARGS start with the run options or the image); returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.egret(&all)
    }

    /// `egret run ARGS`, which must succeed; returns its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        common::assert_success(&out, &format!("egret run {}", args.join(" ")))
    }

    /// Nothing of an import or a container is left: no work directory in the store's tmp, no
    /// download directory in the temp dir, no runc state or bundle directory, no loop device on
    /// one of the sandbox's images.
    pub fn assert_no_leftovers(&self) {
        for sub in ["store/tmp", "tmp", "runc", "bundle"] {
            let left = names_in(&self.path(sub));
            assert!(
                left.is_empty(),
                "{} is not empty: {left:?}",
                self.path(sub).display()
            );
        }
        let mine = || -> Vec<String> {
            common::loop_devices()
                .into_iter()
                .filter(|l| l.contains(self.dir.to_str().unwrap()))
                .collect()
        };
        assert!(
            common::wait_for(Duration::from_secs(10), || mine().is_empty()),
            "loop devices left on the sandbox's images: {:?}",
            mine()
        );
    }
}
