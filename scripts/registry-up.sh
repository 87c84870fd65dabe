#!/usr/bin/env bash
# Start the local OCI registries (docker-registry, distribution 2.8) for egret's tests, and tell
# skopeo/containers-image that they are insecure (plain HTTP) registries:
#   127.0.0.1:5000  anonymous, read-write: the test images are pushed here
#                   (etc/registry/config.yml)
#   127.0.0.1:5001  the same storage, read-only, behind htpasswd basic auth: a registry that
#                   requires a login (etc/registry/config-auth.yml; tests/private_registry.rs).
#                   User egrettest; its password is in /etc/egret-registry/auth-password
#                   (root only), generated on the first run.
# Idempotent: a registry already running with the same config is left alone. Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/detach.sh
. "$HERE/detach.sh"
SRC_CONFIG=$HERE/../etc/registry/config.yml
CONF_DIR=/etc/egret-registry
CONFIG=$CONF_DIR/config.yml
STORAGE=/var/lib/egret-registry
PIDFILE=/run/egret-registry.pid
LOGFILE=/var/log/egret-registry.log
ADDR=127.0.0.1:5000
# The login-protected instance.
AUTH_SRC_CONFIG=$HERE/../etc/registry/config-auth.yml
AUTH_CONFIG=$CONF_DIR/config-auth.yml
AUTH_PIDFILE=/run/egret-registry-auth.pid
AUTH_LOGFILE=/var/log/egret-registry-auth.log
AUTH_ADDR=127.0.0.1:5001
AUTH_USER=egrettest
AUTH_PASSWORD_FILE=$CONF_DIR/auth-password
HTPASSWD=$CONF_DIR/htpasswd
REGISTRIES_D=/etc/containers/registries.conf.d
DROPIN=$REGISTRIES_D/50-egret-local.conf
POLICY=/etc/containers/policy.json

log() { printf '[registry-up %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[registry-up] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v docker-registry >/dev/null || die "docker-registry not found: run scripts/install-deps.sh first"
command -v curl >/dev/null || die "curl not found: run scripts/install-deps.sh first"
command -v htpasswd >/dev/null || die "htpasswd not found (apache2-utils): run scripts/install-deps.sh first"

# --- containers-image configuration (skopeo 1.9 reads registries.conf v2 drop-ins) -------------
install -d -m 0755 /etc/containers "$REGISTRIES_D"
dropin_content='# Written by egret scripts/registry-up.sh: the local test registries speak plain HTTP.
[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "localhost:5000"
insecure = true

[[registry]]
location = "127.0.0.1:5001"
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

# --- configuration files ----------------------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$STORAGE"
for pair in "$SRC_CONFIG:$CONFIG" "$AUTH_SRC_CONFIG:$AUTH_CONFIG"; do
    src=${pair%%:*} dst=${pair#*:}
    if ! cmp -s "$src" "$dst" 2>/dev/null; then
        log "installing $dst"
        install -m 0644 "$src" "$dst"
    fi
done

# The test login: a password made once (root only), and a bcrypt htpasswd entry for it. Both go
# to htpasswd on stdin, never on a command line.
if [ ! -s "$AUTH_PASSWORD_FILE" ]; then
    log "generating the test login's password in $AUTH_PASSWORD_FILE"
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$AUTH_PASSWORD_FILE.tmp")
    mv -f "$AUTH_PASSWORD_FILE.tmp" "$AUTH_PASSWORD_FILE"
fi
chown root:root "$AUTH_PASSWORD_FILE"
chmod 0600 "$AUTH_PASSWORD_FILE"
AUTH_PASSWORD=$(cat "$AUTH_PASSWORD_FILE")
[ -n "$AUTH_PASSWORD" ] || die "$AUTH_PASSWORD_FILE is empty"
if ! htpasswd -vi "$HTPASSWD" "$AUTH_USER" <<<"$AUTH_PASSWORD" >/dev/null 2>&1; then
    log "writing $HTPASSWD (bcrypt, user $AUTH_USER)"
    (umask 077; htpasswd -niB "$AUTH_USER" <<<"$AUTH_PASSWORD" | sed '/^$/d' >"$HTPASSWD.tmp")
    mv -f "$HTPASSWD.tmp" "$HTPASSWD"
fi
chown root:root "$HTPASSWD"
chmod 0600 "$HTPASSWD"

# --- registry processes -----------------------------------------------------------------------

# http_code ADDR [auth]: the HTTP status of GET /v2/ (000: nothing answers); with "auth", as
# the test login (credentials through a curl config on stdin, not on the command line).
http_code() {
    local opts=(-s -o /dev/null --max-time 2 -w '%{http_code}')
    if [ "${2:-}" = auth ]; then
        printf 'user = "%s:%s"\n' "$AUTH_USER" "$AUTH_PASSWORD" \
            | curl "${opts[@]}" -K - "http://$1/v2/" 2>/dev/null || true
    else
        curl "${opts[@]}" "http://$1/v2/" 2>/dev/null || true
    fi
}

# running_pid PIDFILE CONFIG: the pid of the docker-registry PIDFILE names, serving CONFIG.
running_pid() {
    [ -s "$1" ] || return 1
    local pid
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "docker-registry" ] \
        || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$2" || return 1
    echo "$pid"
}

# ensure_registry NAME ADDR CONFIG PIDFILE LOGFILE HEALTH [FILE...]: starts docker-registry with
# CONFIG unless one started by this script already runs with the same CONFIG (and FILEs, which
# the registry reads at start) and answers; HEALTH is "anon" (GET /v2/ is 200 anonymously) or
# "auth" (200 with the test login, 401 without).
ensure_registry() {
    local name=$1 addr=$2 config=$3 pidfile=$4 logfile=$5 health=$6
    shift 6
    healthy() {
        case $health in
            anon) [ "$(http_code "$addr")" = 200 ] ;;
            auth) [ "$(http_code "$addr" auth)" = 200 ] && [ "$(http_code "$addr")" = 401 ] ;;
        esac
    }
    local stamp_want stamp_have pid
    if [ "$#" -eq 0 ]; then
        stamp_want=$(sha256sum "$config" | cut -d' ' -f1)
    else
        stamp_want=$(sha256sum "$config" "$@" | sha256sum | cut -d' ' -f1)
    fi
    stamp_have=$(cat "$pidfile.config" 2>/dev/null || true)

    if pid=$(running_pid "$pidfile" "$config"); then
        if [ "$stamp_have" = "$stamp_want" ] && healthy; then
            log "$name already running (pid $pid) on $addr"
        else
            log "$name config changed or not answering: restarting pid $pid"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$pidfile" "$pidfile.config"
        fi
    fi

    if ! running_pid "$pidfile" "$config" >/dev/null; then
        if [ "$(http_code "$addr")" != 000 ]; then
            die "something else already answers on http://$addr/v2/ (not started by this script); stop it first"
        fi
        log "starting $name on $addr (log: $logfile, storage: $STORAGE)"
        # setsid: its own session, so it survives the calling shell, make and CI steps.
        (
            close_inherited_fds
            exec setsid docker-registry serve "$config"
        ) </dev/null >>"$logfile" 2>&1 &
        echo $! >"$pidfile"
        echo "$stamp_want" >"$pidfile.config"
    fi

    for _ in $(seq 1 60); do
        healthy && break
        running_pid "$pidfile" "$config" >/dev/null || die "$name exited (see $logfile)"
        sleep 0.25
    done
    healthy || die "$name does not answer as expected on http://$addr/v2/ (see $logfile)"
    log "$name answers on http://$addr/v2/"
}

ensure_registry "docker-registry" "$ADDR" "$CONFIG" "$PIDFILE" "$LOGFILE" anon
ensure_registry "the login registry" "$AUTH_ADDR" "$AUTH_CONFIG" "$AUTH_PIDFILE" "$AUTH_LOGFILE" \
    auth "$HTPASSWD"
log "$AUTH_ADDR requires a login: user $AUTH_USER, password in $AUTH_PASSWORD_FILE"
