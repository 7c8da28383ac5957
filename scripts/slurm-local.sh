#!/usr/bin/env bash
# A one-machine Slurm for tests and benchmarks, sourced by scripts/slurm-test.sh and
# benches/slurm.sh: munged, slurmctld and slurmd on localhost (Debian's slurm-wlm and munge,
# installed when missing), with a throwaway key, free ports and all state under one folder.
#
#   . scripts/slurm-local.sh; slurm_up "$work"; port=$(local_redis_up "$work"); ...; slurm_down "$work"
# slurm_up exports SLURM_CONF; local_redis_up starts a redis-server on a free loopback port
# and prints the port; slurm_down stops what both started.

slurm_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

slurm_up() { # WORK
  local work=$1
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "slurm-local: installing slurm-wlm and munge"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null
  fi
  # munge, with a throwaway key and socket
  mkdir -p "$work/munge" "$work/state" "$work/spool" "$work/log"
  chmod 711 "$work/munge"
  head -c 1024 /dev/urandom >"$work/munge/munge.key"
  chmod 400 "$work/munge/munge.key"
  munged --force --socket="$work/munge/munge.sock" --key-file="$work/munge/munge.key" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
    --seed-file="$work/munge/seed"

  # a one-node cluster on free ports
  local host mem_mb
  host=$(hostname -s)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat >"$work/slurm.conf" <<EOF
ClusterName=ddcolortest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(slurm_free_port)
SlurmdPort=$(slurm_free_port)
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$work/slurm.conf"
  slurmctld -c
  slurmd
  for _ in $(seq 1 30); do
    sinfo -h -o %t 2>/dev/null | grep -q idle && break
    sleep 1
  done
  sinfo -h -o %t | grep -q idle || { cat "$work"/log/*.log; echo "slurm-local: the node did not come up" >&2; return 1; }
  echo "slurm-local: up ($(sinfo -h -o '%n, %c CPUs, %t'))"
}

local_redis_up() { # WORK -> the port
  local work=$1 port
  port=$(slurm_free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$work/redis.pid" --dir "$work" --logfile "$work/log/redis.log" >/dev/null
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "$port"
}

slurm_down() { # WORK
  local work=$1 pid
  for pid in "$work"/redis.pid "$work"/slurmd.pid "$work"/slurmctld.pid "$work"/munge/munged.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 1
  for pid in "$work"/redis.pid "$work"/slurmd.pid "$work"/slurmctld.pid "$work"/munge/munged.pid; do
    [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null || true
  done
}
