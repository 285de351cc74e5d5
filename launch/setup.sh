#!/usr/bin/env bash
# Installs what difftrain needs from Debian 12's packages (skipping what is present) and
# builds it against one of three LibTorch builds. Idempotent: a second run only rebuilds
# what changed.
#
#   bash launch/setup.sh                  # Debian's LibTorch (1.13, CPU)         -> build/
#   bash launch/setup.sh --torch cpu      # LibTorch 2.13.0 (CPU) from PyTorch's wheel -> build-cpu/
#   bash launch/setup.sh --torch cuda     # LibTorch 2.14.1, CUDA 13 and NCCL from PyTorch's
#                                         # wheels, nvcc from the CUDA toolkit      -> build-cuda/
#   bash launch/setup.sh --python PY      # the LibTorch inside the PyTorch that PY imports
#                                         # (your own venv, a cluster's module)    -> build-python/
# Options: --no-build (packages and venv only), --build-dir DIR, --target T (repeatable;
# default: everything, tests included), --print-python (print the venv's python and stop).
#
# The wheels go into a virtual environment of their own, never the system's Python:
# ${DIFFTRAIN_VENVS:-~/.cache/difftrain}/torch-VERSION, made once per machine and reused
# (a venv that was not completed is made again). The CMake arguments for a PyTorch come
# from launch/torch_cmake_args.py, the one place that knows a wheel's layout.
#
# Without root (a cluster login node), it installs nothing: it lists what is missing and
# points to the README's "Building without root" section.
set -euo pipefail
cd "$(dirname "$0")/.."

torch=debian build_dir="" build=true python="" print_python=false targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --torch) torch=$2; shift 2 ;;
  --python) torch=python python=$2; shift 2 ;;
  --build-dir) build_dir=$2; shift 2 ;;
  --target) targets+=("$2"); shift 2 ;;
  --no-build) build=false; shift ;;
  --print-python) print_python=true; shift ;;
  *) echo "setup: unknown option $1 (see the comment at the top of launch/setup.sh)" >&2; exit 2 ;;
  esac
done

# The PyTorch wheels each configuration takes. The CPU wheel carries a local version
# (+cpu): PyPI's plain torch is the CUDA build; elsewhere PyTorch's CPU index serves it
# (PIP_EXTRA_INDEX_URL).
declare -A wheel=([cpu]="torch==2.13.0+cpu" [cuda]="torch==2.14.1")
case $torch in
debian | python) ;;
cpu | cuda) ;;
*) echo "setup: --torch takes debian, cpu or cuda, not '$torch'" >&2; exit 2 ;;
esac

packages=(
  build-essential cmake pkg-config
  ccache                  # rebuilds (three LibTorch builds, fresh clones) reuse earlier compiles
  libtorch-dev            # LibTorch (CPU build)
  libopenblas0-pthread    # a fast BLAS under LibTorch (Debian's default is the reference BLAS)
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libyaml-cpp-dev libcli11-dev libfmt-dev libstb-dev
  nlohmann-json3-dev      # metrics.jsonl read and written as JSON
  libxxhash-dev           # checkpoint checksums
  fonts-dejavu-core       # the text of `difftrain plot`'s charts (set with stb_truetype from libstb-dev)
  libgtest-dev libgmock-dev
  dataset-fashion-mnist   # the image recipes' data (gzip IDX files)
  python3-torch python3-h5py python3-numpy   # the tests' PyTorch/h5py parity checks and the baseline
  python3-scipy           # the independent FID check (scipy.linalg.sqrtm)
  slurmctld slurmd slurm-client munge   # the cluster tests' real Slurm (tests/cluster)
  iproute2 util-linux     # the cluster tests' hosts: ip netns, nsenter, unshare
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      SUDO=sudo
    else
      echo "setup: missing packages: ${missing[*]}" >&2
      echo "setup: run as root (or with sudo), or build against your own libraries: see README, 'Building without root'" >&2
      exit 1
    fi
  else
    SUDO=
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A venv per wheel, reused once complete: its last step writes .complete with the list of
# what it holds, so a venv cut short (a full disk, a killed CI run) is made again rather
# than trusted, and one made before a package joined the list gets that package.
if [[ $torch == cpu || $torch == cuda ]]; then
  spec=${wheel[$torch]}
  extras=(numpy h5py pyyaml scipy)
  venv=${DIFFTRAIN_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/difftrain}/torch-${spec#torch==}
  if [[ ! -f $venv/.complete ]]; then
    base=${DIFFTRAIN_VENV_PYTHON:-python3}
    rm -rf "$venv"
    echo "setup: making $venv ($spec, ${extras[*]})" >&2
    "$base" -m venv "$venv" ||
      { echo "setup: $base cannot make a venv (Debian: apt-get install python3-venv)" >&2; exit 1; }
  fi
  if [[ "$(cat "$venv/.complete" 2>/dev/null)" != "$spec ${extras[*]}" ]]; then
    rm -f "$venv/.complete"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$spec" "${extras[@]}" 2>&1 |
      { grep -v "^WARNING: Location .* is ignored" >&2 || true; }
    "$venv/bin/python" -c "import torch, numpy, h5py, yaml, scipy" ||
      { echo "setup: $venv: the install of $spec did not give importable torch, numpy, h5py, yaml and scipy" >&2; exit 1; }
    echo "$spec ${extras[*]}" > "$venv/.complete"
  fi
  python=$venv/bin/python
fi
if $print_python; then
  [[ -n $python ]] || { echo "setup: --print-python needs --torch cpu|cuda or --python" >&2; exit 2; }
  echo "$python"
  exit 0
fi

$build || exit 0

declare -A default_dir=([debian]=build [cpu]=build-cpu [cuda]=build-cuda [python]=build-python)
build_dir=${build_dir:-${default_dir[$torch]}}
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [[ -n $python ]]; then
  torch_args=$("$python" launch/torch_cmake_args.py) || exit 1
  mapfile -t torch_args <<<"$torch_args"
  cmake_args+=("${torch_args[@]}")
fi
# ccache keeps what compiled before on this machine (another clone, another build folder:
# paths are taken relative to the checkout). Its hash covers the compiler, the flags and
# every header's contents, the precompiled header's too; pch_defines and time_macros let
# it cache compiles that use a precompiled header.
if command -v ccache >/dev/null; then
  cmake_args+=("-DCMAKE_CXX_COMPILER_LAUNCHER=/usr/bin/env;CCACHE_BASEDIR=$PWD;CCACHE_NOHASHDIR=true;CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;ccache")
fi
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" "${cmake_args[@]}" >"$build_dir/configure.log" 2>&1 ||
  { tail -30 "$build_dir/configure.log" >&2; echo "setup: configuring $build_dir failed (all of it in $build_dir/configure.log)" >&2; exit 1; }
grep "difftrain: " "$build_dir/configure.log" || true
target_args=()
[[ ${#targets[@]} -gt 0 ]] && target_args=(--target "${targets[@]}")
cmake --build "$build_dir" -j "$jobs" "${target_args[@]}"
