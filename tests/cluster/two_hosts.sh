#!/usr/bin/env bash
# mpirun across two hosts: two test hosts (tests/cluster/hosts.sh: their own network
# namespace, address and hostname each) with 2 ranks on each, started by Open MPI's own
# launcher through an agent that enters the host instead of ssh, talking TCP between the
# hosts (no shared memory across them). Shown:
#   - each rank's node and local rank (0 and 1 on each host) as the trainer prints them,
#     and the device a local rank picks;
#   - each rank holds open only the shard files of its share while it trains;
#   - the gradients cross between the hosts on their network;
#   - the swissroll recipe and the conditional DiT smoke recipe end bit for bit where the
#     same 4 ranks on one host end;
#   - a host dies (every rank on it killed mid-step): the job ends non-zero within
#     dist.timeout_s and says which rank was lost, no checkpoint is half-written, and the same
#     command resumes from the last checkpoint to the uninterrupted run's parameters.
# Skipped (77), saying why, where network namespaces cannot be made (not root).
#   bash tests/cluster/two_hosts.sh path/to/difftrain [path/to/mpirun]
set -uo pipefail
source "$(dirname "$0")/../e2e/lib/common.bash"
hosts_sh=$here/tests/cluster/hosts.sh
cluster=$work/hosts
trap 'bash "$hosts_sh" down "$cluster"; kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
bash "$hosts_sh" up "$cluster" 2 2>hosts.err
case $? in
  0) ;;
  77) echo "skip: $(cat hosts.err)"; exit 77 ;;
  *) cat hosts.err; echo "FAIL hosts.sh up"; exit 1 ;;
esac
printf 'node1 slots=2\nnode2 slots=2\n' >hostfile
# mpirun runs on node1, as it would on a cluster's first node; its daemon on node2 is
# started by the agent. TCP between the hosts, and only on their network.
two_hosts() {
  bash "$hosts_sh" exec "$cluster" 1 "$mpirun_bin" --allow-run-as-root --hostfile "$work/hostfile" -n 4 \
    --mca plm_rsh_agent "bash $hosts_sh agent $cluster" --mca btl self,vader,tcp \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 "$@"
}
sent_by_node2() { bash "$hosts_sh" exec "$cluster" 2 ip -s link show eth0 | awk '/TX:/ { getline; print $1 }'; }

"$difftrain" prepare swissroll --out sr --shards 4 >/dev/null
swiss=("$here/configs/swissroll-smoke.yaml" data.path="$work/sr" train.steps=400 train.log_every=50
  train.checkpoint_every=100)

# --- one host, the reference
mpi -n 4 "$difftrain" train "${swiss[@]}" run_dir=one/swissroll >one.log 2>&1
check "one host: trains" grep -q "trained to step 400" one.log
check "one host: 4 ranks on 1 node, local ranks 0-3" \
  bash -c 'grep -q "placement: 4 ranks on 1 node$" one.log && for r in 0 1 2 3; do
    grep -q "rank $r on .*: local rank $r of 4, cpu" one.log || exit 1; done'

# --- two hosts, uninterrupted; while it trains, read which shard files each rank holds open
before=$(sent_by_node2)
two_hosts "$difftrain" train "${swiss[@]}" run_dir="$work/two/swissroll" >two.log 2>&1 &
job=$!
# open_shards PID: the shard files the process holds open
open_shards() { for fd in /proc/"$1"/fd/*; do readlink "$fd"; done 2>/dev/null | grep -o 'shard-[0-9]*\.h5' | sort -u | xargs; }
rank_of() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p'; }
all_reading() {
  local n=0 pid
  for pid in $(rank_pids "$work/two/swissroll"); do [[ -n $(open_shards "$pid") ]] && n=$((n + 1)); done
  [[ $n -eq 4 ]]
}
if wait_for 60 all_reading; then
  for pid in $(rank_pids "$work/two/swissroll"); do echo "$(rank_of "$pid") $(open_shards "$pid")"; done | sort >held.txt
fi
wait $job
check "two hosts: trains" grep -q "trained to step 400" two.log
check "two hosts: 4 ranks on 2 nodes" grep -q "placement: 4 ranks on 2 nodes$" two.log
for r in 0 1 2 3; do
  node=$((r / 2 + 1)) local=$((r % 2))
  check "two hosts: rank $r on node$node, local rank $local of 2, reads shard $r" \
    grep -q "rank $r on node$node: local rank $local of 2, cpu, examples $((25 * r))-$((25 * r + 24)) in shard $r (shard-0000$r.h5)" two.log
done
check "two hosts: each rank holds open only its own shard" \
  diff <(printf '0 shard-00000.h5\n1 shard-00001.h5\n2 shard-00002.h5\n3 shard-00003.h5\n') held.txt
[[ -s held.txt ]] || echo "    | no rank was seen reading"
# Each step's all-reduce moves at least half the gradients (ring or halving) across the
# link; the checkpoint holds the parameters 4 times (weights, EMA, Adam's two moments).
sent=$(($(sent_by_node2) - before)) params_bytes=$(($(stat -c %s two/swissroll/checkpoints/latest.pt) / 4))
check "two hosts: gradients cross the hosts' network ($((sent / 1000000)) MB from node2)" \
  test "$sent" -gt $((400 * params_bytes / 2 * 9 / 10))
if needs_python "two hosts: swissroll bit for bit as on one host"; then
  check "two hosts: swissroll bit for bit as on one host" $py "$here/tests/tools/compare_checkpoints.py" one two
fi

# --- the conditional DiT smoke recipe, a few dozen steps
fm=/usr/share/datasets/fashion-mnist
if [[ -f $fm/t10k-images-idx3-ubyte.gz ]]; then
  "$difftrain" prepare fashion-mnist --split test --out fm --shards 4 >/dev/null 2>&1
  dit=("$here/configs/fashion_mnist_dit_cond_smoke.yaml" data.path="$work/fm" train.steps=24 train.sample_every=0
    train.log_every=8)
  mpi -n 4 "$difftrain" train "${dit[@]}" run_dir=one-dit/dit >one-dit.log 2>&1
  two_hosts "$difftrain" train "${dit[@]}" run_dir="$work/two-dit/dit" >two-dit.log 2>&1
  check "two hosts: DiT trains" grep -q "trained to step 24" two-dit.log
  if needs_python "two hosts: DiT bit for bit as on one host"; then
    check "two hosts: DiT bit for bit as on one host" $py "$here/tests/tools/compare_checkpoints.py" one-dit two-dit
  fi
else
  echo "skip two hosts: DiT (Debian's dataset-fashion-mnist is not installed)"
  skips=$((skips + 1))
fi

# --- a host dies mid-step: every rank on node2 killed
two_hosts "$difftrain" train "${swiss[@]}" run_dir="$work/died/swissroll" dist.timeout_s=30 >died.log 2>&1 &
job=$!
wait_for 60 grep -q "step 150/400" died.log
killed=$(date +%s)
for pid in $(rank_pids "$work/died/swissroll"); do
  [[ $(rank_of "$pid") -ge 2 ]] && kill -9 "$pid"
done
wait $job
rc=$? took=$(($(date +%s) - killed))
check "host died: the job exits non-zero (status $rc)" test $rc -ne 0
check "host died: within dist.timeout_s (30 s; took $took s)" test $took -le 30
check "host died: no rank left running" test -z "$(rank_pids "$work/died/swissroll")"
check "host died: the lost rank is named" grep -Eq "rank [23] .*on node node2 exited on signal 9" died.log
check "host died: no temporary file left" test -z "$(ls -A died/swissroll/checkpoints | grep -v '^latest.pt$\|^step-[0-9]*.pt$')"
two_hosts "$difftrain" train "${swiss[@]}" run_dir="$work/died/swissroll" dist.timeout_s=30 >resumed.log 2>&1
check "host died: the same command resumes from a checkpoint" grep -Eq "resuming .*latest.pt at step (100|200|300)$" resumed.log
check "host died: and finishes" grep -q "trained to step 400" resumed.log
if needs_python "host died: resumed run bit for bit as the uninterrupted one"; then
  check "host died: resumed run bit for bit as the uninterrupted one" \
    $py "$here/tests/tools/compare_checkpoints.py" one died --ignore retained
fi
finish
