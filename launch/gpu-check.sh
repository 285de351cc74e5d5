#!/usr/bin/env bash
# One command that proves the GPU path, on a machine with NVIDIA GPUs, the CUDA toolkit, a
# C++ compiler, CMake and PyTorch (with CUDA) but no package registry. It builds difftrain
# against that PyTorch's LibTorch and NCCL (through launch/torch_cmake_args.py, as
# launch/setup.sh does), with every other library and tool (OpenMPI and mpirun, HDF5,
# yaml-cpp, fmt, CLI11, ...) taken from the bundle that launch/bundle-deps.sh made on a
# Debian 12 machine, then runs the GPU checks and prints a short report.
#
#   bash launch/gpu-check.sh [--deps DIR|FILE.tar.gz] [--out DIR] [--fashion-mnist DIR]
#   (the bundle, on a Debian 12 machine: bash launch/bundle-deps.sh deps && tar -czf deps.tar.gz deps)
#   bash launch/gpu-check.sh --dry ...   # every step up to the first GPU call: bundle,
#                                        # configure, build every target, the binaries run
#                                        # from the bundle (mpirun -n 2), the GPU tests
#                                        # compiled and reported as skipped. Runs anywhere.
#
# PYTHON (default python3) is the Python whose PyTorch is built against.
# Report (also OUT/report.txt, default OUT gpu-check/): the device; the GPU tests (the NCCL
# tests on every GPU: bootstrap, bucket all-reduce sums, GPU training steps equal to the CPU
# steps; the CUDA random streams); swissroll for 2000 steps on one GPU with its step rate
# and sample quality; the conditional DiT smoke recipe on one GPU (img/s, and the eval
# figure) when Fashion-MNIST's files are at hand (--fashion-mnist, default
# /usr/share/datasets/fashion-mnist or DEPS/fashion-mnist), and both smoke models' step
# (`difftrain bench`) next to the same step in this machine's PyTorch
# (tests/bench/torch_step.py --device cuda); peak GPU memory. Each check prints
# ok/FAIL/skip; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps=deps out=gpu-check dry=false fm=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --deps) deps=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --fashion-mnist) fm=$2; shift 2 ;;
  --dry) dry=true; shift ;;
  *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
report=$out/report.txt
: >"$report"
say() { echo "$*" | tee -a "$report"; }
failures=0
result() {  # result ok|FAIL|skip TEXT
  say "$(printf '%-4s' "$1") $2"
  [[ $1 == FAIL ]] && failures=$((failures + 1))
  return 0
}
start=$SECONDS
py_bin=${PYTHON:-python3}
# Python runs without the bundle's libraries in its path: they are for difftrain and mpirun,
# and the machine's PyTorch was built against the machine's own.
py() { env -u LD_LIBRARY_PATH -u OPAL_PREFIX "$py_bin" "$@"; }

# ---- the bundle: every library and tool but LibTorch, CUDA and NCCL ---------------------
if [[ -f $deps ]]; then  # an archive of the folder, which travels smaller
  mkdir -p "$out/deps"
  tar -xf "$deps" -C "$out/deps" --strip-components=1 || { say "gpu-check: cannot unpack $deps"; exit 1; }
  deps=$out/deps
fi
if [[ ! -d $deps/usr/include || ! -f $deps/PACKAGES ]]; then
  say "gpu-check: no dependency bundle at $deps: run launch/bundle-deps.sh on a Debian 12 machine"
  say "  and bring its folder (or a .tar.gz of it) here; --deps names it"
  exit 1
fi
bundle=$(cd "$deps/usr" && pwd)
lib=$bundle/lib/x86_64-linux-gnu
# Open MPI finds its plugins, help files and wrapper data under OPAL_PREFIX.
export OPAL_PREFIX=$bundle PATH=$bundle/bin:$PATH
export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DIFFTRAIN_FONT=$bundle/share/fonts/truetype/dejavu/DejaVuSans.ttf
# The bundle's PMIx also finds a PMIx installed on the machine under the same folder names,
# fails to load that one's compression plugin and then warns at every start; it works without.
export PMIX_MCA_pcompress_base_silence_warning=1
for tool in mpirun mpicxx cmake; do
  command -v $tool >/dev/null || { say "gpu-check: $tool is missing (the bundle holds mpirun and mpicxx; CMake must be installed)"; exit 1; }
done

torch_args=$(py "$root/launch/torch_cmake_args.py") || { say "gpu-check: $py_bin: no usable PyTorch (see above)"; exit 1; }
mapfile -t torch_args <<<"$torch_args"
for i in "${!torch_args[@]}"; do  # the bundle's prefix after LibTorch's
  [[ ${torch_args[$i]} == -DCMAKE_PREFIX_PATH=* ]] && torch_args[$i]="${torch_args[$i]};$bundle"
done
if $dry; then
  say "gpu-check --dry: no GPU is used; $(py -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null)"
else
  say "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)," \
    "$(nvidia-smi -L | wc -l) GPU(s); torch $(py -c 'import torch; print(torch.__version__)' 2>/dev/null)"
fi
say "gpu-check: bundle $deps ($(wc -l <"$deps/PACKAGES") Debian packages)"

# ---- build every target -------------------------------------------------------------------
build=$out/build
cmake_extra=()
command -v ninja >/dev/null && cmake_extra+=(-G Ninja)
# ccache where installed, as launch/setup.sh uses it (a dry run on a CI machine rebuilds
# what an earlier run compiled).
command -v ccache >/dev/null && cmake_extra+=("-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/env;CCACHE_BASEDIR=$root;CCACHE_NOHASHDIR=true;CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;ccache")
cmake -S "$root" -B "$build" "${cmake_extra[@]}" -DCMAKE_BUILD_TYPE=Release "${torch_args[@]}" \
  -DHDF5_ROOT="$lib/hdf5/serial" -DMPI_CXX_COMPILER="$bundle/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$bundle/bin/mpirun" \
  >"$out/configure.log" 2>&1
configured=$?
grep -E "difftrain: " "$out/configure.log" | tee -a "$report"
if [[ $configured -ne 0 ]]; then tail -30 "$out/configure.log"; result FAIL "configure (see $out/configure.log)"; exit 1; fi
# Dry, nothing but the bundle and LibTorch: a library found elsewhere would be missing on
# the GPU machine. (The C runtime's libm and libdl are everywhere.)
if $dry; then
  leaks=$(grep -oE '[=;]/usr/(include|lib)[^;"]*' "$build/CMakeCache.txt" | cut -c2- |
    grep -Ev '^/usr/lib/x86_64-linux-gnu/lib(m|dl|pthread|rt)\.(so|a)$' | sort -u | head -5)
  [[ -n $leaks ]] && result FAIL "configure took files from the system, not the bundle: $(echo $leaks)"
fi
cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1
if [[ $? -ne 0 ]]; then
  grep -E "error|Error" "$out/build.log" | head -40
  result FAIL "build (see $out/build.log)"
  exit 1
fi
result ok "build, every target ($((SECONDS - start)) s)"
# Every binary takes std:: from its own C++ runtime, not from a LibTorch that exports a copy.
link_order=$(bash tests/tools/check_link_order.sh "$build/difftrain" "$build/tests/difftrain_tests" \
  "$build/tests/difftrain_mpi_tests" 2>&1)
[[ $? -eq 0 ]] && result ok "link order: the C++ runtime before LibTorch in every binary" ||
  { echo "$link_order" | tee -a "$report"; result FAIL "link order (tests/tools/check_link_order.sh)"; }
difftrain=$build/difftrain
mpi=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
"$difftrain" --version | tee -a "$report"

# The GPU tests: NcclBackend.* (under mpirun, one rank per GPU) and the unit tests of the
# suites named Gpu*. Without a GPU each must report skipped; with one, none may.
gpu_tests() {  # gpu_tests RANKS LOG
  "${mpi[@]}" -n "$1" "$build/tests/difftrain_mpi_tests" --gtest_filter='NcclBackend.*' --gtest_color=no >"$2" 2>&1 &&
    "$build/tests/difftrain_tests" --gtest_filter='Gpu*.*' --gtest_color=no >>"$2" 2>&1
}

if $dry; then
  gpu_tests 1 "$out/gpu-tests.log"
  rc=$?
  ran=$(grep -cE '^\[ RUN      \]' "$out/gpu-tests.log")
  skipped=$(grep -cE '^\[  SKIPPED \] [A-Za-z0-9_/]+\.[A-Za-z0-9_/]+ \(' "$out/gpu-tests.log")
  [[ $rc -eq 0 && $ran -gt 0 && $ran -eq $skipped ]] &&
    result ok "GPU tests compiled and run without a GPU: $ran run, $skipped skipped" ||
    result FAIL "GPU tests without a GPU: exit $rc, $ran run, $skipped skipped (see $out/gpu-tests.log)"
  # The binaries and mpirun from the bundle: a short CPU run on 2 ranks.
  "$difftrain" prepare swissroll --out "$out/data/swissroll" --shards 2 >"$out/dry-run.log" 2>&1 &&
    "${mpi[@]}" -n 2 -x OMP_NUM_THREADS=1 "$difftrain" train configs/swissroll.yaml dist.backend=mpi train.steps=20 \
      "data.path=$out/data/swissroll" "run_dir=$out/dry-run" >>"$out/dry-run.log" 2>&1 &&
    result ok "swissroll, 20 steps on 2 CPU ranks under the bundle's mpirun" ||
    result FAIL "swissroll on 2 CPU ranks under the bundle's mpirun (see $out/dry-run.log)"
  say "gpu-check --dry: $failures failed, $((SECONDS - start)) s; the GPU checks come next on a GPU machine"
  [[ $failures -eq 0 ]]
  exit
fi

# ---- peak GPU memory, sampled while the checks run ----------------------------------------
(while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) >"$out/memory.log" 2>/dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT

# ---- the GPU tests, the NCCL ones on every GPU -------------------------------------------
gpus=$(nvidia-smi -L | wc -l)
gpu_tests "$gpus" "$out/gpu-tests.log"
rc=$?
summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/gpu-tests.log" | tr '\n' ' ')
[[ $rc -eq 0 ]] && ! grep -q 'SKIPPED' "$out/gpu-tests.log" && result ok "GPU tests (NCCL on $gpus GPU(s)): $summary" ||
  { grep -E 'Failure|error|Expected|Which is|SKIPPED' "$out/gpu-tests.log" | head -20 | tee -a "$report"; result FAIL "GPU tests (NCCL on $gpus GPU(s)): $summary"; }

# ---- swissroll, 2000 steps on one GPU: fp32, bf16 autocast, fp32 replayed from a CUDA graph ---
"$difftrain" prepare swissroll --out "$out/data/swissroll" --shards 1 >/dev/null
for precision in fp32 bf16 fp32-graph; do
  run=$out/swissroll-$precision
  rm -rf "$run"
  graph=false
  [[ $precision == *-graph ]] && graph=true
  "$difftrain" train configs/swissroll.yaml dist.backend=nccl train.steps=2000 train.precision=${precision%-graph} \
    train.cuda_graph=$graph "data.path=$out/data/swissroll" "run_dir=$run" >"$out/swissroll-$precision.log" 2>&1
  if [[ $? -eq 0 ]]; then
    rate=$(py -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'steps_per_s' in l]; print(f\"{sum(x['steps_per_s'] for x in r[1:])/max(1,len(r)-1):.0f}\")" "$run/metrics.jsonl")
    "$difftrain" sample --checkpoint "$run/checkpoints/latest.pt" --out "$run/samples.h5" >/dev/null 2>&1
    distance=$(py tests/reference/swissroll_torch.py --distance "$run/samples.h5" 2>&1 | tail -1)
    result ok "swissroll $precision, 2000 steps on 1 GPU (nccl, world 1; sampled on the GPU): $rate steps/s; $distance"
  else
    tail -5 "$out/swissroll-$precision.log" | tee -a "$report"
    result FAIL "swissroll $precision on 1 GPU (see $out/swissroll-$precision.log)"
  fi
done

# ---- the image smoke recipe on one GPU ---------------------------------------------------
[[ -z $fm ]] && for d in /usr/share/datasets/fashion-mnist "$deps/fashion-mnist"; do [[ -f $d/train-images-idx3-ubyte.gz ]] && fm=$d && break; done
if [[ -n $fm ]]; then
  data=$out/data/fashion-mnist
  "$difftrain" prepare fashion-mnist --from "$fm" --out "$data/train" --shards 1 >/dev/null &&
    "$difftrain" prepare fashion-mnist --from "$fm" --split test --out "$data/test" --shards 1 >/dev/null
  [[ -f $deps/classifier.pt ]] && cp "$deps/classifier.pt" "$data/classifier.pt"
  [[ -f $data/classifier.pt ]] || "$difftrain" classifier --data "$data/train" --test "$data/test" \
    --out "$data/classifier.pt" >"$out/classifier.log" 2>&1
  run=$out/fashion_mnist_dit_cond_smoke
  rm -rf "$run"
  "$difftrain" train configs/fashion_mnist_dit_cond_smoke.yaml dist.backend=nccl "data.path=$data/train" \
    "run_dir=$run" >"$out/smoke.log" 2>&1
  if [[ $? -eq 0 ]]; then
    batch=$(grep -E '^\s+batch_size:' configs/fashion_mnist_dit_cond_smoke.yaml | head -1 | awk '{print $2}')
    rate=$(py -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'steps_per_s' in l]; print(f\"{sum(x['steps_per_s'] for x in r[1:])/max(1,len(r)-1):.1f}\")" "$run/metrics.jsonl")
    img=$(py -c "print(f'{$rate * $batch:.0f}')")
    result ok "fashion-mnist DiT smoke, fp32 on 1 GPU: $rate steps/s, $img img/s (batch $batch)"
    "$difftrain" eval --checkpoint "$run/checkpoints/latest.pt" --cfg-scale 2 >"$out/eval.json" 2>"$out/eval.log" &&
      result ok "eval: $(tail -1 "$out/eval.json" | cut -c1-200)" || result FAIL "eval (see $out/eval.log)"
  else
    tail -5 "$out/smoke.log" | tee -a "$report"
    result FAIL "fashion-mnist DiT smoke on 1 GPU (see $out/smoke.log)"
  fi
  # The step side by side with the same model in this machine's PyTorch, on the GPU:
  # difftrain bench (eager, and replayed from a CUDA graph) against tests/bench/torch_step.py,
  # 50 timed steps after 5.
  for run in fashion_mnist_unet_smoke fashion_mnist_dit_cond_smoke fashion_mnist_unet_smoke:graph \
    fashion_mnist_dit_cond_smoke:graph; do
    recipe=${run%:graph}
    graph=false
    [[ $run == *:graph ]] && graph=true
    "$difftrain" bench "configs/$recipe.yaml" dist.backend=nccl "data.path=$data/train" train.cuda_graph=$graph \
      --steps 50 --warmup 5 >"$out/bench-$run.log" 2>&1
    dt=$?
    if [[ $graph == false ]]; then  # PyTorch's step once per recipe
      py tests/bench/torch_step.py "configs/$recipe.yaml" "data.path=$data/train" --device cuda --steps 50 \
        --warmup 5 >"$out/torch-$recipe.log" 2>&1
      echo $? >"$out/torch-$recipe.status"
    fi
    pt=$(cat "$out/torch-$recipe.status")
    if [[ $dt -eq 0 && $pt -eq 0 ]]; then
      result ok "$recipe on 1 GPU (train.cuda_graph $graph): $(py -c "import json,sys
d, p = (json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:3])
print(f\"difftrain {d['samples_per_s']:.0f} img/s ({d['step_ms']:.1f} ms/step, {d.get('peak_gpu_mb', '?')} MiB), \"
      f\"PyTorch {p['torch']} {p['samples_per_s']:.0f} img/s ({p['step_ms']:.1f} ms, {p.get('peak_gpu_mb', '?')} MiB): \"
      f\"{d['samples_per_s'] / p['samples_per_s']:.2f}x\")" "$out/bench-$run.log" "$out/torch-$recipe.log")"
    else
      result FAIL "$recipe bench on 1 GPU, train.cuda_graph $graph (see $out/bench-$run.log, $out/torch-$recipe.log)"
    fi
  done
else
  result skip "fashion-mnist smoke: no Fashion-MNIST files (give --fashion-mnist DIR)"
fi

kill $sampler 2>/dev/null
peak=$(sort -n "$out/memory.log" | tail -1)
say "peak GPU memory (nvidia-smi, whole device): ${peak:-?} MiB"
say "gpu-check: $failures failed, $((SECONDS - start)) s"
[[ $failures -eq 0 ]]
