#!/usr/bin/env bash
# egret benchmarks (`make bench`). Run as root on a machine brought up with `make up`.
#
# Measures, in one run, and prints a table of ratios with their targets (PASS/MISS):
#   1  import:  `egret pull` of egret/big into a fresh store  vs  the Sarus pipeline on the same
#               image (skopeo copy -> umoci raw unpack --rootless -> mksquashfs), same compression
#               (zstd level 3); page caches dropped before every run. Extra lines: both with gzip
#               (mksquashfs' default, what Sarus uses without mksquashfsOptions).
#   2  start:   `egret run egret/busybox /bin/true` with the installed /etc/egret/egret.json (its
#               hooks, seccomp profile, security checks, the system store)  vs  raw `runc run` of a
#               bundle of the same image (umoci unpack + `runc spec`); 2b: the same bundle with
#               the installed seccomp profile
#   3  size:    `egret run egret/huge`  vs  `egret run egret/busybox`; the same through srun
#   4  srun:    `srun --container-image=egret/busybox /bin/true`  vs  plain `srun /bin/true`,
#               -n1 and -n8, as separate jobs and as steps inside one salloc; target: the
#               per-step overhead <= +20 ms (issue 16)
#   7  named:   in the salloc, a named container's second step vs its first (`--container-name`)
#      save:    `srun --container-save` of egret/big vs the same step without it (time), and the
#               saved file's size vs the store's squashfs of egret/big
#   6  mpi:     MPI ping-pong latency (8 B, 2 ranks on one node) of the same program:
#               `srun --container-image=egret/mpich --mpi-hook` (host MPICH bind-mounted by the MPI
#               hook)  vs  plain `srun` with the host MPICH (scripts/bench/mpi-pingpong.sh)
#   8  memory:  peak resident memory (VmHWM) of `egret run` and of the step's egret-launcher
#   5  timeline (informational, needs perf): scheduler tracepoints around one extra egret pull
#               and a few single runs of each kind, printed as per-phase medians (where the
#               time goes: skopeo, mksquashfs, launcher, runc, ...)
# A MISS never fails: the exit status is non-zero only when a measurement could not be made.
# Takes about 6 minutes on a 2-core machine (2 of them for section 6).
#
# Idempotent; everything it creates lives in one scratch directory removed at exit (the system
# store only gains the busybox and huge images, which srun needs). It does not rebuild egret:
# `make bench` installs first. It runs `make images-big` itself (a no-op when they are pushed).
#
# Knobs (environment):
#   BENCH_IMPORT_RUNS (3)    BENCH_GZIP_RUNS (1; 0 skips the gzip lines)
#   BENCH_START_RUNS (100)   BENCH_SRUN_RUNS (40)
#   BENCH_ROUND_SIZE (1)     the short benchmarks run in rounds of that many runs per command, the
#                            commands alternating (A B C A B C ...), and the rounds are pooled
#   BENCH_MPI_RUNS (15)      BENCH_MPI_ITERS (50000 round trips per run)
#   BENCH_SAVE_RUNS (2)      BENCH_MEM_RUNS (3)
#   BENCH_SKIP               space-separated sections to skip: import start srun salloc save memory
#                            mpi trace multinode
#   BENCH_MULTI_RUNS (1)     runs per mode and node count of the multi-node first step
#   BENCH_OUT                a directory that receives the raw results, table.txt and table.md
#   BENCH_SCRATCH_BASE       where the scratch directory goes (/var/lib/egret-bench): egret's
#                            security checks refuse a store below a directory others can write
#                            (/tmp, /var/tmp), so it must be root-owned, mode 0755, as its parents
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/scripts/bench
REGISTRY=${BENCH_REGISTRY:-127.0.0.1:5000}
BIG=$REGISTRY/egret/big
HUGE=$REGISTRY/egret/huge
BUSYBOX=$REGISTRY/egret/busybox
IMPORT_RUNS=${BENCH_IMPORT_RUNS:-3}
GZIP_RUNS=${BENCH_GZIP_RUNS:-1}
START_RUNS=${BENCH_START_RUNS:-100}
SRUN_RUNS=${BENCH_SRUN_RUNS:-40}
MPI_RUNS=${BENCH_MPI_RUNS:-15}
MPI_ITERS=${BENCH_MPI_ITERS:-50000}
ROUND_SIZE=${BENCH_ROUND_SIZE:-1}
SKIP=" ${BENCH_SKIP:-} "
ZSTD_ARGS=(-comp zstd -Xcompression-level 3)  # egret's default mksquashfsOptions
GZIP_ARGS=(-comp gzip)  # mksquashfs' default compressor and level (gzip -9), Sarus' default
ZSTD_OPTS="${ZSTD_ARGS[*]}"
GZIP_OPTS="${GZIP_ARGS[*]}"
SYSTEM_CONFIG=/etc/egret/egret.json
STEP_TIMEOUT=600

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 2; }
skipped() { [[ $SKIP == *" $1 "* ]]; }

[ "$(id -u)" -eq 0 ] || die "must run as root (drops page caches, runs runc, loop-mounts images)"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
for n in IMPORT_RUNS GZIP_RUNS START_RUNS SRUN_RUNS ROUND_SIZE MPI_RUNS MPI_ITERS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "BENCH_$n must be a number (got '${!n}')"
done
((ROUND_SIZE >= 1)) || ROUND_SIZE=1

if ! command -v hyperfine >/dev/null 2>&1; then
    log "hyperfine missing: installing it (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends hyperfine >&2 \
        || die "could not install hyperfine"
fi
for cmd in egret hyperfine skopeo umoci mksquashfs runc srun salloc sinfo python3 timeout; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run make up / make install first)"
done
[ -r "$SYSTEM_CONFIG" ] || die "$SYSTEM_CONFIG missing: run make install"

SCRATCH_BASE=${BENCH_SCRATCH_BASE:-/var/lib/egret-bench}
install -d -o root -g root -m 0755 "$SCRATCH_BASE" || die "cannot create $SCRATCH_BASE"
# The scratch stores must pass the checks `egret run` applies: every directory above them
# root-owned and writable by nobody else.
d=$SCRATCH_BASE
while :; do
    read -r owner mode < <(stat -c '%u %a' "$d")
    [ "$owner" = 0 ] && (( (8#$mode & 8#022) == 0 )) \
        || die "$d (owner uid $owner, mode $mode) must be root-owned and not writable by group or others: egret refuses a store below it; set BENCH_SCRATCH_BASE to such a directory"
    [ "$d" = / ] && break
    d=$(dirname "$d")
done
SCRATCH=$(mktemp -d "$SCRATCH_BASE/run.XXXXXX") || die "mktemp in $SCRATCH_BASE failed"
chmod 0755 "$SCRATCH"
RES=$SCRATCH/results
mkdir -p "$RES"
: >"$RES/failures.txt"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? c
    trap - EXIT INT TERM
    # runc state of an interrupted raw run (its containers are gone with the run itself)
    if [ -d "$SCRATCH/runc-state" ]; then
        for c in "$SCRATCH"/runc-state/*/; do
            [ -d "$c" ] && runc --root "$SCRATCH/runc-state" delete --force "$(basename "$c")" 2>/dev/null
        done
    fi
    rm -rf --one-file-system "$SCRATCH"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

fail() { # fail NAME MESSAGE: a measurement that could not be made
    printf '%s\t%s\n' "$1" "$2" >>"$RES/failures.txt"
    log "FAILED: $1: $2"
}

drop_caches() {
    sync
    if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        [ -e "$SCRATCH/.nodrop" ] || log "warning: cannot drop page caches: imports run warm"
        touch "$SCRATCH/.nodrop"
    fi
}

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.4f}')" "$1" "$2"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES/import.tsv"; } # LABEL RUN SECONDS
record_size() { printf '%s\t%s\n' "$1" "$2" >>"$RES/sizes.tsv"; }

# A copy of the system config with the store, its temp dir and the compression in SCRATCH.
make_config() { # make_config FILE STORE_DIR MKSQUASHFS_OPTIONS
    python3 - "$SYSTEM_CONFIG" "$@" <<'EOF'
import json, sys
src, out, store, opts = sys.argv[1:5]
with open(src) as f:
    cfg = json.load(f)
cfg["localRepositoryBaseDir"] = store
cfg["tempDir"] = store + "-tmp"
cfg["mksquashfsOptions"] = opts
with open(out, "w") as f:
    json.dump(cfg, f, indent=2)
EOF
}

# ---------------------------------------------------------------------------------------------
log "scratch: $SCRATCH"
python3 - "$RES/meta.json" <<'EOF'
import json, os, platform, subprocess, sys, time
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except Exception:
        return "?"
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
mem = "?"
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"; break
except OSError:
    pass
meta = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
    "cpu": cpu, "memory": mem, "loadavg_start": open("/proc/loadavg").read().split()[:3],
    "egret": out("egret", "--version"), "runc": out("runc", "--version"),
    "skopeo": out("skopeo", "--version"), "umoci": out("umoci", "--version"),
    "mksquashfs": out("mksquashfs", "-version"), "hyperfine": out("hyperfine", "--version"),
    "slurm": out("srun", "--version"),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

log "test images: make images-big (pushes egret/big and egret/huge unless already there)"
make -C "$REPO" --no-print-directory images-big >"$SCRATCH/images.log" 2>&1 \
    || { tail -20 "$SCRATCH/images.log" >&2; die "make images-big failed"; }

# Compressed size and layer count of an image, from its manifest (informational).
image_info() { # image_info REF LABEL
    skopeo inspect --raw "docker://$1" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
layers = m.get("layers", [])
size = sum(l.get("size", 0) for l in layers)
print(sys.argv[1], len(layers), size, sep="\t")' "$2" \
        >>"$RES/images.tsv" || true
}
image_info "$BIG" big
image_info "$HUGE" huge
image_info "$BUSYBOX" busybox

# ---------------------------------------------------------------------------------------------
# 1. Import
egret_import() { # egret_import LABEL RUN MKSQUASHFS_OPTIONS
    local label=$1 run=$2 store=$SCRATCH/store-$1 cfg=$SCRATCH/egret-$1.json t0 t1
    rm -rf "$store" "$store-tmp"
    mkdir -p "$store" "$store-tmp"
    make_config "$cfg" "$store" "$3" || { fail "$label" "cannot write $cfg"; return 1; }
    drop_caches
    t0=$(now)
    if ! timeout "$STEP_TIMEOUT" egret --config "$cfg" pull "$BIG" >"$SCRATCH/$label.log" 2>&1; then
        tail -5 "$SCRATCH/$label.log" >&2
        fail "$label" "egret pull $BIG failed"
        return 1
    fi
    t1=$(now)
    record "$label" "$run" "$(elapsed "$t0" "$t1")"
    record_size "$label" "$(find "$store/images" -name '*.squashfs' -printf '%s\n' | head -1)"
    log "  $label run $run: $(elapsed "$t0" "$t1") s"
    rm -rf "$store" "$store-tmp"
}

sarus_import() { # sarus_import LABEL RUN MKSQUASHFS_OPTIONS...
    local label=$1 run=$2 dir=$SCRATCH/sarus-$1 t0 t1 t2 t3
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    drop_caches
    t0=$(now)
    if ! timeout "$STEP_TIMEOUT" skopeo copy --quiet "docker://$BIG" "oci:$dir/oci:latest" \
        >"$SCRATCH/$label.log" 2>&1; then
        tail -5 "$SCRATCH/$label.log" >&2; fail "$label" "skopeo copy failed"; return 1
    fi
    t1=$(now)
    if ! timeout "$STEP_TIMEOUT" umoci raw unpack --rootless --image "$dir/oci:latest" "$dir/rootfs" \
        >>"$SCRATCH/$label.log" 2>&1; then
        tail -5 "$SCRATCH/$label.log" >&2; fail "$label" "umoci raw unpack failed"; return 1
    fi
    t2=$(now)
    if ! timeout "$STEP_TIMEOUT" mksquashfs "$dir/rootfs" "$dir/image.squashfs" -noappend -quiet \
        -no-progress "$@" >>"$SCRATCH/$label.log" 2>&1; then
        tail -5 "$SCRATCH/$label.log" >&2; fail "$label" "mksquashfs failed"; return 1
    fi
    t3=$(now)
    record "$label" "$run" "$(elapsed "$t0" "$t3")"
    record "$label:skopeo" "$run" "$(elapsed "$t0" "$t1")"
    record "$label:umoci" "$run" "$(elapsed "$t1" "$t2")"
    record "$label:mksquashfs" "$run" "$(elapsed "$t2" "$t3")"
    record_size "$label" "$(stat -c %s "$dir/image.squashfs")"
    record_size "$label:rootfs" "$(du -sb "$dir/rootfs" | cut -f1)"
    log "  $label run $run: $(elapsed "$t0" "$t3") s (skopeo $(elapsed "$t0" "$t1"), umoci $(elapsed "$t1" "$t2"), mksquashfs $(elapsed "$t2" "$t3"))"
    rm -rf "$dir"
}

if skipped import; then
    log "1. import: skipped"
else
    log "1. import of $BIG: $IMPORT_RUNS runs each, zstd level 3, caches dropped before each run"
    for ((i = 1; i <= IMPORT_RUNS; i++)); do
        # alternate the order so that a slow phase of the machine hits both sides
        if ((i % 2)); then
            egret_import egret-zstd "$i" "$ZSTD_OPTS"
            sarus_import sarus-zstd "$i" "${ZSTD_ARGS[@]}"
        else
            sarus_import sarus-zstd "$i" "${ZSTD_ARGS[@]}"
            egret_import egret-zstd "$i" "$ZSTD_OPTS"
        fi
    done
    if ! skipped trace && command -v perf >/dev/null 2>&1; then
        log "1t. one more egret pull (not counted) under perf sched tracepoints, for the timeline"
        rm -rf "$SCRATCH/store-traced" "$SCRATCH/store-traced-tmp"
        mkdir -p "$SCRATCH/store-traced" "$SCRATCH/store-traced-tmp"
        make_config "$SCRATCH/egret-traced.json" "$SCRATCH/store-traced" "$ZSTD_OPTS"
        drop_caches
        if ! { timeout "$STEP_TIMEOUT" perf record -q -a -o "$SCRATCH/perf-pull.data" \
            -e sched:sched_process_exec -e sched:sched_process_exit -e sched:sched_process_fork -- \
            egret --config "$SCRATCH/egret-traced.json" pull "$BIG" >"$SCRATCH/perf-pull.log" 2>&1 &&
            perf script -i "$SCRATCH/perf-pull.data" -F comm,pid,tid,time,event,trace \
                >"$SCRATCH/trace-pull.txt" 2>>"$SCRATCH/perf-pull.log"; }; then
            log "warning: traced egret pull failed (informational only)"
        fi
        rm -rf "$SCRATCH/store-traced" "$SCRATCH/store-traced-tmp" "$SCRATCH/perf-pull.data"
    fi
    if ((GZIP_RUNS > 0)); then
        log "1b. import with gzip (mksquashfs default, Sarus without mksquashfsOptions): $GZIP_RUNS run(s) each"
        for ((i = 1; i <= GZIP_RUNS; i++)); do
            egret_import egret-gzip "$i" "$GZIP_OPTS"
            sarus_import sarus-gzip "$i" "${GZIP_ARGS[@]}"
        done
    fi
fi

# ---------------------------------------------------------------------------------------------
# Images for the run benchmarks: the system store, for `egret run` and srun alike.
have_run_images=1
RAW_BUNDLE=

# `egret run` is measured with the installed configuration (/etc/egret/egret.json: its hooks,
# seccomp profile, security checks and the system store), as users run it.
log "system store gets $BUSYBOX and $HUGE (egret run with the installed config, srun)"
for ref in "$BUSYBOX" "$HUGE"; do
    timeout "$STEP_TIMEOUT" egret pull "$ref" >"$SCRATCH/pull-system.log" 2>&1 \
        || { tail -5 "$SCRATCH/pull-system.log" >&2; fail "pull $ref" "egret pull (system store) failed"; have_run_images=0; }
done

LOGDIR=$SCRATCH
# shellcheck source=scripts/bench/rounds.sh
. "$HERE/rounds.sh"

# ---------------------------------------------------------------------------------------------
# 2 + 3. Start time: raw runc, egret run busybox, egret run huge
if skipped start; then
    log "2-3. start: skipped"
elif ((have_run_images)); then
    log "2. raw runc bundle from $BUSYBOX (skopeo copy + umoci raw unpack + runc spec)"
    B=$SCRATCH/runc-bundle
    mkdir -p "$B" "$SCRATCH/runc-state"
    if skopeo copy --quiet "docker://$BUSYBOX" "oci:$SCRATCH/busybox-oci:latest" >"$SCRATCH/bundle.log" 2>&1 &&
        umoci raw unpack --image "$SCRATCH/busybox-oci:latest" "$B/rootfs" >>"$SCRATCH/bundle.log" 2>&1 &&
        (cd "$B" && runc spec) >>"$SCRATCH/bundle.log" 2>&1 &&
        python3 - "$B/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(p, "w"), indent=2)
EOF
    then
        RAW_BUNDLE=$B
        # 2b's reference: the same bundle with the installed seccomp profile, as egret's
        # config.json carries it (runc compiles the filter at every start).
        BS=$SCRATCH/runc-bundle-seccomp
        mkdir -p "$BS" &&
            python3 "$HERE/with-seccomp.py" "$B/config.json" "$BS/config.json" /etc/egret/egret.json ||
            fail start "could not prepare the raw runc bundle with the seccomp profile"
        log "2. start: runc run (plain, with the seccomp profile) / egret run busybox, $START_RUNS runs each"
        bench_rounds start "$START_RUNS" 5 \
            runc "runc --root $SCRATCH/runc-state run -b $B egret-bench-$$" \
            runc-seccomp "runc --root $SCRATCH/runc-state run -b $BS egret-bench-s$$" \
            egret-busybox "egret run $BUSYBOX /bin/true" ||
            fail start "runc run / egret run busybox"
        log "3. size: egret run huge / egret run busybox, $START_RUNS runs each"
        bench_rounds size "$START_RUNS" 5 \
            size-busybox "egret run $BUSYBOX /bin/true" \
            size-huge "egret run $HUGE /bin/true" ||
            fail size "egret run huge / egret run busybox"
    else
        tail -5 "$SCRATCH/bundle.log" >&2
        fail start "could not prepare the raw runc bundle"
    fi
else
    fail start "images missing"
fi

# ---------------------------------------------------------------------------------------------
# 3b + 4. srun: plain steps vs containerised steps, each step its own job
if skipped srun && skipped salloc; then
    log "4. srun: skipped"
elif ! sinfo -h -o %a >/dev/null 2>&1; then
    fail srun "Slurm does not answer (make up)"
else
    if ! skipped srun; then
        log "3b-4. srun steps as separate jobs: $SRUN_RUNS runs each"
        bench_rounds srun "$SRUN_RUNS" 3 \
            srun-plain-n1 "srun -n1 /bin/true" \
            srun-busybox-n1 "srun -n1 --container-image=$BUSYBOX /bin/true" \
            srun-huge-n1 "srun -n1 --container-image=$HUGE /bin/true" \
            srun-plain-n8 "srun -n8 --cpu-bind=none /bin/true" \
            srun-busybox-n8 "srun -n8 --cpu-bind=none --container-image=$BUSYBOX /bin/true" ||
            fail srun "srun steps as separate jobs"
    fi
    if ! skipped salloc; then
        log "4c. srun steps inside one allocation (salloc -n8): $SRUN_RUNS runs each"
        if ! timeout "$STEP_TIMEOUT" salloc -n8 --immediate=120 --job-name=egret-bench \
            bash "$HERE/alloc-steps.sh" "$RES" "$SCRATCH" "$SRUN_RUNS" "$ROUND_SIZE" "$BUSYBOX" "$HUGE" \
            >"$SCRATCH/salloc.log" 2>&1; then
            tail -15 "$SCRATCH/salloc.log" >&2
            rm -f "$RES"/alloc-round*.json
            fail salloc "srun steps inside salloc -n8 failed"
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# 7b. --container-save of the 500 MB image: the step's time with and without saving, and the
# saved file's size against the squashfs it came from.
SAVE_RUNS=${BENCH_SAVE_RUNS:-2}
if skipped save; then
    log "7b. save: skipped"
elif ! sinfo -h -o %a >/dev/null 2>&1; then
    fail save "Slurm does not answer (make up)"
else
    log "7b. srun --container-save of $BIG: $SAVE_RUNS runs"
    timeout "$STEP_TIMEOUT" egret pull "$BIG" >"$SCRATCH/pull-big.log" 2>&1 ||
        fail save "egret pull $BIG (system store) failed"
    for ((i = 1; i <= SAVE_RUNS; i++)); do
        for label in run-big save-big; do
            extra=()
            [ "$label" = save-big ] && extra=(--container-save="$SCRATCH/saved.sqsh")
            rm -f "$SCRATCH/saved.sqsh"
            t0=$(now)
            if timeout "$STEP_TIMEOUT" srun -n1 --container-image="$BIG" "${extra[@]}" /bin/true \
                >"$SCRATCH/save.log" 2>&1; then
                record "$label" "$i" "$(elapsed "$t0" "$(now)")"
            else
                tail -5 "$SCRATCH/save.log" >&2
                fail save "srun $label failed"
            fi
        done
    done
    if [ -f "$SCRATCH/saved.sqsh" ]; then
        record_size saved-big "$(stat -c %s "$SCRATCH/saved.sqsh")"
        digest=$(egret images --digests 2>/dev/null | awk '$1 ~ /(^|\/)egret\/big$/ && $2 == "latest" {print $3}' | head -1)
        src=/var/lib/egret/store/images/${digest/:/-}.squashfs
        [ -f "$src" ] && record_size store-big "$(stat -c %s "$src")"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 8. Peak memory of `egret run` and of the step's egret-launcher (VmHWM, own, not children's)
MEM_RUNS=${BENCH_MEM_RUNS:-3}
if skipped memory; then
    log "8. memory: skipped"
elif ! sinfo -h -o %a >/dev/null 2>&1; then
    fail memory "Slurm does not answer (make up)"
else
    log "8. peak memory of egret run and egret-launcher: $MEM_RUNS runs each"
    bash "$HERE/peak-memory.sh" "$RES" "$MEM_RUNS" "$BUSYBOX" || fail memory "peak memory runs failed"
fi

# ---------------------------------------------------------------------------------------------
# 6. MPI ping-pong: native MPI in the container through the MPI hook vs on the host
if skipped mpi; then
    log "6. mpi: skipped"
elif ! sinfo -h -o %a >/dev/null 2>&1; then
    fail mpi "Slurm does not answer (make up)"
else
    log "6. mpi ping-pong, 8 B x $MPI_ITERS: native / --mpi-hook / image MPICH, $MPI_RUNS runs each"
    bash "$HERE/mpi-pingpong.sh" "$RES" "$SCRATCH" "$MPI_RUNS" 8 "$MPI_ITERS" "$REGISTRY/egret/mpich" ||
        fail mpi "MPI ping-pong (see $SCRATCH/mpi-pingpong.log)"
fi

# ---------------------------------------------------------------------------------------------
# 9. Multi-node: the first step of a new image on 1, 2, 4, 8 nodes, node-local and shared store
if skipped multinode; then
    log "9. multi-node first step: skipped"
else
    log "9. multi-node first step of a new $REGISTRY/egret/debian on 1, 2, 4, 8 nodes, node-local and shared"
    bash "$HERE/multinode.sh" "$RES" "$SCRATCH" "$REGISTRY/egret/debian" "${BENCH_MULTI_RUNS:-1}" ||
        fail multinode "multi-node first step (see $SCRATCH/multinode.log)"
fi

# ---------------------------------------------------------------------------------------------
# 5. Where the time goes (informational): scheduler tracepoints around a few single runs, 0.2 s
# apart (as steps of a real job are), turned into per-phase medians by timeline.py.
if skipped trace || ! command -v perf >/dev/null 2>&1; then
    log "5. timeline: skipped (BENCH_SKIP or no perf)"
elif ((have_run_images)); then
    TRACE_SRUN=1
    skipped srun && TRACE_SRUN=0
    log "5. timeline of egret run / srun / srun --container-image (perf sched tracepoints)"
    # shellcheck disable=SC2016  # the loop's $1.. are bash -c's arguments
    if timeout 300 perf record -q -a -o "$SCRATCH/perf.data" \
        -e sched:sched_process_exec -e sched:sched_process_exit -e sched:sched_process_fork -- \
        bash -c 'for i in 1 2 3 4 5 6 7; do
                     if [ -n "$3" ]; then runc --root "$4" run -b "$3" egret-bench-tl; sleep 0.2; fi
                     egret run "$2" /bin/true; sleep 0.2
                     [ "$5" = 1 ] || continue
                     timeout 60 srun -n1 /bin/true; sleep 0.2
                     timeout 60 srun -n1 --container-image="$2" /bin/true; sleep 0.2
                 done; true' bench "" "$BUSYBOX" "$RAW_BUNDLE" "$SCRATCH/runc-state" "$TRACE_SRUN" >"$SCRATCH/perf.log" 2>&1 &&
        perf script -i "$SCRATCH/perf.data" -F comm,pid,tid,time,event,trace \
            >"$SCRATCH/trace.txt" 2>>"$SCRATCH/perf.log"; then
        [ -s "$SCRATCH/trace-pull.txt" ] && cat "$SCRATCH/trace-pull.txt" >>"$SCRATCH/trace.txt"
        python3 "$HERE/timeline.py" "$SCRATCH/trace.txt" >"$RES/timeline.txt" 2>>"$SCRATCH/perf.log" \
            || log "warning: timeline.py failed (informational only)"
    else
        tail -5 "$SCRATCH/perf.log" >&2
        log "warning: perf record failed: no timeline (informational only)"
    fi
fi

# ---------------------------------------------------------------------------------------------
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["loadavg_end"]=open("/proc/loadavg").read().split()[:3]; json.dump(m,open(sys.argv[1],"w"),indent=1)' "$RES/meta.json"
[ -e "$SCRATCH/.nodrop" ] && touch "$RES/nodrop"
export BENCH_SKIP BENCH_GZIP_RUNS=$GZIP_RUNS
echo
python3 "$HERE/report.py" "$RES" | tee "$RES/table.txt"
rc=${PIPESTATUS[0]}
python3 "$HERE/report.py" --markdown "$RES" >"$RES/table.md" 2>/dev/null
if [ -n "${BENCH_OUT:-}" ]; then
    mkdir -p "$BENCH_OUT" && cp -r "$RES"/. "$BENCH_OUT"/ && log "results copied to $BENCH_OUT"
fi
exit "$rc"
