#!/usr/bin/env bash
# egret benchmarks (`make bench`). Placeholder: the measurements (import time, start time of
# the 1 GiB "huge" image against busybox, srun overhead) are added with the engine.
# Images: 127.0.0.1:5000/egret/{busybox,big,huge} (built by `make images-big`).
set -euo pipefail
command -v egret >/dev/null || { echo "egret is not installed: run make install" >&2; exit 1; }
egret --version
