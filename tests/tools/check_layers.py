#!/usr/bin/env python3
"""Checks the layering the README's "Architecture" section draws: a file under src/ or
include/difftrain/ includes difftrain headers only from its own folder or from a lower
layer. Prints each violation (file, line, the header and both layers) and exits 1 if any.

    python3 tests/tools/check_layers.py [REPO_ROOT]
"""
import pathlib
import re
import sys

# Lowest first. Folders on one line are peers: neither includes the other.
LAYERS = [
    ["base"],  # the src/ root: error, names, flat_buffer, build_info
    ["models"],
    ["core"],
    ["io"],
    ["data", "comm", "plot"],
    ["config"],  # the src/ root's config.h / config.cpp
    ["sample"],
    ["eval", "train"],
    ["cli"],
]
RANK = {folder: i for i, peers in enumerate(LAYERS) for folder in peers}
INCLUDE = re.compile(r'^\s*#\s*include\s+"difftrain/([^"]+)"')


def folder_of(relative: str) -> str:
    """The layer folder of a path relative to src/ or include/difftrain/."""
    parts = relative.split("/")
    if len(parts) == 1:
        if parts[0].startswith("config."):
            return "config"
        return "cli" if parts[0] == "main.cpp" else "base"
    return parts[0]


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    files = []
    for base in (root / "src", root / "include" / "difftrain"):
        files += [(base, p) for p in sorted(base.rglob("*")) if p.suffix in (".h", ".cpp")]
    seen = {folder_of(str(p.relative_to(b))) for b, p in files}
    missing = sorted(set(RANK) - seen)
    unknown = sorted(seen - set(RANK))
    if len(files) < 50 or missing or unknown:
        print(f"check_layers: found {len(files)} files under {root}; folders with no files: {missing}; "
              f"folders in no layer: {unknown}")
        return 1
    violations = edges = 0
    for base, path in files:
        here = folder_of(str(path.relative_to(base)))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            edges += 1
            there = folder_of(match.group(1))
            if there == here or RANK[there] < RANK[here]:
                continue
            violations += 1
            print(f"{path.relative_to(root)}:{number}: includes difftrain/{match.group(1)} "
                  f"({there}, layer {RANK[there]}) from {here} (layer {RANK[here]})")
    print(f"check_layers: {len(files)} files, {edges} includes, {violations} against the layering")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
