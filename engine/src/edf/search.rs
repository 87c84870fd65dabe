//! Where `--environment=VALUE` (and each `base_environment` entry) is read from, as CSCS
//! documents it: an absolute path, a path relative to the working directory of the srun,
//! sbatch or salloc (`./x.toml`, `../x.toml`), or a name looked up as `NAME.toml` in each
//! directory of `EDF_PATH` in turn (`:`-separated absolute directories), by default
//! `~/.edf`.

use std::path::{Path, PathBuf};

use super::error::EdfError;

/// What the search needs of the caller's process.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub cwd: PathBuf,
    pub home: PathBuf,
    /// `EDF_PATH` as the user set it, if they did.
    pub edf_path: Option<String>,
}

impl SearchPath {
    /// The directories searched for a name, in order, and how they were chosen.
    pub fn dirs(&self) -> Result<(Vec<PathBuf>, &'static str), EdfError> {
        let Some(value) = self.edf_path.as_deref().filter(|v| !v.is_empty()) else {
            return Ok((
                vec![self.home.join(".edf")],
                "the default; set EDF_PATH to search elsewhere",
            ));
        };
        let mut dirs = Vec::new();
        for entry in value.split(':').filter(|e| !e.is_empty()) {
            if !entry.starts_with('/') {
                return Err(EdfError::BadEdfPath {
                    value: value.to_string(),
                    entry: entry.to_string(),
                });
            }
            dirs.push(PathBuf::from(entry));
        }
        Ok((dirs, "EDF_PATH"))
    }

    /// The file `value` names.
    pub fn locate(&self, value: &str) -> Result<PathBuf, EdfError> {
        if value.is_empty() {
            return Err(EdfError::EmptyName);
        }
        if value.starts_with('/') {
            return Ok(PathBuf::from(value));
        }
        if value.starts_with("./") || value.starts_with("../") {
            return Ok(self.cwd.join(value));
        }
        if value.contains('/') {
            return Err(EdfError::BadName {
                name: value.to_string(),
            });
        }
        let (dirs, how) = self.dirs()?;
        let file = format!("{value}.toml");
        if let Some(found) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
            return Ok(found);
        }
        Err(EdfError::NotFound {
            name: value.to_string(),
            searched: dirs.iter().map(|d| self.show(d)).collect(),
            how,
        })
    }

    /// `path` as the user knows it: under their home as `~/...`.
    pub fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rest) if self.home != Path::new("/") => format!("~/{}", rest.display()),
            _ => path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(home: &Path, edf_path: Option<&str>) -> SearchPath {
        SearchPath {
            cwd: PathBuf::from("/work/project"),
            home: home.to_path_buf(),
            edf_path: edf_path.map(str::to_string),
        }
    }

    #[test]
    fn paths_are_taken_as_they_are_and_relative_ones_from_the_working_directory() {
        let s = sp(Path::new("/home/u"), None);
        assert_eq!(s.locate("/x/y.toml").unwrap(), Path::new("/x/y.toml"));
        assert_eq!(
            s.locate("./e/y.toml").unwrap(),
            Path::new("/work/project/./e/y.toml")
        );
        assert_eq!(
            s.locate("../y.toml").unwrap(),
            Path::new("/work/project/../y.toml")
        );
        let e = s.locate("sub/y").unwrap_err().to_string();
        assert!(e.contains("cannot contain '/'"), "{e}");
        assert_eq!(
            s.locate("").unwrap_err().to_string(),
            "--environment: empty value"
        );
    }

    #[test]
    fn names_are_found_in_edf_path_in_order_or_in_the_default() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b, &t.path().join(".edf")] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(b.join("env.toml"), "").unwrap();
        std::fs::write(a.join("only.toml"), "").unwrap();
        std::fs::write(t.path().join(".edf/env.toml"), "").unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        let s = sp(t.path(), Some(&path));
        assert_eq!(s.locate("env").unwrap(), b.join("env.toml"));
        assert_eq!(s.locate("only").unwrap(), a.join("only.toml"));
        // The default is ~/.edf, and EDF_PATH replaces it.
        assert_eq!(
            sp(t.path(), None).locate("env").unwrap(),
            t.path().join(".edf/env.toml")
        );
        let e = s.locate("none").unwrap_err().to_string();
        assert!(
            e.starts_with("--environment=none: no none.toml in ~/a, ~/b (EDF_PATH)"),
            "{e}"
        );
        let e = sp(t.path(), None).locate("none").unwrap_err().to_string();
        assert!(e.contains("no none.toml in ~/.edf (the default"), "{e}");
    }

    #[test]
    fn a_relative_edf_path_entry_is_refused() {
        let e = sp(Path::new("/h"), Some("/ok:rel/dir"))
            .locate("x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("EDF_PATH=/ok:rel/dir: 'rel/dir' is not an absolute"),
            "{e}"
        );
    }
}
