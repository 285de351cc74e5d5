#!/usr/bin/env bash
# End to end through the `difftrain` command, as a user runs it: prepare, train on 1 and
# 2 ranks at the 2000-step smoke size, sample, picture; and bad input on 1 and 2 ranks
# gives one error line and a non-zero exit on every rank.
#   bash tests/e2e/cli.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
distance() { $py "$here/tests/reference/swissroll_torch.py" --distance "$1" | $py -c "import json,sys; print(json.load(sys.stdin)['mean_distance'])"; }
below() { $py -c "import sys; sys.exit(0 if float('$1') <= float('$2') else 1)"; }

for cmd in prepare train sample schedule; do
  check "$cmd --help" bash -c "'$difftrain' $cmd --help | grep -q Usage"
done

"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
check "prepare writes 2 shards" test -f data/swissroll/shard-00000.h5 -a -f data/swissroll/shard-00001.h5

# The 2000-step bar of the issue: plain PyTorch measures about 0.15; difftrain <= 0.19.
"$difftrain" train "$here/configs/swissroll.yaml" run_dir=run1 train.steps=2000 train.log_every=500 >train1.log 2>&1
check "train, 1 rank" test -f run1/checkpoints/latest.pt -a -f run1/checkpoints/step-0002000.pt -a -f run1/config.yaml
"$difftrain" sample --checkpoint run1/checkpoints/latest.pt --out s1.h5 --png s1.png >/dev/null
if needs_python "1-rank samples near the curve"; then
  d1=$(distance s1.h5)
  echo "1 rank, 2000 steps: mean distance to the curve $d1"
  check "1-rank samples near the curve" below "$d1" 0.19
fi
check "picture written" test -s s1.png

mpi -n 2 "$difftrain" train "$here/configs/swissroll.yaml" run_dir=run2 train.steps=2000 train.log_every=500 >train2.log 2>&1
check "train, 2 ranks" test -f run2/checkpoints/latest.pt
"$difftrain" sample --checkpoint run2/checkpoints/latest.pt --out s2.h5 >/dev/null
check "2-rank samples written" test -s s2.h5
if needs_python "2-rank samples near the curve"; then
  d2=$(distance s2.h5)
  echo "2 ranks, 2000 steps: mean distance to the curve $d2"
  check "2-rank samples near the curve" below "$d2" 0.19
fi
check "only rank 0 logs" test "$(grep -c '^step 2000/2000' train2.log)" -eq 1

printf 'train: {steps: [1, 2}\n' >malformed.yaml
bad "malformed YAML" "malformed.yaml" train malformed.yaml run_dir=badrun
bad "unknown key" "train.stepz" train "$here/configs/swissroll.yaml" run_dir=badrun train.stepz=3
bad "wrong type" "train.lr" train "$here/configs/swissroll.yaml" run_dir=badrun train.lr=fast
bad "out of range" "schedule.sigma_min" train "$here/configs/swissroll.yaml" run_dir=badrun schedule.sigma_min=20
bad "missing data" "nowhere" train "$here/configs/swissroll.yaml" run_dir=badrun data.path=nowhere
bad "indivisible batch" "train.batch_size" train "$here/configs/swissroll.yaml" run_dir=badrun train.batch_size=99 train.grad_accum=2

# Slips that used to pass silently or read unclearly: one line naming what is wrong.
# usage_error TEXT ARGS...: `difftrain ARGS` (one process) exits 1 with exactly one line on
# stderr, "difftrain: error: " followed by TEXT (a fixed string) and maybe more.
usage_error() {
  local text=$1 rc; shift
  "$difftrain" "$@" >out.txt 2>err.txt; rc=$?
  [[ $rc -eq 1 && $(wc -l <err.txt) -eq 1 ]] && grep -qF -- "difftrain: error: $text" err.txt ||
    { sed 's/^/    | /' err.txt | head -3; return 1; }
}
check "misspelled command: named, with the nearest" usage_error \
  "unknown command 'trian' (did you mean 'train'?; commands: prepare, train, bench, sample, schedule" trian "$here/configs/swissroll.yaml"
check "unknown command: named, with the commands" usage_error "unknown command 'fit' (commands: prepare, train" fit x.yaml
for seed in 9223372036854775808 99999999999999999999 -1; do
  check "sample --seed $seed: out of range, not clamped" usage_error "--seed: must be an integer in [0, 9223372036854775807], got '$seed'" \
    sample --checkpoint run1/checkpoints/latest.pt --out seed.h5 --seed "$seed"
done
check "no samples written for a bad --seed" test ! -e seed.h5
"$difftrain" sample --checkpoint run1/checkpoints/latest.pt --out seedmax.h5 --n 4 --steps 2 --seed 9223372036854775807 >/dev/null
check "sample --seed 2^63-1 is accepted" test -s seedmax.h5
bad "huge model.hidden_dims" "model.hidden_dims \\[100000000000\\]: training needs about .* TB per rank" \
  train "$here/configs/swissroll.yaml" run_dir=badrun "model.hidden_dims=[100000000000]"
# A 50 MB value in the config file, and an override near the 128 KB a single argument may
# have, each give one short line.
$py -c "open('big.yaml', 'w').write('train:\\n  lr: ' + 'a' * 50_000_000 + '\\n')"
long_override="model.type=$(head -c 100000 /dev/zero | tr '\0' b)"
bad "50 MB value in the config" "key 'train.lr': expected a number, got 'aaaa.*(50000000 bytes)" train big.yaml run_dir=badrun
bad "100 KB override" "key 'model.type': expected one of mlp, dit, unet; got 'bbbb.*(100000 bytes)" \
  train "$here/configs/swissroll.yaml" run_dir=badrun "$long_override"
# (on one process: under mpirun, stderr also holds mpirun's own report of the exit status)
check "50 MB value: stderr under 200 bytes" bash -c "'$difftrain' train big.yaml run_dir=badrun 2>&1 >/dev/null | test \$(wc -c) -lt 200"
check "100 KB override: stderr under 200 bytes" \
  bash -c "'$difftrain' train '$here/configs/swissroll.yaml' run_dir=badrun '$long_override' 2>&1 >/dev/null | test \$(wc -c) -lt 200"
# Shape errors name the file.
$py - <<'PY'
import h5py, numpy as np
with h5py.File("images.h5", "w") as f: f["x"] = np.zeros((10, 3, 4), np.float32)
with h5py.File("labelled.h5", "w") as f:
    f["x"] = np.zeros((10, 2), np.float32); f["y"] = np.zeros(9, np.int64)
PY
bad "examples the model cannot take" "images.h5 (dataset 'x'): examples of shape \\[3, 4\\] do not fit model 'mlp'" \
  train "$here/configs/swissroll.yaml" run_dir=badrun data.path=images.h5
check "labels of another row count than the examples" usage_error "labelled.h5: dataset 'y' has 9 rows but dataset 'x' has 10" \
  prepare reshard --from labelled.h5 --out resharded --shards 2
check "no shards written from mismatched labels" test ! -e resharded
ln -s loop-b.h5 loop-a.h5 && ln -s loop-a.h5 loop-b.h5
bad "symbolic link loop as data" "loop-a.h5: symbolic link loop" train "$here/configs/swissroll.yaml" run_dir=badrun data.path=loop-a.h5

"$difftrain" schedule schedule.type=cosine --steps 10 >sched.json
check "schedule prints JSON" $py -c "import json; d=json.load(open('sched.json')); assert d['type']=='cosine' and len(d['sigmas'])==1000 and len(d['sample_sigmas'])==11"

finish
