//! Flattener tests on synthetic layers built in memory (raw headers, so that hostile names such
//! as `../x` or `/etc/passwd` can be written at all).

use std::io::Write;

use tar::{EntryType, Header};

use super::*;

/// A layer under construction.
struct L(tar::Builder<Vec<u8>>);

impl L {
    fn new() -> L {
        L(tar::Builder::new(Vec::new()))
    }

    fn raw(mut self, name: &str, t: EntryType, mode: u32, data: &[u8], link: &str) -> L {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(t);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &str) -> L {
        self.raw(name, EntryType::Regular, 0o644, data.as_bytes(), "")
    }

    fn dir(self, name: &str) -> L {
        self.raw(name, EntryType::Directory, 0o755, b"", "")
    }

    fn symlink(self, name: &str, target: &str) -> L {
        self.raw(name, EntryType::Symlink, 0o777, b"", target)
    }

    fn hardlink(self, name: &str, target: &str) -> L {
        self.raw(name, EntryType::Link, 0o644, b"", target)
    }

    fn pax(mut self, records: &[(&str, &[u8])]) -> L {
        self.0
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }

    fn gz(self) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.tar()).unwrap();
        e.finish().unwrap()
    }

    fn zst(self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 1).unwrap()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Out {
    path: String,
    kind: char,
    mode: u32,
    uid: u64,
    link: String,
    data: String,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Run {
    entries: Vec<Out>,
    warnings: Vec<String>,
    stats: FlattenStats,
}

impl Run {
    fn paths(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn get(&self, p: &str) -> &Out {
        self.entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    }

    fn has(&self, p: &str) -> bool {
        self.entries.iter().any(|e| e.path == p)
    }
}

/// Layers in image order (base first).
fn run(layers: Vec<Vec<u8>>) -> Result<Run, FlattenError> {
    let inputs = layers
        .into_iter()
        .enumerate()
        .map(|(i, b)| LayerInput {
            name: format!("L{i}"),
            reader: Box::new(std::io::Cursor::new(b)),
        })
        .collect();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let stats = flatten(inputs, &mut out, &mut |e| {
        if let FlattenEvent::Warning(w) = e {
            warnings.push(w)
        }
    })?;
    let mut ar = tar::Archive::new(&out[..]);
    let mut entries = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((k.to_string(), r.value_bytes().to_vec()));
                }
            }
        }
        let mut data = String::new();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let o = Out {
            path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            kind: e.header().entry_type().as_byte() as char,
            mode: e.header().mode().unwrap(),
            uid: e.header().uid().unwrap(),
            link: link.unwrap_or_default(),
            data: String::new(),
            xattrs,
        };
        std::io::Read::read_to_string(&mut e, &mut data).unwrap();
        entries.push(Out { data, ..o });
    }
    Ok(Run {
        entries,
        warnings,
        stats,
    })
}

fn unsafe_err(r: Result<Run, FlattenError>) -> String {
    match r {
        Err(e @ FlattenError::UnsafeEntry { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(r) => panic!("accepted: {:?}", r.paths()),
    }
}

#[test]
fn single_layer_keeps_metadata_and_adds_parent_dirs() {
    let layer = L::new()
        .raw("./usr/bin/su", EntryType::Regular, 0o4755, b"su", "")
        .symlink("bin", "usr/bin")
        .raw("dev/null", EntryType::Char, 0o666, b"", "")
        .raw("run/fifo", EntryType::Fifo, 0o600, b"", "")
        .tar();
    let r = run(vec![layer]).unwrap();
    let su = r.get("usr/bin/su");
    assert_eq!(
        (su.kind, su.mode, su.uid, su.data.as_str()),
        ('0', 0o4755, 1000, "su")
    );
    assert_eq!(r.get("bin").link, "usr/bin");
    assert_eq!(r.get("dev/null").kind, '3');
    assert_eq!(r.get("run/fifo").kind, '6');
    // Parents that only exist implicitly get explicit root-owned 0755 entries.
    for d in ["usr", "usr/bin", "dev", "run"] {
        let e = r.get(d);
        assert_eq!((e.kind, e.mode, e.uid), ('5', 0o755, 0), "{d}");
    }
    assert_eq!(r.stats.bytes, 2);
}

#[test]
fn root_entry_and_dot_slash_are_normalized() {
    let r = run(vec![L::new()
        .dir("./")
        .dir("./a/")
        .file("./a//b", "x")
        .tar()])
    .unwrap();
    assert_eq!(r.paths(), vec!["a", "a/b"]);
}

#[test]
fn upper_layer_wins_for_duplicate_paths() {
    let lower = L::new().file("f", "old").file("g", "lower").tar();
    let upper = L::new().file("f", "new").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.get("f").data, "new");
    assert_eq!(r.get("g").data, "lower");
    assert_eq!(r.paths().iter().filter(|p| **p == "f").count(), 1);
}

#[test]
fn duplicate_in_one_layer_keeps_the_first() {
    let r = run(vec![L::new().file("f", "one").file("f", "two").tar()]).unwrap();
    assert_eq!(r.paths(), vec!["f"]);
}

#[test]
fn whiteout_removes_lower_file() {
    let lower = L::new().dir("a").file("a/f", "f").file("a/g", "g").tar();
    let upper = L::new().file("a/.wh.f", "").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert!(!r.has("a/f"));
    assert!(r.has("a/g"));
    assert!(!r.paths().iter().any(|p| p.contains(".wh.")));
}

#[test]
fn whiteout_removes_lower_directory_tree() {
    let lower = L::new()
        .dir("a")
        .dir("a/b")
        .file("a/b/c", "c")
        .file("keep", "k")
        .tar();
    let upper = L::new().file(".wh.a", "").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.paths(), vec!["keep"]);
}

#[test]
fn whiteout_does_not_hide_its_own_layer() {
    let lower = L::new().file("f", "old").tar();
    let upper = L::new().file(".wh.f", "").file("f", "recreated").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.get("f").data, "recreated");
}

#[test]
fn whiteout_applies_to_all_lower_layers() {
    let l0 = L::new().file("f", "0").tar();
    let l1 = L::new().file("g", "1").tar();
    let l2 = L::new().file(".wh.f", "").tar();
    let r = run(vec![l0, l1, l2]).unwrap();
    assert_eq!(r.paths(), vec!["g"]);
}

#[test]
fn opaque_directory_hides_only_lower_content() {
    let lower = L::new()
        .dir("d")
        .file("d/old", "o")
        .dir("d/sub")
        .file("d/sub/x", "x")
        .tar();
    let upper = L::new()
        .dir("d")
        .file("d/.wh..wh..opq", "")
        .file("d/new", "n")
        .tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.paths(), vec!["d", "d/new"]);
}

#[test]
fn aufs_bookkeeping_entries_are_ignored() {
    let r = run(vec![L::new().file(".wh..wh.plnk", "").file("a", "a").tar()]).unwrap();
    assert_eq!(r.paths(), vec!["a"]);
}

#[test]
fn upper_non_directory_hides_lower_tree() {
    let lower = L::new().dir("x").file("x/y", "y").tar();
    let upper = L::new().symlink("x", "/elsewhere").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.paths(), vec!["x"]);
    assert_eq!(r.get("x").kind, '2');
}

#[test]
fn upper_directory_replaces_lower_file() {
    let lower = L::new().file("x", "file").tar();
    let upper = L::new().dir("x").file("x/y", "y").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.get("x").kind, '5');
    assert!(r.has("x/y"));
}

#[test]
fn rejects_dotdot() {
    let e = unsafe_err(run(vec![L::new().file("a/../../etc/passwd", "x").tar()]));
    assert!(
        e.contains("layer L0") && e.contains("a/../../etc/passwd") && e.contains(".."),
        "{e}"
    );
    // Even hidden by nothing and named as a whiteout, '..' is refused.
    let e = unsafe_err(run(vec![L::new().file("../.wh.x", "").tar()]));
    assert!(e.contains(".."), "{e}");
}

#[test]
fn rejects_absolute_paths() {
    let e = unsafe_err(run(vec![L::new().file("/etc/passwd", "x").tar()]));
    assert!(e.contains("absolute") && e.contains("/etc/passwd"), "{e}");
}

#[test]
fn rejects_symlinked_parent_in_same_layer() {
    let e = unsafe_err(run(vec![L::new()
        .symlink("a", "/etc")
        .file("a/passwd", "x")
        .tar()]));
    assert!(e.contains("a/passwd") && e.contains("parent 'a'"), "{e}");
    // The other order: the child first, then the parent as a symlink.
    let e = unsafe_err(run(vec![L::new()
        .file("a/passwd", "x")
        .symlink("a", "/etc")
        .tar()]));
    assert!(e.contains("'a'") && e.contains("non-directory"), "{e}");
}

#[test]
fn rejects_upper_entries_under_a_lower_symlink() {
    // Applied layer by layer, the upper file would be written through the lower symlink.
    let lower = L::new().symlink("a", "/etc").tar();
    let upper = L::new().file("a/passwd", "x").tar();
    let e = unsafe_err(run(vec![lower, upper]));
    assert!(
        e.contains("layer L0") && e.contains("upper layer L1"),
        "{e}"
    );
}

#[test]
fn hardlinks_come_last_and_resolve_across_layers() {
    let lower = L::new().file("bin/target", "data").tar();
    let upper = L::new()
        .hardlink("bin/alias", "bin/target")
        .file("zzz", "z")
        .tar();
    let r = run(vec![lower, upper]).unwrap();
    let last = r.entries.last().unwrap();
    assert_eq!(
        (last.path.as_str(), last.kind, last.link.as_str()),
        ("bin/alias", '1', "bin/target")
    );
    let pos = |p: &str| r.paths().iter().position(|x| *x == p).unwrap();
    assert!(pos("bin/target") < pos("bin/alias"));
    assert_eq!(r.stats.hardlinks, 1);
}

#[test]
fn hardlink_chains_point_at_the_file() {
    let layer = L::new()
        .file("f", "data")
        .hardlink("h1", "f")
        .hardlink("h2", "./h1")
        .tar();
    let r = run(vec![layer]).unwrap();
    assert_eq!(r.get("h1").link, "f");
    assert_eq!(r.get("h2").link, "f");
}

#[test]
fn hardlink_to_whited_out_target_is_dropped_with_warning() {
    let lower = L::new().file("f", "data").hardlink("h", "f").tar();
    let upper = L::new().file(".wh.f", "").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert!(!r.has("f") && !r.has("h"));
    assert_eq!(r.stats.dropped_hardlinks, 1);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("'h'") && w.contains("'f'")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn hardlink_to_missing_or_directory_target_is_dropped() {
    let r = run(vec![L::new()
        .dir("d")
        .hardlink("h", "nope")
        .hardlink("h2", "d")
        .tar()])
    .unwrap();
    assert!(!r.has("h") && !r.has("h2"));
    assert_eq!(r.stats.dropped_hardlinks, 2);
    assert_eq!(r.warnings.len(), 2);
}

#[test]
fn hardlink_target_must_not_escape() {
    let e = unsafe_err(run(vec![L::new()
        .file("f", "x")
        .hardlink("h", "../f")
        .tar()]));
    assert!(e.contains("hardlink target"), "{e}");
    let e = unsafe_err(run(vec![L::new().file("f", "x").hardlink("h", "/f").tar()]));
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn xattrs_are_kept_but_overlay_ones_dropped() {
    let layer = L::new()
        .pax(&[
            ("SCHILY.xattr.user.foo", b"bar"),
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .file("f", "x")
        .tar();
    let r = run(vec![layer]).unwrap();
    let x = &r.get("f").xattrs;
    assert!(x.contains(&("user.foo".into(), b"bar".to_vec())), "{x:?}");
    assert!(x.iter().any(|(k, _)| k == "security.capability"));
    assert!(!x.iter().any(|(k, _)| k.contains("overlay")));
}

#[test]
fn pax_ownership_overrides_header() {
    let layer = L::new()
        .pax(&[("uid", b"5000000"), ("gid", b"7"), ("mtime", b"12.5")])
        .file("f", "x");
    let r = run(vec![layer.tar()]).unwrap();
    assert_eq!(r.get("f").uid, 5_000_000);
}

#[test]
fn long_names_survive() {
    let long = format!("d/{}/{}", "x".repeat(90), "y".repeat(90));
    let target = format!("/{}", "z".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"q"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "s", &target).unwrap();
    let r = run(vec![b.into_inner().unwrap()]).unwrap();
    assert_eq!(r.get(&long).data, "q");
    assert_eq!(r.get("s").link, target);
}

#[test]
fn mixed_compressions() {
    let l0 = L::new().file("a", "gz").gz();
    let l1 = L::new().file("b", "zstd").zst();
    let l2 = L::new().file("c", "plain").tar();
    let r = run(vec![l0, l1, l2]).unwrap();
    assert_eq!(r.get("a").data, "gz");
    assert_eq!(r.get("b").data, "zstd");
    assert_eq!(r.get("c").data, "plain");
}

#[test]
fn unsupported_compression_is_named() {
    let e = run(vec![b"BZh91AY&SY".to_vec()]).err().unwrap().to_string();
    assert!(e.contains("bzip2") && e.contains("L0"), "{e}");
}

#[test]
fn truncated_layer_is_a_read_error() {
    let mut gz = L::new().file("a", &"x".repeat(100_000)).gz();
    gz.truncate(gz.len() / 2);
    match run(vec![gz]) {
        Err(FlattenError::Read { layer, .. }) => assert_eq!(layer, "L0"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("accepted a truncated layer"),
    }
}

#[test]
fn broken_pipe_is_reported_as_such() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let layer = L::new().file("a", &"x".repeat(3 << 20)).tar();
    let inputs = vec![LayerInput {
        name: "L0".into(),
        reader: Box::new(io::Cursor::new(layer)),
    }];
    let e = flatten(inputs, Closed, &mut |_| {}).unwrap_err();
    assert!(e.is_broken_pipe(), "{e}");
}

#[test]
fn layer_events_count_top_down() {
    let mut seen = Vec::new();
    let inputs = vec![
        LayerInput {
            name: "base".into(),
            reader: Box::new(io::Cursor::new(L::new().tar())),
        },
        LayerInput {
            name: "top".into(),
            reader: Box::new(io::Cursor::new(L::new().tar())),
        },
    ];
    flatten(inputs, io::sink(), &mut |e| seen.push(e)).unwrap();
    assert_eq!(
        seen,
        vec![
            FlattenEvent::Layer {
                index: 1,
                total: 2,
                name: "top".into()
            },
            FlattenEvent::Layer {
                index: 2,
                total: 2,
                name: "base".into()
            },
        ]
    );
}

#[test]
fn opaque_root_hides_every_lower_entry() {
    let lower = L::new().file("old", "o").dir("d").file("d/x", "x").tar();
    let upper = L::new().file(".wh..wh..opq", "").file("new", "n").tar();
    let r = run(vec![lower, upper]).unwrap();
    assert_eq!(r.paths(), vec!["new"]);
}

#[test]
fn hardlink_before_its_target_in_one_layer_works() {
    let r = run(vec![L::new()
        .hardlink("early", "late")
        .file("late", "data")
        .tar()])
    .unwrap();
    assert_eq!(r.get("early").link, "late");
    assert_eq!(r.stats.dropped_hardlinks, 0);
}

#[test]
fn more_layers_than_decoders_merge_in_order() {
    // Seven layers, more than the decoders that run at once: each one replaces `f`, whites out
    // the previous layer's own file and adds its own.
    let layers: Vec<Vec<u8>> = (0..7)
        .map(|i| {
            let mut l = L::new()
                .file("f", &format!("v{i}"))
                .file(&format!("own{i}"), "x");
            if i > 0 {
                l = l.file(&format!(".wh.own{}", i - 1), "");
            }
            if i % 2 == 0 {
                l.gz()
            } else {
                l.zst()
            }
        })
        .collect();
    let r = run(layers).unwrap();
    assert_eq!(r.get("f").data, "v6");
    assert_eq!(r.paths(), vec!["f", "own6"]);
}

#[test]
fn a_failing_lower_layer_reports_its_own_error() {
    let top = L::new().file("a", "a").gz();
    let mut bad = L::new().file("b", &"y".repeat(100_000)).gz();
    bad.truncate(bad.len() / 3);
    match run(vec![bad, top]) {
        Err(FlattenError::Read { layer, .. }) => assert_eq!(layer, "L0"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("accepted a truncated layer"),
    }
}
