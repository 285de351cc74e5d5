#!/usr/bin/env bash
# The image pipeline through the command, as the fashion-mnist quickstart runs it, at toy
# size: prepare Fashion-MNIST, train a class-conditional DiT on 2 ranks with sample grids
# during training, sample a guided grid with one class per row, plot the run, train the
# evaluation classifier, and eval on 2 ranks (JSON with the figures as the last line).
# Skipped when Debian's dataset-fashion-mnist is not installed.
#   bash tests/e2e/image_pipeline.sh path/to/difftrain [path/to/mpirun]
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
fm=/usr/share/datasets/fashion-mnist
if [[ ! -f $fm/t10k-images-idx3-ubyte.gz ]]; then
  echo "skip: Debian's dataset-fashion-mnist is not installed"
  exit 77
fi
# png_size FILE: "WIDTH HEIGHT" from the PNG's header (big-endian words at bytes 16 and 20)
png_size() {
  [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || return 1
  echo $((0x$(od -An -tx1 -j16 -N4 "$1" | tr -d ' \n'))) $((0x$(od -An -tx1 -j20 -N4 "$1" | tr -d ' \n')))
}
is_png() { [[ $(png_size "$1") == "$2" ]]; }

# The test split (10,000 images) is the training data here; the evaluation's "train" and
# "test" sets are its two shards' worth, which is all these checks need.
"$difftrain" prepare fashion-mnist --split test --out data/train --shards 2 >prep.log 2>&1
check "prepare: 2 shards" grep -q 'wrote 2 shards to data/train' prep.log
"$difftrain" prepare fashion-mnist --split test --out data/test --shards 1 >/dev/null 2>&1

model=(model.type=dit model.patch=4 model.depth=1 model.head_dim=8 model.num_heads=1 model.num_classes=10)
train=(run_dir=run data.path=data/train data.hflip=true "${model[@]}" schedule.type=ddpm schedule.N=100
  train.steps=20 train.batch_size=32 train.log_every=5 train.checkpoint_every=20 train.sample_every=10
  train.warmup_steps=0 train.lr=1e-3 sample.steps=5 sample.n=20 sample.class=all sample.cfg_scale=2)
mpi -n 2 "$difftrain" train "${train[@]}" >train.log 2>&1
check "train: 2 ranks, 20 steps" test -s run/checkpoints/step-0000020.pt
check "train: EMA grids at steps 10 and 20, 10 classes by 8" \
  bash -c "$(declare -f png_size is_png); is_png run/samples/step-0000010.png '242 302' && is_png run/samples/step-0000020.png '242 302'"
check "train: loss by noise level in metrics.jsonl" grep -q '"loss_by_sigma"' run/metrics.jsonl

"$difftrain" sample --checkpoint run/checkpoints/latest.pt --out s.h5 --png grid.png --n 30 --class all \
  --cfg-scale 2 >sample.log 2>&1
check "sample --class all --cfg-scale 2: 10 rows of 3" is_png grid.png "92 302"
"$difftrain" sample --checkpoint run/checkpoints/latest.pt --out s7.h5 --png grid7.png --n 8 --class 7 \
  --cfg-scale 2 >/dev/null 2>&1
check "sample --class 7: one row of 8" is_png grid7.png "242 32"

"$difftrain" plot run >plot.log 2>&1
check "plot: loss and loss by noise level" bash -c "$(declare -f png_size is_png); \
  png_size run/loss.png >/dev/null && png_size run/loss_by_sigma.png >/dev/null"

"$difftrain" classifier --data data/train/shard-00000.h5 --test data/test --out data/classifier.pt --epochs 1 >clf.log 2>&1
check "classifier: one epoch, test accuracy reported" grep -q '"test_accuracy"' clf.log
check "classifier: saved beside the data" test -s data/classifier.pt

mpi -n 2 "$difftrain" eval --checkpoint run/checkpoints/latest.pt --n 40 --steps 3 --cfg-scale 2 \
  --features features.h5 >eval.json 2>eval.log
check "eval: 2 ranks, exit 0" test $? -eq 0
check "eval --features: the file written" test -s features.h5
needs_python "eval: the last line is JSON with the figures" && check "eval: the last line is JSON with the figures" \
  $py - <<'PY'
import json, math
r = json.loads(open("eval.json").read().strip().splitlines()[-1])
for k in ("fid", "fid_floor", "fid_untrained", "class_accuracy", "far_share", "noise_share", "far_threshold"):
    assert math.isfinite(r[k]) and r[k] >= 0, (k, r[k])
assert r["n"] == 40 and r["cfg_scale"] == 2 and r["ranks"] == 2 and r["features"] == "features.h5", r
for k in ("class_accuracy", "far_share", "noise_share", "far_share_untrained", "noise_share_untrained"):
    assert 0 <= r[k] <= 1, (k, r)
PY

# Guidance needs a class-conditional model: for an unconditional one, eval and sample refuse
# --cfg-scale by name (one error line, exit 1, nothing written) instead of ignoring it.
"$difftrain" train run_dir=uncond data.path=data/train "${model[@]:0:5}" schedule.type=ddpm schedule.N=100 \
  train.steps=2 train.batch_size=8 train.checkpoint_every=2 train.log_every=1 >uncond.log 2>&1
refused_cfg() { [[ $1 -eq 1 ]] && one_error_line "$2" "$3: --cfg-scale 2: the model is unconditional"; }
"$difftrain" eval --checkpoint uncond/checkpoints/latest.pt --n 8 --steps 2 --cfg-scale 2 >uncond-eval.json 2>uncond-eval.log
check "eval --cfg-scale on an unconditional model is refused" refused_cfg $? uncond-eval.log eval
"$difftrain" sample --checkpoint uncond/checkpoints/latest.pt --out u.h5 --n 4 --cfg-scale 2 >uncond-sample.log 2>&1
rc=$?
check "sample --cfg-scale on an unconditional model is refused, nothing written" \
  bash -c "$(declare -f one_error_line refused_cfg); refused_cfg $rc uncond-sample.log sample && test ! -e u.h5"
finish
