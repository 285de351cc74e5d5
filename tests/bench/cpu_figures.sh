#!/usr/bin/env bash
# Every CPU figure in BENCHMARKS.md, in one run (about 10 minutes on 2 cores; run it with
# nothing else busy):
#
#   bash tests/bench/cpu_figures.sh          (after launch/setup.sh and launch/setup.sh --torch cpu)
#
# 1. difftrain against plain PyTorch, one thread each (tests/bench/vs_pytorch.sh);
# 2. 1 rank against 2, weak and strong, with the data wait (tests/bench/scaling.sh);
# 3. the gradient all-reduce against one raw MPI_Allreduce of the same bytes, over bucket
#    sizes, blocking and overlapped with backward (build/tests/bench_grad_sync).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
echo "# $(date -u +%Y-%m-%d), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "## difftrain against PyTorch"
bash tests/bench/vs_pytorch.sh
echo "## scaling, 1 rank against 2"
bash tests/bench/scaling.sh
echo "## gradient sync against a raw MPI_Allreduce (2 ranks, one thread each)"
cmake --build build --target bench_grad_sync >/dev/null
mpi=(mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
# width 128: the toy MLP's size (83k floats); width 512: 1.3 M floats, about the U-Net smoke's
for width in 128 512; do
  for bucket_mb in 0.25 1 4 25; do
    "${mpi[@]}" -n 2 build/tests/bench_grad_sync "$width" 300 "$bucket_mb" | tail -n 1
  done
done
