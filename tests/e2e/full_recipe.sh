#!/usr/bin/env bash
# The full toy recipe (configs/swissroll.yaml: 15000 steps, 2000 samples in 20 steps with
# gam=2), trained and sampled for seeds 0..4: the mean distance of the samples to the true
# curve, averaged over the seeds, is at most 0.04 (plain PyTorch: about 0.03). One run
# varies a lot with the seed (0.014 to 0.078 over 16 seeds for difftrain, 0.017 to 0.046 over
# 15 for PyTorch), so the bar is on the mean of five. The initial weights weigh most: from
# difftrain's seed-3 weights, plain PyTorch's own training lands at 0.039 to 0.061 (three
# draw seeds) where its own initial weights gave 0.018 to 0.046 with the same draws. So
# each seed is held only to 0.10, which a run no better than 2000 steps of training (0.14
# to 0.19) fails.
#   bash tests/e2e/full_recipe.sh path/to/difftrain path/to/mpirun
#   DIFFTRAIN_LONG_TESTS=1 ctest -R e2e_full_recipe   # run it; skipped (exit 77) otherwise
set -uo pipefail
# Four CPU-minutes of training do not fit CI's 20 minutes on 2 cores beside the rest; the
# 2000-step bar is held by Train.SwissrollLearnsAndSamplesLandNearTheCurve and e2e_cli.
if [[ ${DIFFTRAIN_LONG_TESTS:-0} != 1 ]]; then
  echo "skip: the full recipe over 5 seeds runs with DIFFTRAIN_LONG_TESTS=1"
  exit 77
fi
source "$(dirname "$0")/lib/common.bash"
# Without torch and h5py nothing here can be judged, so nothing is trained either.
needs_python "full recipe: sample quality over 5 seeds" || finish
"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
distances=()
for seed in 0 1 2 3 4; do
  "$difftrain" train "$here/configs/swissroll.yaml" run_dir=run$seed seed=$seed train.log_every=5000 >/dev/null 2>&1
  "$difftrain" sample --checkpoint run$seed/checkpoints/latest.pt --out s$seed.h5 --seed "$seed" >/dev/null
  d=$($py "$here/tests/reference/swissroll_torch.py" --distance s$seed.h5 | $py -c "import json,sys; print(json.load(sys.stdin)['mean_distance'])")
  echo "seed $seed: mean distance to the curve $d"
  distances+=("$d")
done
mean=$($py -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))" "${distances[@]}")
echo "mean over seeds 0-4: $mean"
check "full recipe: mean distance over 5 seeds <= 0.04" $py -c "import sys; sys.exit(0 if $mean <= 0.04 else 1)"
check "full recipe: every seed <= 0.10" $py -c "import sys; sys.exit(0 if max(${distances[*]/%/,}) <= 0.10 else 1)"
finish
