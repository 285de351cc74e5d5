#!/usr/bin/env bash
# Nothing lost, nothing silently wrong, end to end: one training per run directory (and a
# killed holder never blocks the resume), stop signals in every phase (a FIFO that never
# opens, SIGINT/SIGHUP while training, a second Ctrl-C), resuming when latest.pt is
# missing or damaged, and recipe changes on resume.
#   bash tests/e2e/safety.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
config=$here/configs/swissroll.yaml
"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
long=(train.steps=1000000 train.checkpoint_every=50 train.log_every=1)
# Background jobs of a script ignore SIGINT unless job control is on; a user's Ctrl-C
# reaches a foreground program, which this imitates.
set -m

# status_within SECONDS PID: waits for PID (a child of this shell) to end, at most SECONDS;
# sets rc to its status, or to "hung" after killing it
status_within() {
  local limit=$1 pid=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; rc=$?; return; fi
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rc=hung
}

# handlers_installed PID: difftrain has installed its stop handlers (the set-up is under
# way: a signal before that would meet the default action and prove nothing). SIGUSR1 tells
# it: the shell that forked PID catches SIGTERM itself, but not SIGUSR1.
handlers_installed() {
  local mask
  mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $mask ]] && (((16#$mask >> 9) & 1))
}

# --- a second training on a busy run directory is refused at once, naming the holder
"$difftrain" train "$config" run_dir=busy "${long[@]}" >busy1.log 2>&1 &
holder=$!
wait_for 60 test -f busy/checkpoints/latest.pt
# (bounded: a difftrain without the lock would train along for good)
timeout 120 "$difftrain" train "$config" run_dir=busy "${long[@]}" >out.txt 2>err.txt; rc=$?
check "busy run_dir (1 rank): refused, status 1" test "$rc" -eq 1
check "busy run_dir (1 rank): one line naming the holder's pid" one_error_line err.txt "another training run.*pid $holder on host"
timeout 120 "$mpirun_bin" --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \
  -x OPENBLAS_NUM_THREADS=1 -n 2 "$difftrain" train "$config" run_dir=busy "${long[@]}" >out.txt 2>err.txt; rc=$?
check "busy run_dir (2 ranks): refused, non-zero" test "$rc" -ne 0
check "busy run_dir (2 ranks): one line naming the holder" one_error_line err.txt "pid $holder"
check "busy run_dir: the holder trains on" kill -0 "$holder"
# kill -9 leaves the lock file but not the lock: the resume is not blocked.
kill -9 "$holder"; wait "$holder" 2>/dev/null
check "after kill -9: the lock file stays" test -f busy/.lock
"$difftrain" train "$config" run_dir=busy "${long[@]}" >busy2.log 2>&1 &
pid=$!
wait_for 60 grep -q '^step' busy2.log
check "after kill -9: the rerun takes the run directory" kill -0 "$pid"
kill -TERM "$pid"
status_within 30 "$pid"
check "after kill -9: the rerun stops on SIGTERM with status 75" test "$rc" = 75
check "after kill -9: the rerun resumed" grep -q "stopped by a signal" busy2.log

# --- signals while blocked in set-up: a config that is a FIFO nobody writes
mkfifo cfg.fifo
for sig in TERM INT HUP; do
  "$difftrain" train cfg.fifo >out.txt 2>err.txt &
  pid=$!
  wait_for 60 handlers_installed "$pid"
  sleep 0.5
  kill -"$sig" "$pid"
  status_within 10 "$pid"
  code=$((128 + $(kill -l "$sig")))
  check "SIG$sig while blocked on a FIFO config: exits at once with $code" test "$rc" = "$code"
  check "SIG$sig while blocked on a FIFO config: says so" grep -q "during set-up" err.txt
done
mpi -n 2 "$difftrain" train cfg.fifo >out.txt 2>err.txt &
launcher=$!
ranks_up() { [[ $(rank_pids cfg.fifo | wc -l) -eq 2 ]]; }
wait_for 60 ranks_up
for p in $(rank_pids cfg.fifo); do wait_for 60 handlers_installed "$p"; done
kill -TERM "$(rank_pids cfg.fifo | head -n 1)"
kill -TERM "$(rank_pids cfg.fifo | tail -n 1)"
status_within 20 "$launcher"
check "SIGTERM to both ranks blocked on a FIFO config: the job ends" bash -c "[[ $rc != hung && $rc -ne 0 ]]"
# A FIFO as data is refused outright: HDF5 needs a regular file.
mkfifo data.fifo
"$difftrain" train "$config" run_dir=fiforun data.path=data.fifo >out.txt 2>err.txt &
pid=$!
status_within 10 "$pid"
check "FIFO as data: refused at once" test "$rc" = 1
check "FIFO as data: one line naming it" one_error_line err.txt "data.fifo: not a regular file, which HDF5 needs"

# --- Ctrl-C and SIGHUP while training: checkpoint at the next step, status 75, resumable
for sig in INT HUP; do
  "$difftrain" train "$config" run_dir="sig$sig" train.steps=100000 train.log_every=1 >out.txt 2>err.txt &
  pid=$!
  wait_for 60 test -s "sig$sig/metrics.jsonl"
  kill -"$sig" "$pid"
  status_within 30 "$pid"
  check "SIG$sig while training: status 75" test "$rc" = 75
  check "SIG$sig while training: a checkpoint and how to resume" \
    bash -c "test -f sig$sig/checkpoints/latest.pt && grep -q 'run again to resume' err.txt"
  "$difftrain" train "$config" run_dir="sig$sig" train.steps=100000 train.log_every=1 >out.txt 2>err.txt &
  pid=$!
  wait_for 60 grep -q '^step' err.txt
  kill -TERM "$pid"
  status_within 30 "$pid"
done
# A second Ctrl-C does not wait for the checkpoint: steps of about a second here.
slow=(model.hidden_dims=[2048,2048,2048,2048] train.steps=1000 train.log_every=1 train.checkpoint_every=1000)
"$difftrain" train "$config" run_dir=twice "${slow[@]}" >out.txt 2>err.txt &
pid=$!
wait_for 120 test -s twice/metrics.jsonl
kill -INT "$pid"; sleep 0.05; kill -INT "$pid"
status_within 30 "$pid"
check "second Ctrl-C: exits at once with 130" test "$rc" = 130
check "second Ctrl-C: says no checkpoint was written" grep -q "second interrupt; exiting without a checkpoint" err.txt

# --- latest.pt missing or damaged: resume from the newest step file that verifies
"$difftrain" train "$config" run_dir=fall train.steps=100 train.checkpoint_every=25 >/dev/null 2>&1
rm fall/checkpoints/latest.pt
"$difftrain" train "$config" run_dir=fall train.steps=150 train.checkpoint_every=25 >out.txt 2>err.txt; rc=$?
check "missing latest.pt: resumes from the newest step file" \
  bash -c "test $rc -eq 0 && grep -q 'note: resuming from fall/checkpoints/step-0000100.pt (step 100)' err.txt"
check "missing latest.pt: its step files were not pruned away" test -f fall/checkpoints/step-0000100.pt
size=$(stat -c %s fall/checkpoints/latest.pt)
printf '\377%.0s' $(seq 64) | dd of=fall/checkpoints/latest.pt bs=1 seek=$((size / 2)) conv=notrunc status=none
"$difftrain" train "$config" run_dir=fall train.steps=175 train.checkpoint_every=25 >out.txt 2>err.txt; rc=$?
check "damaged latest.pt: resumes from the step file of the same step" \
  bash -c "test $rc -eq 0 && grep -q 'resuming from fall/checkpoints/step-0000150.pt' err.txt && grep -q 'latest.pt: ' err.txt"
"$difftrain" sample --checkpoint fall/checkpoints/latest.pt --out probe.h5 --n 4 --steps 2 >/dev/null 2>&1
check "damaged latest.pt: the new latest.pt loads" test $? -eq 0

# --- recipe changes on resume: math-changing keys refused on every rank, others noted
"$difftrain" train "$config" run_dir=recipe train.steps=50 >/dev/null 2>&1
for ranks in 1 2; do
  if [[ $ranks -eq 1 ]]; then "$difftrain" train "$config" run_dir=recipe train.steps=100 seed=3 >out.txt 2>err.txt; rc=$?
  else mpi -n 2 "$difftrain" train "$config" run_dir=recipe train.steps=100 seed=3 >out.txt 2>err.txt; rc=$?; fi
  check "changed seed on resume ($ranks rank): non-zero" test "$rc" -ne 0
  check "changed seed on resume ($ranks rank): one line naming key and values" \
    one_error_line err.txt "was trained with seed = 0, this config has 3; use --fresh"
done
"$difftrain" train "$config" run_dir=recipe train.steps=100 schedule.N=100 >out.txt 2>err.txt
check "changed schedule on resume: refused naming schedule.N" one_error_line err.txt "schedule.N = 200, this config has 100"
"$difftrain" train "$config" run_dir=recipe train.steps=100 train.lr=5e-4 >out.txt 2>err.txt; rc=$?
check "changed lr on resume: trains on with one note" \
  bash -c "test $rc -eq 0 && test \$(grep -c 'changed settings: train.steps 50 -> 100, train.lr 0.001 -> 0.0005' err.txt) -eq 1"
check "changed lr on resume: recorded in the metrics" grep -q '"event": *"resume"' recipe/metrics.jsonl
finish
