//! pyxis's `--container-mounts` grammar, whole: entries separated by `,`, each
//! `SRC[:DST[:FLAGS]]` with FLAGS joined by `+`, where SRC is a host path (absolute, or relative
//! to the submit directory), `tmpfs` (a new tmpfs at DST) or `umount` (remove the site's mount
//! at DST). Bind flags: `ro`, `rw`, `rbind` (default), `bind` (without the mounts below SRC),
//! `rprivate`/`private`/`rslave`/`slave` (egret's binds never propagate anything back to the
//! host, so these are what it does anyway), `unbindable`/`runbindable`, `noexec`, `nosuid` and
//! `nodev` (always on), `x-create=dir|file|auto` (what to create at DST when missing; auto: as
//! SRC). tmpfs flags: `size=`, `mode=`, `huge=`, `nr_inodes=`, `ro`, `rw`, `noexec`. Anything
//! else (another filesystem type such as `devpts`, an unknown flag) is an error naming the
//! entry.

use std::path::{Component, Path, PathBuf};

use crate::container::mounts::{normalize, BindMount, MountError};
use crate::sys::in_root::TargetKind;

/// What a bind flag asks for beyond read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountExtras {
    /// `rbind` (default) or `bind`.
    pub recursive: bool,
    pub unbindable: bool,
    pub noexec: bool,
    /// `x-create=dir|file`; None: as the source.
    pub create: Option<TargetKind>,
}

impl Default for MountExtras {
    fn default() -> Self {
        MountExtras {
            recursive: true,
            unbindable: false,
            noexec: false,
            create: None,
        }
    }
}

/// One entry of `--container-mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyxisMount {
    Bind(BindMount, MountExtras),
    /// A new tmpfs at `destination` with these mount options (nosuid,nodev always).
    Tmpfs {
        destination: PathBuf,
        options: Vec<String>,
    },
    /// Remove the site mount at this destination.
    Umount(PathBuf),
}

/// Parses a whole `--container-mounts` value; relative sources start in `cwd`.
pub fn parse(s: &str, cwd: &Path) -> Result<Vec<PyxisMount>, MountError> {
    s.split(',').map(|item| parse_one(item, cwd)).collect()
}

/// The bind mounts of a pyxis `--container-mounts` value (see the module for the whole
/// grammar; its `tmpfs:` and `umount:` entries are left out here).
pub fn parse_pyxis_mounts(s: &str, cwd: &Path) -> Result<Vec<BindMount>, MountError> {
    Ok(parse(s, cwd)?
        .into_iter()
        .filter_map(|m| match m {
            PyxisMount::Bind(b, _) => Some(b),
            _ => None,
        })
        .collect())
}

fn parse_one(item: &str, cwd: &Path) -> Result<PyxisMount, MountError> {
    let fields: Vec<&str> = item.split(':').collect();
    if fields.len() > 3 {
        return Err(MountError::parse(item, "expected SRC[:DST[:FLAGS]]"));
    }
    let src = fields[0];
    if src.is_empty() {
        return Err(MountError::parse(item, "empty source"));
    }
    let dst = |required: bool| -> Result<Option<PathBuf>, MountError> {
        match fields.get(1) {
            None if required => Err(MountError::parse(item, "needs a destination")),
            None => Ok(None),
            // pyxis refuses `SRC:` and `SRC::FLAGS` ("invalid format") rather than guessing.
            Some(&"") => Err(MountError::parse(
                item,
                "invalid format: empty destination (write SRC:DST, or SRC alone to mount it at the same path)",
            )),
            Some(d) if d.starts_with('/') => {
                if climbs_above_root(Path::new(d)) {
                    return Err(MountError::parse(
                        item,
                        format!("destination '{d}' leaves the container's root ('..' above /)"),
                    ));
                }
                Ok(Some(normalize(Path::new(d))))
            }
            Some(d) => Err(MountError::parse(
                item,
                format!("destination '{d}' must be an absolute path"),
            )),
        }
    };
    let flags: Vec<&str> = match fields.get(2) {
        None => Vec::new(),
        Some(f) => f.split('+').collect(),
    };
    if flags.iter().any(|f| f.is_empty()) {
        return Err(MountError::parse(item, "empty mount flag"));
    }
    match src {
        "tmpfs" => {
            let destination = dst(true)?.expect("required");
            let mut options = Vec::new();
            for f in flags {
                options.push(tmpfs_flag(item, f)?);
            }
            Ok(PyxisMount::Tmpfs {
                destination,
                options,
            })
        }
        "umount" => {
            if !flags.is_empty() {
                return Err(MountError::parse(item, "umount takes no flags"));
            }
            Ok(PyxisMount::Umount(dst(true)?.expect("required")))
        }
        _ if !src.contains('/') && !src.starts_with('.') => Err(MountError::parse(
            item,
            format!(
                "source '{src}' must be a path (absolute, or relative such as ./{src}), tmpfs or umount; other filesystem types are not allowed"
            ),
        )),
        _ => {
            // pyxis's two-field form: the second field may be the flags.
            let (dst, flags) = match (fields.len(), fields.get(1)) {
                (2, Some(f)) if !f.starts_with('/') && !f.is_empty() && bind_flags(item, &f.split('+').collect::<Vec<_>>()).is_ok() => {
                    (None, f.split('+').collect())
                }
                _ => (dst(false)?, flags),
            };
            let source = cwd.join(src);
            let destination = dst.unwrap_or_else(|| normalize(&source));
            let (readonly, extras) = bind_flags(item, &flags)?;
            Ok(PyxisMount::Bind(
                BindMount {
                    source,
                    destination,
                    readonly,
                },
                extras,
            ))
        }
    }
}

/// True when `..` in `path` would climb above `/`: enroot refuses such a target rather than
/// clamping it (the kernel would clamp; the user meant something else).
fn climbs_above_root(path: &Path) -> bool {
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    false
}

fn bind_flags(item: &str, flags: &[&str]) -> Result<(bool, MountExtras), MountError> {
    let mut readonly = false;
    let mut x = MountExtras::default();
    for f in flags {
        match *f {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "rbind" => x.recursive = true,
            "bind" => x.recursive = false,
            "rprivate" | "private" | "rslave" | "slave" | "nosuid" | "nodev" => {}
            "unbindable" | "runbindable" => x.unbindable = true,
            "noexec" => x.noexec = true,
            "x-create=dir" => x.create = Some(TargetKind::Dir),
            "x-create=file" => x.create = Some(TargetKind::File),
            "x-create=auto" => x.create = None,
            other => {
                return Err(MountError::parse(
                    item,
                    format!("unknown mount flag '{other}' (ro, rw, rbind, bind, rprivate, private, rslave, slave, unbindable, runbindable, noexec, x-create=dir|file|auto)"),
                ))
            }
        }
    }
    Ok((readonly, x))
}

fn tmpfs_flag(item: &str, f: &str) -> Result<String, MountError> {
    let bad = || {
        MountError::parse(item, format!("bad tmpfs flag '{f}' (size=N[k|m|g|%], mode=OCTAL, huge=never|always|within_size|advise, nr_inodes=N, ro, rw, noexec)"))
    };
    let ok = match f.split_once('=') {
        None => matches!(f, "ro" | "rw" | "noexec"),
        Some(("size", v)) => {
            let digits = v.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G', '%']);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        }
        Some(("nr_inodes", v)) => !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()),
        Some(("mode", v)) => {
            !v.is_empty() && v.len() <= 4 && v.chars().all(|c| ('0'..='7').contains(&c))
        }
        Some(("huge", v)) => matches!(v, "never" | "always" | "within_size" | "advise"),
        _ => false,
    };
    if ok {
        Ok(f.to_string())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn the_grammar() {
        let cwd = p("/home/u/job");
        let m = parse(
            "/data:/in:ro+rprivate+x-create=dir,./rel:/r:bind+noexec+unbindable,tmpfs:/scratch:size=64m+mode=1777,umount:/site,/with space/x,/a:ro",
            &cwd,
        )
        .unwrap();
        assert_eq!(
            m[0],
            PyxisMount::Bind(
                BindMount {
                    source: p("/data"),
                    destination: p("/in"),
                    readonly: true
                },
                MountExtras {
                    create: Some(TargetKind::Dir),
                    ..MountExtras::default()
                }
            )
        );
        assert_eq!(
            m[1],
            PyxisMount::Bind(
                BindMount {
                    source: p("/home/u/job/./rel"),
                    destination: p("/r"),
                    readonly: false
                },
                MountExtras {
                    recursive: false,
                    unbindable: true,
                    noexec: true,
                    create: None
                }
            )
        );
        assert_eq!(
            m[2],
            PyxisMount::Tmpfs {
                destination: p("/scratch"),
                options: vec!["size=64m".into(), "mode=1777".into()]
            }
        );
        assert_eq!(m[3], PyxisMount::Umount(p("/site")));
        let PyxisMount::Bind(b, _) = &m[4] else {
            panic!()
        };
        assert_eq!(b.destination, p("/with space/x"));
        let PyxisMount::Bind(b, _) = &m[5] else {
            panic!()
        };
        assert!(b.readonly && b.destination == p("/a"));
    }

    #[test]
    fn refused_entries_name_themselves() {
        for (input, needle) in [
            ("devpts:/dev/pts", "other filesystem types are not allowed"),
            ("proc:/p", "other filesystem types"),
            ("tmpfs", "needs a destination"),
            ("tmpfs:/t:size=lots", "bad tmpfs flag 'size=lots'"),
            ("tmpfs:/t:huge=maybe", "bad tmpfs flag"),
            ("umount:/x:ro", "umount takes no flags"),
            ("/a:/b:rfoo", "unknown mount flag 'rfoo'"),
            ("/a:/b:ro+", "empty mount flag"),
            ("/a:b", "absolute"),
            ("/a:/b:ro:x", "SRC[:DST[:FLAGS]]"),
        ] {
            let e = parse(input, Path::new("/")).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn pyxis_mounts() {
        let cwd = p("/home/u/job");
        let m =
            parse_pyxis_mounts("/scratch,/data:/in:ro,rel/x:/x:ro+rw,/a:ro,../up", &cwd).unwrap();
        assert_eq!(
            m[0],
            BindMount {
                source: p("/scratch"),
                destination: p("/scratch"),
                readonly: false
            }
        );
        assert_eq!(
            m[1],
            BindMount {
                source: p("/data"),
                destination: p("/in"),
                readonly: true
            }
        );
        assert_eq!(
            m[2],
            BindMount {
                source: p("/home/u/job/rel/x"),
                destination: p("/x"),
                readonly: false
            }
        );
        assert_eq!(
            m[3],
            BindMount {
                source: p("/a"),
                destination: p("/a"),
                readonly: true
            }
        );
        assert_eq!(m[4].destination, p("/home/u/up"));
        assert_eq!(
            m[4].source,
            p("/home/u/job/../up"),
            "the kernel resolves '..' as the user"
        );
        // '..' that stays below / is only a spelling.
        assert_eq!(
            parse_pyxis_mounts("/a:/b/../c", &cwd).unwrap()[0].destination,
            p("/c")
        );
    }

    #[test]
    fn empty_and_escaping_destinations_are_refused() {
        for (input, needle) in [
            ("/a:", "'/a:': invalid format: empty destination"),
            ("/a::ro", "invalid format: empty destination"),
            ("tmpfs::size=1m", "invalid format: empty destination"),
            ("umount:", "invalid format: empty destination"),
            (
                "/a:/../etc",
                "destination '/../etc' leaves the container's root",
            ),
            ("/a:/b/../../x:ro", "leaves the container's root"),
            ("tmpfs:/t/../../x", "leaves the container's root"),
            ("umount:/..", "leaves the container's root"),
            ("/a:./rel", "destination './rel' must be an absolute path"),
            ("/a:../up", "must be an absolute path"),
        ] {
            let e = parse(input, Path::new("/")).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{input}: {e}");
        }
    }

    #[test]
    fn pyxis_mount_errors() {
        for (input, needle) in [
            ("/a:/b:ro:x", "SRC[:DST[:FLAGS]]"),
            ("/a:/b:rfoo", "unknown mount flag 'rfoo'"),
            ("/a:rx", "destination 'rx' must be an absolute path"),
            ("/a:data", "must be an absolute path"),
            ("/a,", "empty source"),
            (":/b", "empty source"),
            ("/a:b:ro", "absolute"),
            ("/a:/b:ro+", "empty mount flag"),
        ] {
            let e = parse_pyxis_mounts(input, Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
