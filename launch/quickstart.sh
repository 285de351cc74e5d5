#!/usr/bin/env bash
# The main jobs on a fresh machine: set up, prepare data, train, sample, and show the result.
#
#   bash launch/quickstart.sh                         # the toy recipe (swissroll), one rank
#   RANKS=2 bash launch/quickstart.sh                 # the same on two ranks under mpirun
#   bash launch/quickstart.sh swissroll train.steps=2000
#   bash launch/quickstart.sh fashion-mnist           # class-conditional DiT, 2 ranks
#   bash launch/quickstart.sh fashion-mnist train.steps=200   # any config overrides
#
# fashion-mnist: converts Debian's dataset-fashion-mnist (train and test splits), trains
# the evaluation classifier once (kept in data/fashion-mnist/classifier.pt), trains
# configs/fashion_mnist_dit_cond_smoke.yaml on RANKS (default 2) ranks, writes a sample
# grid (one class per row, guidance scale 2), draws the loss curves, and prints the
# quality figure (`difftrain eval`, JSON) as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=swissroll
if [[ $# -gt 0 && "$1" != *=* ]]; then recipe=$1; shift; fi
bash launch/setup.sh
difftrain=build/difftrain

case "$recipe" in
swissroll)
  run_dir=runs/swissroll
  $difftrain prepare swissroll --out data/swissroll --shards 2
  # A fresh run each time: remove the previous run's checkpoints (train would resume them).
  rm -rf "$run_dir"
  if [[ "${RANKS:-1}" -gt 1 ]]; then
    bash launch/mpirun.sh "$RANKS" configs/swissroll.yaml "run_dir=$run_dir" "$@"
  else
    $difftrain train configs/swissroll.yaml "run_dir=$run_dir" "$@"
  fi
  $difftrain sample --checkpoint "$run_dir/checkpoints/latest.pt" --out "$run_dir/samples/samples.h5" \
    --png "$run_dir/samples/samples.png"
  /usr/bin/python3 tests/reference/swissroll_torch.py --distance "$run_dir/samples/samples.h5"
  echo "picture: $run_dir/samples/samples.png (samples in blue over the data in red)"
  ;;
fashion-mnist)
  data=data/fashion-mnist
  run_dir=runs/fashion_mnist_dit_cond_smoke
  ranks=${RANKS:-2}
  $difftrain prepare fashion-mnist --out "$data/train" --shards 2
  $difftrain prepare fashion-mnist --split test --out "$data/test" --shards 1
  # The classifier is a measuring instrument, not part of the run: trained once, then kept.
  if [[ ! -f "$data/classifier.pt" ]]; then
    $difftrain classifier --data "$data/train" --test "$data/test" --out "$data/classifier.pt"
  fi
  rm -rf "$run_dir"
  bash launch/mpirun.sh "$ranks" configs/fashion_mnist_dit_cond_smoke.yaml "run_dir=$run_dir" "$@"
  $difftrain sample --checkpoint "$run_dir/checkpoints/latest.pt" --out "$run_dir/samples/samples.h5" \
    --png "$run_dir/samples/grid.png" --n 100 --class all --cfg-scale 2
  $difftrain plot "$run_dir"
  echo "picture: $run_dir/samples/grid.png (one class per row)"
  bash launch/mpirun.sh "$ranks" eval --checkpoint "$run_dir/checkpoints/latest.pt" --cfg-scale 2
  ;;
*)
  echo "quickstart: unknown recipe '$recipe' (expected swissroll or fashion-mnist)" >&2
  exit 2
  ;;
esac
