#!/usr/bin/env bash
# Sets up, builds and tests difftrain against the three LibTorch builds it supports (what
# CI runs, through .ci/run):
#   1. Debian's LibTorch 1.13, the quickstart's: the command builds, in build/;
#   2. CUDA LibTorch 2.14.1 with NCCL 2.30 and nvcc 13: launch/gpu-check.sh --dry builds every
#      target in a fresh folder from launch/bundle-deps.sh's bundle alone (the system's copies
#      of the bundled packages hidden), runs what needs no GPU and reports each GPU test as
#      skipped;
#   3. LibTorch 2.13.0 (CPU) from PyTorch's wheel: every test (unit tests, mpirun -n 2 and
#      -n 4, PyTorch parity under torch 2.13 and under Debian's 1.13, end to end), in build-cpu/.
#
#   bash launch/test.sh                          # all three
#   bash launch/test.sh --only cpu|debian|cuda [CTEST ARGS]
#                                                # every test against one build (cuda: the
#                                                # CPU tests pass, the GPU tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."

only=""
if [[ ${1:-} == --only ]]; then only=$2; shift 2; fi
case $only in "" | cpu | debian | cuda) ;; *) echo "test: --only takes cpu, debian or cuda" >&2; exit 2 ;; esac

# Counted before OMP_NUM_THREADS is set: nproc honours it, and would then say 1.
jobs=$(nproc 2>/dev/null || echo 2)
stage() { echo "== test: $* ($(date +%T), ${SECONDS}s)"; }

every_test() {  # every_test TORCH [CTEST ARGS]
  local torch=$1
  shift
  bash launch/setup.sh --torch "$torch"
  local dir
  dir=$(case $torch in debian) echo build ;; *) echo "build-$torch" ;; esac)
  # One BLAS/OpenMP thread per process: the multi-rank tests run several ranks per core.
  (cd "$dir" && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ctest --output-on-failure -j "$jobs" "$@")
}

if [[ -n $only ]]; then
  stage "every test against the $only build"
  every_test "$only" "$@"
  exit
fi

# The full suite last, so that its ctest summary closes the output.
stage "1/3 Debian's LibTorch 1.13: build the command"
bash launch/setup.sh --target difftrain
build/difftrain --version
stage "2/3 CUDA LibTorch 2.14.1 + NCCL: gpu-check --dry from the bundle"
bash launch/bundle-deps.sh build-deps
cuda_python=$(bash launch/setup.sh --torch cuda --print-python)
rm -rf build-gpu-check
PYTHON=$cuda_python bash tests/tools/hide_packages.sh build-deps/BUILD_PACKAGES -- \
  bash launch/gpu-check.sh --dry --deps build-deps --out build-gpu-check
stage "3/3 LibTorch 2.13 (CPU wheel): build and every test"
every_test cpu "$@"
