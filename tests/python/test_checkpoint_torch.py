"""difftrain's files as PyTorch and h5py see them.

Run as: python3 test_checkpoint_torch.py /path/to/difftrain   (exit 77: torch or h5py missing)

- A checkpoint from `difftrain train` loads with torch.load, and its model and EMA weights
  load with load_state_dict(strict=True) into a PyTorch mirror of smalldiffusion's
  TimeInputMLP.
- `difftrain sample` equals the reference sampler run in PyTorch with those weights and
  the same starting noise: the C++ forward pass, schedule and sampler match the reference.
- Files written by h5py (chunked or not, gzip-compressed) are resharded row for row.
- A checkpoint re-saved by Python's torch.save loads with LibTorch 2.x (and is explained
  with 1.x); a file format version newer than LibTorch's is named.
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"skipped: {e}")
    sys.exit(77)

DIFFTRAIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print(f"FAIL: {message}", flush=True)


def run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([DIFFTRAIN] + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: difftrain {' '.join(args)} exited {result.returncode}:\n{result.stdout}")
    return result.stdout


# ---------------------------------------------------------------- the reference model

def get_sigma_embeds(batches, sigma, scaling_factor=0.5):
    # smalldiffusion.model.get_sigma_embeds with log_scale=True
    if sigma.shape == torch.Size([]):
        sigma = sigma.unsqueeze(0).repeat(batches)
    else:
        assert sigma.shape == (batches,), "sigma.shape == [] or [batches]!"
    s = torch.log(sigma).unsqueeze(1) * scaling_factor
    return torch.cat([torch.sin(s), torch.cos(s)], dim=1)


class TimeInputMLP(nn.Module):
    # smalldiffusion.model.TimeInputMLP
    def __init__(self, dim=2, hidden_dims=(16, 128, 128, 128, 128, 16)):
        super().__init__()
        layers = []
        dims = (dim + 2,) + tuple(hidden_dims)
        for in_dim, out_dim in zip(dims[:-1], dims[1:]):
            layers.extend([nn.Linear(in_dim, out_dim), nn.GELU()])
        layers.append(nn.Linear(hidden_dims[-1], dim))
        self.net = nn.Sequential(*layers)
        self.input_dims = (dim,)

    def forward(self, x, sigma):
        sigma_embeds = get_sigma_embeds(x.shape[0], sigma.squeeze())
        return self.net(torch.cat([x, sigma_embeds], dim=1))


# ---------------------------------------------------------------- difftrain's random streams

MASK = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def stream_key(seed, rank, purpose, counter):
    k = splitmix64(seed)
    k = splitmix64(k ^ rank)
    k = splitmix64(k ^ purpose)
    return splitmix64(k ^ counter)


STREAM_SAMPLE = 5
M32 = 0xFFFFFFFF


def philox4x32_10(c, k):
    c0, c1, c2, c3 = c
    k0, k1 = k
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32
    return c0, c1, c2, c3


class PhiloxNormals:
    """difftrain's documented CPU stream: block b = philox((b, 0, 0, 0), key) read as two
    64-bit words, Box-Muller in double, rounded to float32."""

    def __init__(self, key):
        self.key, self.block = (key & M32, key >> 32), 0

    def __call__(self, shape):
        n = math.prod(shape)
        out = []
        for b in range(self.block, self.block + (n + 1) // 2):
            w = philox4x32_10((b & M32, b >> 32, 0, 0), self.key)
            u0, u1 = [((lo | hi << 32) >> 11) / 2.0 ** 53 for lo, hi in ((w[0], w[1]), (w[2], w[3]))]
            radius, angle = math.sqrt(-2.0 * math.log(1.0 - u0)), 2.0 * math.pi * u1
            out += [radius * math.cos(angle), radius * math.sin(angle)]
        self.block += (n + 1) // 2
        return torch.tensor(out[:n], dtype=torch.float64).to(torch.float32).view(shape)


def reference_samples(model, sigmas, n, seed, gam, mu):
    """smalldiffusion's samples(): the generalized DDPM/DDIM sampler, noise from
    difftrain's documented stream (seed, rank 0, sample, 0)."""
    draw = PhiloxNormals(stream_key(seed, 0, STREAM_SAMPLE, 0))
    noise = lambda: draw((n, 2))
    with torch.no_grad():
        xt = noise() * sigmas[0]
        eps = None
        for sig, sig_prev in zip(sigmas[:-1], sigmas[1:]):
            eps_prev, eps = eps, model(xt, sig)
            eps_av = eps * gam + eps_prev * (1 - gam) if eps_prev is not None else eps
            sig_p = (sig_prev / sig ** mu) ** (1 / (1 - mu))
            eta = (sig_prev ** 2 - sig_p ** 2).sqrt()
            xt = xt - (sig - sig_p) * eps_av + eta * noise()
    return xt


def loglinear_sample_sigmas(N, sigma_min, sigma_max, steps):
    sigmas = torch.logspace(math.log10(sigma_min), math.log10(sigma_max), N, dtype=torch.float32)
    # "trailing" spacing, as smalldiffusion's Schedule.sample_sigmas
    indices = list((N * (1 - np.arange(0, steps) / steps)).round().astype(np.int64) - 1)
    return sigmas[indices + [0]]


# ---------------------------------------------------------------- the checks

def check_training_checkpoint(tmp):
    out = run(["prepare", "swissroll", "--out", "data", "--shards", "2"], tmp)
    check(sorted(os.listdir(os.path.join(tmp, "data"))) == ["shard-00000.h5", "shard-00001.h5"],
          f"prepare swissroll --shards 2 wrote {os.listdir(os.path.join(tmp, 'data'))} ({out.strip()})")
    rows = []
    for name in ["shard-00000.h5", "shard-00001.h5"]:
        with h5py.File(os.path.join(tmp, "data", name), "r") as f:
            check(f["x"].dtype == np.float32 and f["x"].shape == (50, 2), f"{name}: x is {f['x'].dtype} {f['x'].shape}")
            rows.append(f["x"][...])
    t = np.pi / 2 + np.linspace(0, 1, 100) * 5 * np.pi
    expected = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (5 * np.pi)
    check(np.allclose(np.concatenate(rows), expected, atol=2e-6), "swissroll points differ from the reference")

    run(["train", "train.steps=30", "train.log_every=10", "train.checkpoint_every=10", "run_dir=run",
         "data.path=data", "seed=3", "schedule.type=loglinear", "schedule.N=200", "schedule.sigma_min=0.005",
         "schedule.sigma_max=10"], tmp)
    ckdir = os.path.join(tmp, "run", "checkpoints")
    for step in (10, 20, 30):
        check(os.path.isfile(os.path.join(ckdir, f"step-{step:07d}.pt")), f"no checkpoint for step {step}")
    check(not [n for n in os.listdir(ckdir) if not n.endswith(".pt")], f"stray files in checkpoints/: {os.listdir(ckdir)}")

    with open(os.path.join(tmp, "run", "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    check([r["step"] for r in records] == [10, 20, 30], f"metrics.jsonl steps: {[r['step'] for r in records]}")
    check(all(isinstance(r["loss"], float) and math.isfinite(r["loss"]) for r in records),
          f"non-finite losses: {[r['loss'] for r in records]}")

    latest = os.path.join(ckdir, "latest.pt")
    # torch.load's defaults: from PyTorch 2.6 on that is weights_only=True, which refuses
    # LibTorch's typed containers (difftrain writes untyped ones); 1.13's weights_only
    # reader lacks even floats, so it is not asked for there.
    ck = torch.load(latest)
    check(isinstance(ck, dict), f"torch.load gave {type(ck)}")
    for key in ("model", "ema", "optimizer", "step", "config"):
        check(key in ck, f"checkpoint has no '{key}' (keys: {sorted(ck)})")
    check(ck["step"] == 30, f"step is {ck['step']}")
    check(isinstance(ck["config"], str) and "run_dir" in ck["config"], "config is not the YAML text")
    check(list(ck.get("sample_shape", [])) == [2], f"sample_shape is {ck.get('sample_shape')}")
    step20 = torch.load(os.path.join(ckdir, "step-0000020.pt"))
    check(step20["step"] == 20, f"step-0000020.pt has step {step20['step']}")

    names = ["net.%d.%s" % (i, w) for i in range(0, 13, 2) for w in ("weight", "bias")]
    check(list(ck["model"].keys()) == names, f"model keys: {list(ck['model'].keys())}")
    model, ema = TimeInputMLP(), TimeInputMLP()
    model.load_state_dict(ck["model"], strict=True)
    ema.load_state_dict(ck["ema"], strict=True)
    for name, t in ck["model"].items():
        check(t.dtype == torch.float32, f"model.{name} is {t.dtype}")
    check(not torch.equal(ck["model"]["net.0.weight"], ck["ema"]["net.0.weight"]), "ema equals the model")
    check(not torch.equal(ck["model"]["net.0.weight"], step20["model"]["net.0.weight"]),
          "the weights did not change from step 20 to 30")

    opt = ck["optimizer"]
    check(sorted(opt) == ["param_groups", "state"], f"optimizer keys: {sorted(opt)}")
    check(sorted(opt["state"]) == list(range(14)), f"optimizer state indices: {sorted(opt['state'])}")
    for i, name in enumerate(names):
        s = opt["state"][i]
        check(int(s["step"]) == 30, f"optimizer state {i} step {s['step']}")
        check(s["exp_avg"].shape == ck["model"][name].shape, f"exp_avg {i} shape {s['exp_avg'].shape}")
    group = opt["param_groups"][0]
    check(group["lr"] == 1e-3 and tuple(group["betas"]) == (0.9, 0.999) and group["eps"] == 1e-8
          and group["weight_decay"] == 0.01, f"param group: {group}")

    # difftrain's sampler against the reference's, with the checkpoint's EMA weights.
    model.eval(), ema.eval()
    for steps, gam, mu, seed in [(1, 2.0, 0.0, 7), (5, 2.0, 0.0, 8), (5, 1.0, 0.0, 9)]:
        out_file = f"s-{steps}-{gam}-{seed}.h5"
        run(["sample", "--checkpoint", latest, "--out", out_file, "--n", "50", "--steps", str(steps),
             "--gam", str(gam), "--mu", str(mu), "--seed", str(seed)], tmp)
        with h5py.File(os.path.join(tmp, out_file), "r") as f:
            check(list(f.keys()) == ["samples"], f"{out_file}: datasets {list(f.keys())}")
            got = f["samples"]
            check(got.dtype == np.float32 and got.shape == (50, 2), f"{out_file}: {got.dtype} {got.shape}")
            got = torch.from_numpy(got[...])
        want = reference_samples(ema, loglinear_sample_sigmas(200, 0.005, 10, steps), 50, seed, gam, mu)
        err = (got - want).abs().max().item()
        check(err < 2e-5 * max(1.0, want.abs().max().item()),
              f"sample --steps {steps} --gam {gam} --seed {seed}: differs from the reference by {err}")
        check(torch.isfinite(got).all().item(), f"{out_file}: non-finite samples")
    # The raw model weights are another model: sampling them gives other points.
    run(["sample", "--checkpoint", latest, "--out", "s-model.h5", "--n", "50", "--steps", "1", "--mu", "0",
         "--seed", "7", "--weights", "model"], tmp)
    with h5py.File(os.path.join(tmp, "s-model.h5"), "r") as f:
        got = torch.from_numpy(f["samples"][...])
    want = reference_samples(model, loglinear_sample_sigmas(200, 0.005, 10, 1), 50, 7, 2.0, 0.0)
    err = (got - want).abs().max().item()
    check(err < 2e-5 * max(1.0, want.abs().max().item()), f"sample --weights model differs by {err}")

    # The brief's plain call, with the config's own sampler settings.
    run(["sample", "--checkpoint", "run/checkpoints/latest.pt", "--out", "s.h5", "--n", "50", "--steps", "5"], tmp)
    with h5py.File(os.path.join(tmp, "s.h5"), "r") as f:
        check(f["samples"].dtype == np.float32 and f["samples"].shape == (50, 2),
              f"s.h5: samples {f['samples'].dtype} {f['samples'].shape}")
        check(np.isfinite(f["samples"][...]).all(), "s.h5: non-finite samples")


def check_resaved_checkpoints(tmp):
    """A checkpoint re-saved by Python's torch.save, and one from a newer file format.

    LibTorch 2.x reads Python's pickles, so the re-saved file loads and samples exactly as
    the original; LibTorch 1.x's unpickler lacks some of their opcodes, and then difftrain
    says so in one line. A file format version beyond this LibTorch's is named as such.
    """
    import zipfile
    version = subprocess.run([DIFFTRAIN, "--version"], stdout=subprocess.PIPE, text=True).stdout
    libtorch_major = int(re.search(r"LibTorch (\d+)\.", version).group(1))
    original = os.path.join(tmp, "run", "checkpoints", "latest.pt")
    resaved = os.path.join(tmp, "resaved.pt")
    torch.save(torch.load(original), resaved)

    def sample(checkpoint, out):
        return subprocess.run([DIFFTRAIN, "sample", "--checkpoint", checkpoint, "--out", out, "--n", "8", "--seed", "3"],
                              cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)

    result = sample(resaved, "resaved.h5")
    if libtorch_major >= 2:
        check(result.returncode == 0, f"a checkpoint re-saved by Python does not load: {result.stdout}")
        run(["sample", "--checkpoint", original, "--out", "original.h5", "--n", "8", "--seed", "3"], tmp)
        with h5py.File(os.path.join(tmp, "resaved.h5"), "r") as a, h5py.File(os.path.join(tmp, "original.h5"), "r") as b:
            check(np.array_equal(a["samples"][...], b["samples"][...]),
                  "the re-saved checkpoint samples otherwise than the original")
    else:
        check(result.returncode == 1 and result.stdout.count("difftrain: error:") == 1
              and "re-saved by Python's torch.save?" in result.stdout and "LibTorch 2.x reads it" in result.stdout,
              f"LibTorch {libtorch_major}: a re-saved checkpoint is not explained: {result.stdout}")

    # The same checkpoint claiming a file format from the future.
    future = os.path.join(tmp, "future.pt")
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(future, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, b"99\n" if item.filename.endswith("/version") else data)
    result = sample(future, "future.h5")
    check(result.returncode == 1 and "written in PyTorch's file format version 99" in result.stdout
          and "reads versions up to" in result.stdout, f"a future file format is not named: {result.stdout}")


def check_h5py_reshard(tmp):
    rng = np.random.default_rng(0)
    n = 37
    x = rng.standard_normal((n, 2)).astype(np.float32)
    img = rng.integers(0, 256, size=(n, 4), dtype=np.uint8)
    y = np.arange(n, dtype=np.int64) * 5 - 11
    variants = {
        "contiguous.h5": dict(),
        "chunked.h5": dict(chunks=True),
        "gzip.h5": dict(chunks=(5, 2), compression="gzip", compression_opts=6),
    }
    for name, opts in variants.items():
        path = os.path.join(tmp, name)
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=x, **opts)
            img_opts = dict(opts)
            if "chunks" in img_opts and img_opts["chunks"] is not True:
                img_opts["chunks"] = (7, 4)
            f.create_dataset("img", data=img, **img_opts)
            f.create_dataset("y", data=y)
        for dataset, data in (("x", x), ("img", img)):
            out = os.path.join(tmp, f"out-{name}-{dataset}")
            run(["prepare", "reshard", "--from", path, "--out", out, "--shards", "3", "--dataset", dataset], tmp)
            files = sorted(os.listdir(out))
            check(files == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"], f"{out}: {files}")
            parts, labels, sizes = [], [], []
            for shard in files:
                with h5py.File(os.path.join(out, shard), "r") as f:
                    check(f[dataset].dtype == data.dtype, f"{out}/{shard}: dtype {f[dataset].dtype}, want {data.dtype}")
                    parts.append(f[dataset][...])
                    labels.append(f["y"][...] if "y" in f else None)
                    sizes.append(len(parts[-1]))
            check(max(sizes) - min(sizes) <= 1 and sum(sizes) == n, f"{out}: shard sizes {sizes}")
            check(np.array_equal(np.concatenate(parts), data), f"{out}: rows differ from the h5py input")
            check(all(l is not None for l in labels) and np.array_equal(np.concatenate(labels), y),
                  f"{out}: labels not carried")

    # Several h5py files into one resharded set, in the order given.
    a, b = os.path.join(tmp, "gzip.h5"), os.path.join(tmp, "contiguous.h5")
    out = os.path.join(tmp, "out-two")
    run(["prepare", "reshard", "--from", a, "--from", b, "--out", out, "--shards", "4"], tmp)
    parts = []
    for shard in sorted(os.listdir(out)):
        with h5py.File(os.path.join(out, shard), "r") as f:
            parts.append(f["x"][...])
    check(len(parts) == 4 and np.array_equal(np.concatenate(parts), np.concatenate([x, x])),
          "two-file reshard lost or reordered rows")


def main():
    if DIFFTRAIN is None or not os.access(DIFFTRAIN, os.X_OK):
        print("usage: test_checkpoint_torch.py /path/to/difftrain")
        return 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="difftrain-pytest-") as tmp:
        check_h5py_reshard(tmp)
        check_training_checkpoint(tmp)
        check_resaved_checkpoints(tmp)
    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    print("all checkpoint/h5py checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
