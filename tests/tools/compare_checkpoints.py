"""compare_checkpoints.py OLD NEW: every checkpoints/latest.pt under OLD against the one at
the same relative path under NEW, tensor by tensor, bit for bit (model, EMA, optimizer state
and every other tensor), and every other field (step, data position, ...) but the config, which names each run's
folders, and the checksum over it. Exit 1 on any
difference; prints one line per file. `--ignore KEY` (repeatable) leaves out another top-level
field: `--ignore retained` for a run that was preempted, which keeps the step file it wrote
then. Needs a PyTorch that reads difftrain's checkpoints
(torch.load; 2.x)."""
import glob
import os
import sys

import torch


def flatten(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def main(old_root, new_root, ignored=()):
    olds = sorted(glob.glob(os.path.join(old_root, "**", "checkpoints", "latest.pt"), recursive=True))
    if not olds:
        sys.exit(f"compare_checkpoints: no checkpoints/latest.pt under {old_root}")
    failed = 0
    for old in olds:
        rel = os.path.relpath(old, old_root)
        new = os.path.join(new_root, rel)
        a = dict(flatten(torch.load(old, weights_only=False)))
        b = dict(flatten(torch.load(new, weights_only=False)))
        problems = [f"{k} only in {'old' if k in a else 'new'}" for k in sorted(set(a) ^ set(b))
                    if k.split("[")[0].split("/")[1] not in ignored]
        tensors = 0
        for k in sorted(set(a) & set(b)):
            x, y = a[k], b[k]
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                tensors += 1
                same = x.dtype == y.dtype and x.shape == y.shape and torch.equal(
                    x.contiguous().view(torch.uint8) if x.numel() else x, y.contiguous().view(torch.uint8) if y.numel() else y)
                if not same:
                    problems.append(f"{k} differs")
            elif k == "/config" or k.startswith("/checksum") or k.split("[")[0].split("/")[1] in ignored:
                continue  # the config names each run's own folders, and the checksum covers it
            elif x != y:
                problems.append(f"{k}: {str(x)[:40]!r} != {str(y)[:40]!r}")
        if tensors == 0:
            problems.append("no tensors compared")
        print(f"{'ok  ' if not problems else 'DIFF'} {rel}: {tensors} tensors" + (": " + "; ".join(problems[:5]) if problems else ", bit for bit"))
        failed += bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    args, ignored = sys.argv[1:], []
    while "--ignore" in args:
        i = args.index("--ignore")
        ignored.append(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit("usage: compare_checkpoints.py OLD NEW [--ignore KEY ...]")
    main(*args, ignored)
