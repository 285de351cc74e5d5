# Shared by the end-to-end scripts: a scratch directory, named checks that are counted,
# and mpirun with the flags a root container with few cores needs.
#
#   check NAME COMMAND...   runs COMMAND; prints "ok   NAME" or "FAIL NAME" and counts it
#   needs_python NAME       true when $py imports torch and h5py; otherwise prints
#                           "skip NAME (...)", counts one skipped check and returns 1. Put
#                           every check that needs them (directly, or through a file or
#                           checkpoint read or written by Python) behind it:
#                             needs_python "x" && check "x" $py -c "..."
#                             if needs_python "y"; then ...several commands and checks...; fi
#   finish                  prints "N passed, N failed, N skipped" as the script's last
#                           line; exit 1 if any check failed, 77 (skipped) if every check
#                           was skipped, else 0
#
# $py is /usr/bin/python3 unless DIFFTRAIN_PYTHON names another interpreter (one without
# torch shows what runs without it); $have_python is true or false accordingly, for set-up
# steps that are not checks (`$have_python && $py make_files.py`).
difftrain=$(realpath "$1")
mpirun_bin=${2:-mpirun}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
py=${DIFFTRAIN_PYTHON:-/usr/bin/python3}
if $py -c "import torch, h5py" 2>/dev/null; then have_python=true; else have_python=false; fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
passes=0 failures=0 skips=0
check() {
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
needs_python() {
  $have_python && return 0
  echo "skip $1 (needs torch and h5py in $py)"
  skips=$((skips + 1))
  return 1
}
finish() {
  echo "$passes passed, $failures failed, $skips skipped"
  if [[ $failures -gt 0 ]]; then exit 1; fi
  if [[ $passes -eq 0 && $skips -gt 0 ]]; then exit 77; fi
  exit 0
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
  local limit=$1 i; shift
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
