#!/usr/bin/env bash
# Faults end to end (the README's fault table points here): a rank killed with -9, kills
# during checkpoint writes, SIGTERM/SIGUSR1 preemption and resume, resuming on another
# world size, and bad data or checkpoints on 1 and 2 ranks.
#   bash tests/e2e/faults.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
config=$here/configs/swissroll.yaml
"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
long=(train.steps=1000000 train.checkpoint_every=50 train.log_every=1000)

# --- a rank killed with SIGKILL: the job ends, non-zero, within the bound; latest.pt loads
mpi -n 2 "$difftrain" train "$config" run_dir=killed "${long[@]}" dist.timeout_s=20 >killed.log 2>&1 &
launcher=$!
wait_for 60 test -f killed/checkpoints/latest.pt
victim=$(rank_pids run_dir=killed | tail -n 1)
kill -9 "$victim"
start=$SECONDS
wait "$launcher"; rc=$?
elapsed=$((SECONDS - start))
echo "killed rank $victim: the job ended with status $rc after ${elapsed}s"
check "kill -9 of one rank: non-zero exit" test "$rc" -ne 0
check "kill -9 of one rank: ended within 30 s" test "$elapsed" -le 30
check "kill -9 of one rank: latest.pt loads" loads killed/checkpoints/latest.pt

# --- a rank that hangs (SIGSTOP: alive, silent; the launcher sees nothing wrong): the
# watchdog of the rank waiting for it ends the job after dist.timeout_s.
mpi -n 2 "$difftrain" train "$config" run_dir=hung "${long[@]}" dist.timeout_s=5 >hung.log 2>&1 &
launcher=$!
wait_for 60 test -f hung/checkpoints/latest.pt
kill -STOP "$(rank_pids run_dir=hung | tail -n 1)"
start=$SECONDS
wait "$launcher"; rc=$?
elapsed=$((SECONDS - start))
echo "stopped a rank: the job ended with status $rc after ${elapsed}s"
check "hung rank: non-zero exit" test "$rc" -ne 0
check "hung rank: ended within timeout + 15 s" test "$elapsed" -le 20
check "hung rank: the waiting rank names the time-out" grep -q "did not complete within dist.timeout_s=5" hung.log
for pid in $(rank_pids run_dir=hung); do kill -9 "$pid"; done

# --- SIGKILL at random moments of a run that checkpoints every step: latest.pt always
# loads (the write is atomic), and each new start resumes from it.
for i in 1 2 3 4 5; do
  "$difftrain" train "$config" run_dir=ckrun train.steps=1000000 train.checkpoint_every=1 train.log_every=1000 \
    >/dev/null 2>&1 &
  pid=$!
  wait_for 60 test -f ckrun/checkpoints/latest.pt
  sleep "0.$((RANDOM % 9 + 1))"
  kill -9 "$pid"; wait "$pid" 2>/dev/null
  check "kill -9 during checkpoint writes ($i): latest.pt loads" loads ckrun/checkpoints/latest.pt
done
check "kill -9 during checkpoint writes: only the last 3 step files kept" \
  test "$(ls ckrun/checkpoints | grep -c '^step-')" -le 4

# --- SIGTERM to one rank: every rank stops at the same step, rank 0 checkpoints, status 75;
# the same command again resumes and finishes.
steps=4000
mpi -n 2 "$difftrain" train "$config" run_dir=pre train.steps=$steps train.checkpoint_every=1000 >pre.log 2>&1 &
launcher=$!
wait_for 60 test -f pre/metrics.jsonl
sleep 0.5
kill -TERM "$(rank_pids run_dir=pre | tail -n 1)"
wait "$launcher"; rc=$?
echo "SIGTERM: status $rc"
check "SIGTERM: status 75" test "$rc" -eq 75
[[ $rc -eq 75 ]] || tr '\r' '\n' <pre.log | grep -v '^step' | sed 's/^/    | /' | head -20
if needs_python "SIGTERM: checkpoint before the end"; then
  stopped_at=$(checkpoint_step pre/checkpoints/latest.pt)
  echo "SIGTERM: checkpoint at step $stopped_at"
  check "SIGTERM: checkpoint before the end" test "$stopped_at" -lt $steps
fi
check "SIGTERM: message says how to resume" grep -q "run again to resume" pre.log
mpi -n 2 "$difftrain" train "$config" run_dir=pre train.steps=$steps train.checkpoint_every=1000 >pre2.log 2>&1; rc=$?
check "SIGTERM: the rerun exits 0" test "$rc" -eq 0
needs_python "SIGTERM: the rerun resumes and finishes" &&
  check "SIGTERM: the rerun resumes and finishes" test "$(checkpoint_step pre/checkpoints/latest.pt)" -eq $steps

# --- SIGUSR1 (Slurm's --signal=USR1@90) on a single rank
"$difftrain" train "$config" run_dir=usr train.steps=$steps >usr.log 2>&1 &
pid=$!
wait_for 60 test -f usr/metrics.jsonl
kill -USR1 "$pid"
wait "$pid"; rc=$?
check "SIGUSR1: status 75 and a checkpoint" bash -c "test $rc -eq 75 && test -f usr/checkpoints/latest.pt"

# --- resuming on another world size works, with a note that it is not bitwise
"$difftrain" train "$config" run_dir=ws train.steps=100 >/dev/null 2>&1
mpi -n 2 "$difftrain" train "$config" run_dir=ws train.steps=200 >ws.log 2>&1; rc=$?
check "resume 1 rank -> 2 ranks: completes" test "$rc" -eq 0
needs_python "resume 1 rank -> 2 ranks: reaches step 200" &&
  check "resume 1 rank -> 2 ranks: reaches step 200" test "$(checkpoint_step ws/checkpoints/latest.pt)" -eq 200
check "resume 1 rank -> 2 ranks: says it is not bitwise" grep -q "not bit for bit" ws.log

# --- bad data and checkpoints: one error line naming the problem, non-zero on every rank,
# no run directory left behind.
mkdir -p bad
: >bad/empty.h5
echo "not hdf5" >bad/text.h5
head -c 1500 data/swissroll/shard-00000.h5 >bad/truncated.h5
$have_python && $py - <<'PY'
import h5py, numpy as np
with h5py.File("bad/three_d.h5", "w") as f: f["x"] = np.zeros((10, 3), np.float32)
with h5py.File("bad/nan.h5", "w") as f:
    x = np.ones((60, 2), np.float32); x[41, 1] = np.nan; f["x"] = x
with h5py.File("bad/float64.h5", "w") as f: f["x"] = np.zeros((10, 2), np.float64)
PY
"$difftrain" train "$config" run_dir=small model.hidden_dims=[8,8] train.steps=5 >/dev/null 2>&1
cp small/checkpoints/latest.pt bad/other_model.pt
head -c 2000 small/checkpoints/latest.pt >bad/truncated.pt
bad "missing data file" "bad/missing.h5" train "$config" run_dir=badrun data.path=bad/missing.h5
bad "empty data file" "empty" train "$config" run_dir=badrun data.path=bad/empty.h5
bad "non-HDF5 data file" "not an HDF5 file" train "$config" run_dir=badrun data.path=bad/text.h5
bad "truncated data file" "bad/truncated.h5" train "$config" run_dir=badrun data.path=bad/truncated.h5
bad "missing dataset name" "has no dataset 'pixels'" train "$config" run_dir=badrun data.dataset=pixels
needs_python "shards of different shapes" && bad "shards of different shapes" "shape" train "$config" run_dir=badrun "data.path=data/swissroll,bad/three_d.h5"
needs_python "unsupported dtype" && bad "unsupported dtype" "float64" train "$config" run_dir=badrun data.path=bad/float64.h5
bad "missing checkpoint" "nope.pt" train "$config" run_dir=badrun --resume bad/nope.pt
bad "truncated checkpoint" "truncated.pt" train "$config" run_dir=badrun --resume bad/truncated.pt
bad "incompatible checkpoint" "model.hidden_dims" train "$config" run_dir=badrun --resume bad/other_model.pt
# rank 0 alone fails after the set-up agreement (its run directory cannot be made): the
# failure is shared, every rank exits 1 with one line and no abort.
mkdir -p blocked && : >blocked/checkpoints
for ranks in 1 2; do
  if [[ $ranks -eq 1 ]]; then "$difftrain" train "$config" run_dir=blocked >out.txt 2>err.txt; rc=$?
  else mpi -n 2 "$difftrain" train "$config" run_dir=blocked >out.txt 2>err.txt; rc=$?; fi
  check "run directory blocked ($ranks rank): non-zero exit" test "$rc" -ne 0
  check "run directory blocked ($ranks rank): one line, no abort" one_error_line err.txt "blocked/checkpoints"
done
# ranks that read different data (MPMD: each rank its own data.path) are stopped before
# training, by name of what differs: here 50 examples (one of the two shards) against 100.
"$mpirun_bin" --allow-run-as-root --oversubscribe -n 1 "$difftrain" train "$config" run_dir=badrun \
  : -n 1 "$difftrain" train "$config" run_dir=badrun data.path=data/swissroll/shard-00000.h5 >out.txt 2>err.txt; rc=$?
check "ranks reading different data: non-zero exit" test "$rc" -ne 0
check "ranks reading different data: one line" one_error_line err.txt "disagree on the number of examples"
# Usage errors of the command line: one line, status 1 (help stays 0).
"$difftrain" sample --out x.h5 >out.txt 2>err.txt; rc=$?
check "usage error: status 1 and one line" bash -c "test $rc -eq 1 && grep -q 'difftrain: error:.*checkpoint' err.txt && test \$(wc -l <err.txt) -eq 1"
"$difftrain" sample --help >/dev/null 2>&1
check "help: status 0" test $? -eq 0

# NaN in the data surfaces when its row is read, during training: one line naming the
# file and row, every rank exits non-zero, only the run's config and metrics exist.
needs_python "NaN in the data" && for ranks in 1 2; do
  rm -rf nanrun
  if [[ $ranks -eq 1 ]]; then "$difftrain" train "$config" run_dir=nanrun data.path=bad/nan.h5 >out.txt 2>err.txt; rc=$?
  else mpi -n 2 "$difftrain" train "$config" run_dir=nanrun data.path=bad/nan.h5 >out.txt 2>err.txt; rc=$?; fi
  check "NaN in the data ($ranks rank): non-zero exit" test "$rc" -ne 0
  check "NaN in the data ($ranks rank): one line naming file and row" one_error_line err.txt "nan.h5.*row 41"
  check "NaN in the data ($ranks rank): no checkpoint" test ! -e nanrun/checkpoints/latest.pt
done
finish
