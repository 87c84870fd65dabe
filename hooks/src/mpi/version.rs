//! Library file names (`libmpi.so.12.1.3` = linker name `libmpi.so` + version 12.1.3) and the
//! MPICH ABI compatibility modes.
//!
//! The MPICH ABI Compatibility Initiative names the library `libmpi.so.12`; Debian (and other
//! distributions) ship the same ABI as `libmpich.so.12`, and `libmpicxx`/`libmpifort` as
//! `libmpichcxx`/`libmpichfort`. [`LibName::abi_name`] maps the `libmpich*` names onto the
//! `libmpi*` ones, so a host `libmpi.so.12` replaces a container `libmpich.so.12` and back.

use std::fmt;

/// A shared library's file name split into its linker name and version numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibName {
    /// Up to and including `.so`, e.g. `libmpich.so`.
    pub linker_name: String,
    /// The numbers after `.so.`, e.g. [12, 2, 2]; empty for a bare `libX.so`.
    pub version: Vec<u32>,
}

impl LibName {
    /// Parses `libX.so[.N[.N...]]`; `None` for anything else (`libX.a`, `libX.so.1rc`, `libX.so.`).
    pub fn parse(file_name: &str) -> Option<LibName> {
        let at = file_name.find(".so")?;
        let (stem, rest) = file_name.split_at(at + 3);
        if stem.len() <= 3 || stem.contains('/') {
            return None;
        }
        let version = if rest.is_empty() {
            Vec::new()
        } else {
            let nums = rest.strip_prefix('.')?;
            nums.split('.')
                .map(|n| {
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        None
                    } else {
                        n.parse().ok()
                    }
                })
                .collect::<Option<Vec<u32>>>()?
        };
        Some(LibName {
            linker_name: stem.to_string(),
            version,
        })
    }

    /// The linker name with MPICH's distribution aliases folded (`libmpich.so` → `libmpi.so`,
    /// `libmpichfort.so` → `libmpifort.so`, `libmpichcxx.so` → `libmpicxx.so`).
    pub fn abi_name(&self) -> String {
        match self.linker_name.strip_prefix("libmpich") {
            Some(rest) => format!("libmpi{rest}"),
            None => self.linker_name.clone(),
        }
    }

    pub fn major(&self) -> Option<u32> {
        self.version.first().copied()
    }

    /// The `i`-th version number, 0 when the name does not carry it.
    fn number(&self, i: usize) -> u32 {
        self.version.get(i).copied().unwrap_or(0)
    }

    /// The version as written, `12.2.2`; `(none)` without numbers.
    pub fn version_string(&self) -> String {
        if self.version.is_empty() {
            return "(none)".into();
        }
        self.version
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The longer of two versions of the same library when one extends the other (a symlink
    /// `libmpi.so.12` → `libmpi.so.12.1.3`); `self` when they disagree or name other libraries.
    pub fn refine(self, other: &LibName) -> LibName {
        let consistent = other.abi_name() == self.abi_name()
            && other.version.len() > self.version.len()
            && other.version.starts_with(&self.version);
        if consistent {
            LibName {
                linker_name: self.linker_name,
                version: other.version.clone(),
            }
        } else {
            self
        }
    }
}

impl fmt::Display for LibName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.linker_name)?;
        for n in &self.version {
            write!(f, ".{n}")?;
        }
        Ok(())
    }
}

/// `MPI_COMPATIBILITY_TYPE`: how close the host library's version must be to the container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Same major number (the MPICH ABI promise). The default.
    Major,
    /// Same major; a host minor older than the container's is allowed with a warning.
    Full,
    /// Same major and minor (the patch level is ignored).
    Strict,
}

impl Compat {
    pub fn parse(s: &str) -> Option<Compat> {
        match s {
            "" | "major" => Some(Compat::Major),
            "full" => Some(Compat::Full),
            "strict" => Some(Compat::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compat::Major => "major",
            Compat::Full => "full",
            Compat::Strict => "strict",
        }
    }

    /// Whether the host library can replace the container's. Both must carry a major number
    /// (checked by the caller); missing minor numbers count as 0.
    pub fn check(self, host: &LibName, container: &LibName) -> Verdict {
        if host.major() != container.major() {
            return Verdict::Incompatible;
        }
        let (h, c) = (host.number(1), container.number(1));
        match self {
            Compat::Major => Verdict::Compatible,
            Compat::Full if h >= c => Verdict::Compatible,
            Compat::Full => Verdict::Partial,
            Compat::Strict if h == c => Verdict::Compatible,
            Compat::Strict => Verdict::Incompatible,
        }
    }
}

/// The outcome of [`Compat::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Compatible,
    /// Usable, but the host library is older than the container's (warn, then replace).
    Partial,
    Incompatible,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> LibName {
        LibName::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_library_file_names() {
        assert_eq!(
            n("libmpich.so.12.2.2"),
            LibName {
                linker_name: "libmpich.so".into(),
                version: vec![12, 2, 2]
            }
        );
        assert_eq!(n("libmpi.so.12").version, vec![12]);
        assert_eq!(n("libmpi.so").version, Vec::<u32>::new());
        assert_eq!(n("libmpi.so").major(), None);
        assert_eq!(n("libfabric.so.1").linker_name, "libfabric.so");
        assert_eq!(n("libmpi.so.12.1.3").to_string(), "libmpi.so.12.1.3");
        assert_eq!(n("libmpi.so.12.1.3").version_string(), "12.1.3");
        assert_eq!(n("libmpi.so").version_string(), "(none)");
        for bad in [
            "libmpi.a",
            "libmpi.so.",
            "libmpi.so.12.",
            "libmpi.so.12..1",
            "libmpi.so.1rc",
            "libmpi.sox",
            ".so.1",
            "libmpi.so.99999999999",
            "",
        ] {
            assert_eq!(LibName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn mpich_names_are_aliases_of_the_abi_names() {
        assert_eq!(n("libmpich.so.12").abi_name(), "libmpi.so");
        assert_eq!(n("libmpi.so.12").abi_name(), "libmpi.so");
        assert_eq!(n("libmpichfort.so.12").abi_name(), "libmpifort.so");
        assert_eq!(n("libmpichcxx.so.12").abi_name(), "libmpicxx.so");
        assert_eq!(n("libmpicxx.so.12").abi_name(), "libmpicxx.so");
        assert_eq!(n("libfabric.so.1").abi_name(), "libfabric.so");
        assert_ne!(
            n("libmpifort.so.12").abi_name(),
            n("libmpi.so.12").abi_name()
        );
    }

    #[test]
    fn symlink_targets_refine_the_version() {
        let link = n("libmpich.so.12");
        assert_eq!(
            link.clone().refine(&n("libmpich.so.12.2.2")).version,
            [12, 2, 2]
        );
        // An alias name in the chain still refines; the linker name stays the link's.
        let r = link.clone().refine(&n("libmpi.so.12.4"));
        assert_eq!(
            (r.linker_name.as_str(), r.version),
            ("libmpich.so", vec![12, 4])
        );
        // Inconsistent prefixes, shorter versions and other libraries are ignored.
        assert_eq!(link.clone().refine(&n("libmpich.so.13.0.1")).version, [12]);
        assert_eq!(
            n("libmpi.so.12.1").refine(&n("libmpi.so.12")).version,
            [12, 1]
        );
        assert_eq!(link.refine(&n("libfoo.so.12.2")).version, [12]);
    }

    #[test]
    fn compatibility_modes() {
        use Verdict::*;
        let cases = [
            // host, container, major, full, strict
            (
                "libmpi.so.12",
                "libmpich.so.12.2.2",
                Compatible,
                Partial,
                Incompatible,
            ),
            (
                "libmpi.so.12.2.0",
                "libmpich.so.12.2.2",
                Compatible,
                Compatible,
                Compatible,
            ),
            (
                "libmpi.so.12.5",
                "libmpi.so.12.2.9",
                Compatible,
                Compatible,
                Incompatible,
            ),
            (
                "libmpi.so.12.1",
                "libmpi.so.12.3",
                Compatible,
                Partial,
                Incompatible,
            ),
            (
                "libmpi.so.12",
                "libmpi.so.12",
                Compatible,
                Compatible,
                Compatible,
            ),
            (
                "libmpi.so.40",
                "libmpich.so.12.2.2",
                Incompatible,
                Incompatible,
                Incompatible,
            ),
            (
                "libmpi.so.12.2",
                "libmpi.so.13.2",
                Incompatible,
                Incompatible,
                Incompatible,
            ),
        ];
        for (h, c, major, full, strict) in cases {
            let (h, c) = (n(h), n(c));
            assert_eq!(Compat::Major.check(&h, &c), major, "major {h} {c}");
            assert_eq!(Compat::Full.check(&h, &c), full, "full {h} {c}");
            assert_eq!(Compat::Strict.check(&h, &c), strict, "strict {h} {c}");
        }
    }

    #[test]
    fn compatibility_mode_names() {
        assert_eq!(Compat::parse(""), Some(Compat::Major));
        assert_eq!(Compat::parse("major"), Some(Compat::Major));
        assert_eq!(Compat::parse("full"), Some(Compat::Full));
        assert_eq!(Compat::parse("strict"), Some(Compat::Strict));
        assert_eq!(Compat::parse("Strict"), None);
        assert_eq!(Compat::parse("minor"), None);
        for c in [Compat::Major, Compat::Full, Compat::Strict] {
            assert_eq!(Compat::parse(c.as_str()), Some(c));
        }
    }
}
