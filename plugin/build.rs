//! Generates the SPANK bindings and `plugin_version` for the Slurm series we build against.
//!
//! Header search order: `$SLURM_INCLUDE_DIR`, the system's `/usr/include` (libslurm-dev), then the
//! ABI notes in `slurm-headers/`. A SPANK plugin only loads into the release series (major.minor)
//! its `plugin_version` names, so the version must come from the same headers.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn include_dir() -> PathBuf {
    if let Ok(dir) = env::var("SLURM_INCLUDE_DIR") {
        return PathBuf::from(dir);
    }
    let system = Path::new("/usr/include");
    if system.join("slurm/spank.h").exists() {
        return system.to_path_buf();
    }
    PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("slurm-headers")
}

fn version_number(dir: &Path) -> u32 {
    let path = dir.join("slurm/slurm_version.h");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("#define") && words.next() == Some("SLURM_VERSION_NUMBER") {
            let v = words.next().expect("SLURM_VERSION_NUMBER value");
            let v = v.trim_start_matches("0x");
            return u32::from_str_radix(v, 16).expect("hex SLURM_VERSION_NUMBER");
        }
    }
    panic!("{}: no SLURM_VERSION_NUMBER", path.display());
}

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=slurm-headers");
    let dir = include_dir();
    let version = version_number(&dir);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out.join("slurm_version.rs"),
        format!("/// SLURM_VERSION_NUMBER of the headers this plugin was built against.\npub const SLURM_VERSION_NUMBER: u32 = {version:#x};\n"),
    )
    .unwrap();

    let bindings = bindgen::Builder::default()
        .header(dir.join("slurm/spank.h").to_string_lossy())
        .clang_arg(format!("-I{}", dir.display()))
        .allowlist_function(
            "spank_(remote|context|option_register|option_getopt|get_item|getenv|setenv|unsetenv)",
        )
        .allowlist_function("slurm_(info|error|verbose|debug|spank_log)")
        .allowlist_type("spank_.*")
        .allowlist_var("ESPANK_.*|SPANK_OPTION_MAXLEN")
        .rustified_enum("spank_context")
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen over spank.h");
    bindings
        .write_to_file(out.join("spank_bindings.rs"))
        .unwrap();
}
