//! The user's SSH keys for containers: `egret ssh-keygen` makes them (as the user, with
//! `dropbearkey`), the hook reads them (as the user) at every container start.
//!
//! Layout: `<keys>/host_key` (the daemons' host key), `<keys>/id_dropbear` (the client key) and
//! `<keys>/authorized_keys` (its public half), where `<keys>` is
//! `<HOOK_BASE_DIR>/<user>/.oci-hooks/ssh/keys` (Sarus's layout) or, without `HOOK_BASE_DIR`,
//! `~/.oci-hooks/ssh/keys`. A new set is written next to it and renamed into place under a lock,
//! so a container never sees half a set.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const HOST_KEY: &str = "host_key";
pub const CLIENT_KEY: &str = "id_dropbear";
pub const AUTHORIZED_KEYS: &str = "authorized_keys";
const FILES: [&str; 3] = [HOST_KEY, CLIENT_KEY, AUTHORIZED_KEYS];
/// Keys are ed25519: small, fast to make, supported by dropbear since 2020.79.
const KEY_TYPE: &str = "ed25519";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {msg}")]
    Tool { program: String, msg: String },
    #[error("no SSH keys in {}: run `egret ssh-keygen` first", dir.display())]
    Missing { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The keys directory of a user.
pub fn keys_dir(hook_base_dir: Option<&Path>, user: &str, home: &Path) -> PathBuf {
    match hook_base_dir {
        Some(b) => b.join(user).join(".oci-hooks/ssh/keys"),
        None => home.join(".oci-hooks/ssh/keys"),
    }
}

/// What `keygen` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keygen {
    Created,
    Replaced,
    /// Keys were there and `--overwrite` was not given.
    Kept,
}

/// Makes a key set in `dir` with `dropbearkey` unless one is there (or `overwrite`). Runs with
/// the caller's credentials: `egret ssh-keygen` is the user's own command.
pub fn keygen(dir: &Path, dropbearkey: &Path, overwrite: bool) -> Result<Keygen, KeyError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_err(parent))?;
    let lock_path = parent.join("keys.lock");
    let lock_file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(&lock_path)(e.into()))?;
    let exists = dir.exists();
    if exists && complete(dir) && !overwrite {
        return Ok(Keygen::Kept);
    }
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let new = parent.join(format!(".{name}.new.{}", std::process::id()));
    let _ = fs::remove_dir_all(&new);
    let made = make_set(&new, dropbearkey);
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&new);
        return Err(e);
    }
    if exists {
        let old = parent.join(format!(".{name}.old.{}", std::process::id()));
        fs::rename(dir, &old).map_err(io_err(dir))?;
        fs::rename(&new, dir).map_err(io_err(dir))?;
        let _ = fs::remove_dir_all(&old);
        Ok(Keygen::Replaced)
    } else {
        fs::rename(&new, dir).map_err(io_err(dir))?;
        Ok(Keygen::Created)
    }
}

fn complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

fn make_set(dir: &Path, dropbearkey: &Path) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    for key in [HOST_KEY, CLIENT_KEY] {
        let path = dir.join(key);
        run(Command::new(dropbearkey)
            .args(["-t", KEY_TYPE, "-f"])
            .arg(&path))?;
    }
    let out = run(Command::new(dropbearkey)
        .arg("-y")
        .arg("-f")
        .arg(dir.join(CLIENT_KEY)))?;
    let public = out
        .lines()
        .find(|l| l.starts_with("ssh-"))
        .ok_or_else(|| KeyError::Tool {
            program: dropbearkey.display().to_string(),
            msg: "printed no public key".into(),
        })?;
    let ak = dir.join(AUTHORIZED_KEYS);
    fs::write(&ak, format!("{public}\n")).map_err(io_err(&ak))?;
    for f in FILES {
        let p = dir.join(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).map_err(io_err(&p))?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<String, KeyError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| KeyError::Tool {
        program: program.clone(),
        msg: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(KeyError::Tool {
            program,
            msg: err.lines().last().unwrap_or("no message").to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A user's key set, read (as the user) for a container.
#[derive(Clone)]
pub struct KeySet {
    pub host_key: Vec<u8>,
    pub client_key: Vec<u8>,
    pub authorized_keys: Vec<u8>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySet { .. }")
    }
}

/// Reads the key set in `dir`. Call with the user's credentials.
pub fn read(dir: &Path) -> Result<KeySet, KeyError> {
    if !complete(dir) {
        return Err(KeyError::Missing {
            dir: dir.to_path_buf(),
        });
    }
    let get = |f: &str| {
        let p = dir.join(f);
        fs::read(&p).map_err(io_err(&p))
    };
    Ok(KeySet {
        host_key: get(HOST_KEY)?,
        client_key: get(CLIENT_KEY)?,
        authorized_keys: get(AUTHORIZED_KEYS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROPBEARKEY: &str = "/usr/bin/dropbearkey";

    #[test]
    fn keygen_creates_keeps_and_replaces() {
        assert!(
            Path::new(DROPBEARKEY).is_file(),
            "{DROPBEARKEY} missing: install dropbear-bin (scripts/install-deps.sh)"
        );
        let home = tempfile::tempdir().unwrap();
        let dir = keys_dir(None, "u", home.path());
        assert!(dir.ends_with(".oci-hooks/ssh/keys"));
        assert!(matches!(read(&dir), Err(KeyError::Missing { .. })));
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("egret ssh-keygen"), "{e}");

        assert_eq!(
            keygen(&dir, Path::new(DROPBEARKEY), false).unwrap(),
            Keygen::Created
        );
        let first = read(&dir).unwrap();
        assert!(first.authorized_keys.starts_with(b"ssh-ed25519 "));
        let mode = fs::metadata(dir.join(CLIENT_KEY)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert_eq!(
            keygen(&dir, Path::new(DROPBEARKEY), false).unwrap(),
            Keygen::Kept
        );
        assert_eq!(read(&dir).unwrap().client_key, first.client_key);
        assert_eq!(
            keygen(&dir, Path::new(DROPBEARKEY), true).unwrap(),
            Keygen::Replaced
        );
        assert_ne!(read(&dir).unwrap().client_key, first.client_key);
        // Nothing but the set and the lock is left next to it.
        let mut names: Vec<String> = fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keys", "keys.lock"]);

        let e = keygen(
            &home.path().join("other/keys"),
            Path::new("/nonexistent/dropbearkey"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/dropbearkey"), "{e}");
    }
}
