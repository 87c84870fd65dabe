#!/usr/bin/env bash
# Start the local OCI registry (docker-registry, distribution 2.8) on 127.0.0.1:5000 for egret's
# tests, and tell skopeo/containers-image that it is an insecure (plain HTTP) registry.
# Idempotent: a registry already running with the same config is left alone. Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC_CONFIG=$HERE/../etc/registry/config.yml
CONF_DIR=/etc/egret-registry
CONFIG=$CONF_DIR/config.yml
STORAGE=/var/lib/egret-registry
PIDFILE=/run/egret-registry.pid
LOGFILE=/var/log/egret-registry.log
ADDR=127.0.0.1:5000
REGISTRIES_D=/etc/containers/registries.conf.d
DROPIN=$REGISTRIES_D/50-egret-local.conf
POLICY=/etc/containers/policy.json

log() { printf '[registry-up %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[registry-up] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v docker-registry >/dev/null || die "docker-registry not found: run scripts/install-deps.sh first"
command -v curl >/dev/null || die "curl not found: run scripts/install-deps.sh first"

# --- containers-image configuration (skopeo 1.9 reads registries.conf v2 drop-ins) -------------
install -d -m 0755 /etc/containers "$REGISTRIES_D"
dropin_content='# Written by egret scripts/registry-up.sh: the local test registry speaks plain HTTP.
[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "localhost:5000"
insecure = true'
if [ "$(cat "$DROPIN" 2>/dev/null)" != "$dropin_content" ]; then
    log "writing $DROPIN"
    printf '%s\n' "$dropin_content" >"$DROPIN"
    chmod 0644 "$DROPIN"
fi
if [ ! -e "$POLICY" ]; then
    log "writing $POLICY (insecureAcceptAnything)"
    printf '{\n    "default": [\n        {\n            "type": "insecureAcceptAnything"\n        }\n    ]\n}\n' >"$POLICY"
    chmod 0644 "$POLICY"
fi

# --- registry process -------------------------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$STORAGE"
if ! cmp -s "$SRC_CONFIG" "$CONFIG" 2>/dev/null; then
    log "installing $CONFIG"
    install -m 0644 "$SRC_CONFIG" "$CONFIG"
fi

answers() { curl -fsS -o /dev/null --max-time 2 "http://$ADDR/v2/" 2>/dev/null; }

running_pid() {
    [ -s "$PIDFILE" ] || return 1
    local pid
    pid=$(tr -dc '0-9' <"$PIDFILE")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "docker-registry" ] || return 1
    echo "$pid"
}

stamp_want=$(sha256sum "$CONFIG" | cut -d' ' -f1)
stamp_have=$(cat "$PIDFILE.config" 2>/dev/null || true)

if pid=$(running_pid); then
    if [ "$stamp_have" = "$stamp_want" ] && answers; then
        log "registry already running (pid $pid) on $ADDR"
    else
        log "registry config changed or not answering: restarting pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$PIDFILE" "$PIDFILE.config"
    fi
fi

if ! running_pid >/dev/null; then
    if answers; then
        die "something else already answers on http://$ADDR/v2/ (not started by this script); stop it first"
    fi
    log "starting docker-registry on $ADDR (log: $LOGFILE, storage: $STORAGE)"
    # setsid: its own session, so it survives the calling shell, make and CI steps.
    setsid docker-registry serve "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    echo "$stamp_want" >"$PIDFILE.config"
fi

for _ in $(seq 1 60); do
    answers && break
    running_pid >/dev/null || die "docker-registry exited (see $LOGFILE)"
    sleep 0.25
done
answers || die "registry does not answer on http://$ADDR/v2/ (see $LOGFILE)"
log "registry answers on http://$ADDR/v2/"
