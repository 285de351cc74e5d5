#!/usr/bin/env bash
# A full disk end to end: every writer (sample's HDF5 and PNG, prepare's shards, training's
# checkpoints, config.yaml and metrics) fails with one error line and a non-zero exit, the
# previous files stay byte for byte, and no temporary or half line is left. The disk is a
# small tmpfs this script mounts (as root; skipped where mounting is refused) and fills
# until only a few KiB are free, so the failure hits in the middle of a write.
#   bash tests/e2e/disk_full.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"
disk=$work/disk
mkdir -p "$disk"
if ! why=$(mount -t tmpfs -o size=2m tmpfs "$disk" 2>&1); then
  echo "skip: cannot mount a tmpfs to fill: $why"
  exit 77
fi
# Unmount first, then whatever common.bash set up to happen at exit.
eval "common_trap=($(trap -p EXIT))"  # (trap -- COMMAND EXIT)
common_exit=${common_trap[2]:-}
trap "umount -l '$disk' 2>/dev/null; $common_exit" EXIT

fill_leaving() {  # fill_leaving KIB: fills the disk, then frees KIB KiB of it
  rm -f "$disk/filler"
  dd if=/dev/zero of="$disk/filler" bs=4k 2>/dev/null
  truncate -s "-$1K" "$disk/filler"
}
free_up() { rm -f "$disk/filler"; }
no_temporaries() { [[ -z $(find "$1" -name '.*' ! -name . ! -name .lock | head -1) ]]; }  # .NAME.tmp.PID, .NAME.bak.PID, scratch dirs (a run's .lock stays by design)
ends_with_newline() { [[ -s $1 && $(tail -c 1 "$1" | od -An -c | tr -d ' ') == '\n' ]]; }
every_line_whole() { ! grep -qv '}}$' "$1"; }  # each metrics record ends with its time_s object
expect_failure() {  # expect_failure NAME TEXT: the last command (status $rc, stderr err.txt) failed naming TEXT
  check "$1: non-zero exit" test "$rc" -ne 0
  check "$1: one error line naming $2" one_error_line err.txt "$2"
  check "$1: the error says the disk is full" grep -q "No space left on device" err.txt
  check "$1: no 'wrote' line" test ! -s out.txt
  grep 'difftrain: error:' err.txt | sed 's/^/    | /'
}

tiny=(model.hidden_dims=[16,16] train.batch_size=20)
"$difftrain" prepare swissroll --out data --shards 2 >/dev/null
"$difftrain" train "$here/configs/swissroll.yaml" run_dir=run data.path=data "${tiny[@]}" train.steps=10 >/dev/null 2>&1
ckpt=run/checkpoints/latest.pt
check "set-up: a checkpoint to sample from" test -f "$ckpt"
sample() { "$difftrain" sample --checkpoint "$ckpt" "$@" >out.txt 2>err.txt; rc=$?; }

# --- sample --out on the full disk, --png elsewhere: neither is replaced
sample --out "$disk/samples.h5" --png pic.png --n 2000 --seed 1
check "set-up: previous samples and picture" test "$rc" -eq 0 -a -s "$disk/samples.h5" -a -s pic.png
cp "$disk/samples.h5" samples.before; cp pic.png pic.before
fill_leaving 8
sample --out "$disk/samples.h5" --png pic.png --n 2000 --seed 2
expect_failure "sample --out on a full disk" "$disk/samples.h5"
check "sample --out on a full disk: previous samples byte for byte" cmp -s "$disk/samples.h5" samples.before
check "sample --out on a full disk: the picture is not replaced either" cmp -s pic.png pic.before
check "sample --out on a full disk: no temporaries" no_temporaries "$disk"
free_up

# --- sample --png on the full disk, --out elsewhere: neither is replaced
sample --out elsewhere.h5 --png "$disk/pic.png" --n 2000 --seed 1
check "set-up: previous picture on the disk" test "$rc" -eq 0 -a -s "$disk/pic.png"
cp "$disk/pic.png" diskpic.before; cp elsewhere.h5 elsewhere.before
fill_leaving 4
sample --out elsewhere.h5 --png "$disk/pic.png" --n 2000 --seed 2
expect_failure "sample --png on a full disk" "$disk/pic.png"
check "sample --png on a full disk: previous picture byte for byte" cmp -s "$disk/pic.png" diskpic.before
check "sample --png on a full disk: the samples are not replaced either" cmp -s elsewhere.h5 elsewhere.before
check "sample --png on a full disk: no temporaries" no_temporaries "$disk"
free_up

# --- prepare reshard onto the full disk: the previous shards stay, no scratch directory
sample --out big.h5 --n 20000
check "set-up: a big input" test "$rc" -eq 0
"$difftrain" prepare reshard --from big.h5 --dataset samples --out "$disk/shards" --shards 2 >/dev/null 2>&1
check "set-up: previous shards" test -s "$disk/shards/shard-00000.h5" -a -s "$disk/shards/shard-00001.h5"
cp "$disk/shards/shard-00000.h5" shard0.before; cp "$disk/shards/shard-00001.h5" shard1.before
fill_leaving 8
"$difftrain" prepare reshard --from big.h5 --dataset samples --out "$disk/shards" --shards 3 >out.txt 2>err.txt; rc=$?
expect_failure "prepare reshard on a full disk" "$disk/shards"
check "prepare reshard on a full disk: the previous shards byte for byte" \
  bash -c "cmp -s '$disk/shards/shard-00000.h5' shard0.before && cmp -s '$disk/shards/shard-00001.h5' shard1.before"
check "prepare reshard on a full disk: no third shard" test ! -e "$disk/shards/shard-00002.h5"
check "prepare reshard on a full disk: no scratch directory or temporaries" no_temporaries "$disk"
free_up

# --- training on the full disk: a checkpoint, the metrics, config.yaml
train() { "$difftrain" train "$here/configs/swissroll.yaml" data.path=data "${tiny[@]}" "$@" >out.txt 2>err.txt; rc=$?; }
train run_dir="$disk/run" train.steps=10 train.log_every=5
check "set-up: a run on the disk" test "$rc" -eq 0 -a -s "$disk/run/checkpoints/latest.pt"
cp "$disk/run/checkpoints/latest.pt" latest.before
after_failed_run() {  # after_failed_run NAME: what every failed run must leave
  grep 'difftrain: error:' err.txt | sed 's/^/    | /'
  check "$1: previous latest.pt byte for byte" cmp -s "$disk/run/checkpoints/latest.pt" latest.before
  check "$1: metrics.jsonl ends with a whole line" ends_with_newline "$disk/run/metrics.jsonl"
  check "$1: every metrics line is whole" every_line_whole "$disk/run/metrics.jsonl"
  check "$1: no temporaries" no_temporaries "$disk"
}

fill_leaving 8
train run_dir="$disk/run" train.steps=30 train.log_every=10 train.checkpoint_every=10
check "checkpoint on a full disk: exit 1" test "$rc" -eq 1
check "checkpoint on a full disk: one error line naming it" one_error_line err.txt "step-0000020.pt: .*No space left on device"
after_failed_run "checkpoint on a full disk"
free_up

fill_leaving 8
train run_dir="$disk/run" train.steps=2000 train.log_every=1 train.checkpoint_every=100000
check "metrics on a full disk: exit 1" test "$rc" -eq 1
check "metrics on a full disk: one error line naming it" one_error_line err.txt "metrics.jsonl: .*No space left on device"
after_failed_run "metrics on a full disk"
free_up

fill_leaving 0
train run_dir="$disk/fresh" train.steps=10
check "config.yaml on a full disk: exit 1" test "$rc" -eq 1
check "config.yaml on a full disk: one error line naming it" one_error_line err.txt "config.yaml: .*No space left on device"
grep 'difftrain: error:' err.txt | sed 's/^/    | /'
check "config.yaml on a full disk: no config.yaml" test ! -e "$disk/fresh/config.yaml"
check "config.yaml on a full disk: no temporaries" no_temporaries "$disk"
free_up

finish
