//! hooks.d files (OCI hooks schema 1.0.0): never a panic, whatever the admin's file holds.
#![no_main]
use egret_engine::hooks::schema;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = schema::parse_hook(Path::new("/etc/egret/hooks.d/fuzz.json"), s);
});
