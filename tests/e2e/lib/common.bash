# Shared by the end-to-end scripts: a scratch directory, named checks that are counted,
# and mpirun with the flags a root container with few cores needs.
difftrain=$(realpath "$1")
mpirun_bin=${2:-mpirun}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
py=/usr/bin/python3
$py -c "import torch, h5py" 2>/dev/null || { echo "skip: needs python3-torch and python3-h5py"; exit 77; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
passes=0 failures=0
check() {  # check NAME COMMAND...: runs COMMAND, counts and prints the outcome
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
finish() {
  echo "$passes passed, $failures failed"
  [[ $failures -eq 0 ]]
}
mpi() { "$mpirun_bin" --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 "$@"; }
# one_error_line FILE TEXT: exactly one "difftrain: error:" line in FILE, holding TEXT, and
# no MPI_Abort banner (an abort means a rank could not share its failure)
one_error_line() {
  [[ $(grep -c 'difftrain: error:' "$1") -eq 1 ]] && grep 'difftrain: error:' "$1" | grep -q -- "$2" &&
    ! grep -q 'MPI_ABORT' "$1"
}
checkpoint_step() { $py -c "import torch,sys; print(torch.load(sys.argv[1])['step'])" "$1"; }
loads() { "$difftrain" sample --checkpoint "$1" --out "$work/probe.h5" --n 4 --steps 2 >/dev/null 2>&1; }
wait_for() {  # wait_for SECONDS COMMAND...: polls until COMMAND succeeds
  local limit=$1; shift
  for ((i = 0; i < limit * 10; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}
# rank_pids TEXT: the rank processes (named difftrain, not mpirun) whose command line holds TEXT
rank_pids() {
  local pid
  for pid in $(pgrep -f -- "$1"); do [[ $(cat /proc/$pid/comm 2>/dev/null) == difftrain ]] && echo "$pid"; done
}
# bad NAME TEXT ARGS...: `difftrain ARGS` on 1 and on 2 ranks exits non-zero (every rank),
# prints exactly one error line holding TEXT, and leaves no ./badrun behind.
bad() {
  local name=$1 text=$2 ranks rc; shift 2
  for ranks in 1 2; do
    rm -rf badrun
    if [[ $ranks -eq 1 ]]; then "$difftrain" "$@" >out.txt 2>err.txt; rc=$?
    else mpi -n 2 "$difftrain" "$@" >out.txt 2>err.txt; rc=$?; fi
    check "$name ($ranks rank): non-zero exit" test "$rc" -ne 0
    check "$name ($ranks rank): one error line naming it" one_error_line err.txt "$text"
    [[ $rc -ne 0 ]] && ! one_error_line err.txt "$text" && sed 's/^/    | /' err.txt | head -5
    check "$name ($ranks rank): no run directory left" test ! -e badrun
  done
}
