#!/usr/bin/env bash
# One command that proves the GPU path, on a machine with NVIDIA GPUs, the CUDA toolkit,
# OpenMPI, HDF5 and PyTorch installed but no package registry. It builds difftrain against
# PyTorch's own LibTorch (and NCCL: PyTorch's nvidia/nccl package, or the system's), takes
# whatever else the build needs and the machine lacks from the folder launch/bundle-deps.sh
# made (default: deps/), then runs the GPU checks and prints a short report.
#
#   bash launch/gpu-check.sh [--deps DIR] [--out DIR] [--fashion-mnist DIR]
#   bash launch/gpu-check.sh --cpu     # no GPU: build from the bundle alone (every group),
#                                      # against the system's LibTorch; the GPU checks skip
#
# Report (also OUT/report.txt, default OUT gpu-check/): the device; the NCCL tests on every
# GPU (bootstrap, bucket all-reduce sums, GPU training steps equal to the CPU steps);
# swissroll for 2000 steps on one GPU with its step rate and sample quality; the
# conditional DiT smoke recipe on one GPU (img/s, and the eval figure) when Fashion-MNIST's
# files are at hand (--fashion-mnist, default /usr/share/datasets/fashion-mnist or
# deps/fashion-mnist), and both smoke models' step (`difftrain bench`) next to the same step
# in this machine's PyTorch (tests/bench/torch_step.py --device cuda); peak GPU memory. Each check prints ok/FAIL/skip; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps=deps out=gpu-check cpu=false fm=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --deps) deps=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --fashion-mnist) fm=$2; shift 2 ;;
  --cpu) cpu=true; shift ;;
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
py=${PYTHON:-python3}

# ---- dependencies: the system's where present, else the bundle's ----------------------
declare -A probe=(
  [stb]=/usr/include/stb/stb_image_write.h [xxhash]=/usr/include/xxhash.h
  [yaml-cpp]=/usr/include/yaml-cpp/yaml.h [fmt]=/usr/include/fmt/format.h [cli11]=/usr/include/CLI/CLI.hpp
  [nlohmann-json]=/usr/include/nlohmann/json.hpp [googletest]=/usr/include/gtest/gtest.h
  [fonts]=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
)
prefixes=() from_bundle=()
for group in "${!probe[@]}"; do
  if ! $cpu && [[ -e ${probe[$group]} ]]; then continue; fi
  if [[ ! -d $deps/$group/usr ]]; then
    say "gpu-check: this machine lacks $group (${probe[$group]}) and $deps/$group is missing:"
    say "  run launch/bundle-deps.sh on a Debian 12 machine and copy its folder here as $deps"
    exit 1
  fi
  from_bundle+=("$group")
  prefixes+=("$(cd "$deps/$group/usr" && pwd)")
done
for tool in mpirun mpicxx h5cc cmake; do
  command -v $tool >/dev/null || { say "gpu-check: $tool is missing: install OpenMPI, HDF5 and CMake"; exit 1; }
done
[[ -d $deps/fonts/usr ]] && [[ " ${from_bundle[*]} " == *" fonts "* ]] &&
  export DIFFTRAIN_FONT=$(cd "$deps/fonts/usr" && pwd)/share/fonts/truetype/dejavu/DejaVuSans.ttf

nccl_flags=()
if ! $cpu; then
  torch_prefix=$($py -c 'import torch; print(torch.utils.cmake_prefix_path)') ||
    { say "gpu-check: $py cannot import torch: install PyTorch (with CUDA)"; exit 1; }
  prefixes=("$torch_prefix" "${prefixes[@]}")
  nccl_root=$($py -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
  [[ -n $nccl_root ]] && nccl_flags=(-DNCCL_ROOT="$nccl_root")
  say "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)," \
    "$(nvidia-smi -L | wc -l) GPU(s); torch $($py -c 'import torch; print(torch.__version__)')"
fi
say "gpu-check: from the bundle: ${from_bundle[*]:-nothing}"

# ---- build ------------------------------------------------------------------------------
build=$out/build
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
(IFS=';'; cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="${prefixes[*]}" "${nccl_flags[@]}") >"$out/configure.log" 2>&1
configured=$?
grep -E "difftrain: |Found Torch" "$out/configure.log" | tee -a "$report"
if [[ $configured -ne 0 ]]; then tail -30 "$out/configure.log"; result FAIL "configure (see $out/configure.log)"; exit 1; fi
targets=(difftrain difftrain_mpi_tests)
$cpu && targets+=(difftrain_tests)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >"$out/build.log" 2>&1
if [[ $? -ne 0 ]]; then
  grep -E "error|Error" "$out/build.log" | head -40
  result FAIL "build (see $out/build.log)"
  exit 1
fi
result ok "build ($((SECONDS - start)) s): ${targets[*]}"
difftrain=$build/difftrain
mpi=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)

if $cpu; then
  # The bundle's build on this CPU machine: the unit tests and the NCCL tests (skipping).
  (cd "$build" && ctest -j "$(nproc)" -R 'nccl_tests|Backend' --output-on-failure) >"$out/ctest.log" 2>&1 &&
    result ok "ctest on the bundle's build: $(grep -E 'tests passed|Skipped' "$out/ctest.log" | tr '\n' ' ')" ||
    result FAIL "ctest on the bundle's build (see $out/ctest.log)"
  say "gpu-check: $failures failed, $((SECONDS - start)) s"
  [[ $failures -eq 0 ]]
  exit
fi

# ---- peak GPU memory, sampled while the checks run ----------------------------------------
(while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) >"$out/memory.log" 2>/dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT

# ---- NCCL tests on every GPU ------------------------------------------------------------------
gpus=$(nvidia-smi -L | wc -l)
"${mpi[@]}" -n "$gpus" "$build/tests/difftrain_mpi_tests" --gtest_filter='NcclBackend.*' >"$out/nccl.log" 2>&1
rc=$?
summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/nccl.log" | tr '\n' ' ')
[[ $rc -eq 0 ]] && ! grep -q 'SKIPPED' "$out/nccl.log" && result ok "NCCL tests on $gpus GPU(s): $summary" ||
  { grep -E 'Failure|error|Expected|Which is|SKIPPED' "$out/nccl.log" | head -20 | tee -a "$report"; result FAIL "NCCL tests on $gpus GPU(s): $summary"; }

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
    rate=$($py -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'steps_per_s' in l]; print(f\"{sum(x['steps_per_s'] for x in r[1:])/max(1,len(r)-1):.0f}\")" "$run/metrics.jsonl")
    "$difftrain" sample --checkpoint "$run/checkpoints/latest.pt" --out "$run/samples.h5" >/dev/null 2>&1
    distance=$($py tests/reference/swissroll_torch.py --distance "$run/samples.h5" 2>&1 | tail -1)
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
    rate=$($py -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'steps_per_s' in l]; print(f\"{sum(x['steps_per_s'] for x in r[1:])/max(1,len(r)-1):.1f}\")" "$run/metrics.jsonl")
    img=$($py -c "print(f'{$rate * $batch:.0f}')")
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
      $py tests/bench/torch_step.py "configs/$recipe.yaml" "data.path=$data/train" --device cuda --steps 50 \
        --warmup 5 >"$out/torch-$recipe.log" 2>&1
      echo $? >"$out/torch-$recipe.status"
    fi
    pt=$(cat "$out/torch-$recipe.status")
    if [[ $dt -eq 0 && $pt -eq 0 ]]; then
      result ok "$recipe on 1 GPU (train.cuda_graph $graph): $($py -c "import json,sys
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
