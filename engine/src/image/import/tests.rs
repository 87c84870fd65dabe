//! Import logic against a fake registry (in memory) and the real mksquashfs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::image::metadata::ImageMeta;
use crate::image::progress::LineProgress;

/// An image as a registry holds it: manifest bytes plus blobs by digest.
#[derive(Clone)]
struct FakeImage {
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
}

fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, d.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn fake_image(layers: Vec<Vec<u8>>, config: serde_json::Value) -> FakeImage {
    let mut blobs = HashMap::new();
    let mut descs = Vec::new();
    for l in layers {
        let d = oci::sha256_digest(&l);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": l.len()
        }));
        blobs.insert(d, l);
    }
    let cfg = serde_json::json!({"architecture": host_arch(), "os": "linux", "config": config})
        .to_string()
        .into_bytes();
    let cd = oci::sha256_digest(&cfg);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": descs,
    });
    blobs.insert(cd, cfg);
    // A trailing newline, as umoci writes it: the digest must cover it.
    let mut manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    manifest.push(b'\n');
    FakeImage { manifest, blobs }
}

fn simple_image(content: &str) -> FakeImage {
    fake_image(
        vec![gz(&layer_tar(&[
            ("etc/content", content),
            ("bin/sh", "#!"),
        ]))],
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/w",
                           "Labels": {"a": "b"}, "User": "1000"}),
    )
}

#[derive(Default)]
struct Fake {
    /// By `repository:tag` and by `repository@digest`.
    images: Mutex<HashMap<String, FakeImage>>,
    unreachable: bool,
    copies: AtomicUsize,
    inspects: AtomicUsize,
    copy_delay: Duration,
    /// Serve these bytes instead of a blob's content (a corrupt download).
    corrupt_blob: Option<String>,
    /// How the copy writes the layout (see [`Copying`]).
    copying: Copying,
    /// `inspect_config` answers with another image's config.
    forged_config: bool,
    config_inspects: AtomicUsize,
}

/// How the fake copy writes its layout.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Copying {
    /// Everything at once, each blob renamed into place, as skopeo does.
    #[default]
    AtOnce,
    /// The layers, then it waits until this process has a layer open (the flattener reading it
    /// while the copy still runs) before it writes the rest; fails if that never happens.
    WaitForReader,
    /// Each layer written under its final name in two halves, a pause between them.
    InPieces,
    /// The first layer, then a failure.
    FailAfterOneLayer,
    /// As skopeo copies a Docker schema 2 image into an OCI layout: the config re-serialised,
    /// so under a digest the verified manifest does not name.
    ConvertingConfig,
}

impl Fake {
    fn copying(copying: Copying) -> Fake {
        Fake {
            copying,
            ..Fake::default()
        }
    }

    fn push(&self, name: &str, img: FakeImage) -> String {
        let d = oci::sha256_digest(&img.manifest);
        let repo = name.split(':').next().unwrap();
        let mut m = self.images.lock().unwrap();
        m.insert(format!("{repo}@{d}"), img.clone());
        m.insert(name.to_string(), img);
        d
    }

    fn key(r: &ImageRef) -> String {
        match (&r.digest, &r.tag) {
            (Some(d), _) => format!("{}@{d}", r.repository),
            (None, t) => format!("{}:{}", r.repository, t.as_deref().unwrap_or("latest")),
        }
    }

    fn get(&self, r: &ImageRef) -> Result<FakeImage, FetchError> {
        if self.unreachable {
            return Err(FetchError::Unreachable {
                registry: r.registry.clone(),
                reason: "connection refused".into(),
            });
        }
        self.images
            .lock()
            .unwrap()
            .get(&Self::key(r))
            .cloned()
            .ok_or(FetchError::NotFound {
                reference: r.display(),
            })
    }
}

impl Fetcher for Fake {
    fn inspect_raw(&self, r: &ImageRef, _: &FetchAuth) -> Result<Vec<u8>, FetchError> {
        self.inspects.fetch_add(1, Ordering::SeqCst);
        Ok(self.get(r)?.manifest)
    }

    fn inspect_config(&self, r: &ImageRef, _: &FetchAuth) -> Result<Vec<u8>, FetchError> {
        self.config_inspects.fetch_add(1, Ordering::SeqCst);
        let img = self.get(r)?;
        let m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        let config = img.blobs[m["config"]["digest"].as_str().unwrap()].clone();
        if self.forged_config {
            let mut v: serde_json::Value = serde_json::from_slice(&config).unwrap();
            v["config"]["User"] = "0".into();
            return Ok(v.to_string().into_bytes());
        }
        Ok(config)
    }

    fn copy_to_layout(
        &self,
        r: &ImageRef,
        dir: &Path,
        _: &FetchAuth,
        tick: &mut dyn FnMut(u64, usize),
    ) -> Result<(), FetchError> {
        assert!(r.digest.is_some(), "copies are pinned by digest");
        self.copies.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.copy_delay);
        let img = self.get(r)?;
        write_layout(&img, dir, self.corrupt_blob.as_deref(), self.copying)?;
        tick(1, 1);
        Ok(())
    }

    fn copy_archive_to_oci_dir(
        &self,
        _: &Path,
        _: ArchiveFormat,
        _: &Path,
    ) -> Result<(), FetchError> {
        unimplemented!("load goes through the real skopeo in engine/tests")
    }
}

/// What skopeo's `oci:` transport writes: blobs in `blobs/sha256/HEX` (each written under a
/// temporary name and renamed), then `index.json` (whose manifest egret never reads).
fn write_layout(
    img: &FakeImage,
    dir: &Path,
    corrupt: Option<&str>,
    copying: Copying,
) -> Result<(), FetchError> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = |d: &str| {
        if corrupt == Some(d) {
            b"garbage".to_vec()
        } else {
            img.blobs[d].clone()
        }
    };
    let put = |d: &str| {
        let tmp = dir.join("oci-put-blob");
        std::fs::write(&tmp, content(d)).unwrap();
        std::fs::rename(&tmp, blobs.join(&d[7..])).unwrap();
    };
    let m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    let layers: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    for d in &layers {
        match copying {
            Copying::InPieces => {
                let data = content(d);
                let path = blobs.join(&d[7..]);
                let mut f = std::fs::File::create(&path).unwrap();
                std::io::Write::write_all(&mut f, &data[..data.len() / 2]).unwrap();
                std::thread::sleep(Duration::from_millis(150));
                std::io::Write::write_all(&mut f, &data[data.len() / 2..]).unwrap();
            }
            Copying::FailAfterOneLayer => {
                put(d);
                return Err(FetchError::Failed {
                    what: "the fake copy".into(),
                    detail: "connection reset".into(),
                });
            }
            _ => put(d),
        }
    }
    if copying == Copying::WaitForReader {
        let names: Vec<PathBuf> = layers.iter().map(|d| blobs.join(&d[7..])).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !open_in_this_process(&names) {
            if std::time::Instant::now() > deadline {
                return Err(FetchError::Failed {
                    what: "the fake copy".into(),
                    detail: "no layer was read while the download ran".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let config = m["config"]["digest"].as_str().unwrap();
    if copying == Copying::ConvertingConfig {
        let converted: serde_json::Value = serde_json::from_slice(&img.blobs[config]).unwrap();
        let bytes = serde_json::to_vec_pretty(&converted).unwrap();
        std::fs::write(blobs.join(&oci::sha256_digest(&bytes)[7..]), bytes).unwrap();
    } else {
        put(config);
    }
    let md = oci::sha256_digest(&img.manifest);
    std::fs::write(blobs.join(&md[7..]), &img.manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": md, "size": img.manifest.len()}]});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Ok(())
}

/// Pushes `egret/app:1` made of gzipped layers with these files (base first).
fn push_layers(f: &Fake, layers: &[&[(&str, &str)]]) {
    let blobs = layers.iter().map(|files| gz(&layer_tar(files))).collect();
    f.push("egret/app:1", fake_image(blobs, serde_json::json!({})));
}

/// Pushes `egret/app:multi`, an index whose one entry, for this host, is `digest`.
fn push_index(f: &Fake, digest: &str) {
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"digest": digest, "size": 1, "platform": {"os": "linux", "architecture": host_arch()}}]
    });
    let manifest = idx.to_string().into_bytes();
    f.push(
        "egret/app:multi",
        FakeImage {
            manifest,
            blobs: HashMap::new(),
        },
    );
}

/// Whether a descriptor of this process names one of `paths`.
fn open_in_this_process(paths: &[PathBuf]) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| paths.contains(&target))
}

struct Env {
    _dir: tempfile::TempDir,
    cfg: Config,
    store: Store,
    lines: Arc<Mutex<Vec<String>>>,
    opts: PullOptions,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        local_repository_base_dir: dir.path().join("store"),
        temp_dir: dir.path().join("tmp"),
        mksquashfs_options: "-comp gzip".into(),
        ..Config::default()
    };
    std::fs::create_dir(&cfg.temp_dir).unwrap();
    let timings = LockTimings {
        timeout_ms: 5000,
        warning_ms: 100,
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let store = Store::open(&cfg.local_repository_base_dir, 1000, 1000, &timings)
        .unwrap()
        .with_notifier({
            let l = lines.clone();
            move |m| l.lock().unwrap().push(m.to_string())
        });
    let opts = PullOptions {
        progress: Arc::new(LineProgress::new(move |s: &str| {
            l2.lock().unwrap().push(s.to_string())
        })),
        import_wait: Duration::from_secs(30),
        ..PullOptions::default()
    };
    Env {
        _dir: dir,
        cfg,
        store,
        lines,
        opts,
    }
}

impl Env {
    fn pull(&self, f: &Fake, r: &str) -> Result<Pulled, ImportError> {
        pull_image(
            &self.cfg,
            &self.store,
            f,
            &ImageRef::parse(r).unwrap(),
            &self.opts,
        )
    }

    /// Nothing half-done anywhere: no work dirs, no download dirs.
    fn assert_clean(&self) {
        let tmp: Vec<_> = std::fs::read_dir(self.cfg.local_repository_base_dir.join("tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "store tmp not empty: {tmp:?}");
        let dl: Vec<_> = std::fs::read_dir(&self.cfg.temp_dir).unwrap().collect();
        assert!(dl.is_empty(), "temp dir not empty: {dl:?}");
    }

    /// A failed import: nothing half-done, no image, no index entry.
    fn assert_nothing_stored(&self) {
        self.assert_clean();
        assert_eq!(self.image_files(), 0);
        assert!(self.store.list().unwrap().is_empty());
    }

    fn image_files(&self) -> usize {
        std::fs::read_dir(self.cfg.local_repository_base_dir.join("images"))
            .unwrap()
            .count()
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

fn unsquash_cat(img: &Path, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r");
    let o = Command::new("unsquashfs")
        .arg("-no-xattrs")
        .arg("-d")
        .arg(&dest)
        .arg(img)
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(dest.join(path)).unwrap()
}

#[test]
fn pull_then_repull_downloads_once() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:1", simple_image("v1"));
    let p = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(p.status, PullStatus::Downloaded);
    assert_eq!(p.image.digest, d);
    assert_eq!(p.reference.digest.as_deref(), Some(d.as_str()));
    assert_eq!(unsquash_cat(&p.image.squashfs, "etc/content"), "v1");
    let m = &p.image.meta;
    assert_eq!(m.cmd, Some(vec!["/bin/sh".to_string()]));
    assert_eq!(m.env, vec!["PATH=/bin".to_string()]);
    assert_eq!(m.working_dir.as_deref(), Some("/w"));
    assert_eq!(m.user.as_deref(), Some("1000"));
    assert_eq!(m.labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(m.image_id.as_ref().map(String::len), Some(64));
    e.assert_clean();

    let again = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(again.status, PullStatus::UpToDate);
    assert!(!again.status.downloaded());
    assert_eq!(f.copies.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.inspects.load(Ordering::SeqCst),
        2,
        "the tag is resolved every time"
    );
    assert!(e.text().contains("is up to date"), "{}", e.text());
    let list = e.store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].registry_digest, d);
}

#[test]
fn moved_tag_reimports_and_drops_the_old_image() {
    let e = env();
    let f = Fake::default();
    let d1 = f.push("egret/app:1", simple_image("v1"));
    let p1 = e.pull(&f, "reg.example/egret/app:1").unwrap();
    let d2 = f.push("egret/app:1", simple_image("v2"));
    assert_ne!(d1, d2);
    let p2 = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(p2.status, PullStatus::Downloaded);
    assert_eq!(unsquash_cat(&p2.image.squashfs, "etc/content"), "v2");
    assert!(
        !p1.image.squashfs.exists(),
        "the old image is no longer referenced"
    );
    assert_eq!(e.image_files(), 2, "one .squashfs and one .meta");
}

#[test]
fn pull_by_digest_records_the_digest() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:1", simple_image("v1"));
    let p = e.pull(&f, &format!("reg.example/egret/app:1@{d}")).unwrap();
    assert_eq!(p.status, PullStatus::Downloaded);
    let list = e.store.list().unwrap();
    assert_eq!(list[0].tag, "");
    assert!(list[0].unique_key.ends_with(&d));
    let r = ImageRef::parse(&format!("reg.example/egret/app@{d}")).unwrap();
    assert!(e.store.lookup(&r).unwrap().is_some());
}

#[test]
fn wrong_digest_from_registry_is_refused() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:1", simple_image("v1"));
    // The registry answers a digest request with another manifest.
    let other = format!("sha256:{}", "0".repeat(64));
    let img = f
        .images
        .lock()
        .unwrap()
        .get(&format!("egret/app@{d}"))
        .cloned()
        .unwrap();
    f.images
        .lock()
        .unwrap()
        .insert(format!("egret/app@{other}"), img);
    let err = e
        .pull(&f, &format!("reg.example/egret/app@{other}"))
        .unwrap_err();
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{err}");
    assert_eq!(f.copies.load(Ordering::SeqCst), 0);
}

#[test]
fn unreachable_registry_falls_back_to_the_stored_tag() {
    let e = env();
    let mut f = Fake::default();
    f.push("egret/app:1", simple_image("v1"));
    e.pull(&f, "reg.example/egret/app:1").unwrap();
    f.unreachable = true;
    let p = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(p.status, PullStatus::Offline);
    assert!(
        e.text()
            .contains("warning: registry reg.example unreachable"),
        "{}",
        e.text()
    );
    let err = e.pull(&f, "reg.example/egret/app:2").unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[test]
fn missing_image_leaves_nothing_behind() {
    let e = env();
    let f = Fake::default();
    let err = e.pull(&f, "reg.example/egret/nope:1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "image reg.example/egret/nope:1 not found in the registry"
    );
    e.assert_nothing_stored();
}

#[test]
fn corrupt_blob_fails_and_cleans_up() {
    let e = env();
    let img = simple_image("v1");
    let layer = img
        .blobs
        .keys()
        .find(|k| img.blobs[*k].starts_with(&[0x1f, 0x8b]))
        .cloned()
        .unwrap();
    let f = Fake {
        corrupt_blob: Some(layer.clone()),
        ..Fake::default()
    };
    f.push("egret/app:1", img);
    let err = e
        .pull(&f, "reg.example/egret/app:1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digest mismatch") || err.contains(&layer),
        "{err}"
    );
    e.assert_nothing_stored();
}

#[test]
fn hostile_layer_fails_and_cleans_up() {
    let e = env();
    let f = Fake::default();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"../etc/passwd");
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    f.push(
        "egret/evil:1",
        fake_image(vec![gz(&b.into_inner().unwrap())], serde_json::json!({})),
    );
    let err = e
        .pull(&f, "reg.example/egret/evil:1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("../etc/passwd") && err.contains(".."), "{err}");
    assert!(!err.contains('\n'));
    e.assert_clean();
    assert_eq!(e.image_files(), 0);
}

#[test]
fn manifest_list_resolves_to_host_platform() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:amd", simple_image("v1"));
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": format!("sha256:{}", "1".repeat(64)), "size": 1, "platform": {"os": "linux", "architecture": "nope"}},
            {"digest": d, "size": 1, "platform": {"os": "linux", "architecture": host_arch()}},
        ]
    })
    .to_string()
    .into_bytes();
    let idx_digest = f.push(
        "egret/app:multi",
        FakeImage {
            manifest: idx,
            blobs: HashMap::new(),
        },
    );
    let p = e.pull(&f, "reg.example/egret/app:multi").unwrap();
    assert_eq!(
        p.image.digest, d,
        "stored under the platform manifest's digest"
    );
    // Pulling by the index digest finds the same image.
    let p2 = e
        .pull(&f, &format!("reg.example/egret/app@{idx_digest}"))
        .unwrap();
    assert_eq!(p2.status, PullStatus::UpToDate);
    let r = ImageRef::parse(&format!("reg.example/egret/app@{idx_digest}")).unwrap();
    assert_eq!(e.store.lookup(&r).unwrap().unwrap().digest, d);
}

#[test]
fn concurrent_pulls_download_once() {
    let e = env();
    let f = Fake {
        copy_delay: Duration::from_millis(700),
        ..Fake::default()
    };
    f.push("egret/app:1", simple_image("v1"));
    let statuses: Vec<PullStatus> = std::thread::scope(|s| {
        let a = s.spawn(|| e.pull(&f, "reg.example/egret/app:1").unwrap().status);
        let b = s.spawn(|| e.pull(&f, "reg.example/egret/app:1").unwrap().status);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(f.copies.load(Ordering::SeqCst), 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| s.downloaded()).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        e.text()
            .contains("waiting for another import of reg.example/egret/app:1"),
        "{}",
        e.text()
    );
    e.assert_clean();
}

#[test]
fn multilayer_whiteouts_reach_the_image() {
    let e = env();
    let f = Fake::default();
    let base = gz(&layer_tar(&[("a/old", "o"), ("a/keep", "k")]));
    let top = gz(&layer_tar(&[("a/.wh.old", ""), ("a/new", "n")]));
    f.push(
        "egret/ml:1",
        fake_image(vec![base, top], serde_json::json!({})),
    );
    let p = e.pull(&f, "reg.example/egret/ml:1").unwrap();
    let o = Command::new("unsquashfs")
        .arg("-lls")
        .arg(&p.image.squashfs)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.contains("squashfs-root/a/keep") && listing.contains("squashfs-root/a/new"));
    assert!(!listing.contains("old"), "{listing}");
    assert_eq!(
        p.image.meta,
        ImageMeta {
            image_id: p.image.meta.image_id.clone(),
            platform: p.image.meta.platform.clone(),
            ..ImageMeta::default()
        }
    );
}

#[test]
fn archive_formats_are_detected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("d.tar");
    std::fs::write(
        &docker,
        layer_tar(&[("abc/layer.tar", "x"), ("manifest.json", "[]")]),
    )
    .unwrap();
    assert_eq!(
        detect_archive(&docker).unwrap(),
        ArchiveFormat::DockerArchive
    );
    let oci = dir.path().join("o.tar.gz");
    std::fs::write(
        &oci,
        gz(&layer_tar(&[("./oci-layout", "{}"), ("index.json", "{}")])),
    )
    .unwrap();
    assert_eq!(detect_archive(&oci).unwrap(), ArchiveFormat::OciArchive);
    let neither = dir.path().join("n.tar");
    std::fs::write(&neither, layer_tar(&[("x", "y")])).unwrap();
    let e = detect_archive(&neither).unwrap_err().to_string();
    assert!(e.contains("n.tar") && e.contains("neither"), "{e}");
    let e = detect_archive(&dir.path().join("missing.tar"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.tar") && e.contains("cannot open"),
        "{e}"
    );
}

/// A step handed the digest its srun resolved: no registry request when the user's own index
/// already names it; by digest (never by the moved tag) otherwise; the tag then names it.
#[test]
fn a_steps_resolved_digest_is_used_without_asking_the_registry_when_known() {
    let e = env();
    let f = Fake::default();
    let tag = ImageRef::parse("reg.example/egret/app:1").unwrap();
    let d1 = f.push("egret/app:1", simple_image("v1"));
    let step = |d: &str| pull_for_step(&e.cfg, &e.store, &f, &tag, Some(d), &e.opts);
    // Not in the index yet: fetched by digest, recorded under the tag.
    let p = step(&d1).unwrap();
    assert_eq!(p.status, PullStatus::Downloaded);
    assert_eq!(f.inspects.load(Ordering::SeqCst), 1);
    assert_eq!(e.store.find(&tag).unwrap().unwrap().registry_digest, d1);
    // Known: nothing asked of the registry.
    let p = step(&d1).unwrap();
    assert_eq!(p.status, PullStatus::UpToDate);
    assert_eq!(
        f.inspects.load(Ordering::SeqCst),
        1,
        "no skopeo for a stored digest"
    );
    // The tag moves after srun resolved it: the step still gets what srun resolved.
    let d2 = f.push("egret/app:1", simple_image("v2"));
    let p = step(&d1).unwrap();
    assert_eq!(unsquash_cat(&p.image.squashfs, "etc/content"), "v1");
    // The next step's srun sees the new digest: fetched by digest, the tag follows.
    let p = step(&d2).unwrap();
    assert_eq!(unsquash_cat(&p.image.squashfs, "etc/content"), "v2");
    assert_eq!(e.store.find(&tag).unwrap().unwrap().registry_digest, d2);
    // A digest stored for nobody of this index is asked for (as the user), and refused when
    // the registry does not have it.
    let bogus = format!("sha256:{}", "0".repeat(64));
    assert!(step(&bogus).is_err());
    assert_eq!(f.inspects.load(Ordering::SeqCst), 3);
}

#[test]
fn layers_stream_into_the_flattener_while_the_download_runs() {
    let e = env();
    let f = Fake::copying(Copying::WaitForReader);
    // A base layer big enough (16 MiB, incompressible, uncompressed) that reading it takes
    // a while: the fake sees its descriptor open.
    let mut noise = Vec::with_capacity(16 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 16 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(noise.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "a/noise", &noise[..]).unwrap();
    let base = b.into_inner().unwrap();
    let top = gz(&layer_tar(&[("a/.wh.old", ""), ("a/new", "n")]));
    f.push(
        "egret/ml:1",
        fake_image(vec![base, top], serde_json::json!({"Cmd": ["/x"]})),
    );
    // The copy only finishes once a layer is being read: a pull that waited for the whole
    // download before flattening would fail here.
    let p = e.pull(&f, "reg.example/egret/ml:1").unwrap();
    assert_eq!(unsquash_cat(&p.image.squashfs, "a/new"), "n");
    assert_eq!(p.image.meta.cmd, Some(vec!["/x".to_string()]));
    let text = e.text();
    let (dl, sq) = (
        text.find("egret: downloading").unwrap(),
        text.find("egret: squashing 2 layers").unwrap(),
    );
    assert!(dl < sq, "{text}");
    e.assert_clean();
}

#[test]
fn a_layer_written_in_pieces_is_followed_to_its_size() {
    let e = env();
    let f = Fake::copying(Copying::InPieces);
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    push_layers(&f, &[&[("big", &big)], &[("top", "t")]]);
    let p = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(unsquash_cat(&p.image.squashfs, "big"), big);
    assert_eq!(unsquash_cat(&p.image.squashfs, "top"), "t");
    e.assert_clean();
}

#[test]
fn a_download_failing_midway_reports_the_download_error_and_leaves_nothing() {
    let e = env();
    let f = Fake::copying(Copying::FailAfterOneLayer);
    push_layers(&f, &[&[("base", "b")], &[("top", "t")]]);
    let err = e.pull(&f, "reg.example/egret/app:1").unwrap_err();
    assert!(
        matches!(err, ImportError::Fetch(FetchError::Failed { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("connection reset"), "{err}");
    e.assert_nothing_stored();
}

#[test]
fn an_index_is_followed_by_the_platform_manifest_fetched_by_digest() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:amd", simple_image("v1"));
    push_index(&f, &d);
    let p = e.pull(&f, "reg.example/egret/app:multi").unwrap();
    assert_eq!(p.image.digest, d);
    assert_eq!(unsquash_cat(&p.image.squashfs, "etc/content"), "v1");
    assert_eq!(
        f.inspects.load(Ordering::SeqCst),
        2,
        "the tag, then the platform's manifest by its digest"
    );
}

#[test]
fn a_platform_manifest_that_does_not_match_the_index_is_refused() {
    let e = env();
    let f = Fake::default();
    let d = f.push("egret/app:amd", simple_image("v1"));
    // The registry answers the platform digest with another manifest.
    f.images
        .lock()
        .unwrap()
        .insert(format!("egret/app@{d}"), simple_image("forged"));
    push_index(&f, &d);
    let err = e.pull(&f, "reg.example/egret/app:multi").unwrap_err();
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{err}");
    e.assert_nothing_stored();
}

#[test]
fn a_config_the_copy_converted_is_fetched_from_the_registry_and_checked() {
    let e = env();
    let f = Fake::copying(Copying::ConvertingConfig);
    let d = f.push("egret/app:1", simple_image("v1"));
    let p = e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(p.image.digest, d);
    assert_eq!(unsquash_cat(&p.image.squashfs, "etc/content"), "v1");
    assert_eq!(p.image.meta.cmd, Some(vec!["/bin/sh".to_string()]));
    assert_eq!(p.image.meta.user.as_deref(), Some("1000"));
    assert_eq!(f.config_inspects.load(Ordering::SeqCst), 1);
    e.assert_clean();
}

#[test]
fn a_config_in_the_layout_is_read_without_asking_the_registry() {
    let e = env();
    let f = Fake::default();
    f.push("egret/app:1", simple_image("v1"));
    e.pull(&f, "reg.example/egret/app:1").unwrap();
    assert_eq!(f.config_inspects.load(Ordering::SeqCst), 0);
}

#[test]
fn a_fetched_config_the_manifest_does_not_name_is_refused() {
    let e = env();
    let f = Fake {
        copying: Copying::ConvertingConfig,
        forged_config: true,
        ..Fake::default()
    };
    f.push("egret/app:1", simple_image("v1"));
    let err = e.pull(&f, "reg.example/egret/app:1").unwrap_err();
    assert!(
        err.to_string()
            .contains("is not the one its manifest names"),
        "{err}"
    );
    e.assert_nothing_stored();
}
