#!/usr/bin/env bash
# Sample quality of the full toy recipe (configs/swissroll.yaml, 15000 steps): mean
# distance of 2000 samples to the true curve, for several seeds, difftrain on 1 and 2 ranks
# (EMA and raw weights) and the same recipe in plain PyTorch, with wall times, side by side.
#
#   bash tests/bench/swissroll_quality.sh [steps] [seeds...]     (defaults: 15000, seeds 0 1 2 3 4)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
difftrain=$here/build/difftrain
steps=${1:-15000}
shift || true
seeds=("${@:-0 1 2 3 4}")
read -r -a seeds <<<"${seeds[*]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
distance() { /usr/bin/python3 "$here/tests/reference/swissroll_torch.py" --distance "$1" | /usr/bin/python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['mean_distance'])"; }
now() { date +%s.%N; }
elapsed() { /usr/bin/python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$1" "$2"; }
printf '%-6s %-22s %8s %8s %8s\n' seed run wall_s ema raw
for seed in "${seeds[@]}"; do
  for ranks in 1 2; do
    t0=$(now)
    "${mpi[@]}" -n $ranks "$difftrain" train "$here/configs/swissroll.yaml" run_dir=run-$seed-$ranks seed=$seed \
      train.steps=$steps >/dev/null 2>&1
    t1=$(now)
    ck=run-$seed-$ranks/checkpoints/latest.pt
    "$difftrain" sample --checkpoint $ck --out ema.h5 --seed $seed >/dev/null
    "$difftrain" sample --checkpoint $ck --out raw.h5 --seed $seed --weights model >/dev/null
    printf '%-6s %-22s %8.1f %8s %8s\n' $seed "difftrain $ranks rank(s)" "$(elapsed "$t0" "$t1")" \
      "$(distance ema.h5)" "$(distance raw.h5)"
  done
  t0=$(now)
  /usr/bin/python3 "$here/tests/reference/swissroll_torch.py" --steps $steps --seed $seed --out torch.h5 >/dev/null
  t1=$(now)
  printf '%-6s %-22s %8.1f %8s %8s\n' $seed "plain PyTorch" "$(elapsed "$t0" "$t1")" - "$(distance torch.h5)"
done
