#!/usr/bin/env bash
# Single-node SLURM cluster on this machine, so the Makefile can farm jobs out
# with e.g. `make -j 2 train LAUNCH="srun -n1 -c1 --quiet"`.
# Needs root and Debian's packages: apt-get install -y slurm-wlm munge
# Usage: tools/slurm_local.sh start|stop|status
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

# True if pid file $1 names a live, non-zombie process called $2: pid files go
# stale after a crash, and a killed daemon can linger a moment as a zombie.
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $(cat "/proc/$pid/stat" 2>/dev/null) == "$pid ($2) "[!Z]* ]]
}

stop_pid() { # pidfile name
  alive "$1" "$2" || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 50); do alive "$1" "$2" || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

write_conf() {
  # Leave ~5% of RAM unadvertised so the node never fails slurmd's memory check.
  local mem; mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
  cat >"$CONF.tmp" <<EOF
# Written by tools/slurm_local.sh; edits are overwritten on the next start.
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# No cgroups inside a container: track job processes through /proc instead.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Hand out single cores, so two -c1 jobs share the node; memory is not a resource.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# A node that went DOWN because the daemons were restarted comes back by itself.
ReturnToService=2
# Reap jobs whose srun is gone (e.g. completions lost when slurmctld was killed -9),
# which would otherwise hold their cores forever.
InactiveLimit=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$CONF.tmp" "$CONF" && alive "$STATE/slurmctld.pid" slurmctld; then
    echo "slurm.conf changed while running: run '$0 stop' then '$0 start' to apply" >&2
  fi
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  munge -n >/dev/null 2>&1 && return 0   # someone's munged already answers
  if [[ ! -f /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  # /run is a tmpfs that no init script populated in this container.
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$STATE/munged.ours"   # so stop only kills a munged we started
}

start() {
  mkdir -p "$STATE"
  start_munge
  write_conf
  alive "$STATE/slurmctld.pid" slurmctld || slurmctld
  alive "$STATE/slurmd.pid" slurmd || slurmd
  # sinfo blocks ~10 s on an unreachable controller, hence the timeouts. A state
  # suffix (idle*, idle~) means slurmd has not registered yet.
  local deadline=$((SECONDS + 30)) st
  until st=$(timeout 3 sinfo -h -n "$NODE" -o %t 2>/dev/null) && [[ $st =~ ^(idle|mix|alloc)$ ]]; do
    if ((SECONDS >= deadline)); then
      echo "node $NODE not ready after 30 s (state: ${st:-no answer}); see $STATE/*.log" >&2
      return 1
    fi
    sleep 1
  done
  sinfo
}

stop() {
  stop_pid "$STATE/slurmd.pid" slurmd
  stop_pid "$STATE/slurmctld.pid" slurmctld
  if [[ -f $STATE/munged.ours ]]; then
    stop_pid /run/munge/munged.pid munged
    rm -f "$STATE/munged.ours"
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
