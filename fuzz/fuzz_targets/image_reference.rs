//! Image references (Docker and enroot forms, `.sqsh` paths): never a panic, and what parses
//! prints back to something that parses to the same reference.
#![no_main]
use egret_engine::image::reference::{ImageRef, ImageSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ImageSource::parse(s);
    if let Ok(r) = ImageRef::parse(s) {
        let again = ImageRef::parse(&r.display()).expect("a displayed reference parses");
        assert_eq!(again.display(), r.display());
    }
});
