#!/usr/bin/env bash
# check_link_order.sh BINARY...: each binary takes its std:: symbols from its own C++
# runtime, never from the copies a LibTorch wheel may export: libstdc++ comes before every
# LibTorch library in its NEEDED list, or, linked statically, it leaves no std:: symbol
# for a shared library to define.
set -uo pipefail
failed=0
for binary in "$@"; do
  [[ -n $binary ]] || continue
  needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  torch=$(grep -nE '^lib(torch|c10)' <<<"$needed" | head -1 | cut -d: -f1)
  stdcxx=$(grep -n '^libstdc++\.so' <<<"$needed" | head -1 | cut -d: -f1)
  if [[ -z $torch ]]; then
    echo "FAIL $binary: links no LibTorch library (NEEDED: $(echo $needed))"; failed=1
  elif [[ -n $stdcxx && $stdcxx -lt $torch ]]; then
    echo "ok   $binary: libstdc++ at $stdcxx in NEEDED, LibTorch from $torch"
  elif [[ -n $stdcxx ]]; then
    echo "FAIL $binary: libstdc++ must come before $(sed -n "${torch}p" <<<"$needed") in NEEDED: $(echo $needed)"; failed=1
  else
    unresolved=$(nm -D --undefined-only -C "$binary" | grep -c ' std::')
    if [[ $unresolved -eq 0 ]]; then echo "ok   $binary: a static libstdc++ defines every std:: symbol it uses"
    else
      echo "FAIL $binary: no libstdc++ in NEEDED, and $unresolved std:: symbols left to LibTorch, e.g." \
        "$(nm -D --undefined-only -C "$binary" | grep -m1 ' std::' | sed 's/^ *U //')"; failed=1
    fi
  fi
done
exit $failed
