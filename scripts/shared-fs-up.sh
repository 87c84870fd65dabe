#!/usr/bin/env bash
# Serve and mount the network filesystem the tests use as a store shared by the test cluster's
# nodes: a one-brick GlusterFS volume on this machine, mounted over FUSE (this kernel has no NFS
# client or server). The multi-node tests and `make bench` put the multi cluster's store there
# in shared-store mode (system-tests/tests/multinode.rs).
#
#   volume   egret-shared, brick /var/lib/egret-gluster/brick
#   mount    /mnt/egret-shared (fuse.glusterfs)
#
# glusterd refuses loopback addresses for a brick, so the brick is named by this host's short
# name (which resolves to 127.0.0.1 here). Idempotent. Run as root.
set -euo pipefail
# shellcheck source=scripts/detach.sh
. "$(dirname "$0")/detach.sh"

VOLUME=egret-shared
BRICK=/var/lib/egret-gluster/brick
MOUNT=/mnt/egret-shared

log() { printf '[shared-fs-up %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[shared-fs-up] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
for cmd in glusterd gluster mount.glusterfs; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found: run scripts/install-deps.sh first"
done
HOST=$(hostname -s)
getent hosts "$HOST" >/dev/null || die "host name $HOST does not resolve (scripts/cluster-up.sh adds it to /etc/hosts)"
g() { gluster --mode=script "$@"; }

if ! pgrep -x glusterd >/dev/null; then
    log "starting glusterd"
    detached glusterd -p /run/glusterd.pid
fi
for _ in $(seq 1 40); do g peer status >/dev/null 2>&1 && break; sleep 0.25; done
g peer status >/dev/null 2>&1 || die "glusterd does not answer (see /var/log/glusterfs/glusterd.log)"

if ! g volume info "$VOLUME" >/dev/null 2>&1; then
    log "creating volume $VOLUME on $HOST:$BRICK"
    install -d -m 0755 "$BRICK"
    # force: the brick is on the root filesystem, which glusterd otherwise refuses
    g volume create "$VOLUME" "$HOST:$BRICK" force >/dev/null
fi
if ! g volume info "$VOLUME" | grep -q '^Status: Started'; then
    log "starting volume $VOLUME"
    g volume start "$VOLUME" force >/dev/null
fi

# A mount whose glusterfs client died (killed, or glusterd restarted under it) is still in the
# mount table but fails every stat with "Transport endpoint is not connected": drop it first.
if awk '{print $5}' /proc/self/mountinfo | grep -qx "$MOUNT" && ! stat "$MOUNT" >/dev/null 2>&1; then
    log "dropping the dead mount on $MOUNT"
    umount -l "$MOUNT"
fi
if ! mountpoint -q "$MOUNT"; then
    install -d -m 0755 "$MOUNT"
    log "mounting $HOST:/$VOLUME on $MOUNT"
    ok=0
    for _ in $(seq 1 20); do
        if mount -t glusterfs "$HOST:/$VOLUME" "$MOUNT" 2>/dev/null && mountpoint -q "$MOUNT"; then
            ok=1
            break
        fi
        sleep 0.5
    done
    [ "$ok" = 1 ] || die "cannot mount $HOST:/$VOLUME on $MOUNT (see /var/log/glusterfs/)"
fi
# usable: a file can be written, locked and read back
probe=$MOUNT/.probe.$$
echo ok >"$probe" && flock -n "$probe" true && [ "$(cat "$probe")" = ok ] \
    || die "$MOUNT is mounted but not usable"
rm -f "$probe"
log "$MOUNT is $(findmnt -n -o FSTYPE "$MOUNT") from $HOST:/$VOLUME"
