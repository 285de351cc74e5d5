#!/usr/bin/env python3
"""difftrain's Adam and AdamW steps equal torch.optim.Adam / torch.optim.AdamW.

Usage: test_adamw_torch.py /path/to/difftrain [/path/to/optimizer_probe]
(the probe defaults to tests/optimizer_probe beside the difftrain binary)

For each config below, the probe (tests/tools/optimizer_probe.cpp) builds difftrain's
optimizer from `train.*` keys and records several steps: parameters and gradients before,
the exported optimizer state before, parameters and state after. Here torch.optim gets
its hyper-parameters from the same keys as written below (never from what difftrain
reports) and the learning rate from the documented warm-up, and:
- run on its own from the first recorded parameters, it takes every step on the same
  gradients to the same parameters, exp_avg and exp_avg_sq;
- started at each step from difftrain's exported state (as a checkpoint's `optimizer`
  entry would be loaded), it reaches the same parameters after that step.
Exit 0: all equal to float tolerance; 1: a mismatch or a failed run; 77: no PyTorch.
"""
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError as e:  # Debian's python3-torch is missing: skip, do not fail
    print(f"skipped: {e}")
    sys.exit(77)

# Tight: both sides run the same float32 operations, rounded one by one; but PyTorch's
# vectorised kernels may fuse a multiply and an add (and its Adam moves exp_avg with
# lerp_), so a value near zero can differ by an ulp or two of its tensor's scale: ATOL is
# relative to the largest value of the tensor compared (parameters are about 1; moments
# follow the gradients, up to about 10 here). A wrong formula moves a parameter by about lr.
RTOL, ATOL = 1e-6, 2.5e-7

# name, config overrides for the probe, what torch.optim gets for them
CASES = [
    ("adamw", ["train.optimizer=adamw", "train.lr=0.01", "train.betas=[0.8, 0.95]", "train.adam_eps=1e-6",
               "train.weight_decay=0.1", "train.warmup_steps=4"],
     dict(cls=torch.optim.AdamW, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, warmup=4)),
    # The README's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01 for AdamW.
    ("adamw, defaults", ["train.optimizer=adamw", "train.lr=0.003"],
     dict(cls=torch.optim.AdamW, lr=0.003, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, warmup=0)),
    # Adam's weight decay is L2, added to the gradient (not decoupled).
    ("adam with weight decay", ["train.optimizer=adam", "train.lr=0.02", "train.betas=[0.85, 0.99]",
                                "train.weight_decay=0.05", "train.warmup_steps=3"],
     dict(cls=torch.optim.Adam, lr=0.02, betas=(0.85, 0.99), eps=1e-8, weight_decay=0.05, warmup=3)),
]

failures = []
largest_difference = [0.0]


def check(condition, message):
    if not condition:
        failures.append(message)
        print(f"FAIL: {message}", flush=True)


def expected_lr(torch_args, step):
    """Linear warm-up from lr/warmup at step 1 to lr at step warmup, then flat."""
    lr, warmup = torch_args["lr"], torch_args["warmup"]
    return lr if warmup <= 0 or step >= warmup else lr * max(step, 1) / warmup


def make_torch_optimizer(params, torch_args):
    return torch_args["cls"](params, lr=torch_args["lr"], betas=torch_args["betas"], eps=torch_args["eps"],
                             weight_decay=torch_args["weight_decay"])


def compare(label, got, want):
    check(got.shape == want.shape, f"{label}: shape {tuple(got.shape)}, difftrain has {tuple(want.shape)}")
    if got.shape == want.shape:
        worst = (got - want).abs().max().item()
        largest_difference[0] = max(largest_difference[0], worst)
        scale = max(1.0, want.abs().max().item())
        check(torch.allclose(got, want, rtol=RTOL, atol=ATOL * scale),
              f"{label}: differs by up to {worst:.3g} (scale {scale:.3g})")


def record(probe, overrides, out):
    result = subprocess.run([probe, out] + overrides, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if result.returncode != 0:
        raise SystemExit(f"FAIL: {probe} {' '.join(overrides)} exited {result.returncode}:\n{result.stdout}")
    return torch.load(out)["steps"]


def check_case(name, steps, torch_args):
    n_params = len(steps[0]["params_before"])
    check(len(steps) >= 4 and n_params >= 2, f"{name}: the probe recorded {len(steps)} steps of {n_params} parameters")

    # torch.optim on its own, from the same starting parameters, on the same gradients.
    params = [p.clone().requires_grad_() for p in steps[0]["params_before"]]
    optimizer = make_torch_optimizer(params, torch_args)
    for k, rec in enumerate(steps):
        step = k + 1
        lr = expected_lr(torch_args, step)
        check(abs(rec["lr"] - lr) <= 1e-12 * lr, f"{name}, step {step}: difftrain's learning rate {rec['lr']}, "
                                                 f"the warm-up gives {lr}")
        for group in optimizer.param_groups:
            group["lr"] = lr
        check(len(rec["grads"]) == n_params, f"{name}, step {step}: {len(rec['grads'])} gradients")
        for p, g in zip(params, rec["grads"]):
            p.grad = g.clone()
        optimizer.step()
        state_after = rec["state_after"]["state"]
        check(sorted(state_after) == list(range(n_params)), f"{name}, step {step}: state for {sorted(state_after)}")
        for i, p in enumerate(params):
            compare(f"{name}, step {step}, parameter {i}", p.detach(), rec["params_after"][i])
            if i not in state_after:
                continue
            ours, theirs = optimizer.state[p], state_after[i]
            check(int(ours["step"]) == int(theirs["step"]),
                  f"{name}, step {step}, parameter {i}: step count {int(theirs['step'])}, torch {int(ours['step'])}")
            compare(f"{name}, step {step}, exp_avg {i}", ours["exp_avg"], theirs["exp_avg"])
            compare(f"{name}, step {step}, exp_avg_sq {i}", ours["exp_avg_sq"], theirs["exp_avg_sq"])

    # Each step again from difftrain's exported state: the state a checkpoint carries
    # continues in PyTorch. The hyper-parameters stay ours; only `state` is taken.
    for k, rec in enumerate(steps):
        step = k + 1
        params = [p.clone().requires_grad_() for p in rec["params_before"]]
        optimizer = make_torch_optimizer(params, torch_args)
        groups = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": rec["state_before"]["state"], "param_groups": groups})
        for group in optimizer.param_groups:
            group["lr"] = expected_lr(torch_args, step)
        for p, g in zip(params, rec["grads"]):
            p.grad = g.clone()
        optimizer.step()
        for i, p in enumerate(params):
            compare(f"{name}, step {step} from the exported state, parameter {i}", p.detach(), rec["params_after"][i])

    # What difftrain exports as its hyper-parameters (the checkpoint's param_groups).
    group = steps[-1]["state_after"]["param_groups"][0]
    for key in ("betas", "eps", "weight_decay"):
        want = torch_args[key]
        got = tuple(group[key]) if key == "betas" else group[key]
        check(got == want if key == "betas" else abs(got - want) <= 1e-12 * want,
              f"{name}: exported {key} {got}, configured {want}")


def main():
    if len(sys.argv) < 2:
        raise SystemExit("usage: test_adamw_torch.py /path/to/difftrain [/path/to/optimizer_probe]")
    difftrain = os.path.abspath(sys.argv[1])
    probe = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else \
        os.path.join(os.path.dirname(difftrain), "tests", "optimizer_probe")
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, overrides, torch_args) in enumerate(CASES):
            steps = record(probe, overrides, os.path.join(tmp, f"case{index}.pt"))
            check_case(name, steps, torch_args)
            print(f"checked {name}: {len(steps)} steps", flush=True)
    print(f"{len(CASES)} optimizers checked, largest difference {largest_difference[0]:.3g}, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
