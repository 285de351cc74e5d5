#!/usr/bin/env bash
# Runs a command with the files of some installed Debian packages hidden from it: a private
# mount namespace in which /usr is a hard-linked copy without those packages' files. Tests
# use it to build from launch/bundle-deps.sh's bundle alone, as on a machine that lacks
# those packages, on a machine that has them. Needs root (unshare, mount; without it the
# command runs with everything in view, and says so) and /usr on the filesystem of TMPDIR
# (hard links).
#
#   bash tests/tools/hide_packages.sh PACKAGES_FILE -- COMMAND [ARGS...]
set -euo pipefail
list=$1
[[ ${2:-} == -- ]] || { echo "hide_packages: usage: hide_packages.sh PACKAGES_FILE -- COMMAND..." >&2; exit 2; }
shift 2
if [[ $(id -u) -ne 0 ]]; then
  echo "hide_packages: not root (a mount namespace needs it): running with the system's packages in view" >&2
  exec "$@"
fi
view=$(mktemp -d)
trap 'rm -rf "$view"' EXIT
[[ $(stat -c %d "$view") == $(stat -c %d /usr) ]] ||
  { echo "hide_packages: $view and /usr are on different filesystems (set TMPDIR)" >&2; exit 1; }
cp -al /usr "$view/usr"
hidden=0
while read -r package; do
  [[ -n $package ]] || continue
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || continue
  while read -r f; do
    if [[ $f == /usr/* && ( -f $view$f || -L $view$f ) ]]; then rm -f "$view$f"; hidden=$((hidden + 1)); fi
  done < <(dpkg -L "$package")
done <"$list"
echo "hide_packages: $hidden files of the packages in $list hidden"
unshare --mount --propagation private bash -c 'mount --bind "$1/usr" /usr && shift && exec "$@"' hide "$view" "$@"
