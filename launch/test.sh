#!/usr/bin/env bash
# Sets up (packages + build) and runs every test: unit tests, multi-rank tests under
# mpirun -n 2 and -n 4, PyTorch/h5py parity checks and end-to-end runs of the command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
cd build
# Counted before OMP_NUM_THREADS is set: nproc honours it, and would then say 1.
jobs=$(nproc 2>/dev/null || echo 2)
# One BLAS/OpenMP thread per process: the multi-rank tests run several ranks per core.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
ctest --output-on-failure -j "$jobs" "$@"
