#!/usr/bin/env bash
# Part of scripts/bench.sh (section "multinode"): the first step of a new image on N = 1, 2, 4,
# 8 nodes of the multi cluster (scripts/cluster-up.sh multi), node-local stores and the shared
# store on GlusterFS. For each: the step's wall time, the registry's full blob downloads (its
# access log) and bytes, and how many nodes squashed (their "downloading" lines). Appends
# `MODE N SECONDS DOWNLOADS MAX_PER_BLOB BYTES SQUASHES` lines to RES/multinode.tsv.
#
# Usage: multinode.sh RES SCRATCH IMAGE RUNS
set -uo pipefail
RES=$1 SCRATCH=$2 IMAGE=$3 RUNS=$4
export SLURM_CONF=/etc/slurm-multi/slurm.conf
CONFIG=/etc/egret/multi/egret.json
LOG=/var/log/egret-registry.log
REGISTRY=${IMAGE%%/*}

die() { printf '[bench multinode] ERROR: %s\n' "$*" >&2; exit 2; }
sinfo -h -N -o '%N %t' 2>/dev/null | grep -q '^m8 ' || die "the multi cluster is not up: run make up"

# set_mode local|shared: the installed egret.json with node-local directories and the mode's
# store (as system-tests' test-support multi.rs writes it), every store of that mode emptied.
set_mode() {
    local store=/var/lib/egret/nodes/%n/store shared=false
    if [ "$1" = shared ]; then
        store=/mnt/egret-shared/store shared=true
        [ "$(findmnt -n -o FSTYPE /mnt/egret-shared)" = fuse.glusterfs ] || die "/mnt/egret-shared is not mounted: run make up"
    fi
    jq --arg s "$store" --argjson sh "$shared" '.localRepositoryBaseDir = $s
        | .localRepositoryShared = $sh
        | .OCIBundleDir = "/var/lib/egret/nodes/%n/bundle"
        | .containersDir = "/var/lib/egret/nodes/%n/containers"
        | .runDir = "/run/egret/nodes/%n"
        | .runcRoot = "/run/egret/nodes/%n/runc"' /etc/egret/egret.json >"$CONFIG.tmp" &&
        chmod 0644 "$CONFIG.tmp" && mv -f "$CONFIG.tmp" "$CONFIG"
    rm -rf /var/lib/egret/nodes/m*/store /mnt/egret-shared/store
}

# full_downloads REPO_PATH MARK: "DOWNLOADS MAX_PER_BLOB BYTES" of complete blob GETs after MARK.
full_downloads() {
    local path=$1 mark=$2 manifest
    manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2$path/manifests/latest") || die "no manifest for $path"
    tail -c +"$((mark + 1))" "$LOG" | python3 -c '
import json, re, sys
m = json.loads(sys.argv[1]); path = sys.argv[2]
size = {d["digest"]: d["size"] for d in [m["config"]] + m["layers"]}
count = {}
for line in sys.stdin:
    g = re.search(r"\"GET /v2" + re.escape(path) + r"/blobs/(\S+) [^\"]*\" 200 (\d+)", line)
    if g and size.get(g.group(1)) == int(g.group(2)):
        count[g.group(1)] = count.get(g.group(1), 0) + 1
print(sum(count.values()), max(count.values(), default=0), sum(size[b] * c for b, c in count.items()))
' "$manifest" "$path"
}

for mode in local shared; do
    for n in 1 2 4 8; do
        for run in $(seq 1 "$RUNS"); do
            set_mode "$mode"
            # a repository of its own: its requests in the log are this run's
            repo="$REGISTRY/egret/bench-multi-$mode-$n-$run-$$"
            skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$IMAGE" "docker://$repo" \
                >>"$SCRATCH/multinode.log" 2>&1 || die "skopeo copy to $repo failed"
            mark=$(stat -c %s "$LOG")
            nodes=$(seq -s, -f 'm%g' 1 "$n")
            t0=$(date +%s.%N)
            if ! timeout 600 srun -w "$nodes" -N"$n" -n"$n" --container-image="$repo" /bin/true \
                2>"$SCRATCH/multinode-step.err"; then
                cat "$SCRATCH/multinode-step.err" >>"$SCRATCH/multinode.log"
                die "the $n-node step ($mode) failed (see $SCRATCH/multinode.log)"
            fi
            t1=$(date +%s.%N)
            sleep 1 # the registry logs a request when it completes
            squashes=$(grep -c 'egret: downloading' "$SCRATCH/multinode-step.err")
            read -r downloads maxper bytes < <(full_downloads "${repo#"$REGISTRY"}" "$mark")
            secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$t1")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$n" "$secs" "$downloads" "$maxper" "$bytes" "$squashes" \
                >>"$RES/multinode.tsv"
            printf '[bench multinode] %s N=%s: %ss, %s blob downloads (max %s per blob), %s bytes, %s squash runs\n' \
                "$mode" "$n" "$secs" "$downloads" "$maxper" "$bytes" "$squashes" >&2
        done
    done
done
set_mode local
