#!/usr/bin/env bash
# Makes the dependency folder that launch/gpu-check.sh builds from on a GPU machine with no
# package registry. Run it on a Debian 12 machine (amd64) that reaches Debian's archive;
# copy the folder next to the checkout on the GPU machine (or keep it inside it, as deps/).
#
#   bash launch/bundle-deps.sh [OUT]        # default OUT: deps
#
# Each group below is downloaded with `apt-get download` (no root needed) and unpacked with
# `dpkg -x` into OUT/GROUP/, so gpu-check.sh can take from the bundle exactly the groups the
# GPU machine lacks. LibTorch, CUDA and NCCL come from the GPU machine's PyTorch and CUDA
# toolkit; OpenMPI and HDF5 must be installed there (their wrappers and plugins do not run
# from an unpacked folder), and gpu-check.sh says so when they are not.
set -euo pipefail
out=${1:-deps}
declare -A groups=(
  [stb]="libstb-dev libstb0"
  [xxhash]="libxxhash-dev libxxhash0"
  [yaml-cpp]="libyaml-cpp-dev libyaml-cpp0.7"
  [fmt]="libfmt-dev libfmt9"
  [cli11]="libcli11-dev"
  [nlohmann-json]="nlohmann-json3-dev"
  [googletest]="libgtest-dev libgmock-dev googletest"
  [fonts]="fonts-dejavu-core"
)
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  { echo "bundle-deps: needs apt-get and dpkg (a Debian 12 machine)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
for group in "${!groups[@]}"; do
  rm -rf "${out:?}/$group"
  mkdir -p "$debs/$group" "$out/$group"
  # apt-get download writes into the current directory; _apt cannot write to a mktemp dir
  # when run as root, which only costs a warning.
  (cd "$debs/$group" && apt-get download -q ${groups[$group]} 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  for deb in "$debs/$group"/*.deb; do dpkg -x "$deb" "$out/$group"; done
  ls "$debs/$group" >"$out/$group/PACKAGES"
done
echo "bundle-deps: $(du -sh "$out" | cut -f1) in $out: ${!groups[*]}"
