#!/usr/bin/env bash
# Part of scripts/bench.sh: runs inside `salloc -n8` and times srun steps of that allocation
# (no job submission per step), plain and containerised, -n1 and -n8, in ROUNDS rounds.
# Usage: alloc-steps.sh RESULTS_DIR ROUNDS RUNS_PER_ROUND BUSYBOX_REF HUGE_REF
set -euo pipefail
res=$1 rounds=$2 per=$3 busybox=$4 huge=$5
[ -n "${SLURM_JOB_ID:-}" ] || { echo "alloc-steps.sh: not inside an allocation" >&2; exit 1; }
echo "allocation $SLURM_JOB_ID on $SLURM_JOB_NODELIST ($SLURM_NTASKS tasks)"
for ((r = 1; r <= rounds; r++)); do
    hyperfine -N --style basic -w 3 -r "$per" --export-json "$res/alloc-round$r.json" \
        -n alloc-plain-n1 "srun -n1 /bin/true" \
        -n alloc-busybox-n1 "srun -n1 --container-image=$busybox /bin/true" \
        -n alloc-huge-n1 "srun -n1 --container-image=$huge /bin/true" \
        -n alloc-plain-n8 "srun -n8 /bin/true" \
        -n alloc-busybox-n8 "srun -n8 --container-image=$busybox /bin/true"
done
