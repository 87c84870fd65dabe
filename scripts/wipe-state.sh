#!/usr/bin/env bash
# Put this machine back in the state a fresh Debian 12 machine has before `make up`, as far as
# egret is concerned: everything egret, its tests and its scripts created goes, so that the next
# `make up && make test` proves what a new user would see. CI runs it first (`.ci/run`).
#
# Removed: running containers, launchers and test daemons (slurmctld, slurmd, the registries);
# egret's store, bundles, named containers, runc state and run directory; the installed
# binaries, plugin and /etc/egret; the Slurm test cluster's configuration and state; the test
# registry's data, configuration and image build cache; the MPI test fixture; the test user and
# the tests' scratch directories; the bench's scratch base.
# Kept: Debian packages, the Rust toolchain and cargo-installed tools (cargo-fuzz), munge's key
# (Debian's munge package makes it), the target/ directory of the checkout this runs from.
# Run as root. Idempotent.
set -uo pipefail

log() { printf '[wipe-state] %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "wipe-state.sh must run as root" >&2; exit 1; }

# kill_named NAME...: SIGKILL every process with one of these command names, wait for them.
kill_named() {
    local name pids
    for name in "$@"; do
        pids=$(pgrep -x "$name" || true)
        [ -n "$pids" ] || continue
        log "stopping $name ($(echo $pids | tr '\n' ' '))"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    done
    for _ in $(seq 1 40); do
        local left=0
        for name in "$@"; do pgrep -x "$name" >/dev/null && left=1; done
        [ "$left" -eq 0 ] && return 0
        sleep 0.25
    done
    log "warning: some of $* are still running"
}

# Jobs first (their steps hold containers), then the daemons and whatever is left of steps.
command -v scancel >/dev/null 2>&1 && timeout 10 scancel --full --signal=KILL --user=root >/dev/null 2>&1
command -v scancel >/dev/null 2>&1 && getent passwd egretuser >/dev/null \
    && timeout 10 scancel --full --signal=KILL --user=egretuser >/dev/null 2>&1
kill_named slurmctld slurmd slurmstepd egret-launcher egret runc docker-registry dropbear

# The shared-store volume (scripts/shared-fs-up.sh): unmount, drop the volume, stop gluster.
# The mount table, not mountpoint(1): a FUSE mount whose glusterfs client died fails stat with
# "Transport endpoint is not connected", and would be left behind, blocking the next mount.
if awk '{print $5}' /proc/self/mountinfo | grep -qx /mnt/egret-shared; then
    { umount /mnt/egret-shared 2>/dev/null || umount -l /mnt/egret-shared; } && log "unmounted /mnt/egret-shared"
fi
if command -v gluster >/dev/null 2>&1 && pgrep -x glusterd >/dev/null; then
    if timeout 20 gluster --mode=script volume info egret-shared >/dev/null 2>&1; then
        timeout 30 gluster --mode=script volume stop egret-shared force >/dev/null 2>&1
        timeout 30 gluster --mode=script volume delete egret-shared >/dev/null 2>&1 && log "deleted gluster volume egret-shared"
    fi
fi
kill_named glusterfsd glusterfs glusterd
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop slurmctld slurmd >/dev/null 2>&1 || true
fi

# Mounts egret left in the host namespace (normally none: they live in the launcher's own), then
# loop devices whose backing file is one of egret's.
awk '{print $5}' /proc/self/mountinfo \
    | grep -E '^/(var/lib/egret|run/egret|tmp/egret|var/lib/egret-bench)' \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null && log "unmounted $m"; done
losetup -a 2>/dev/null | grep -E '/var/lib/egret|/tmp/egret|/var/lib/egret-bench' \
    | cut -d: -f1 | while read -r dev; do losetup -d "$dev" 2>/dev/null && log "detached $dev"; done

paths=(
    # egret's state and installation
    /var/lib/egret /run/egret /etc/egret /var/log/egret
    /usr/local/bin/egret /usr/local/bin/egret-launcher /usr/local/libexec/egret /usr/local/lib/egret
    /etc/slurm/plugstack.conf.d/egret.conf
    # the test cluster (scripts/cluster-up.sh)
    /run/egret-cluster /etc/slurm/slurm.conf /etc/slurm/plugstack.conf
    /var/lib/slurm/slurmctld /var/log/slurm
    /run/slurmctld.pid /run/slurmd.pid
    # the multi-node cluster (scripts/cluster-up.sh multi) and its shared volume's brick
    /run/egret-cluster-multi /etc/slurm-multi /var/lib/slurm/slurmctld-multi /run/slurmctld-multi.pid
    /var/lib/egret-gluster /mnt/egret-shared /var/lib/glusterd/vols/egret-shared
    # the test registry and images (scripts/registry-up.sh, scripts/build-test-images.py)
    /var/lib/egret-registry /etc/egret-registry /run/egret-registry.pid /run/egret-registry.pid.config
    /var/log/egret-registry.log /etc/containers/registries.conf.d/50-egret-local.conf
    # the login-protected registry on 127.0.0.1:5001 (its config, htpasswd and password are
    # in /etc/egret-registry above; kill_named docker-registry stopped it)
    /run/egret-registry-auth.pid /run/egret-registry-auth.pid.config /var/log/egret-registry-auth.log
    /var/cache/egret-test-images
    # the MPI fixture (scripts/mpi-fixture.sh), the tests' and the bench's scratch
    /opt/egret-test /tmp/egret-tests /var/lib/egret-bench
)
for p in "${paths[@]}"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
        rm -rf --one-file-system "$p" && log "removed $p"
    fi
done
shopt -s nullglob
for p in /var/spool/slurmd-* /tmp/slurm-n* /tmp/slurm-m* /run/slurmd-*.pid /tmp/egret-* /var/tmp/egret-*; do
    rm -rf --one-file-system "$p" && log "removed $p"
done

# The test user and everything in its home (auth files, keys, EDFs, saved images).
if getent passwd egretuser >/dev/null; then
    userdel -r -f egretuser >/dev/null 2>&1 || true
    log "removed user egretuser"
fi
getent group egretuser >/dev/null && groupdel egretuser >/dev/null 2>&1
rm -rf --one-file-system /home/egretuser
# What the hooks and tests leave in root's home.
rm -rf /root/.oci-hooks /root/not-yours.sqsh
log "done: egret's state is gone; run make up"
