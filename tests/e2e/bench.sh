#!/usr/bin/env bash
# `difftrain bench` on 1 and 2 ranks: a table and, as the last line, one JSON object with
# every rank's step split; it writes no run directory; bad input fails like `train`.
#   bash tests/e2e/bench.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"

"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
# Checks the last line of a bench output: `json_ok FILE RANKS STEPS`.
json_ok() {
  tail -n 1 "$1" | python3 -c "
import json, sys
ranks, steps = int(sys.argv[1]), int(sys.argv[2])
j = json.loads(sys.stdin.read())
need = {'ranks', 'samples_per_s', 'step_ms', 'split_ms', 'peak_rss_mb', 'global_batch', 'steps', 'per_rank'}
assert need <= set(j), need - set(j)
assert set(j['split_ms']) == {'data', 'compute', 'sync', 'optim', 'ema', 'log'}, j['split_ms']
assert j['ranks'] == ranks and len(j['per_rank']) == ranks and j['steps'] == steps, j
assert j['global_batch'] == 100 and j['peak_rss_mb'] > 10, j
# samples/s is the global batch at the slowest rank's step time.
assert abs(j['samples_per_s'] - 100 / (j['step_ms'] / 1e3)) <= 0.01 * j['samples_per_s'], j
for r in j['per_rank']:
    parts = sum(r['split_ms'].values())
    # The phases are inside the step and cover most of it.
    assert 0.5 * r['step_ms'] <= parts <= 1.01 * r['step_ms'] + 0.01, r
    assert r['split_ms']['compute'] > 0 and r['split_ms']['optim'] > 0 and r['split_ms']['ema'] > 0, r
assert j['step_ms'] == max(r['step_ms'] for r in j['per_rank'])
" "$2" "$3"
}

"$difftrain" bench "$here/configs/swissroll.yaml" data.path=data/swissroll run_dir=nothing --steps 30 --warmup 3 >one.out 2>&1
check "bench, 1 rank: JSON last line" json_ok one.out 1 30
check "bench, 1 rank: a table row per rank" grep -qE '^ +0 +[0-9.]+ ' one.out
check "bench writes no run directory" test ! -e nothing

mpi -n 2 "$difftrain" bench "$here/configs/swissroll.yaml" data.path=data/swissroll run_dir=nothing --steps 30 \
  --warmup 3 >two.out 2>&1
check "bench, 2 ranks: JSON with both ranks" json_ok two.out 2 30
check "bench, 2 ranks: the slowest is marked" grep -q slowest two.out

mpi -n 2 "$difftrain" bench "$here/configs/swissroll.yaml" data.path=data/swissroll train.batch_size=101 >bad.out 2>&1
status=$?
check "bench, 2 ranks: an uneven batch fails" test $status -ne 0
check "bench: one error line naming the key" one_error_line bad.out "train.batch_size"
"$difftrain" bench "$here/configs/swissroll.yaml" data.path=data/swissroll --steps 0 >zero.out 2>&1
status=$?
check "bench --steps 0 is refused" test $status -ne 0
# Counts beyond what a benchmark can run are refused as typed: no overflow of warm-up +
# steps ("stopped by a signal"), no 20-digit value clamped to another.
for option in "--steps 9223372036854775807" "--warmup 9223372036854775807" "--steps 99999999999999999999"; do
  "$difftrain" bench "$here/configs/swissroll.yaml" data.path=data/swissroll $option >huge.out 2>&1
  status=$?
  check "bench $option is refused, naming the option and the value as typed" \
    bash -c "$(declare -f one_error_line); [[ $status -eq 1 ]] && one_error_line huge.out '${option%% *}: must be an integer in \[[01], 1000000000\], got .${option##* }.' && ! grep -q signal huge.out"
done
finish
