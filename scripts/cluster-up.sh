#!/usr/bin/env bash
# Bring up a Slurm 22.05 test cluster on this one machine (several slurmd in the same network
# namespace, on different ports), plus munge and the test user.
#
#   cluster-up.sh        cluster "egret": nodes n1 n2, /etc/slurm, the plugin as `make install`
#                        announces it (/etc/egret/egret.json: one store that both nodes share,
#                        since they share this host's disk)
#   cluster-up.sh multi  cluster "egret-multi": nodes m1..m8, /etc/slurm-multi (srun and the
#                        other clients select it with SLURM_CONF=/etc/slurm-multi/slurm.conf),
#                        the plugin with /etc/egret/multi/egret.json, whose node-local
#                        directories name the node (`%n`): each node has its own store, run
#                        and bundle directories, as on a real multi-node cluster. Tests switch
#                        its store between node-local and the shared GlusterFS volume
#                        (scripts/shared-fs-up.sh).
#
# Idempotent: daemons that already run with the same configuration are left alone; a changed
# configuration (or a changed Slurm/PMIx package) restarts them. Works whether the daemons were
# started by Debian's systemd units, by an earlier run of this script, or not at all.
# Run as root.
set -euo pipefail
# shellcheck source=scripts/detach.sh
. "$(dirname "$0")/detach.sh"

CLUSTER=${1:-main}
case "$CLUSTER" in
    main)
        CLUSTER_NAME=egret SLURM_ETC=/etc/slurm SUFFIX= CTLD_PORT=6817
        NODES=(n1 n2) PORTS=(17001 17002)
        ;;
    multi)
        CLUSTER_NAME=egret-multi SLURM_ETC=/etc/slurm-multi SUFFIX=-multi CTLD_PORT=6827
        NODES=(m1 m2 m3 m4 m5 m6 m7 m8) PORTS=(17101 17102 17103 17104 17105 17106 17107 17108)
        ;;
    *) echo "usage: cluster-up.sh [main|multi]" >&2; exit 2 ;;
esac
SLURM_CONF=$SLURM_ETC/slurm.conf
PLUGSTACK=$SLURM_ETC/plugstack.conf
PLUGSTACK_D=$SLURM_ETC/plugstack.conf.d
STATE_DIR=/run/egret-cluster$SUFFIX     # our stamp: which config the running daemons were started with
STAMP=$STATE_DIR/config.sha256
CTLD_PID=/run/slurmctld$SUFFIX.pid
CTLD_STATE=/var/lib/slurm/slurmctld$SUFFIX
# the multi cluster's egret configuration (node-local mode; tests rewrite it)
MULTI_EGRET=/etc/egret/multi/egret.json
export SLURM_CONF
TEST_USER=egretuser
TEST_UID=4242
READY_TIMEOUT=${EGRET_CLUSTER_TIMEOUT:-90}

log() { printf '[cluster-up %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[cluster-up] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
for cmd in slurmctld slurmd srun sinfo scontrol munged munge unmunge runuser; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found: run scripts/install-deps.sh first"
done

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process whose command name is NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

# stop_pid PID: TERM, wait up to 20 s, then KILL.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    log "pid $pid did not stop on SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

# ---------------------------------------------------------------------------------------------
# test user
if ! getent passwd "$TEST_USER" >/dev/null; then
    log "creating user $TEST_USER (uid $TEST_UID)"
    getent group "$TEST_USER" >/dev/null || groupadd -g "$TEST_UID" "$TEST_USER"
    useradd -m -d "/home/$TEST_USER" -u "$TEST_UID" -g "$TEST_USER" -s /bin/bash "$TEST_USER"
fi
[ "$(id -u "$TEST_USER")" = "$TEST_UID" ] || die "user $TEST_USER exists with uid $(id -u "$TEST_USER"), expected $TEST_UID"
[ -d "/home/$TEST_USER" ] || install -d -o "$TEST_USER" -g "$(id -g "$TEST_USER")" -m 0755 "/home/$TEST_USER"

# ---------------------------------------------------------------------------------------------
# host name resolution (slurmctld checks its own short host name against SlurmctldHost)
HOST=$(hostname -s)
if ! getent hosts "$HOST" >/dev/null; then
    log "host name $HOST does not resolve: adding it to /etc/hosts"
    printf '127.0.0.1 %s\n' "$HOST" >>/etc/hosts
fi

# ---------------------------------------------------------------------------------------------
# munge
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
    log "munge already works"
else
    if pid_alive /run/munge/munged.pid munged; then
        log "munged runs but does not answer: restarting it"
        stop_pid "$(cat /run/munge/munged.pid)"
    fi
    if have_systemd && systemctl is-active --quiet munge 2>/dev/null; then
        systemctl stop munge || true
    fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    log "starting munged as user munge"
    detached runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 40); do munge_ok && break; sleep 0.25; done
    munge_ok || die "munge does not work (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------------------------------------
# configuration
install -d -m 0755 "$SLURM_ETC" "$PLUGSTACK_D" /var/log/slurm "$CTLD_STATE" "$STATE_DIR"
for n in "${NODES[@]}"; do
    install -d -m 0755 "/var/spool/slurmd-$n"
    install -d -m 1777 "/tmp/slurm-$n"
done

new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
{
    cat <<EOF
# Generated by egret's scripts/cluster-up.sh: a ${#NODES[@]}-node test cluster on one machine.
# Local edits are overwritten on the next run.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
PlugStackConfig=$PLUGSTACK
ReturnToService=2
StateSaveLocation=$CTLD_STATE
SlurmctldPidFile=$CTLD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld$SUFFIX.log
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
# per node: the pmix plugin puts spmix_appdir_UID_JOB.STEP here, and the nodes share /tmp
TmpFS=/tmp/slurm-%n
SlurmctldDebug=info
SlurmdDebug=info
KillWait=5
MessageTimeout=30
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
Waittime=0
UnkillableStepTimeout=60
EOF
    for i in "${!NODES[@]}"; do
        printf 'NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%s CPUs=8 RealMemory=4000 State=UNKNOWN\n' \
            "${NODES[$i]}" "$HOST" "${PORTS[$i]}"
    done
    printf 'PartitionName=debug Nodes=%s Default=YES OverSubscribe=YES MaxTime=INFINITE State=UP\n' \
        "$(IFS=,; echo "${NODES[*]}")"
} >"$new_conf"

if [ -f "$SLURM_CONF" ] && ! cmp -s "$new_conf" "$SLURM_CONF"; then
    if ! head -n1 "$SLURM_CONF" | grep -q "egret's scripts/cluster-up.sh" && [ ! -e "$SLURM_CONF.egret-orig" ]; then
        log "keeping the previous slurm.conf as $SLURM_CONF.egret-orig"
        cp -p "$SLURM_CONF" "$SLURM_CONF.egret-orig"
    fi
fi
if ! cmp -s "$new_conf" "$SLURM_CONF" 2>/dev/null; then
    log "writing $SLURM_CONF"
    install -m 0644 "$new_conf" "$SLURM_CONF"
fi
plugstack_line="include $PLUGSTACK_D/*.conf"
if [ "$CLUSTER" = multi ]; then
    # The plugin as install.sh announces it, with the multi cluster's own configuration.
    plugin_line=$(sed "s|config=[^ ]*|config=$MULTI_EGRET|" /etc/slurm/plugstack.conf.d/egret.conf 2>/dev/null || true)
    if [ -n "$plugin_line" ]; then
        if [ "$(cat "$PLUGSTACK_D/egret.conf" 2>/dev/null)" != "$plugin_line" ]; then
            printf '%s\n' "$plugin_line" >"$PLUGSTACK_D/egret.conf"
            chmod 0644 "$PLUGSTACK_D/egret.conf"
        fi
    else
        rm -f "$PLUGSTACK_D/egret.conf"
    fi
    if [ -f /etc/egret/egret.json ]; then
        install -d -m 0755 "$(dirname "$MULTI_EGRET")"
        # node-local mode: every directory that holds state names the node
        jq '.localRepositoryBaseDir = "/var/lib/egret/nodes/%n/store"
            | .OCIBundleDir = "/var/lib/egret/nodes/%n/bundle"
            | .containersDir = "/var/lib/egret/nodes/%n/containers"
            | .runDir = "/run/egret/nodes/%n"
            | .runcRoot = "/run/egret/nodes/%n/runc"' /etc/egret/egret.json >"$MULTI_EGRET.tmp"
        chmod 0644 "$MULTI_EGRET.tmp"
        mv -f "$MULTI_EGRET.tmp" "$MULTI_EGRET"
    fi
fi
if [ "$(cat "$PLUGSTACK" 2>/dev/null)" != "$plugstack_line" ]; then
    log "writing $PLUGSTACK"
    printf '%s\n' "$plugstack_line" >"$PLUGSTACK"
    chmod 0644 "$PLUGSTACK"
fi

# The daemons must be restarted when the config or the Slurm/PMIx packages change (slurmd loads
# the pmix plugin at start: installing libpmix2 afterwards needs a restart).
want_stamp=$( {
    cat "$SLURM_CONF"
    dpkg-query -W -f='${Package} ${Version}\n' slurmd slurmctld libpmix2 libpmix-dev 2>/dev/null || true
    # slurmd learns at start whether a plugin has a job epilog (egret's removes named containers)
    sha256sum /usr/local/lib/egret/spank_egret.so 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)

# ---------------------------------------------------------------------------------------------
# daemons
all_running() {
    pid_alive "$CTLD_PID" slurmctld || return 1
    local n
    for n in "${NODES[@]}"; do pid_alive "/run/slurmd-$n.pid" slurmd || return 1; done
}

stop_all() {
    if have_systemd; then
        local unit
        for unit in slurmd slurmctld; do
            if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
                log "stopping and disabling systemd unit $unit (this script runs the daemons itself)"
                systemctl disable --now "$unit" >/dev/null 2>&1 || systemctl stop "$unit" || true
            fi
        done
    fi
    local pids=() pf pid n
    pidfiles=("$CTLD_PID")
    for n in "${NODES[@]}"; do pidfiles+=("/run/slurmd-$n.pid"); done
    [ "$CLUSTER" = main ] && pidfiles+=(/run/slurmd.pid)
    for pf in "${pidfiles[@]}"; do
        [ -e "$pf" ] || continue
        if pid_alive "$pf" slurmctld || pid_alive "$pf" slurmd; then pids+=("$(tr -dc '0-9' <"$pf")"); fi
    done
    # this cluster's daemons started by hand with other pid files (only the daemons, never
    # slurmstepd): the multi cluster's name its configuration, the main cluster's do not
    for pid in $(pgrep -x slurmctld || true) $(pgrep -x slurmd || true); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f /etc/slurm-multi/"; then
            [ "$CLUSTER" = multi ] && pids+=("$pid")
        else
            [ "$CLUSTER" = main ] && pids+=("$pid")
        fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        # shellcheck disable=SC2207
        pids=($(printf '%s\n' "${pids[@]}" | sort -un))
        log "stopping Slurm daemons: pids ${pids[*]}"
        for pid in "${pids[@]}"; do stop_pid "$pid"; done
    fi
    rm -f "${pidfiles[@]}" "$STAMP"
}

start_missing() {
    if ! pid_alive "$CTLD_PID" slurmctld; then
        log "starting slurmctld ($CLUSTER_NAME)"
        detached slurmctld -f "$SLURM_CONF" || die "slurmctld failed to start (see /var/log/slurm/slurmctld$SUFFIX.log)"
    fi
    local n
    for n in "${NODES[@]}"; do
        if ! pid_alive "/run/slurmd-$n.pid" slurmd; then
            log "starting slurmd -N $n"
            detached slurmd -f "$SLURM_CONF" -N "$n" || die "slurmd -N $n failed to start (see /var/log/slurm/slurmd-$n.log)"
        fi
    done
}

have_stamp=$(cat "$STAMP" 2>/dev/null || true)
if all_running && [ "$have_stamp" = "$want_stamp" ]; then
    log "slurmctld and slurmd (${NODES[*]}) already run with this configuration"
else
    if [ "$have_stamp" != "$want_stamp" ]; then
        log "configuration changed or daemons not started by this script: (re)starting all"
        stop_all
    else
        log "some daemons are missing: starting them"
    fi
    start_missing
    echo "$want_stamp" >"$STAMP"
fi

# ---------------------------------------------------------------------------------------------
# wait for the controller and for every node to be usable
deadline=$((SECONDS + READY_TIMEOUT))
until scontrol ping 2>/dev/null | grep -q 'is UP'; do
    [ $SECONDS -lt $deadline ] || die "slurmctld does not answer (see /var/log/slurm/slurmctld$SUFFIX.log)"
    sleep 0.5
done

resumed=0
while :; do
    states=$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null | sort -u)
    bad=()
    ready=0
    for n in "${NODES[@]}"; do
        st=$(awk -v n="$n" '$1 == n { print $2 }' <<<"$states")
        case "$st" in
            idle | mix | alloc | comp) ready=$((ready + 1)) ;;
            down* | drain* | drng* | fail*) bad+=("$n") ;;
        esac
    done
    [ "$ready" -eq "${#NODES[@]}" ] && break
    if [ "${#bad[@]}" -gt 0 ] && [ $resumed -lt 3 ]; then
        log "resuming nodes: ${bad[*]}"
        scontrol update NodeName="$(IFS=,; echo "${bad[*]}")" State=RESUME || true
        resumed=$((resumed + 1))
    fi
    if [ $SECONDS -ge $deadline ]; then
        sinfo -N -l >&2 || true
        die "nodes not ready after ${READY_TIMEOUT}s (logs: /var/log/slurm/)"
    fi
    sleep 1
done
log "nodes ready:"
sinfo -N -o '%N %P %t %c %m' | sed 's/^/    /'

# ---------------------------------------------------------------------------------------------
# smoke test: one task on every node
# shellcheck disable=SC2016  # expanded by the task's shell
N=${#NODES[@]}
out=$(timeout 120 srun -N"$N" -n"$N" -l bash -c 'echo $SLURMD_NODENAME' 2>&1) || die "srun -N$N -n$N failed: $out"
got=$(awk '{ print $2 }' <<<"$out" | sort | tr '\n' ' ')
want=$(printf '%s\n' "${NODES[@]}" | sort | tr '\n' ' ')
[ "$got" = "$want" ] || die "srun -N$N -n$N ran on '$got', expected '$want': $out"
log "srun -N$N -n$N hostname:"
timeout 120 srun -N"$N" -n"$N" -l hostname | sort | sed 's/^/    /'
log "cluster $CLUSTER_NAME is up"
