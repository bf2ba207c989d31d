#!/usr/bin/env bash
# A single-node SLURM on localhost, for testing mto's SLURM launching for real.
#
#   scripts/slurm-local.sh up     install (Debian packages), configure and start munge, slurmctld, slurmd;
#                                 wait until `sinfo` shows the node idle
#   scripts/slurm-local.sh down   stop exactly the daemons `up` started (by PID), nothing else
#   scripts/slurm-local.sh status
#
# Needs root and apt-get (Debian/Ubuntu). Exit code 3 means "cannot run here" (tests skip on it).
# The node is this host, with the CPUs and memory `slurmd -C` reports; one partition, `debug`.
set -euo pipefail

STATE=${MTO_SLURM_STATE:-/tmp/mto-slurm-local}
CONF_DIR=/etc/slurm
PIDS="$STATE/pids"

cannot() { echo "slurm-local: $*" >&2; exit 3; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sinfo >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || cannot "apt-get not found (Debian/Ubuntu needed to install SLURM)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; } \
    || cannot "could not install slurmctld slurmd slurm-client munge"
}

write_config() {
  local host node_line
  host=$(hostname -s)
  # slurmd -C prints the node's real CPUs/memory, e.g. "NodeName=vm CPUs=2 ... RealMemory=23000"
  node_line=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$STATE"
  cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by mto's scripts/slurm-local.sh: a single-node test cluster.
ClusterName=mto-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
# Refuse at submission what no node could ever run (too much memory, too many CPUs) instead of queueing it.
EnforcePartLimits=ALL
$node_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi  # someone else's: use it, never stop it
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  runuser -u munge -- munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  echo "munged $(cat /run/munge/munged.pid)" >> "$PIDS"
}

start_slurm() {
  if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    cannot "a slurmctld/slurmd is already running that this script did not start"
  fi
  slurmctld -f "$CONF_DIR/slurm.conf"
  for _ in $(seq 50); do [ -s "$STATE/slurmctld.pid" ] && break; sleep 0.1; done
  echo "slurmctld $(cat "$STATE/slurmctld.pid")" >> "$PIDS"
  slurmd -f "$CONF_DIR/slurm.conf"
  for _ in $(seq 50); do [ -s "$STATE/slurmd.pid" ] && break; sleep 0.1; done
  echo "slurmd $(cat "$STATE/slurmd.pid")" >> "$PIDS"
}

wait_idle() {
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx 'idle'; then echo "slurm-local: node idle"; return; fi
    sleep 0.5
  done
  cannot "the node did not become idle in 30 s (see /var/log/slurm/)"
}

up() {
  [ "$(id -u)" = 0 ] || cannot "needs root"
  if [ -s "$PIDS" ]; then echo "slurm-local: already up"; wait_idle; return; fi
  install_packages
  write_config
  : > "$PIDS"
  start_munge
  start_slurm
  wait_idle
}

down() {
  [ -f "$PIDS" ] || { echo "slurm-local: not up"; return; }
  # Stop in reverse order of start, only the PIDs we recorded.
  tac "$PIDS" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "slurm-local: stopped $name ($pid)"
    fi
  done
  rm -f "$PIDS"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) [ -s "$PIDS" ] && cat "$PIDS" && sinfo || echo "slurm-local: not up" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
