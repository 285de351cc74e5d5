#!/usr/bin/env bash
# `difftrain prepare fashion-mnist` and `prepare image-folder` through the command: shards
# written (and, with h5py, read back with their class names); an option of another dataset
# and bad input give one error line, exit status 1 and no output directory.
#   bash tests/e2e/prepare_images.sh path/to/difftrain [path/to/mpirun]
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
# refused STATUS LOG TEXT OUT: the command exited 1 with one error line holding TEXT, and
# left no OUT behind
refused() { [[ $1 -eq 1 ]] && one_error_line "$2" "$3" && test ! -e "$4"; }

check "help names the new datasets" bash -c "'$difftrain' prepare --help | grep -q 'fashion-mnist (.*), image-folder ('"

# Fashion-MNIST's test split, when Debian's package is installed.
fm=/usr/share/datasets/fashion-mnist
if [[ -f $fm/t10k-images-idx3-ubyte.gz ]]; then
  "$difftrain" prepare fashion-mnist --split test --out fm --shards 2 >fm.log 2>&1
  check "fashion-mnist: 2 shards" bash -c "grep -q 'wrote 2 shards to fm' fm.log && test -s fm/shard-00000.h5 -a -s fm/shard-00001.h5"
  needs_python "fashion-mnist read by h5py" && check "fashion-mnist read by h5py" $py - <<'PY'
import h5py, numpy as np
x = [h5py.File(f"fm/shard-0000{k}.h5")["x"][:] for k in (0, 1)]
y = np.concatenate([h5py.File(f"fm/shard-0000{k}.h5")["y"][:] for k in (0, 1)])
names = list(h5py.File("fm/shard-00001.h5").attrs["class_names"])
assert [a.shape for a in x] == [(5000, 1, 28, 28)] * 2 and x[0].dtype == np.uint8, [a.shape for a in x]
assert y.dtype == np.int64 and (np.bincount(y) == 1000).all(), np.bincount(y)
assert names[0] == "T-shirt/top" and names[9] == "Ankle boot", names
PY
else
  echo "skip fashion-mnist (Debian's dataset-fashion-mnist is not installed)"
  skips=$((skips + 1))
fi
mkdir empty
"$difftrain" prepare fashion-mnist --from empty --out fm2 >missing.log 2>&1
check "fashion-mnist: a missing file names the package" refused $? missing.log \
  "empty/train-images-idx3-ubyte.gz: no such file; install Debian's dataset-fashion-mnist" fm2

# An image folder of PGM (grey) and PPM (colour) pictures: header, then random pixels.
picture() {  # picture PATH P5|P6 WIDTH HEIGHT
  local bytes=$(($3 * $4))
  [[ $2 == P6 ]] && bytes=$((bytes * 3))
  mkdir -p "$(dirname "$1")"
  { printf '%s\n%d %d\n255\n' "$2" "$3" "$4"; head -c $bytes /dev/urandom; } >"$1"
}
picture images/shirt/a.pgm P5 30 20
picture images/shirt/b.pgm P5 12 12
picture images/bag/a.ppm P6 9 17
"$difftrain" prepare image-folder --from images --out img --size 8 --shards 2 >img.log 2>&1
check "image-folder: 2 shards" bash -c "grep -q 'wrote 2 shards to img' img.log && test -s img/shard-00000.h5 -a -s img/shard-00001.h5"
needs_python "image-folder read by h5py" && check "image-folder read by h5py" $py - <<'PY'
import h5py, numpy as np
f = [h5py.File(f"img/shard-0000{k}.h5") for k in (0, 1)]
x = np.concatenate([g["x"][:] for g in f]); y = np.concatenate([g["y"][:] for g in f])
assert x.shape == (3, 3, 8, 8) and x.dtype == np.uint8, x.shape   # RGB: one picture has colour
assert y.tolist() == [0, 1, 1], y                                   # bag, shirt, shirt
assert list(f[0].attrs["class_names"]) == ["bag", "shirt"], f[0].attrs["class_names"]
PY
"$difftrain" prepare image-folder --from images --out grey --size 8 --channels 1 >/dev/null 2>&1
check "image-folder: --channels 1" test -s grey/shard-00000.h5

head -c 200 /dev/urandom >images/bag/broken.png
"$difftrain" prepare image-folder --from images --out bad --size 8 >bad.log 2>&1
check "image-folder: a corrupt image is one error line naming it, nothing written" refused $? bad.log \
  "images/bag/broken.png: cannot decode image" bad

"$difftrain" prepare swissroll --out s --size 4 >size.log 2>&1
check "an option of another dataset is refused" refused $? size.log "--size is for image-folder" s
"$difftrain" prepare image-folder --from images --out d --size 4 --dataset images >dataset.log 2>&1
check "--dataset is refused where it does not apply" refused $? dataset.log "--dataset is for reshard" d
"$difftrain" prepare image-folder --from images --out c --size 4 --channels 2 >channels.log 2>&1
check "--channels must be 1 or 3" refused $? channels.log "channels" c
finish
