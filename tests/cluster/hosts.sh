#!/usr/bin/env bash
# Test hosts on this machine: each its own network namespace and hostname (UTS namespace),
# all joined by a bridge inside one more namespace, so that nothing listens outside them and
# their traffic stays on their own addresses (10.77.0.11, .12, ...) or their loopback.
# Nothing else is separated: they share the file system, so they see the same run
# directories and data, as cluster nodes on a shared file system do.
#
#   hosts.sh up DIR N        make N hosts (node1 .. nodeN), their state in DIR
#   hosts.sh exec DIR I CMD  run CMD on host I (1..N), in its network and hostname
#   hosts.sh addr I          host I's address
#   hosts.sh down DIR        end every process on the hosts and remove them
#
# `exec` is also what mpirun's launch agent uses in place of ssh (hosts.sh agent DIR). Needs
# root (or CAP_SYS_ADMIN and CAP_NET_ADMIN); `up` says so and exits 77 otherwise, for a test
# to report as skipped.
set -euo pipefail

usage() { echo "usage: hosts.sh up DIR N | exec DIR I CMD... | agent DIR HOST CMD... | addr I | down DIR" >&2; exit 2; }
addr() { echo "10.77.0.$((10 + $1))"; }
# Namespace names are global: derive them from DIR, so two clusters (two test runs) differ.
prefix() { echo "dt$(realpath -m "$1" | md5sum | cut -c1-6)"; }

up() {
  local dir=$1 n=$2 p
  [[ $n =~ ^[1-9][0-9]?$ ]] || { echo "hosts.sh: N must be 1..99, got '$n'" >&2; exit 2; }
  if ! ip netns add "dt-probe-$$" 2>/dev/null; then
    echo "hosts.sh: cannot create a network namespace here (needs root or CAP_SYS_ADMIN): $(ip netns add "dt-probe-$$" 2>&1)" >&2
    exit 77
  fi
  ip netns del "dt-probe-$$"
  mkdir -p "$dir"
  dir=$(realpath "$dir")
  p=$(prefix "$dir")
  [[ -e $dir/hosts ]] && { echo "hosts.sh: $dir already holds hosts; run 'hosts.sh down $dir' first" >&2; exit 1; }
  echo "$n" >"$dir/hosts"
  ip netns add "$p-sw"
  ip -n "$p-sw" link add br0 type bridge
  ip -n "$p-sw" link set br0 up
  for ((i = 1; i <= n; i++)); do
    ip netns add "$p-$i"
    ip -n "$p-$i" link set lo up
    ip link add "$p-$i" netns "$p-sw" type veth peer name eth0 netns "$p-$i"
    ip -n "$p-sw" link set "$p-$i" master br0 up
    ip -n "$p-$i" addr add "$(addr "$i")/24" dev eth0
    ip -n "$p-$i" link set eth0 up
    touch "$dir/node$i.uts"
    unshare --uts="$dir/node$i.uts" hostname "node$i"
  done
}

enter() {  # DIR I CMD...
  local dir p i=$2
  dir=$(realpath "$1")
  p=$(prefix "$dir")
  [[ -e $dir/node$i.uts ]] || { echo "hosts.sh: no host $i in $dir" >&2; exit 2; }
  shift 2
  exec nsenter --net="/run/netns/$p-$i" --uts="$dir/node$i.uts" -- "$@"
}

down() {
  local dir p n
  dir=$(realpath -m "$1")
  p=$(prefix "$dir")
  n=$(cat "$dir/hosts" 2>/dev/null || echo 0)
  for ((i = 1; i <= n; i++)); do
    if ip netns list | grep -qw "$p-$i"; then
      # shellcheck disable=SC2046
      kill -9 $(ip netns pids "$p-$i") 2>/dev/null || true
      ip netns del "$p-$i" 2>/dev/null || true
    fi
    umount "$dir/node$i.uts" 2>/dev/null || true
    rm -f "$dir/node$i.uts"
  done
  ip netns del "$p-sw" 2>/dev/null || true
  rm -f "$dir/hosts"
}

case "${1:-}" in
  up) [[ $# -eq 3 ]] || usage; up "$2" "$3" ;;
  exec) [[ $# -ge 4 ]] || usage; enter "$2" "$3" "${@:4}" ;;
  agent)  # mpirun's launch agent: hosts.sh agent DIR nodeI CMD (the remote command as one string)
    [[ $# -ge 4 ]] || usage
    [[ $3 =~ ^node([0-9]+)$ ]] || { echo "hosts.sh agent: no test host named '$3'" >&2; exit 2; }
    enter "$2" "${BASH_REMATCH[1]}" sh -c "${*:4}" ;;
  addr) [[ $# -eq 2 ]] || usage; addr "$2" ;;
  down) [[ $# -eq 2 ]] || usage; down "$2" ;;
  *) usage ;;
esac
