# egret: build, install, local test cluster, tests. Run as root on Debian 12.
#   make up      install dependencies, build, install, start Slurm (n1, n2) + registry, push
#                the test images, and run a containerised srun as a demo
#   make test    lint, install, make sure the cluster is up, run every test
#   make check   the quick loop: fmt, clippy, unit tests (no root, no cluster)
#   make bench   benchmarks (builds the big test images first)
#   make wipe    remove everything egret and its scripts put on this machine (CI runs it first)
#   make fuzz    the fuzz targets of fuzz/, FUZZ_SECONDS (600) each

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# rustup installs cargo in ~/.cargo/bin, which non-login shells (CI) may not have in PATH
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
PYTHON ?= python3
REGISTRY := 127.0.0.1:5000
DEMO_IMAGE := $(REGISTRY)/egret/busybox

.PHONY: help deps build install slurm slurm-multi shared-fs registry images images-big cluster demo up \
        fmt-check clippy doc-paths lint check unit-test test test-infra bench fuzz fuzz-smoke wipe

help:
	@echo "targets: up test bench check | deps build install cluster (slurm registry images) demo |"
	@echo "         lint (fmt-check clippy) unit-test test-infra images-big wipe"

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace

install: build
	bash scripts/install.sh

slurm:
	bash scripts/cluster-up.sh

# The eight-node cluster with node-local directories, and the network filesystem its nodes can
# share a store on (the multi-node tests and benchmarks).
slurm-multi: shared-fs
	bash scripts/cluster-up.sh multi

shared-fs:
	bash scripts/shared-fs-up.sh

registry:
	bash scripts/registry-up.sh

images: registry
	$(PYTHON) scripts/build-test-images.py

images-big: registry
	$(PYTHON) scripts/build-test-images.py --big

cluster: slurm slurm-multi registry images

# The demo fails (and with it `make up`) unless a containerised step really ran busybox.
demo:
	@echo "+ srun --container-image=$(DEMO_IMAGE) cat /etc/os-release"
	@out=$$(timeout 300 srun --container-image=$(DEMO_IMAGE) cat /etc/os-release 2>&1) \
	    || { echo "$$out"; echo "demo FAILED: containerised srun did not run" >&2; exit 1; }; \
	echo "$$out"; \
	grep -q '^ID=egret-busybox$$' <<<"$$out" \
	    || { echo "demo FAILED: /etc/os-release is not the busybox image's" >&2; exit 1; }

# Sequential on purpose (also under make -j).
up:
	$(MAKE) deps
	$(MAKE) install
	$(MAKE) cluster
	$(MAKE) demo

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every path and test the docs name exists.
doc-paths:
	$(PYTHON) scripts/check-doc-paths.py

lint: fmt-check clippy doc-paths

# Unit tests (the crates' own #[cfg(test)] modules): no root, no cluster, in parallel.
unit-test:
	$(CARGO) test --release --workspace --lib --bins --no-fail-fast

# A newcomer's first minutes: formatting, lints and the unit tests; no root, no cluster.
check: lint unit-test

# System tests (system-tests/tests/) talk to the installed binaries, Slurm and the registry:
# one at a time, after the unit tests.
test: lint
	$(MAKE) install
	$(MAKE) cluster
	$(MAKE) unit-test
	$(CARGO) test --release --workspace --test '*' --no-fail-fast -- --test-threads=1
	$(MAKE) fuzz-smoke

# Everything egret, its tests and its scripts put on this machine (not Debian packages, not the
# Rust toolchain): the next `make up` starts where a fresh machine starts.
wipe:
	bash scripts/wipe-state.sh

# Fuzz targets (fuzz/, cargo-fuzz on stable: no sanitizer). `make test` runs each briefly;
# `make fuzz` longer (FUZZ_SECONDS per target).
FUZZ_TARGETS := image_reference mount_specs hooks_json egret_json layer_flattener
FUZZ_SECONDS ?= 600
fuzz:
	for t in $(FUZZ_TARGETS); do \
	    $(CARGO) fuzz run -s none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=8

# Just the infrastructure checks (cluster, registry, test images).
test-infra:
	$(CARGO) test --release --test infra -- --test-threads=1

bench: install images-big
	bash scripts/bench.sh
