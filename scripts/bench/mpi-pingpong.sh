#!/usr/bin/env bash
# Part of scripts/bench.sh (section "mpi"): MPI ping-pong latency of small messages between two
# ranks of one node, the same program (system-tests/mpi/pingpong.c built with Debian's mpicc):
#   native      srun -N1 -n2 --mpi=pmi2 /opt/egret-test/mpi/bin/mpi-pingpong, with the host's
#               MPICH (LD_LIBRARY_PATH=/opt/egret-test/mpich-host/lib, scripts/mpi-fixture.sh)
#   egret-hook  srun -N1 -n2 --mpi=pmi2 --container-image=egret/mpich --mpi-hook mpi-pingpong:
#               the same host MPICH, bind-mounted by the MPI hook
#   egret-image the container without the hook (the image's Debian MPICH; informational)
# Runs alternate (native, egret-hook, egret-image, native, ...) so a slow phase of the machine
# hits every side, each after a pause of BENCH_MPI_SETTLE (2) seconds. Appends "LABEL RUN SECONDS" (one-way latency) lines to RES/mpi.tsv.
#
# Usage: mpi-pingpong.sh RES LOGDIR RUNS BYTES ITERATIONS IMAGE
set -uo pipefail

RES=$1 LOGDIR=$2 RUNS=$3 BYTES=$4 ITERS=$5 IMAGE=$6
NATIVE_BIN=/opt/egret-test/mpi/bin/mpi-pingpong
HOST_LIB=/opt/egret-test/mpich-host/lib
TIMEOUT=300
SETTLE=${BENCH_MPI_SETTLE:-2}

if [ ! -x "$NATIVE_BIN" ] || [ ! -e "$HOST_LIB/libmpi.so.12" ]; then
    echo "mpi-pingpong: $NATIVE_BIN or $HOST_LIB missing: run scripts/mpi-fixture.sh (make deps)" >&2
    exit 2
fi

one() { # one LABEL RUN CMD...: runs CMD, records the latency it prints
    local label=$1 run=$2 out us
    shift 2
    # Let the previous step's asynchronous teardown (launcher, overlay, loop device) finish:
    # on 2 cores it would steal a CPU from one of the two busy-polling ranks of this run.
    sleep "$SETTLE"
    if ! out=$(timeout "$TIMEOUT" "$@" 2>>"$LOGDIR/mpi-pingpong.log"); then
        echo "mpi-pingpong: $label run $run failed: $*" >&2
        return 1
    fi
    us=$(sed -n 's/.*latency_us=\([0-9.]*\).*/\1/p' <<<"$out")
    [ -n "$us" ] || { echo "mpi-pingpong: $label: no latency in: $out" >&2; return 1; }
    printf '%s\t%s\t%s\n' "$label" "$run" "$(python3 -c "print(float('$us') / 1e6)")" >>"$RES/mpi.tsv"
    printf '[bench]   %s run %s: %s us\n' "$label" "$run" "$us" >&2
}

# The first container run imports the image into the system store; not measured.
timeout "$TIMEOUT" srun -N1 -n2 --mpi=pmi2 --container-image="$IMAGE" --mpi-hook \
    mpi-pingpong "$BYTES" 100 >>"$LOGDIR/mpi-pingpong.log" 2>&1 || {
    echo "mpi-pingpong: warm-up step failed (see the log below)" >&2
    tail -5 "$LOGDIR/mpi-pingpong.log" >&2
    exit 1
}

rc=0
for ((i = 1; i <= RUNS; i++)); do
    one native "$i" env LD_LIBRARY_PATH="$HOST_LIB" \
        srun -N1 -n2 --mpi=pmi2 "$NATIVE_BIN" "$BYTES" "$ITERS" || rc=1
    one egret-hook "$i" srun -N1 -n2 --mpi=pmi2 --container-image="$IMAGE" --mpi-hook \
        mpi-pingpong "$BYTES" "$ITERS" || rc=1
    one egret-image "$i" srun -N1 -n2 --mpi=pmi2 --container-image="$IMAGE" \
        mpi-pingpong "$BYTES" "$ITERS" || rc=1
done
exit "$rc"
