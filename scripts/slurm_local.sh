#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on this machine: this host is both controller and
# compute node. It exists for the tests and for trying the cluster workflow
# (hydra/launcher=slurm, trainer=ddp through srun, requeue) on a laptop; it is not a way
# to run a real cluster (no accounting, no cgroups, root daemons, one partition).
#
#   sudo bash scripts/slurm_local.sh start   # install if missing, configure, start, wait until idle
#   sudo bash scripts/slurm_local.sh stop    # cancel its jobs, stop the daemons that start started
#
# Debian/Ubuntu (apt-get); checked with SLURM 22.05 and MUNGE 0.5 on Debian 12.
set -euo pipefail

STATE=/var/lib/slurm-local   # spool, saved state, logs and the pids of the daemons started here
CONF=/etc/slurm/slurm.conf   # where sbatch, srun and sinfo read the cluster's address
MARK="# Written by scripts/slurm_local.sh: a one-node test cluster."
WAIT_S=60                    # every wait below gives up after this many seconds

fail() {
    echo "error: $*" >&2
    exit 1
}

# Whether process $1 runs (a zombie waiting for its parent to collect it does not).
alive() {
    [ -r "/proc/$1/stat" ] && [ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat")" != Z ]
}

# The pid recorded for daemon $1 if that process still runs under that name.
running_pid() {
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

# Start daemon $1 (the rest: its command line, in the foreground) detached, and record its
# pid; what it prints (in the foreground, its log) goes to $STATE/log/$1.log.
launch() {
    local name=$1
    shift
    setsid "$@" >>"$STATE/log/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

# Whether the process launched for daemon $1 still runs (under any name: it may not have
# reached the daemon's own exec yet on a busy machine).
launched() {
    alive "$(cat "$STATE/$1.pid" 2>/dev/null)"
}

node_state() {
    timeout 5 sinfo --noheader --nodes="$HOST" --format=%T 2>/dev/null || true
}

install_if_missing() {
    local tool
    for tool in munged slurmctld slurmd sbatch srun sinfo; do
        command -v "$tool" >/dev/null && continue
        command -v apt-get >/dev/null || fail "SLURM or MUNGE is not installed ($tool is missing)" \
            "and this script installs them only with apt-get. Install slurmctld, slurmd, the SLURM" \
            "client commands and munge with your package manager, then run it again."
        echo "Installing slurm-wlm and munge (apt-get) ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
        return
    done
}

write_config() {
    if [ -f "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARK" ]; then
        fail "$CONF exists and was not written by this script: this machine already has a SLURM" \
            "configuration, so use that cluster (hydra/launcher=slurm needs only sbatch to reach" \
            "it). Nothing was changed."
    fi
    # The node as slurmd detects it, with at least 8 cores: jobs share the real ones as the
    # processes of a laptop do, so that several sweeps (the tests' too) run at once rather
    # than queue (SlurmdParameters=config_overrides keeps slurmd from draining a node with
    # fewer). RealMemory is lowered by 10%: a node that reports less memory than configured
    # is drained.
    local node memory cores
    node=$(slurmd -C | head -n 1)
    memory=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")
    cores=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$node")
    cores=$((cores > 8 ? cores : 8))
    node="NodeName=$HOST CPUs=$cores Boards=1 SocketsPerBoard=1 CoresPerSocket=$cores"
    node+=" ThreadsPerCore=1 RealMemory=$((memory * 9 / 10))"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<EOF
$MARK
# The controller and the node listen on 127.0.0.1 only; their logs: $STATE/log/.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start again this many seconds later (default 120)
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# finished jobs leave squeue and scontrol after a minute
MinJobAge=60
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=$STATE/slurmd
StateSaveLocation=$STATE/slurmctld
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return # a running munged (this script's or the system's) already answers
    fi
    [ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    launch munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
    local deadline=$((SECONDS + WAIT_S))
    until munge -n 2>/dev/null | unmunge >/dev/null 2>&1; do
        launched munged || fail "munged did not start: see $STATE/log/munged.log"
        [ "$SECONDS" -lt "$deadline" ] || fail "munged did not answer within ${WAIT_S} s"
        sleep 0.5
    done
}

start() {
    [ "$(id -u)" -eq 0 ] || fail "starting the local SLURM cluster needs root: it installs" \
        "packages, writes $CONF and runs slurmctld and slurmd as root. Run it with sudo:" \
        "sudo bash scripts/slurm_local.sh start"
    HOST=$(hostname -s)
    install_if_missing
    if running_pid slurmctld >/dev/null && running_pid slurmd >/dev/null; then
        sinfo
        echo "The local SLURM cluster is already running."
        return
    fi
    if ps -C slurmctld,slurmd -o stat= | grep -qv '^Z'; then
        fail "slurmctld or slurmd is already running, not started by this script: stop it" \
            "first, or use that cluster directly."
    fi
    mkdir -p "$STATE/log" "$STATE/slurmd" "$STATE/slurmctld"
    write_config
    start_munge
    # -c: start from an empty job list, never with a previous session's jobs
    launch slurmctld slurmctld -D -c
    launch slurmd slurmd -D
    local deadline=$((SECONDS + WAIT_S))
    until [ "$(node_state)" = idle ]; do
        for daemon in slurmctld slurmd; do
            launched "$daemon" || fail "$daemon stopped while starting: see" \
                "$STATE/log/$daemon.log ($(tail -n 1 "$STATE/log/$daemon.log" 2>/dev/null))"
        done
        [ "$SECONDS" -lt "$deadline" ] || fail "the node $HOST was not idle in sinfo within" \
            "${WAIT_S} s (state: '$(node_state)'); see $STATE/log/slurmctld.log and slurmd.log"
        sleep 1
    done
    sinfo
    echo "SLURM is up: partition debug, node $HOST. Stop it with: sudo bash scripts/slurm_local.sh stop"
}

stop() {
    # Jobs would outlive slurmd (each runs under its own slurmstepd): cancel them first.
    if running_pid slurmctld >/dev/null; then
        local jobs deadline=$((SECONDS + WAIT_S))
        jobs=$(timeout 10 squeue --noheader --format=%A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            echo "Cancelling jobs:" $jobs
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs || true
            while [ -n "$(timeout 10 squeue --noheader --format=%A 2>/dev/null)" ] &&
                [ "$SECONDS" -lt "$deadline" ]; do
                sleep 1
            done
        fi
    fi
    local daemon pid
    for daemon in slurmd slurmctld munged; do
        pid=$(running_pid "$daemon") || {
            rm -f "$STATE/$daemon.pid"
            continue
        }
        kill -TERM "$pid"
        local deadline=$((SECONDS + WAIT_S))
        while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        if alive "$pid"; then
            kill -KILL "$pid"
        fi
        rm -f "$STATE/$daemon.pid"
        echo "Stopped $daemon (pid $pid)."
    done
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) fail "usage: sudo bash scripts/slurm_local.sh start|stop" ;;
esac
