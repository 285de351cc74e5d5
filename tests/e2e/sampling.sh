#!/usr/bin/env bash
# Sampling never hands out NaN: a model trained briefly on a 20-sigma schedule samples
# finite values at every step count and mu; options out of range, schedules float32 cannot
# hold and an --n too large for memory are refused with one error line and nothing written.
#   bash tests/e2e/sampling.sh path/to/difftrain path/to/mpirun
set -uo pipefail
source "$(dirname "$0")/lib/common.bash"

"$difftrain" prepare swissroll --out data/swissroll --shards 2 >/dev/null
"$difftrain" train "$here/configs/swissroll.yaml" run_dir=run schedule.N=20 train.steps=50 train.log_every=50 \
  train.checkpoint_every=50 >train.log 2>&1
check "train a 20-sigma model" test -f run/checkpoints/latest.pt
ckpt=run/checkpoints/latest.pt

# Step counts at both ends and around 2N/3 (where sample_sigmas starts to repeat a sigma,
# the reference's NaN case), for mu in {0, 0.5, 0.9}, with the config's gam = 2; every step
# count 1..N is the unit test SampleCommand.FiniteAtEveryStepCountAndMu. `sample` refuses
# non-finite samples itself, so each exit status is one check; h5py checks the files too.
written=0
for mu in 0 0.5 0.9; do
  for steps in 1 2 13 14 19 20; do
    out=s-$steps-$mu.h5
    if "$difftrain" sample --checkpoint $ckpt --out $out --n 100 --steps $steps --mu $mu >/dev/null 2>err.txt; then
      written=$((written + 1))
    else
      echo "    sample --steps $steps --mu $mu: $(cat err.txt)"
    fi
  done
done
check "sample writes at steps 1, 2, 13, 14, 19, 20 and mu 0, 0.5, 0.9 (18 runs)" test $written -eq 18
all_finite() {
  $py - s-*.h5 <<'EOF'
import sys, h5py, numpy as np
files = sys.argv[1:]
assert len(files) == 18, len(files)
for f in files:
    x = h5py.File(f, "r")["samples"][...]
    assert x.shape == (100, 2) and np.isfinite(x).all(), f
EOF
}
if $py -c "import h5py, numpy" 2>/dev/null; then
  check "every written sample is finite (h5py)" all_finite
else
  echo "skip: h5py is not installed; the exit statuses above are the check"
fi

# refused NAME TEXT ARGS...: `difftrain ARGS` exits non-zero with one error line holding
# TEXT, prints nothing on stdout and leaves no refused.h5 behind.
refused() {
  local name=$1 text=$2 rc; shift 2
  rm -f refused.h5
  "$difftrain" "$@" >out.txt 2>err.txt; rc=$?
  check "$name: non-zero exit" test $rc -ne 0
  check "$name: one error line naming it" one_error_line err.txt "$text"
  [[ $rc -ne 0 ]] && ! one_error_line err.txt "$text" && sed 's/^/    | /' err.txt | head -5
  check "$name: nothing on stdout, no file" test ! -s out.txt -a ! -e refused.h5
}
sample=(sample --checkpoint $ckpt --out refused.h5 --n 10)
refused "--gam nan" "--gam" "${sample[@]}" --gam nan
refused "--gam 1e30" "--gam" "${sample[@]}" --gam 1e30
refused "--gam -1" "--gam" "${sample[@]}" --gam -1
refused "--mu 1" "--mu" "${sample[@]}" --mu 1
refused "--steps 0" "--steps" "${sample[@]}" --steps 0
refused "--steps N+1" "--steps must be in \[1, schedule.N = 20\], got 21" "${sample[@]}" --steps 21

start=$SECONDS
refused "--n 3000000000" "--n 3000000000 needs about .* GiB of memory, but .* is available" \
  sample --checkpoint $ckpt --out refused.h5 --n 3000000000
check "--n 3000000000 is refused at once" test $((SECONDS - start)) -le 10

# Schedules float32 cannot hold: refused by `schedule` (no bare inf printed) and by `train`
# on 1 and 2 ranks before a run directory exists.
refused "schedule: sigma_max 1e300" "schedule.sigma_max" schedule schedule.sigma_max=1e300
refused "schedule: ddpm betas near 1" "schedule.beta_end" schedule schedule.type=ddpm schedule.beta_end=0.9999999
bad "train: sigma_max 1e300" "schedule.sigma_max" train "$here/configs/swissroll.yaml" run_dir=badrun \
  schedule.sigma_max=1e300
bad "train: ddpm betas near 1" "schedule.beta_end" train run_dir=badrun schedule.type=ddpm schedule.beta_end=0.9999999

finish
