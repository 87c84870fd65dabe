//! Mount and device specs (Sarus `--mount`, pyxis `--container-mounts`, `--device`): never a
//! panic; every accepted destination is absolute.
#![no_main]
use egret_engine::container::mounts;
use egret_engine::container::mounts::pyxis::{self, PyxisMount};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = mounts::parse_sarus_mount(s) {
        assert!(m.destination.is_absolute());
    }
    if let Ok(all) = pyxis::parse(s, Path::new("/submit")) {
        for m in all {
            match m {
                PyxisMount::Bind(b, _) => assert!(b.destination.is_absolute()),
                PyxisMount::Tmpfs { destination, .. } | PyxisMount::Umount(destination) => {
                    assert!(destination.is_absolute())
                }
            }
        }
    }
    if let Ok(d) = mounts::parse_device(s) {
        assert!(d.container.is_absolute() && !d.access.is_empty());
    }
});
