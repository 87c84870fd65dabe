#!/usr/bin/env bash
# Part of scripts/bench.sh: runs inside `salloc -n8` and times srun steps of that allocation
# (no job submission per step), plain and containerised, -n1 and -n8.
# Usage: alloc-steps.sh RESULTS_DIR LOG_DIR RUNS ROUND_SIZE BUSYBOX_REF HUGE_REF
set -euo pipefail
RES=$1 LOGDIR=$2 runs=$3 ROUND_SIZE=$4 busybox=$5 huge=$6
[ -n "${SLURM_JOB_ID:-}" ] || { echo "alloc-steps.sh: not inside an allocation" >&2; exit 1; }
echo "allocation $SLURM_JOB_ID on $SLURM_JOB_NODELIST ($SLURM_NTASKS tasks)"
# shellcheck source=scripts/bench/rounds.sh
. "$(dirname "${BASH_SOURCE[0]}")/rounds.sh"
# --cpu-bind=none at -n8: the test nodes declare 8 CPUs on a 2-core host, which task/affinity
# cannot bind 8 tasks to.
bench_rounds alloc "$runs" 3 \
    alloc-plain-n1 "srun -n1 /bin/true" \
    alloc-busybox-n1 "srun -n1 --container-image=$busybox /bin/true" \
    alloc-huge-n1 "srun -n1 --container-image=$huge /bin/true" \
    alloc-plain-n8 "srun -n8 --cpu-bind=none /bin/true" \
    alloc-busybox-n8 "srun -n8 --cpu-bind=none --container-image=$busybox /bin/true"

# 7a. A named container's later steps against its first: the first creates it (resolves the
# image, writes its state), later ones reuse the rootfs state kept for the job.
srun -n1 --container-image="$huge" --container-name=bench-reuse /bin/true
bench_rounds named "$runs" 1 \
    named-first "sh -c 'srun -n1 --container-image=$huge --container-name=bench-\$\$-\$RANDOM /bin/true'" \
    named-second "srun -n1 --container-name=bench-reuse /bin/true"
