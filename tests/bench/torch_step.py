#!/usr/bin/env python3
"""difftrain's training step in plain PyTorch, timed: the other half of tests/bench/vs_pytorch.sh.

    /usr/bin/python3 tests/bench/torch_step.py CONFIG.yaml [key.sub=value ...] [--steps N] [--warmup W] [--threads T]
                                               [--device cpu|cuda] [--compile]

Reads a difftrain config (overrides as on difftrain's command line), builds the same model
from the PyTorch modules the parity tests hold (tests/reference/swissroll_torch.py,
tests/python/test_image_models_torch.py) and runs the step difftrain runs: a batch from the
HDF5 data held in memory, sigma uniform over the schedule, loss = MSE(model(x0 + sigma eps),
target), backward, Adam(W), EMA. W untimed steps, then N timed ones. The last line printed
is one JSON object (impl, torch, threads, model_params, global_batch, steps, samples_per_s,
step_ms, split_ms {data, compute, optim, ema}, peak_rss_mb; on a GPU also peak_gpu_mb). On a
GPU the data stays in host memory, as difftrain's loader keeps it, and each batch is copied
over; the clock waits for the device. A config this cannot mirror is one error line on
stderr and exit 1.
"""
import argparse
import copy
import glob
import importlib.util
import json
import math
import os
import resource
import sys
import time

import h5py
import numpy as np
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Unmirrored(Exception):
    """A config (or data) this script cannot run the way difftrain would."""


def load_module(relpath, name):
    # test_image_models_torch.py reads sys.argv[2] at import time (its model_probe path):
    # import it with an argv that holds nothing it could misread.
    saved, sys.argv = sys.argv, [os.path.join(ROOT, relpath)]
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # torch.compile looks the module's classes up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.argv = saved


# ---------------------------------------------------------------- config

def load_config(path, overrides):
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise Unmirrored(f"{path}: expected a mapping of keys at the top level")
    for o in overrides:
        key, eq, value = o.partition("=")
        if not eq or not key:
            raise Unmirrored(f"override '{o}': expected key.sub=value")
        node, parts = config, key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):  # absent, or `p:` with nothing under it
                node[p] = {}
            node = node[p]
        node[parts[-1]] = yaml.safe_load(value)
    return config


def section(config, name):
    return config.get(name) or {}  # `model:` with nothing under it keeps the defaults


def num(value, default, kind=float):
    # PyYAML (YAML 1.1) reads "1e-3" as a string where yaml-cpp reads a number: convert here.
    return kind(default if value is None else value)


# ---------------------------------------------------------------- schedule (src/schedule.cpp)

def sigmas_from_betas(betas):
    return (1 / torch.cumprod(1.0 - betas, 0) - 1).sqrt()


def make_sigmas(s):
    t = s.get("type", "loglinear")
    if t == "loglinear":
        n, lo, hi = num(s.get("N"), 200, int), num(s.get("sigma_min"), 0.005), num(s.get("sigma_max"), 10.0)
        return torch.logspace(math.log10(lo), math.log10(hi), n, 10.0, dtype=torch.float32)
    if t not in ("ddpm", "ldm", "sigmoid", "cosine"):
        raise Unmirrored(f"schedule.type '{t}' is not one of loglinear, ddpm, ldm, sigmoid, cosine")
    n = num(s.get("N"), 1000, int)
    b0 = num(s.get("beta_start"), 0.00085 if t == "ldm" else 0.0001)
    b1 = num(s.get("beta_end"), 0.012 if t == "ldm" else 0.02)
    if t == "ddpm":
        return sigmas_from_betas(torch.linspace(b0, b1, n, dtype=torch.float32))
    if t == "ldm":
        return sigmas_from_betas(torch.linspace(math.sqrt(b0), math.sqrt(b1), n, dtype=torch.float32) ** 2)
    if t == "sigmoid":
        return sigmas_from_betas(torch.sigmoid(torch.linspace(-6, 6, n, dtype=torch.float32)) * (b1 - b0) + b0)
    # cosine: alpha-bar in double, betas rounded to float32 before the product (as difftrain).
    max_beta = num(s.get("max_beta"), 0.999)
    abar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)]
    return sigmas_from_betas(torch.tensor(betas, dtype=torch.float32))


# ---------------------------------------------------------------- data (src/data/sharded_dataset.cpp)

def shard_files(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".h5", ".hdf5")))
    elif any(c in path for c in "*?["):
        files = sorted(glob.glob(path))
    else:
        files = [path] if os.path.exists(path) else []
    if not files:
        raise Unmirrored(f"data.path '{path}': no HDF5 files")
    return files


def read_dataset(files, name):
    parts = []
    for f in files:
        with h5py.File(f, "r") as h:
            if name not in h:
                raise Unmirrored(f"{f}: has no dataset '{name}'")
            parts.append(h[name][()])
    return torch.from_numpy(np.concatenate(parts))


class Batches:
    """Batches drawn by a shuffled permutation, a new one per epoch. The data stays in its
    stored dtype (uint8 images: a quarter of float32's memory, as difftrain reads them) and
    each batch is converted after the gather."""

    def __init__(self, x, y, batch, hflip):
        self.x, self.y, self.batch, self.hflip = x, y, batch, hflip
        self.n, self.pos, self.perm = x.shape[0], x.shape[0], None

    def indices(self):
        parts, need = [], self.batch
        while need:
            if self.pos == self.n:
                self.perm, self.pos = torch.randperm(self.n), 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos, need = self.pos + take, need - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def next(self):
        idx = self.indices()
        x = self.x.index_select(0, idx)
        x = x.float().div_(127.5).sub_(1) if x.dtype == torch.uint8 else x.float()
        if self.hflip:
            flip = torch.rand(x.shape[0]) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x, (self.y.index_select(0, idx) if self.y is not None else None)


# ---------------------------------------------------------------- model (src/models/*.cpp defaults)

def make_model(m, shape):
    t = m.get("type", "mlp")
    classes = num(m.get("num_classes"), 0, int)
    if t == "mlp":
        if classes:
            raise Unmirrored("model.num_classes: model type 'mlp' is unconditional")
        if len(shape) != 1:
            raise Unmirrored(f"model 'mlp' takes examples [dim], the data has {list(shape)}")
        mlp = load_module("tests/reference/swissroll_torch.py", "swissroll_torch")
        dims = tuple(int(d) for d in (m.get("hidden_dims") or (16, 128, 128, 128, 128, 16)))
        return mlp.TimeInputMLP(shape[0], dims), classes
    if t not in ("dit", "unet"):
        raise Unmirrored(f"model.type '{t}' is not one of mlp, dit, unet")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise Unmirrored(f"model '{t}' takes square images [C, H, W], the data has {list(shape)}")
    img = load_module("tests/python/test_image_models_torch.py", "test_image_models_torch")
    channels, side = shape[0], shape[1]
    if t == "dit":
        # The reference DiT has no scaled_input: a subclass scales x as difftrain's does
        # (x / sqrt(1 + sigma^2) into the patch embedding), keeping the parameter names.
        scaled = bool(m.get("scaled_input", False))

        class DiT(img.DiT):
            def forward(self, x, sigma, labels=None):
                if scaled:
                    x = x / torch.sqrt(1 + sigma.reshape(-1, 1, 1, 1) ** 2)
                return super().forward(x, sigma, labels)

        return DiT(side, channels, num(m.get("patch"), 2, int), num(m.get("depth"), 6, int),
                   num(m.get("head_dim"), 32, int), num(m.get("num_heads"), 6, int),
                   num(m.get("mlp_ratio"), 4.0), classes), classes
    model = img.UNet(side, channels, num(m.get("ch"), 64, int), tuple(m.get("ch_mult") or (1, 1, 2)),
                     tuple(m.get("attn_res") or (14,)), num(m.get("num_res_blocks"), 2, int), classes,
                     bool(m.get("scaled_input", True)))
    # The reference U-Net hard-codes Dropout(0.1); difftrain keeps a Dropout module of
    # model.dropout (0.0 included), so set p on each.
    for d in model.modules():
        if isinstance(d, torch.nn.Dropout):
            d.p = num(m.get("dropout"), 0.1)
    return model, classes


# ---------------------------------------------------------------- the step (src/train/train_step.cpp)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="key.sub=value")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (this process's GPU)")
    ap.add_argument("--compile", action="store_true",
                    help="the model's forward and backward through torch.compile (PyTorch 2.x), compiled in the warm-up")
    args = ap.parse_intermixed_args()  # overrides and options in any order
    torch.set_num_interop_threads(1)  # before any parallel work, or it raises
    torch.set_num_threads(args.threads)

    c = load_config(args.config, args.overrides)
    data, m, s, t = (section(c, k) for k in ("data", "model", "schedule", "train"))
    torch.manual_seed(num(c.get("seed"), 0, int))
    if t.get("precision", "fp32") != "fp32":
        raise Unmirrored(f"train.precision '{t['precision']}': only fp32 is mirrored")
    param = m.get("parameterization", "eps")
    if param not in ("eps", "x0", "v"):
        raise Unmirrored(f"model.parameterization '{param}' is not one of eps, x0, v")
    opt_name = t.get("optimizer", "adamw")
    if opt_name not in ("adam", "adamw"):
        raise Unmirrored(f"train.optimizer '{opt_name}' is not one of adam, adamw")
    batch, accum = num(t.get("batch_size"), 100, int), num(t.get("grad_accum"), 1, int)
    if accum < 1 or batch % accum:
        raise Unmirrored(f"train.batch_size {batch} does not divide into train.grad_accum {accum} micro-batches")

    sigmas = make_sigmas(s)
    files = shard_files(str(data.get("path", "data/swissroll")))
    x_all = read_dataset(files, str(data.get("dataset", "x")))
    model, classes = make_model(m, tuple(x_all.shape[1:]))
    y_all = read_dataset(files, "y").long() if classes else None
    hflip = bool(data.get("hflip", False))
    if hflip and x_all.dim() != 4:
        raise Unmirrored("data.hflip flips images [C, H, W]; the examples are not images")
    batches = Batches(x_all, y_all, batch // accum, hflip)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Unmirrored("--device cuda: this PyTorch sees no GPU")
    sigmas = sigmas.to(device)
    model.to(device)
    if args.compile and not hasattr(torch, "compile"):
        raise Unmirrored(f"--compile: PyTorch {torch.__version__} has no torch.compile")
    # The EMA copies the eager module; the compiled one shares its parameters.
    forward = torch.compile(model) if args.compile else model

    def clock():  # host time once the device has caught up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    model.train()
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    params, ema_params = list(model.parameters()), list(ema.parameters())
    buffers, ema_buffers = list(model.buffers()), list(ema.buffers())
    lr, warmup_steps = num(t.get("lr"), 1e-3), num(t.get("warmup_steps"), 0, int)
    betas = tuple(float(b) for b in (t.get("betas") or (0.9, 0.999)))
    wd = num(t.get("weight_decay"), 0.01 if opt_name == "adamw" else 0.0)
    opt_class = torch.optim.AdamW if opt_name == "adamw" else torch.optim.Adam
    opt = opt_class(params, lr=lr, betas=betas, eps=num(t.get("adam_eps"), 1e-8), weight_decay=wd)
    clip, decay = num(t.get("grad_clip"), 0.0), num(t.get("ema_decay"), 0.999)
    cond_drop = num(t.get("cond_drop"), 0.1)
    sigma_shape = (-1,) + (1,) * (x_all.dim() - 1)
    split = {"data": 0.0, "compute": 0.0, "optim": 0.0, "ema": 0.0}

    def step(index):
        for _ in range(accum):
            t0 = clock()
            x0, y = batches.next()
            x0 = x0.to(device)
            y = y.to(device) if y is not None else None
            t1 = clock()
            # Sigma, eps and the label drop are drawn inside difftrain's compute time too.
            sigma = sigmas[torch.randint(len(sigmas), (x0.shape[0],), device=device)].view(sigma_shape)
            eps = torch.randn_like(x0)
            xt = x0 + sigma * eps
            if classes:
                y = torch.where(torch.rand(y.shape[0], device=device) < cond_drop, torch.full_like(y, classes), y)
                out = forward(xt, sigma, y)
            else:
                out = forward(xt, sigma)
            if param == "eps":
                target = eps
            elif param == "x0":
                target = x0
            else:
                a = 1 / (1 + sigma * sigma)
                target = a.sqrt() * eps - (1 - a).sqrt() * x0
            loss = torch.nn.functional.mse_loss(out, target) / accum
            loss.backward()
            t2 = clock()
            split["data"] += t1 - t0
            split["compute"] += t2 - t1
        t2 = clock()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)  # scale clip / (norm + 1e-6), as difftrain
        for g in opt.param_groups:  # difftrain's linear warm-up: lr * max(step, 1) / warmup_steps
            g["lr"] = lr * max(index, 1) / warmup_steps if index < warmup_steps else lr
        opt.step()
        opt.zero_grad()
        t3 = clock()
        with torch.no_grad():
            updates = index - 1  # EMA updates before this one
            d = min(decay, (1 + updates) / (10 + updates))
            for e, p in zip(ema_params, params):
                e.lerp_(p, 1 - d)
            for e, b in zip(ema_buffers, buffers):  # difftrain copies the buffers too
                e.copy_(b)
        t4 = clock()
        split["optim"] += t3 - t2
        split["ema"] += t4 - t3

    for i in range(1, args.warmup + 1):
        step(i)
    for k in split:
        split[k] = 0.0
    start = clock()
    for i in range(args.warmup + 1, args.warmup + args.steps + 1):
        step(i)
    total = clock() - start

    n = max(args.steps, 1)
    result = {
        "impl": "pytorch" + (" compiled" if args.compile else ""), "torch": torch.__version__, "threads": args.threads, "device": str(device),
        "model_params": sum(p.numel() for p in params), "global_batch": batch, "steps": args.steps,
        "samples_per_s": round(batch * args.steps / total, 3) if total > 0 else None,
        "step_ms": round(1000 * total / n, 4),
        "split_ms": {k: round(1000 * v / n, 4) for k, v in split.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    # Unreadable files and values of the wrong kind (ValueError, TypeError) also end in one line.
    except (Unmirrored, OSError, ValueError, TypeError, yaml.YAMLError) as e:
        print(f"torch_step.py: error: {e}", file=sys.stderr)
        sys.exit(1)
