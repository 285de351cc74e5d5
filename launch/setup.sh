#!/usr/bin/env bash
# Installs what difftrain needs from Debian 12's packages (skipping what is present) and
# builds it into build/. Idempotent: a second run only rebuilds what changed.
#
#   bash launch/setup.sh            # packages + build
#   bash launch/setup.sh --no-build # packages only
#
# Without root (a cluster login node), it installs nothing: it lists what is missing and
# points to the README's "Building without root" section (your own LibTorch, MPI, HDF5
# through CMAKE_PREFIX_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
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
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ "${1:-}" == "--no-build" ]] && exit 0

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
