#!/usr/bin/env bash
# Training throughput on 1 rank vs 2 ranks (one thread per rank), side by side in one
# script, on the toy recipe; and the same recipe in plain PyTorch (Debian's python3-torch).
#
#   bash tests/bench/throughput.sh [steps]      (after launch/setup.sh)
#
# Prints one line per run: wall seconds, steps/s from metrics.jsonl (last window), and the
# per-step time split.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
difftrain=$here/build/difftrain
steps=${1:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
elapsed() { /usr/bin/python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$1" "$2"; }
report() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, sys
name, wall, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path)]
last = rows[-1]
t = {k: round(v * 1e6, 1) for k, v in last["time_s"].items()}
print(json.dumps({"run": name, "wall_s": round(wall, 2), "steps_per_s": round(last["steps_per_s"], 1),
                  "us_per_step": t}))
PY
}
for ranks in 1 2; do
  start=$(date +%s.%N)
  "${mpi[@]}" -n $ranks "$difftrain" train "$here/configs/swissroll.yaml" run_dir=run$ranks train.steps=$steps \
    train.log_every=$steps >/dev/null 2>&1
  end=$(date +%s.%N)
  report "difftrain $ranks rank(s), $steps steps" "$(elapsed "$start" "$end")" run$ranks/metrics.jsonl
done
/usr/bin/python3 "$here/tests/reference/swissroll_torch.py" --steps "$steps" | \
  /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'run': 'plain PyTorch, 1 thread, %d steps' % d['steps'], 'train_s': d['train_s'], 'steps_per_s': round(d['steps']/d['train_s'], 1)}))"
