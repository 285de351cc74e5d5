#!/usr/bin/env bash
# launch/slurm.sbatch, unchanged, on a real Slurm (tests/cluster/slurm.sh) over two test hosts,
# 2 nodes x 2 tasks, ranks started by srun through PMIx. Preempted while it trains
# (scancel --signal=USR1; once, twice with DIFFTRAIN_LONG_TESTS=1): each time the ranks
# checkpoint at the next step and exit 75, the script requeues the job, and after Slurm's
# hold the next allocation resumes; the finished run's parameters equal those of the same 4
# ranks run uninterrupted on one host, bit for bit. scontrol, squeue and the job completion
# log show the requeues. A node whose ranks die ends the job (srun names them); resubmitted,
# it resumes from the last checkpoint to the same parameters. With DIFFTRAIN_LONG_TESTS=1
# also the time limit: --time with --signal=B:USR1@N, as the sbatch file asks for, ends each
# allocation the same way until the run is done.
# Skipped (77), saying why, without root (network namespaces) or Debian's Slurm packages.
#   bash tests/cluster/slurm_preempt.sh path/to/difftrain [path/to/mpirun]
set -uo pipefail
source "$(dirname "$0")/../e2e/lib/common.bash"
cluster=$work/hosts
trap 'bash "$here/tests/cluster/slurm.sh" down "$cluster"; bash "$here/tests/cluster/hosts.sh" down "$cluster"
  kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for step in "hosts.sh up $cluster 2" "slurm.sh up $cluster"; do
  # shellcheck disable=SC2086
  bash "$here/tests/cluster/"$step 2>up.err
  case $? in
    0) ;;
    77) echo "skip: $(cat up.err)"; exit 77 ;;
    *) cat up.err; echo "FAIL $step"; exit 1 ;;
  esac
done
slurm() { bash "$here/tests/cluster/slurm.sh" exec "$cluster" "$@"; }
field() { slurm scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }  # field JOB NAME
# submit NAME STEPS [sbatch options...]: the sbatch file as a user submits it, for a CPU cluster
submit() {
  local name=$1 steps=$2; shift 2
  DIFFTRAIN=$difftrain slurm sbatch --parsable --nodes=2 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-task=0 \
    --output="$work/$name-%j.out" "$@" "$here/launch/slurm.sbatch" "$here/configs/swissroll-smoke.yaml" \
    data.path="$work/sr" run_dir="$work/$name/swissroll" train.steps="$steps" train.log_every=25 train.checkpoint_every=500
}
requeued() { [[ $(slurm scontrol show job -o "$1") =~ JobState=PENDING.*Restarts=$2 ]]; }  # JOB RESTARTS
# Slurm holds a requeued job for 121 s (time for the nodes to clean up the old allocation,
# whose steps the new one's share ids with), then starts it again; the test waits that out.
seen_requeued() {  # JOB RESTARTS
  wait_for 60 requeued "$1" "$2" && slurm squeue -h -j "$1" -o '%T %r' >>"$work/squeue.txt"
}
finished_or_requeued() { finished "$1" || requeued "$1" "$2"; }
finished() { [[ $(field "$1" JobState) =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL)$ ]]; }
progress_lines_at_least() { [[ $(grep -c "^step [0-9]*/$2 " "$1" 2>/dev/null) -ge $3 ]]; }  # LOG STEPS N

"$difftrain" prepare swissroll --out sr --shards 4 >/dev/null
steps=1500
mpi -n 4 "$difftrain" train "$here/configs/swissroll-smoke.yaml" data.path="$work/sr" run_dir=one/swissroll \
  train.steps=$steps train.log_every=25 train.checkpoint_every=500 >one.log 2>&1
check "one host: trains" grep -q "trained to step $steps" one.log

# --- preempted by scancel --signal=USR1: once, twice with DIFFTRAIN_LONG_TESTS=1
rounds=1
[[ ${DIFFTRAIN_LONG_TESTS:-0} == 1 ]] && rounds=2
job=$(submit preempted $steps)
log=$work/preempted-$job.out
for ((round = 1; round <= rounds; round++)); do
  # Training, past the last resume: a step line after the round's start.
  wait_for 300 progress_lines_at_least "$log" $steps $((4 * round))
  check "preemption $round: the job trains on 2 nodes" test "$(field "$job" JobState)" == RUNNING
  [[ $(field "$job" JobState) == RUNNING ]] || tail -4 "$log" | sed 's/^/    | /'
  slurm scancel --signal=USR1 "$job"
  check "preemption $round: requeued" seen_requeued "$job" $round
done
wait_for 400 finished "$job"
check "preempted: the job completed" test "$(field "$job" JobState)" == COMPLETED
check "preempted: exit code 0:0" test "$(field "$job" ExitCode)" == 0:0
check "preempted: scontrol counts $rounds restart(s)" test "$(field "$job" Restarts)" == $rounds
check "preempted: squeue showed it pending after each requeue" test "$(grep -c '^PENDING ' squeue.txt)" -eq $rounds
check "preempted: the ranks checkpointed on each signal" test "$(grep -c 'stopped by a signal at step' "$log")" -eq $rounds
check "preempted: the script requeued each time" test "$(grep -c "requeueing job $job to resume" "$log")" -eq $rounds
check "preempted: each new allocation resumed" test "$(grep -c 'note: resuming .*latest.pt at step [0-9]*$' "$log")" -eq $rounds
check "preempted: and trained to the end" grep -q "trained to step $steps" "$log"
check "preempted: srun placed 2 ranks on each node, local ranks 0 and 1" \
  bash -c "grep -q 'rank 0 on node1: local rank 0 of 2' '$log' && grep -q 'rank 1 on node1: local rank 1 of 2' '$log' &&
    grep -q 'rank 2 on node2: local rank 0 of 2' '$log' && grep -q 'rank 3 on node2: local rank 1 of 2' '$log'"
if needs_python "preempted: bit for bit as the uninterrupted run"; then
  check "preempted: bit for bit as the uninterrupted run" \
    $py "$here/tests/tools/compare_checkpoints.py" one preempted --ignore retained
fi
# Slurm's job completion log: one line per allocation, PENDING for each that was requeued.
check "preempted: the job completion log records the requeues and the end" \
  bash -c "grep -c 'JobId=$job .*JobState=PENDING' '$cluster/slurm/log/jobcomp.log' | grep -qx $rounds &&
    grep -q 'JobId=$job .*JobState=COMPLETED' '$cluster/slurm/log/jobcomp.log'"

# --- a node dies: its ranks killed mid-step; srun ends the job, which is not requeued (it did
# not stop on a signal); resubmitted, it resumes from the last checkpoint
job=$(submit died $steps)
wait_for 120 progress_lines_at_least "$work/died-$job.out" $steps 24
for pid in $(rank_pids "$work/died/swissroll"); do
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx SLURMD_NODENAME=node2 && kill -9 "$pid"
done
wait_for 60 finished "$job"
check "node died: the job fails, not requeued" test "$(field "$job" JobState) $(field "$job" Restarts)" == "FAILED 0"
check "node died: srun names the lost tasks" grep -q "node2: tasks 2-3: Killed" "$work/died-$job.out"
check "node died: no temporary file left" test -z "$(ls -A died/swissroll/checkpoints | grep -v '^latest.pt$\|^step-[0-9]*.pt$')"
job=$(submit died $steps)
wait_for 300 finished "$job"
check "node died: resubmitted, it resumes from the last checkpoint" \
  grep -q "note: resuming .*latest.pt at step 500$" "$work/died-$job.out"
if needs_python "node died: bit for bit as the uninterrupted run"; then
  check "node died: bit for bit as the uninterrupted run" \
    $py "$here/tests/tools/compare_checkpoints.py" one died --ignore retained
fi

# --- srun without PMIx: Open MPI refuses the direct launch; the job fails and is not requeued
job=$(SLURM_MPI_TYPE=none submit nopmix 100)
wait_for 60 finished "$job"
check "srun without PMIx: the job fails, not requeued" \
  test "$(field "$job" JobState) $(field "$job" Restarts)" == "FAILED 0"
check "srun without PMIx: the log says why" grep -q 'direct launched using "srun"' "$work/nopmix-$job.out"
check "srun without PMIx: no run directory left" test ! -e nopmix

# --- the time limit: --time with --signal=B:USR1@N, until the run is done
if [[ ${DIFFTRAIN_LONG_TESTS:-0} == 1 ]]; then
  long=2000
  mpi -n 4 "$difftrain" train "$here/configs/swissroll-smoke.yaml" data.path="$work/sr" run_dir=one-long/swissroll \
    train.steps=$long train.log_every=25 train.checkpoint_every=500 >one-long.log 2>&1
  job=$(submit timed $long --time=2 --signal=B:USR1@90)
  log=$work/timed-$job.out
  for round in $(seq 1 10); do
    wait_for 400 finished_or_requeued "$job" $round
    finished "$job" && break
  done
  wait_for 400 finished "$job"
  check "time limit: the job completed" test "$(field "$job" JobState)" == COMPLETED
  check "time limit: the batch script passed the signal on" grep -q "time limit near, asking the ranks to checkpoint" "$log"
  check "time limit: requeued at least once ($(field "$job" Restarts))" test "$(field "$job" Restarts)" -ge 1
  if needs_python "time limit: bit for bit as the uninterrupted run"; then
    check "time limit: bit for bit as the uninterrupted run" \
      $py "$here/tests/tools/compare_checkpoints.py" one-long timed --ignore retained
  fi
else
  echo "skip time limit (--signal=B:USR1@N; DIFFTRAIN_LONG_TESTS=1 runs it, about 10 minutes)"
  skips=$((skips + 1))
fi
finish
