#!/usr/bin/env bash
# Install what `cargo build --release --workspace` produced, plus egret's configuration, into
# the system (the paths the plugin, the CLI and Slurm expect). Tolerates parts that are not
# built yet. Everything installed is root-owned and not writable by group or others.
# Run as root, from anywhere.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
REL=${CARGO_TARGET_DIR:-$REPO/target}/release
BIN_DIR=/usr/local/bin
LIBEXEC_DIR=/usr/local/libexec/egret
LIB_DIR=/usr/local/lib/egret
ETC_DIR=/etc/egret
HOOKS_D=$ETC_DIR/hooks.d
PLUGSTACK_D=/etc/slurm/plugstack.conf.d
PLUGIN=$LIB_DIR/spank_egret.so
CONFIG=$ETC_DIR/egret.json

log() { printf '[install] %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "install.sh must run as root" >&2; exit 1; }
umask 022

for dir in "$BIN_DIR" "$LIBEXEC_DIR" "$LIB_DIR" "$ETC_DIR" "$HOOKS_D" "$PLUGSTACK_D"; do
    install -d -o root -g root -m 0755 "$dir"
done

# put SRC DST MODE: copy then rename, so processes running the old file (slurmstepd has the
# plugin mapped) keep their inode and never see a half-written file.
put() {
    local src=$1 dst=$2 mode=$3 tmp
    if [ -e "$dst" ] && cmp -s "$src" "$dst"; then
        chown root:root "$dst"
        chmod "$mode" "$dst"
        return
    fi
    tmp=$(mktemp "$dst.XXXXXX")
    cp "$src" "$tmp"
    chown root:root "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dst"
    log "installed $dst"
}

missing=()
# egret is setuid root, as sarus is: users pull, list, run and remove images in the root-owned
# store (cli/src/privilege.rs says when it is root and for what).
if [ -f "$REL/egret" ]; then put "$REL/egret" "$BIN_DIR/egret" 4755; else missing+=(egret); fi
if [ -f "$REL/egret-launcher" ]; then
    put "$REL/egret-launcher" "$BIN_DIR/egret-launcher" 0755
    put "$REL/egret-launcher" "$LIBEXEC_DIR/egret-launcher" 0755   # the plugin's default path
else
    missing+=(egret-launcher)
fi
shopt -s nullglob
# OCI hooks (hooks/src/bin/egret-<name>-hook.rs), where the etc/hooks.d files point
install -d -o root -g root -m 0755 "$LIBEXEC_DIR/hooks"
hooks=0
for h in "$REL"/egret-*-hook; do
    # binaries only (cargo also leaves egret-*-hook.d dependency files here)
    if [ ! -f "$h" ] || [ ! -x "$h" ]; then continue; fi
    put "$h" "$LIBEXEC_DIR/hooks/$(basename "$h")" 0755
    hooks=$((hooks + 1))
done
[ "$hooks" -gt 0 ] || missing+=("egret-*-hook")
if [ -f "$REL/libspank_egret.so" ]; then put "$REL/libspank_egret.so" "$PLUGIN" 0755; else missing+=(libspank_egret.so); fi

# configuration
if [ -f "$REPO/etc/egret.json" ]; then
    put "$REPO/etc/egret.json" "$CONFIG" 0644
elif [ "$(cat "$CONFIG" 2>/dev/null)" != "{}" ]; then
    printf '{}\n' >"$CONFIG.tmp" && chmod 0644 "$CONFIG.tmp" && mv -f "$CONFIG.tmp" "$CONFIG"
    log "installed $CONFIG (empty: the repository has no etc/egret.json yet)"
fi
chown root:root "$CONFIG"

# the NVIDIA driver list of nodes without a CDI spec (nvidia.libraryList)
put "$REPO/etc/nvliblist.conf" "$ETC_DIR/nvliblist.conf" 0644

# seccomp profiles named by egret.json
install -d -o root -g root -m 0755 "$ETC_DIR/seccomp"
for src in "$REPO"/etc/seccomp/*.json; do put "$src" "$ETC_DIR/seccomp/$(basename "$src")" 0644; done

# hooks.d mirrors etc/hooks.d: stale hook files would otherwise keep firing
for src in "$REPO"/etc/hooks.d/*.json; do put "$src" "$HOOKS_D/$(basename "$src")" 0644; done
for dst in "$HOOKS_D"/*.json; do
    if [ ! -e "$REPO/etc/hooks.d/$(basename "$dst")" ]; then
        rm -f "$dst"
        log "removed stale $dst"
    fi
done

# Slurm: only announce the plugin when it exists (a `required` plugin that fails to load
# aborts every srun on the machine).
line="required $PLUGIN config=$CONFIG"
if [ -f "$PLUGIN" ]; then
    if [ "$(cat "$PLUGSTACK_D/egret.conf" 2>/dev/null)" != "$line" ]; then
        printf '%s\n' "$line" >"$PLUGSTACK_D/egret.conf.tmp"
        chmod 0644 "$PLUGSTACK_D/egret.conf.tmp"
        mv -f "$PLUGSTACK_D/egret.conf.tmp" "$PLUGSTACK_D/egret.conf"
        log "installed $PLUGSTACK_D/egret.conf"
    fi
elif [ -e "$PLUGSTACK_D/egret.conf" ]; then
    rm -f "$PLUGSTACK_D/egret.conf"
    log "removed $PLUGSTACK_D/egret.conf: $PLUGIN is not installed"
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "not built (skipped): ${missing[*]}"
fi
log "done"
