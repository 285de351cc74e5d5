#!/usr/bin/env bash
# A real Slurm on the test hosts of tests/cluster/hosts.sh: Debian's munged (its own key and
# socket), slurmctld on node1 and one slurmd on each host, all configured into DIR/slurm and
# started here, then stopped. node1 is also the login node: run the client commands there.
#
#   slurm.sh up DIR              start it on the hosts that `hosts.sh up DIR N` made
#   slurm.sh exec DIR CMD...     a command on node1 with this cluster's SLURM_CONF
#   slurm.sh down DIR            stop the daemons (hosts.sh down ends the rest)
#
# Each host has 2 CPUs, no GPUs; Debian's Slurm has PMIx (srun --mpi=pmix). Each
# slurmd keeps its job files (and PMIx's) in DIR/slurm/tmp/NODE, as nodes keep their own
# /tmp. `up` exits 77, saying why, where Debian's slurmctld, slurmd or munge is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: slurm.sh up DIR | exec DIR CMD... | down DIR" >&2; exit 2; }

up() {
  local dir=$1 s n i
  for tool in slurmctld slurmd sbatch munged; do
    command -v $tool >/dev/null || { echo "slurm.sh: $tool not found (launch/setup.sh installs Debian's slurmctld, slurmd, slurm-client and munge)" >&2; exit 77; }
  done
  [[ -f $dir/hosts ]] || { echo "slurm.sh: no test hosts in $dir (hosts.sh up $dir N first)" >&2; exit 2; }
  dir=$(realpath "$dir") n=$(cat "$dir/hosts") s=$dir/slurm
  mkdir -p "$s"/{state,log,munge}
  # munged refuses a key others may read, and a socket directory others may write.
  chmod 700 "$s/munge"
  head -c 128 /dev/urandom >"$s/munge/key"
  chmod 600 "$s/munge/key"
  munged --force --key-file="$s/munge/key" --socket="$s/munge/socket" --pid-file="$s/munge/pid" \
    --log-file="$s/munge/log" --seed-file="$s/munge/seed"
  {
    echo "ClusterName=difftrain-test"
    echo "SlurmctldHost=node1($(bash "$here/hosts.sh" addr 1))"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$s/munge/socket"
    echo "CredType=cred/munge"
    echo "StateSaveLocation=$s/state"
    echo "SlurmdSpoolDir=$s/spool/%n"
    echo "TmpFS=$s/tmp/%n"
    echo "SlurmctldPidFile=$s/slurmctld.pid"
    echo "SlurmdPidFile=$s/slurmd-%n.pid"
    echo "SlurmctldLogFile=$s/log/slurmctld.log"
    echo "SlurmdLogFile=$s/log/slurmd-%n.log"
    # No cgroups: processes are tracked by their parent, tasks bound by affinity.
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/affinity"
    echo "JobAcctGatherType=jobacct_gather/none"
    # Accounting (sacct) needs slurmdbd and a database; the job completion log, squeue and
    # scontrol show what happened instead.
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/filetxt"
    echo "JobCompLoc=$s/log/jobcomp.log"
    echo "SchedulerType=sched/builtin"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "ReturnToService=2"
    echo "SlurmdTimeout=30"
    echo "KillWait=5"
    echo "MinJobAge=3600"
    for ((i = 1; i <= n; i++)); do
      echo "NodeName=node$i NodeAddr=$(bash "$here/hosts.sh" addr "$i") CPUs=2 State=UNKNOWN"
      mkdir -p "$s/spool/node$i" "$s/tmp/node$i"
    done
    echo "PartitionName=test Nodes=node[1-$n] Default=YES MaxTime=INFINITE State=UP"
  } >"$s/slurm.conf"
  export SLURM_CONF=$s/slurm.conf
  bash "$here/hosts.sh" exec "$dir" 1 slurmctld
  for ((i = 1; i <= n; i++)); do bash "$here/hosts.sh" exec "$dir" "$i" slurmd; done
  for ((i = 0; i < 300; i++)); do
    [[ $(bash "$here/hosts.sh" exec "$dir" 1 sinfo -h -o '%T %D' 2>/dev/null) == "idle $n" ]] && return 0
    sleep 0.1
  done
  echo "slurm.sh: the $n nodes did not come up idle within 30 s; see $s/log" >&2
  exit 1
}

down() {
  local s pid
  s=$(realpath -m "$1")/slurm
  for f in "$s"/slurmd-*.pid "$s/slurmctld.pid" "$s/munge/pid"; do
    [[ -f $f ]] && pid=$(cat "$f") && kill "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  up) [[ $# -eq 2 ]] || usage; up "$2" ;;
  exec)
    [[ $# -ge 3 ]] || usage
    dir=$(realpath "$2")
    SLURM_CONF=$dir/slurm/slurm.conf exec bash "$here/hosts.sh" exec "$dir" 1 "${@:3}" ;;
  down) [[ $# -eq 2 ]] || usage; down "$2" ;;
  *) usage ;;
esac
