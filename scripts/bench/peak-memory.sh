#!/usr/bin/env bash
# Part of scripts/bench.sh: the peak memory (VmHWM, the process's own high-water resident set,
# not its children's) of `egret run` and of the per-step `egret-launcher`, sampled every 20 ms
# while a container sleeps, so the sample after set-up is the peak.
# Usage: peak-memory.sh RESULTS_DIR RUNS IMAGE   (appends LABEL RUN BYTES to RESULTS_DIR/memory.tsv)
set -uo pipefail
RES=$1 RUNS=$2 IMAGE=$3
out=$RES/memory.tsv

hwm() { awk '/^VmHWM:/ {print $2 * 1024}' "/proc/$1/status" 2>/dev/null; }

for ((i = 1; i <= RUNS; i++)); do
    # egret run: the process we started.
    egret run "$IMAGE" /bin/sleep 1 >/dev/null 2>&1 &
    pid=$! peak=0
    while kill -0 "$pid" 2>/dev/null; do
        v=$(hwm "$pid")
        [ -n "$v" ] && ((v > peak)) && peak=$v
        sleep 0.02
    done
    wait "$pid" || { echo "egret run $IMAGE failed" >&2; exit 1; }
    ((peak > 0)) && printf 'egret-run\t%s\t%s\n' "$i" "$peak" >>"$out"

    # The launcher: started by the plugin in slurmstepd; found as the egret-launcher processes
    # that appear during the step (read only: their status files).
    before=$(pgrep -x egret-launcher | sort)
    timeout 120 srun -n1 --container-image="$IMAGE" /bin/sleep 2 >/dev/null 2>&1 &
    spid=$! peak=0
    while kill -0 "$spid" 2>/dev/null; do
        for p in $(pgrep -x egret-launcher); do
            grep -qx "$p" <<<"$before" && continue
            v=$(hwm "$p")
            [ -n "$v" ] && ((v > peak)) && peak=$v
        done
        sleep 0.02
    done
    wait "$spid" || { echo "srun --container-image=$IMAGE failed" >&2; exit 1; }
    ((peak > 0)) && printf 'launcher\t%s\t%s\n' "$i" "$peak" >>"$out"
done
exit 0
