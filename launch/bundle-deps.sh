#!/usr/bin/env bash
# Makes the dependency bundle that launch/gpu-check.sh builds and runs difftrain from, on a
# GPU machine with PyTorch, the CUDA toolkit, a C++ compiler and CMake but no package
# registry and none of the libraries below. Run it on a Debian 12 machine (amd64) that
# reaches Debian's archive; no root needed.
#
#   bash launch/bundle-deps.sh [OUT]     # default OUT: deps   (then OUT/usr/..., OUT/PACKAGES)
#
# The packages (every library and tool difftrain needs besides LibTorch, CUDA and NCCL:
# OpenMPI with mpirun, HDF5, zlib, yaml-cpp, fmt, CLI11, nlohmann-json, stb, xxhash,
# GoogleTest, the DejaVu font), and every library package they need at run time, are
# downloaded with `apt-get download` and unpacked with `dpkg -x` into one prefix, OUT/usr.
# What any Linux with a C++ compiler has (the C and C++ runtimes) is left out; so are the
# packages a run never loads (ssh for remote starts, X11, PAM, hwloc's optional plugins).
# The script ends by checking that every ELF file in the bundle finds each library it
# needs inside the bundle or among those runtimes, and names what is missing otherwise.
set -euo pipefail
out=${1:-deps}

# Build-time packages (headers, CMake files, compiler wrappers), taken as they are.
build_packages=(
  libopenmpi-dev openmpi-bin openmpi-common libhdf5-dev zlib1g-dev
  libyaml-cpp-dev libfmt-dev libcli11-dev nlohmann-json3-dev libstb-dev libxxhash-dev
  libgtest-dev libgmock-dev fonts-dejavu-core
)
# Run-time libraries, taken with every library package they depend on.
runtime_packages=(libopenmpi3 libhdf5-103-1 libyaml-cpp0.7 libfmt9 libstb0 libxxhash0 zlib1g openmpi-bin)
# Present on any Linux that compiles C++, or never loaded by difftrain's runs.
leave_out='^(libc6|libgcc-s1|libstdc\+\+6|gcc-12-base|libcrypt1|debconf|cdebconf|dpkg|tar|adduser|passwd|install-info|libpam.*|libselinux1|libsemanage.*|libsepol2|libaudit.*|libacl1|libcap-ng0|libdebian-installer4|libnewt0\.52|libslang2|libtextwrap1|readline-common|libreadline8|libtinfo6|libdb5\.3|libbsd0|libmd0|openssh-client|libedit2|libcbor0\.8|libfido2-1|libx11-.*|libxau6|libxcb1|libxdmcp6|libxext6|libxnvctrl0|libhwloc-plugins|ocl-icd-libopencl1|libicu72|libxml2|libpciaccess0)$'
# The sonames those packages provide, which the bundle's files may need from the machine.
system_sonames='^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libresolv\.so\.2|libutil\.so\.1|libanl\.so\.1|ld-linux-x86-64\.so\.2|libgcc_s\.so\.1|libstdc\+\+\.so\.6|libcrypt\.so\.1)$'

command -v apt-get >/dev/null && command -v dpkg >/dev/null && command -v apt-cache >/dev/null ||
  { echo "bundle-deps: needs apt-get, apt-cache and dpkg (a Debian 12 machine)" >&2; exit 1; }

mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${runtime_packages[@]}" 2>/dev/null | grep -v '^[ <]' | sort -u | grep -Ev "$leave_out")
mapfile -t packages < <(printf '%s\n' "${build_packages[@]}" "${closure[@]}" | sort -u)

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
# apt-get download writes into the current directory; _apt cannot write to a mktemp dir
# when run as root, which only costs a warning.
(cd "$debs" && apt-get download -q "${packages[@]}" 2>&1 | { grep -Ev '^(W: Download is performed unsandboxed|Get:|Fetched)' || true; })
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$out"; done
ls "$debs" >"$out/PACKAGES"
printf '%s\n' "${build_packages[@]}" >"$out/BUILD_PACKAGES"
# Debian's update-alternatives makes these names at install time; dpkg -x does not.
for tool in mpirun mpiexec mpicc mpicxx ompi_info; do
  [[ -e $out/usr/bin/$tool.openmpi ]] && ln -sf "$tool.openmpi" "$out/usr/bin/$tool"
done
# Some libraries live in a folder of their own, reached through an alternatives link
# (libpsm_infinipath.so.1): link each such soname into the library folder.
while IFS= read -r f; do
  soname=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  lib=$out/usr/lib/x86_64-linux-gnu
  [[ -n $soname && ! -e $lib/$soname && ! -e $(dirname "$f")/$soname ]] && ln -s "$(realpath --relative-to="$lib" "$f")" "$lib/$soname"
done < <(find "$out/usr/lib" -mindepth 2 -maxdepth 2 -type f -name 'lib*.so.*' -path "$out/usr/lib/lib*/*")
# What a C++ build that links shared libraries never reads goes (half the unpacked size):
# pages and docs, static libraries but GoogleTest's (Debian ships no shared ones), Fortran
# modules, SASL's plugins (for LDAP logins, through curl).
rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/lintian" "$out/usr/share/locale" \
  "$out/usr/lib/x86_64-linux-gnu/sasl2" "$out/usr/lib/x86_64-linux-gnu/fortran"
find "$out/usr" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete

# Every ELF file's needed libraries: inside the bundle, or the machine's C/C++ runtimes.
declare -A provided=()
while IFS= read -r f; do provided[$(basename "$f")]=1; done < <(find "$out" -name '*.so*' \( -type f -o -type l \))
missing=()
while IFS= read -r f; do
  head -c 4 "$f" | grep -q $'\x7fELF' || continue
  while IFS= read -r soname; do
    [[ -n ${provided[$soname]:-} ]] || [[ $soname =~ $system_sonames ]] || missing+=("${f#$out/}: $soname")
  done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done < <(find "$out/usr" -type f \( -perm -u+x -o -name '*.so*' \))
if ((${#missing[@]})); then
  printf 'bundle-deps: needed but not bundled: %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "bundle-deps: $(wc -l <"$out/PACKAGES") packages, $(du -sh "$out" | cut -f1) in $out"
