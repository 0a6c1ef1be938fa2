#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try profiles/slurm without a real cluster (tests/test_slurm.py
# uses it). Debian or Ubuntu, as root: installs slurm-wlm and munge with apt-get when they are missing.
#
#   scripts/slurm_local_cluster.sh start    # configure, start munged, slurmctld, slurmd; wait for an idle node
#   snakemake --workflow-profile profiles/slurm --slurm-no-account --slurm-status-command squeue ...
#   scripts/slurm_local_cluster.sh stop     # stop the daemons this script started, remove its slurm.conf
#
# The config goes where every SLURM command looks for it, /etc/slurm/slurm.conf (SLURM_CONF elsewhere would
# not do: the plugin clears SLURM_* variables before the srun inside each job). The script refuses to replace
# a slurm.conf it did not write. The rest (spool and state folders, daemon logs, pid files, the job
# completion log) lives in $EMREPRO_SLURM_DIR (default /tmp/emrepro-slurm).
#
# No accounting database: sacct cannot answer, so the SLURM plugin must read job states with squeue
# (--slurm-status-command squeue). squeue forgets a finished job after MinJobAge seconds; the plugin needs at
# least 120 s. That is simpler and as reliable here as slurmdbd + MariaDB, which would add two daemons and a
# database for one node. The job completion log (jobcomp/filetxt) still records every job that ran, which is
# what a test needs to prove that jobs ran under SLURM.
set -euo pipefail

DIR=${EMREPRO_SLURM_DIR:-/tmp/emrepro-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by scripts/slurm_local_cluster.sh"

die() { echo "slurm_local_cluster: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]}"
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them"
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    # slurmd -C reports what slurmd will find on this machine; a node configured with more is drained.
    cpus=$(slurmd -C | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$cpus" ] && [ -n "$mem" ] || die "slurmd -C did not report CPUs and RealMemory"
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: not replacing a real cluster's config"
    fi
    mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/log" "$(dirname "$CONF")"
    cat >"$CONF" <<EOF
$MARK: one node, $host, state in $DIR.
ClusterName=emrepro
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in containers and sandboxes: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
# No accounting: states come from squeue, which keeps a finished job for MinJobAge seconds (plugin: >= 120).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
# Every finished job, one line each (JobId, Name, JobState, ExitCode, ...): the record tests read.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged already answers (the system's): use it, and leave it running at stop
    fi
    [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (the munge package creates it)"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    touch "$DIR/started_munged"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "munged did not answer"
}

node_state() { sinfo -h -N -o %t 2>/dev/null | head -1; }

start() {
    install_packages
    [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null \
        && die "already running (state in $DIR); run '$0 stop' first"
    # one controller per machine (port 6817): another session's cluster or a real one must be left alone
    pgrep -x slurmctld >/dev/null && die "a slurmctld already runs on this machine (pid $(pgrep -x slurmctld))"
    write_conf
    start_munge
    slurmctld -c   # -c: a clean start, no jobs or node states from an earlier run
    slurmd
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        case "$state" in
            idle) echo "SLURM is up ($CONF, state in $DIR)" >&2; return ;;
            drain*|down*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    echo "--- slurmctld.log" >&2; tail -20 "$DIR/log/slurmctld.log" >&2 || true
    echo "--- slurmd.log" >&2; tail -20 "$DIR/log/slurmd.log" >&2 || true
    die "the node did not become idle within 60 s (state: '${state:-none}')"
}

stop_pidfile() {  # stop the daemon whose pid a file holds, and wait until it is gone
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    # scancel before the daemons go: slurmd would leave running jobs' processes behind otherwise
    [ -f "$DIR/slurmctld.pid" ] && scancel --full --user=root 2>/dev/null && sleep 1 || true
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    if [ -f "$DIR/started_munged" ]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$DIR/started_munged"
    fi
    if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop   (state folder: \$EMREPRO_SLURM_DIR, default /tmp/emrepro-slurm)" >&2; exit 2 ;;
esac
