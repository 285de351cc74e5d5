#!/usr/bin/env bash
# difftrain against plain PyTorch on one core, side by side in one run: `difftrain bench`
# built against Debian's LibTorch 1.13 (build/) and against LibTorch 2.13 from PyTorch's
# wheel (build-cpu/), and tests/bench/torch_step.py under Debian's PyTorch 1.13 and under
# PyTorch 2.13 (the wheel's venv), eager and through torch.compile, all on the same config
# (model, batch, schedule, optimizer, EMA) for the same steps: the toy recipe and the U-Net
# and conditional DiT smoke recipes.
#
#   bash tests/bench/vs_pytorch.sh [scale]
#   (DIFFTRAIN_113 / DIFFTRAIN_213 pick the binaries, TORCH_113 / TORCH_213 the Pythons;
#    one that is missing is left out, and said so)
#
# scale (default 1) multiplies the timed steps: 500 for swissroll (after 10 warm-up steps;
# 100 more for torch.compile), 20 for the image models (after 3; 5 for torch.compile). Per
# model one JSON line: {"model", "samples_per_s": {impl: ...}, "step_ms": {impl: ...},
# "split_ms": {impl: where the step's time goes},
# "vs_pytorch_2.13": {impl: samples/s over PyTorch 2.13 eager's: above 1, faster}}; then a
# table; last, the wall time of a whole 3000-step (WHOLE_STEPS) swissroll training process
# for each difftrain and each PyTorch (tests/reference/swissroll_torch.py; start-up and the
# final sampling included). The image models need Debian's dataset-fashion-mnist; without it
# they are skipped. Exit 1 if a run failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
scale=${1:-1}
py=/usr/bin/python3
steps_for() {  # steps_for BASE: BASE times the scale, at least 1
  "$py" -c 'import sys; s = float(sys.argv[2]); assert s > 0; print(max(1, round(int(sys.argv[1]) * s)))' \
    "$1" "$scale" 2>/dev/null || { echo "vs_pytorch.sh: scale must be a number > 0, got '$scale'" >&2; exit 2; }
}
venv=$(bash launch/setup.sh --torch cpu --print-python 2>/dev/null || true)
declare -A bin=([1.13]=${DIFFTRAIN_113:-build/difftrain} [2.13]=${DIFFTRAIN_213:-build-cpu/difftrain})
declare -A python=([1.13]=${TORCH_113:-/usr/bin/python3} [2.13]=${TORCH_213:-$venv})
impls=()
for v in 1.13 2.13; do
  if [[ -x ${bin[$v]} ]]; then impls+=("difftrain@$v"); else echo "vs_pytorch.sh: no ${bin[$v]}: difftrain on LibTorch $v left out" >&2; fi
done
for v in 1.13 2.13; do
  if [[ -n ${python[$v]} ]] && "${python[$v]}" -c 'import torch, h5py, yaml' 2>/dev/null; then
    impls+=("pytorch@$v")
    "${python[$v]}" -c 'import torch, sys; sys.exit(not hasattr(torch, "compile"))' && impls+=("pytorch-compiled@$v")
  else
    echo "vs_pytorch.sh: no PyTorch $v with h5py and yaml (${python[$v]:-none}): left out" >&2
  fi
done
[[ ${#impls[@]} -gt 0 ]] || { echo "vs_pytorch.sh: nothing to run (launch/setup.sh, launch/setup.sh --torch cpu)" >&2; exit 2; }
whole_steps=${WHOLE_STEPS:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
failed=0

# run IMPL CONFIG STEPS WARMUP OVERRIDE...: one implementation's bench; its JSON last line in $work/IMPL.json
run() {
  local impl=$1 config=$2 steps=$3 warmup=$4 v=${1#*@}
  shift 4
  case $impl in
  difftrain@*) "${bin[$v]}" bench "$config" "$@" --steps "$steps" --warmup "$warmup" ;;
  pytorch@*) "${python[$v]}" tests/bench/torch_step.py "$config" "$@" --steps "$steps" --warmup "$warmup" --threads 1 ;;
  pytorch-compiled@*) "${python[$v]}" tests/bench/torch_step.py "$config" "$@" --steps "$steps" \
    --warmup "$((warmup + (steps > 100 ? 100 : 2)))" --threads 1 --compile ;;
  esac >"$work/out" 2>"$work/err" && tail -n 1 "$work/out" >"$work/$impl.json" && return 0
  echo "$impl failed on $config:" >&2
  tail -n 5 "$work/err" >&2
  return 1
}

# model NAME CONFIG STEPS WARMUP OVERRIDE...: every implementation; one JSON row
model() {
  local name=$1
  shift
  echo "== $name: $2 timed steps after $3 warm-up" >&2
  rm -f "$work"/*.json
  for impl in "${impls[@]}"; do run "$impl" "$@" || failed=1; done
  "$py" - "$name" "$work" "${impls[@]}" <<'PY' | tee -a "$work/rows"
import json, os, sys
name, work, impls = sys.argv[1], sys.argv[2], sys.argv[3:]
got = {}
for impl in impls:
    path = os.path.join(work, impl + ".json")
    if os.path.exists(path):
        got[impl] = json.loads(open(path).read())
ref = got.get("pytorch@2.13", {}).get("samples_per_s")
print(json.dumps({"model": name,
                  "samples_per_s": {k: v["samples_per_s"] for k, v in got.items()},
                  "step_ms": {k: v["step_ms"] for k, v in got.items()},
                  "split_ms": {k: v.get("split_ms") for k, v in got.items()},
                  "vs_pytorch_2.13": {k: round(v["samples_per_s"] / ref, 3) for k, v in got.items()} if ref else None}))
PY
}

any=$(for v in 2.13 1.13; do [[ -x ${bin[$v]} ]] && echo "${bin[$v]}" && break; done)
[[ -n $any ]] || { echo "vs_pytorch.sh: no difftrain binary to prepare the data with" >&2; exit 2; }
"$any" prepare swissroll --out "$work/swissroll" --shards 2 >/dev/null
model swissroll configs/swissroll.yaml "$(steps_for 500)" 10 data.path="$work/swissroll"
if "$any" prepare fashion-mnist --out "$work/fmnist" --shards 2 >"$work/prepare.log" 2>&1; then
  model unet_smoke configs/fashion_mnist_unet_smoke.yaml "$(steps_for 20)" 3 data.path="$work/fmnist"
  model dit_cond_smoke configs/fashion_mnist_dit_cond_smoke.yaml "$(steps_for 20)" 3 data.path="$work/fmnist"
else
  echo "skipping the image models: prepare fashion-mnist failed (Debian's dataset-fashion-mnist installed?):" >&2
  tail -n 3 "$work/prepare.log" >&2
fi

# The whole process, $whole_steps steps each: start-up, training and the final samples.
echo "== swissroll whole process, $whole_steps steps" >&2
declare -A wall=()
for impl in "${impls[@]}"; do
  v=${impl#*@}
  start=$(date +%s.%N)
  case $impl in
  difftrain@*) "${bin[$v]}" train configs/swissroll.yaml run_dir="$work/run-$v" data.path="$work/swissroll" \
    train.steps="$whole_steps" train.threads=1 >"$work/train.log" 2>&1 ;;
  pytorch@*) "${python[$v]}" tests/reference/swissroll_torch.py --steps "$whole_steps" >"$work/train.log" 2>&1 ;;
  *) continue ;;
  esac || { echo "$impl: the whole swissroll run failed" >&2; tail -n 5 "$work/train.log" >&2; failed=1; continue; }
  wall[$impl]=$("$py" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$start" "$(date +%s.%N)")
done
"$py" - "$whole_steps" "$(for k in "${!wall[@]}"; do echo "$k=${wall[$k]}"; done)" <<'PY' | tee -a "$work/rows"
import json, sys
wall = dict(kv.split("=") for kv in sys.argv[2].split())
print(json.dumps({"model": f"swissroll whole process {sys.argv[1]} steps", "wall_s": {k: float(v) for k, v in wall.items()}}))
PY

"$py" - "$work/rows" "${impls[@]}" <<'PY'
import json, sys
rows, impls = [json.loads(l) for l in open(sys.argv[1])], sys.argv[2:]
print()
print("samples/s (whole process: seconds), and against PyTorch 2.13 eager (above 1: faster)")
print("model".ljust(34) + "".join(i.rjust(22) for i in impls))
for r in rows:
    if "wall_s" in r:
        print(r["model"].ljust(34) + "".join((f"{r['wall_s'][i]:.2f} s" if i in r["wall_s"] else "-").rjust(22) for i in impls))
        continue
    cells = []
    for i in impls:
        v, x = r["samples_per_s"].get(i), (r["vs_pytorch_2.13"] or {}).get(i)
        cells.append("-" if v is None else f"{v:.4g}" + (f" ({x:.2f}x)" if x is not None else ""))
    print(r["model"].ljust(34) + "".join(c.rjust(22) for c in cells))
PY
exit "$failed"
