#!/usr/bin/env bash
# `difftrain sample` never writes over what it reads or what training made: --out or --png
# naming the checkpoint, another checkpoint of its run, a shard of its training data (also
# through a hard link or a symlink), or each other, is refused before sampling with one
# error line naming the option and the input, and the input stays byte for byte.
#   bash tests/e2e/sample_outputs.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"

"$difftrain" prepare swissroll --out data --shards 2 >/dev/null
"$difftrain" train "$here/configs/swissroll.yaml" run_dir=run data.path=data model.hidden_dims=[16,16] \
  train.steps=20 train.checkpoint_every=10 >/dev/null 2>&1
ckpt=run/checkpoints/latest.pt
check "set-up: a checkpoint and a step file" test -f "$ckpt" -a -f run/checkpoints/step-0000010.pt
mkdir -p before
cp run/checkpoints/*.pt data/*.h5 before/
check "set-up: 5 inputs saved to compare with" test "$(ls before | wc -l)" -eq 5
ln run/checkpoints/latest.pt hardlink.pt
ln -s data/shard-00001.h5 symlink.h5

refused() {  # refused NAME TEXT SAMPLE-ARGS...: refused with one line holding TEXT, inputs untouched
  local name=$1 text=$2 rc; shift 2
  "$difftrain" sample --checkpoint "$ckpt" --n 100 "$@" >out.txt 2>err.txt; rc=$?
  check "$name: non-zero exit" test "$rc" -ne 0
  check "$name: one error line naming it" one_error_line err.txt "$text"
  sed 's/^/    | /' err.txt | head -5
  check "$name: no 'wrote' line" test ! -s out.txt
  check "$name: the inputs byte for byte" \
    bash -c 'for f in before/*; do case $f in *.pt) g=run/checkpoints/${f#before/};; *) g=data/${f#before/};; esac; cmp -s "$f" "$g" || exit 1; done'
}
refused "--out the checkpoint" "--out $ckpt would overwrite $ckpt (the checkpoint)" --out "$ckpt"
refused "--out a step file" "--out run/checkpoints/step-0000010.pt would overwrite run/checkpoints/step-0000010.pt (a checkpoint of the run)" \
  --out run/checkpoints/step-0000010.pt
refused "--png the checkpoint by another path" "--png run/../run/checkpoints/latest.pt would overwrite $ckpt (the checkpoint)" \
  --out ok.h5 --png run/../run/checkpoints/latest.pt
refused "--png a data shard" "--png data/shard-00000.h5 would overwrite data/shard-00000.h5 (training data)" --out ok.h5 --png data/shard-00000.h5
refused "--out a hard link to the checkpoint" "--out hardlink.pt would overwrite $ckpt (the checkpoint)" --out hardlink.pt
refused "--out a symlink to a data shard" "--out symlink.h5 would overwrite data/shard-00001.h5 (training data)" --out symlink.h5
refused "--out equal to --png" "--out same.h5 and --png ./same.h5 name the same file" --out same.h5 --png ./same.h5
check "refused: nothing written" test ! -e ok.h5 -a ! -e same.h5

# Other names are fine, and "wrote" is printed once both files landed.
"$difftrain" sample --checkpoint "$ckpt" --n 100 --out ok.h5 --png ok.png >out.txt 2>err.txt
check "other files: written" test -s ok.h5 -a -s ok.png
check "other files: 'wrote' names both" grep -q "wrote 100 samples .* to ok.h5 and ok.png" out.txt

finish
