# shellcheck shell=bash
# Part of scripts/bench.sh (sourced, also by alloc-steps.sh): hyperfine in rounds.
#
# bench_rounds PREFIX RUNS WARMUP NAME CMD [NAME CMD]...
#   Runs every CMD RUNS times in rounds of ROUND_SIZE runs per command, one hyperfine per round,
#   the commands alternating, in reverse order every other round (A B C, C B A, A B C, ...): a
#   busy phase of the machine (other users) and whatever one command leaves behind for the next
#   hit all of them alike. Only the first round has WARMUP warm-up runs per command. Writes
#   RES/PREFIX-roundN.json (report.py pools them) and LOGDIR/PREFIX-roundN.log. Returns non-zero
#   (after showing the log) when a command failed or a round timed out (STEP_TIMEOUT, 600 s).
# Needs RES, LOGDIR and ROUND_SIZE set.
bench_rounds() {
    local prefix=$1 runs=$2 warmup=$3 r rounds i
    shift 3
    local names=() cmds=() args=()
    while (($# >= 2)); do
        names+=("$1")
        cmds+=("$2")
        shift 2
    done
    rounds=$(((runs + ROUND_SIZE - 1) / ROUND_SIZE))
    for ((r = 1; r <= rounds; r++)); do
        args=()
        if ((r % 2)); then
            for ((i = 0; i < ${#names[@]}; i++)); do args+=(-n "${names[i]}" "${cmds[i]}"); done
        else
            for ((i = ${#names[@]} - 1; i >= 0; i--)); do args+=(-n "${names[i]}" "${cmds[i]}"); done
        fi
        ((r == 1)) || warmup=0
        if ! timeout "${STEP_TIMEOUT:-600}" hyperfine -N --style basic -w "$warmup" -r "$ROUND_SIZE" \
            --export-json "$RES/$prefix-round$r.json" "${args[@]}" \
            >"$LOGDIR/$prefix-round$r.log" 2>&1; then
            tail -15 "$LOGDIR/$prefix-round$r.log" >&2
            rm -f "$RES/$prefix-round$r.json"
            echo "bench_rounds $prefix: round $r failed (a command exited non-zero or timed out)" >&2
            return 1
        fi
    done
}
