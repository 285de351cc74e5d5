#!/usr/bin/env bash
# Image quality of the conditional DiT smoke recipe (configs/fashion_mnist_dit_cond_smoke.yaml),
# difftrain on 1 and 2 ranks against the same recipe in plain PyTorch
# (tests/reference/dit_cond_torch.py), over several seeds, every checkpoint measured by the
# same `difftrain eval` (n 1000, guidance 2): FID and class accuracy per run, then the mean
# and range of each. Minutes per run on 2 cores, so a benchmark, not a test.
#
#   bash tests/bench/dit_cond_parity.sh DATA_DIR [seeds...]     (default seeds 0 1 2)
#
# DATA_DIR holds train/, test/ and classifier.pt (bash launch/quickstart.sh fashion-mnist
# makes data/fashion-mnist so). difftrain is $DIFFTRAIN, by default build-cpu/difftrain: a
# LibTorch 2.x build (launch/setup.sh --torch cpu), since LibTorch 1.13 cannot read the
# PyTorch script's checkpoints; the script runs under $PYTHON (torch, h5py, pyyaml), by
# default that build's venv.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
data=$(cd "${1:?usage: dit_cond_parity.sh DATA_DIR [seeds...]}" && pwd)
shift
seeds=("${@:-0 1 2}")
read -r -a seeds <<<"${seeds[*]}"
difftrain=${DIFFTRAIN:-$here/build-cpu/difftrain}
python=${PYTHON:-$(bash "$here/launch/setup.sh" --torch cpu --print-python)}
recipe=$here/configs/fashion_mnist_dit_cond_smoke.yaml
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
results=$work/results.jsonl
: >"$results"

measure() {  # NAME SEED SECONDS CHECKPOINT
  "${mpi[@]}" -n 2 "$difftrain" eval --checkpoint "$4" --cfg-scale 2 --classifier "$data/classifier.pt" \
    --test "$data/test" | tail -1 |
    "$python" -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'run': sys.argv[1], 'seed': int(sys.argv[2]),
'train_s': float(sys.argv[3]), 'fid': r['fid'], 'fid_untrained': r['fid_untrained'],
'class_accuracy': r['class_accuracy'], 'noise_share': r['noise_share']}))" "$1" "$2" "$3" | tee -a "$results"
}

for seed in "${seeds[@]}"; do
  for ranks in 1 2; do
    start=$SECONDS
    "${mpi[@]}" -n $ranks "$difftrain" train "$recipe" "data.path=$data/train" "run_dir=$work/difftrain-$ranks-$seed" \
      seed=$seed train.sample_every=0 >"$work/difftrain-$ranks-$seed.log" 2>&1
    measure "difftrain, $ranks rank(s)" $seed $((SECONDS - start)) "$work/difftrain-$ranks-$seed/checkpoints/latest.pt"
  done
  start=$SECONDS
  "$python" "$here/tests/reference/dit_cond_torch.py" --data "$data/train" --config "$recipe" --seed $seed \
    --threads 2 --out "$work/torch-$seed.pt" >"$work/torch-$seed.log"
  measure "plain PyTorch" $seed $((SECONDS - start)) "$work/torch-$seed.pt"
done

"$python" - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'run':22s} {'seeds':>6s} {'fid mean':>9s} {'fid range':>17s} {'acc mean':>9s} {'acc range':>13s} {'train s':>8s}")
for run in dict.fromkeys(r["run"] for r in rows):
    rs = [r for r in rows if r["run"] == run]
    fid, acc = [r["fid"] for r in rs], [r["class_accuracy"] for r in rs]
    print(f"{run:22s} {len(rs):6d} {sum(fid)/len(fid):9.1f} {min(fid):8.1f}-{max(fid):8.1f} "
          f"{sum(acc)/len(acc):9.3f} {min(acc):6.3f}-{max(acc):6.3f} {sum(r['train_s'] for r in rs)/len(rs):8.0f}")
EOF
