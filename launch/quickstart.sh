#!/usr/bin/env bash
# The main job on the embedded default: set up, prepare the swissroll data, train the
# reference toy recipe, sample, and draw the samples over the data.
#
#   bash launch/quickstart.sh                    # one rank
#   RANKS=2 bash launch/quickstart.sh            # two ranks under mpirun
#   bash launch/quickstart.sh train.steps=2000   # any config overrides
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
difftrain=build/difftrain
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
