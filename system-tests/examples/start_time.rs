//! A measurement, not a test: one complete container start of busybox `true`
//! (private namespace, tmpfs, loop device, overlay, /etc files, config.json, `runc run`, delete,
//! teardown) against a bare `runc run` of an already assembled bundle.
//!
//! As root after `make up`: `cargo run --release -p egret-system-tests --example start_time`
//! (`make bench` measures the same through the installed CLI).

use egret_test_support::engine_run as run_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use egret_engine::container::rootfs;
use egret_engine::container::runtime::{self, Runc};
use egret_engine::container::spec::{self, SpecOptions};
use run_support::*;

const RUNS: usize = 21;

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn main() {
    let w = World::new(|_| {});
    let req = w.request();
    let p = process(&["true"]);
    let runc = Runc::from_config(&w.cfg);
    let quiet = |id: &str, dir: &std::path::Path| {
        let st = runc
            .command(id, dir, 0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        runc.delete_force(id);
    };

    let mut full = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        in_private_ns(|| {
            let dir = w.cfg.oci_bundle_dir.join(runtime::random_hex());
            let rootfs = rootfs::prepare_rootfs(&w.cfg, &dir, &req).unwrap();
            let s = spec::build_spec(
                &w.cfg,
                &rootfs,
                &req.meta,
                &req.user,
                &p,
                &SpecOptions::default(),
            )
            .unwrap();
            spec::write_spec(&dir, &s).unwrap();
            quiet(&runtime::container_id(), &dir);
            rootfs.teardown().unwrap();
        });
        full.push(t.elapsed());
    }

    let mut prepare = Vec::new();
    let mut raw = Vec::new();
    in_private_ns(|| {
        let dir = w.cfg.oci_bundle_dir.join(runtime::random_hex());
        let t = Instant::now();
        let rootfs = rootfs::prepare_rootfs(&w.cfg, &dir, &req).unwrap();
        let s = spec::build_spec(
            &w.cfg,
            &rootfs,
            &req.meta,
            &req.user,
            &p,
            &SpecOptions::default(),
        )
        .unwrap();
        spec::write_spec(&dir, &s).unwrap();
        prepare.push(t.elapsed());
        for _ in 0..RUNS {
            let t = Instant::now();
            quiet(&runtime::container_id(), &dir);
            raw.push(t.elapsed());
        }
        rootfs.teardown().unwrap();
    });
    println!(
        "egret prepare + runc run + delete + teardown: {}",
        summary(full)
    );
    println!(
        "prepare + config.json alone:                 {}",
        summary(prepare)
    );
    println!(
        "bare runc run + delete of a ready bundle:     {}",
        summary(raw)
    );
    w.assert_clean();
}
