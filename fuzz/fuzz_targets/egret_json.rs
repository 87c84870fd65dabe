//! egret.json: never a panic.
#![no_main]
use egret_engine::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse_str(s, Path::new("/etc/egret/egret.json"));
});
