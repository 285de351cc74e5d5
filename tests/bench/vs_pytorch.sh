#!/usr/bin/env bash
# difftrain against plain PyTorch on one core: `difftrain bench` and tests/bench/torch_step.py
# run the same config (model, batch, schedule, optimizer, EMA) for the same steps, for the
# toy recipe and the U-Net and conditional DiT smoke recipes.
#
#   bash tests/bench/vs_pytorch.sh [scale]     (DIFFTRAIN=path/to/difftrain picks the binary)
#
# scale (default 1) multiplies the timed steps: 500 for swissroll (after 10 warm-up steps),
# 20 for the image models (after 3). Prints per model one JSON line
#   {"model", "difftrain_samples_per_s", "pytorch_samples_per_s", "ratio" (difftrain / pytorch:
#    above 1, difftrain is faster), "difftrain_step_ms", "pytorch_step_ms", "difftrain_peak_rss_mb",
#    "pytorch_peak_rss_mb", and both time splits}
# then a table; last, the wall time of a whole 3000-step (WHOLE_STEPS) swissroll training process
# (`difftrain train` against tests/reference/swissroll_torch.py, startup and the final
# sampling included; "ratio" pytorch_s / difftrain_s, in the same sense). The image models
# need Debian's dataset-fashion-mnist; without it they are skipped. Exit 1 if a run failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
difftrain=${DIFFTRAIN:-build/difftrain}
[[ $difftrain = /* ]] || difftrain=$root/$difftrain
py=/usr/bin/python3  # Debian's python3-torch; a venv's python3 may lack torch
scale=${1:-1}
steps_for() {  # steps_for BASE: BASE times the scale, at least 1
  "$py" -c 'import sys; s = float(sys.argv[2]); assert s > 0; print(max(1, round(int(sys.argv[1]) * s)))' \
    "$1" "$scale" 2>/dev/null || { echo "vs_pytorch.sh: scale must be a number > 0, got '$scale'" >&2; exit 2; }
}
[[ -x $difftrain ]] || { echo "vs_pytorch.sh: no difftrain binary at $difftrain (set DIFFTRAIN)" >&2; exit 2; }
whole_steps=${WHOLE_STEPS:-3000}
sw_steps=$(steps_for 500)
img_steps=$(steps_for 20)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
failed=0

# pair NAME CONFIG STEPS WARMUP OVERRIDE...: both implementations; one JSON row to stdout
# and to $work/rows. A failed run is reported and the others still run.
pair() {
  local name=$1 config=$2 steps=$3 warmup=$4
  shift 4
  echo "== $name: $steps timed steps after $warmup warm-up" >&2
  if ! "$difftrain" bench "$config" "$@" --steps "$steps" --warmup "$warmup" >"$work/dt.out" 2>"$work/dt.err"; then
    echo "difftrain bench failed on $name:" >&2
    tail -n 5 "$work/dt.err" >&2
    failed=1
    return 0
  fi
  if ! "$py" tests/bench/torch_step.py "$config" "$@" --steps "$steps" --warmup "$warmup" --threads 1 \
      >"$work/pt.out" 2>"$work/pt.err"; then
    echo "torch_step.py failed on $name:" >&2
    tail -n 5 "$work/pt.err" >&2
    failed=1
    return 0
  fi
  # Only the last stdout line of each is the result; an unreadable one fails this model only.
  if ! "$py" - "$name" "$work/dt.out" "$work/pt.out" <<'PY' | tee -a "$work/rows"; then
import json, sys
name, dt_path, pt_path = sys.argv[1:]
def last(path):
    try:
        return json.loads([l for l in open(path).read().splitlines() if l.strip()][-1])
    except (IndexError, ValueError) as e:
        sys.exit(f"{name}: the last stdout line of {path} is not a JSON object ({e})")
d, p = last(dt_path), last(pt_path)
for key in ("global_batch", "model_params"):
    if key in d and key in p and d[key] != p[key]:
        print(f"warning: {name}: {key} differs: difftrain {d[key]}, pytorch {p[key]}", file=sys.stderr)
print(json.dumps({"model": name, "difftrain_samples_per_s": d["samples_per_s"], "pytorch_samples_per_s": p["samples_per_s"],
                  "ratio": round(d["samples_per_s"] / p["samples_per_s"], 3),
                  "difftrain_step_ms": d["step_ms"], "pytorch_step_ms": p["step_ms"],
                  "difftrain_peak_rss_mb": d["peak_rss_mb"], "pytorch_peak_rss_mb": p["peak_rss_mb"],
                  "difftrain_split_ms": d.get("split_ms"), "pytorch_split_ms": p.get("split_ms")}))
PY
    tail -n 1 "$work/dt.out" "$work/pt.out" >&2
    failed=1
  fi
}

"$difftrain" prepare swissroll --out "$work/swissroll" --shards 2 >/dev/null
pair swissroll configs/swissroll.yaml "$sw_steps" 10 data.path="$work/swissroll"

if "$difftrain" prepare fashion-mnist --out "$work/fmnist" --shards 2 >"$work/prepare.log" 2>&1; then
  pair unet_smoke configs/fashion_mnist_unet_smoke.yaml "$img_steps" 3 data.path="$work/fmnist"
  pair dit_cond_smoke configs/fashion_mnist_dit_cond_smoke.yaml "$img_steps" 3 data.path="$work/fmnist"
else
  echo "skipping the image models: difftrain prepare fashion-mnist failed (Debian's dataset-fashion-mnist installed?):" >&2
  tail -n 3 "$work/prepare.log" >&2
fi

# The whole process, $whole_steps (3000) steps each: startup, training and the final samples.
now() { date +%s.%N; }
echo "== swissroll whole process, $whole_steps steps" >&2
t0=$(now)
if "$difftrain" train configs/swissroll.yaml run_dir="$work/run" data.path="$work/swissroll" train.steps="$whole_steps" \
    train.threads=1 >"$work/train.log" 2>&1; then
  t1=$(now)
  "$py" tests/reference/swissroll_torch.py --steps "$whole_steps" >"$work/ref.out"
  t2=$(now)
  "$py" - "$t0" "$t1" "$t2" "$whole_steps" <<'PY' | tee -a "$work/rows"
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
print(json.dumps({"model": f"swissroll whole process {sys.argv[4]} steps", "difftrain_s": round(t1 - t0, 3),
                  "pytorch_s": round(t2 - t1, 3), "ratio": round((t2 - t1) / (t1 - t0), 3)}))
PY
else
  echo "difftrain train failed:" >&2
  tail -n 5 "$work/train.log" >&2
  failed=1
fi

if [[ -s $work/rows ]]; then
  "$py" - "$work/rows" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cols = [("model", "model"), ("difftrain_samples_per_s", "difftrain/s"), ("pytorch_samples_per_s", "pytorch/s"),
        ("ratio", "ratio"), ("difftrain_step_ms", "dt ms"), ("pytorch_step_ms", "pt ms"),
        ("difftrain_s", "dt wall s"), ("pytorch_s", "pt wall s"),
        ("difftrain_peak_rss_mb", "dt MB"), ("pytorch_peak_rss_mb", "pt MB")]
fmt = lambda v: "-" if v is None else str(v) if not isinstance(v, float) else f"{v:.1f}" if v >= 100 else f"{v:.4g}"
table = [[h for _, h in cols]] + [[fmt(r.get(k)) for k, _ in cols] for r in rows]
widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
print()
for row in table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
PY
fi
exit "$failed"
