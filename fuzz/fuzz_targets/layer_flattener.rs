//! The layer flattener on arbitrary bytes as one or two layers (tar, compressed or not): never
//! a panic; it either refuses the input or writes a tar stream.
#![no_main]
use egret_engine::image::flatten::{flatten, LayerInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = data.split_at(data.len() / 2);
    let layers = vec![
        LayerInput {
            name: "sha256:a".into(),
            reader: Box::new(a),
        },
        LayerInput {
            name: "sha256:b".into(),
            reader: Box::new(b),
        },
    ];
    let _ = flatten(layers, std::io::sink(), &mut |_| {});
});
