#!/usr/bin/env bash
# N ranks of `difftrain train` (or of `eval`) on this node: one per GPU, or one per CPU slot.
#
#   bash launch/mpirun.sh 4 configs/swissroll.yaml [key.sub=value ...]
#   bash launch/mpirun.sh 2 eval --checkpoint runs/x/checkpoints/latest.pt
#
# Each rank runs one BLAS/OpenMP thread (set OMP_NUM_THREADS to change it). Extra mpirun
# flags go in MPIRUN_FLAGS. Running as root (containers) and more ranks than cores are
# allowed, since that is what a single test node usually is.
set -euo pipefail
ranks=${1:?usage: launch/mpirun.sh RANKS [train|eval] ARGS...}
shift
command=train
if [[ "${1:-}" == train || "${1:-}" == eval ]]; then command=$1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
difftrain=${DIFFTRAIN:-$here/build/difftrain}
threads=${OMP_NUM_THREADS:-1}
flags=(--oversubscribe --bind-to none -x OMP_NUM_THREADS="$threads" -x OPENBLAS_NUM_THREADS="$threads")
[[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
# shellcheck disable=SC2086
exec mpirun -n "$ranks" "${flags[@]}" ${MPIRUN_FLAGS:-} "$difftrain" "$command" "$@"
