#!/usr/bin/env bash
# 1 rank against 2 on this machine, one intra-op thread per rank, through `difftrain bench`:
# weak scaling (the same batch per rank: the global batch doubles) and strong scaling (the
# same global batch, halved per rank), for the toy recipe and the U-Net and conditional DiT
# smoke recipes; with the data wait as a share of the step on 2 ranks.
#
#   bash tests/bench/scaling.sh [image_steps]      (DIFFTRAIN=path/to/difftrain picks the binary)
#
# Prints one JSON line per model: {"model", "batch", "one_rank_samples_per_s",
# "weak_samples_per_s", "weak_speedup", "strong_samples_per_s", "strong_speedup",
# "data_wait_share" (2 ranks, weak), "sync_ms" (2 ranks, weak, slowest rank)}.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
difftrain=${DIFFTRAIN:-build/difftrain}
[[ $difftrain = /* ]] || difftrain=$root/$difftrain
img_steps=${1:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
export OMP_NUM_THREADS=1

# run RANKS CONFIG BATCH STEPS WARMUP OVERRIDE...: the bench's JSON line
run() {
  local ranks=$1 config=$2 batch=$3 steps=$4 warmup=$5
  shift 5
  "${mpi[@]}" -n "$ranks" "$difftrain" bench "$config" train.batch_size="$batch" "$@" --steps "$steps" \
    --warmup "$warmup" 2>&1 | tail -n 1
}

scale() {  # scale NAME CONFIG BATCH STEPS WARMUP OVERRIDE...
  local name=$1 config=$2 batch=$3 steps=$4 warmup=$5
  shift 5
  echo "== $name" >&2
  local one weak strong
  one=$(run 1 "$config" "$batch" "$steps" "$warmup" "$@")
  weak=$(run 2 "$config" $((2 * batch)) "$steps" "$warmup" "$@")
  strong=$(run 2 "$config" "$batch" "$steps" "$warmup" "$@")
  /usr/bin/python3 - "$name" "$batch" "$one" "$weak" "$strong" <<'PY'
import json, sys
name, batch = sys.argv[1], int(sys.argv[2])
one, weak, strong = (json.loads(a) for a in sys.argv[3:6])
print(json.dumps({
    "model": name, "batch": batch,
    "one_rank_samples_per_s": one["samples_per_s"],
    "weak_samples_per_s": weak["samples_per_s"], "weak_speedup": round(weak["samples_per_s"] / one["samples_per_s"], 3),
    "strong_samples_per_s": strong["samples_per_s"],
    "strong_speedup": round(strong["samples_per_s"] / one["samples_per_s"], 3),
    "data_wait_share": round(max(r["split_ms"]["data"] / r["step_ms"] for r in weak["per_rank"]), 4),
    "sync_ms": weak["split_ms"]["sync"], "step_ms_one": one["step_ms"], "step_ms_weak": weak["step_ms"]}))
PY
}

"$difftrain" prepare swissroll --out "$work/swissroll" --shards 2 >/dev/null
scale swissroll configs/swissroll.yaml 100 1000 50 data.path="$work/swissroll"
if "$difftrain" prepare fashion-mnist --out "$work/fmnist" --shards 2 >"$work/prepare.log" 2>&1; then
  scale unet_smoke configs/fashion_mnist_unet_smoke.yaml 32 "$img_steps" 3 data.path="$work/fmnist"
  scale dit_cond_smoke configs/fashion_mnist_dit_cond_smoke.yaml 128 "$img_steps" 3 data.path="$work/fmnist"
else
  echo "skipping the image models: difftrain prepare fashion-mnist failed" >&2
fi
