#!/usr/bin/env bash
# bitwise_runs.sh DIFFTRAIN OUT FASHION_MNIST_TRAIN: short training runs whose checkpoints a
# restructuring must leave bit for bit unchanged. Run it with the binary of the old and the
# new head, then compare: python tests/tools/compare_checkpoints.py OLD NEW
#   swissroll, 60 steps (checkpoint at 50, 60), on 1 and on 2 ranks;
#   the conditional DiT smoke recipe, 6 steps, on 1 and on 2 ranks.
set -euo pipefail
bin=$(realpath "$1") out=$2 fm=$3
mkdir -p "$out"
out=$(realpath "$out")
cd "$(dirname "$0")/../.."
"$bin" prepare swissroll --out "$out/swissroll-data" --shards 2 >/dev/null
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1)
for ranks in 1 2; do
  "${mpi[@]}" -n $ranks "$bin" train configs/swissroll.yaml dist.backend=mpi train.steps=60 \
    train.checkpoint_every=50 "data.path=$out/swissroll-data" "run_dir=$out/swissroll-$ranks" >"$out/swissroll-$ranks.log" 2>&1
  "${mpi[@]}" -n $ranks "$bin" train configs/fashion_mnist_dit_cond_smoke.yaml dist.backend=mpi train.steps=6 \
    train.sample_every=0 "data.path=$fm" "run_dir=$out/dit-$ranks" >"$out/dit-$ranks.log" 2>&1
done
ls "$out"/*/checkpoints/latest.pt
