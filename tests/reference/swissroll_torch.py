#!/usr/bin/env python3
"""The toy recipe in plain PyTorch, written from the reference library's formulas, as the
side-by-side baseline for difftrain (wall time and sample quality).

    python3 tests/reference/swissroll_torch.py --steps 15000 --out /tmp/ref_samples.h5

Prints one JSON line: {"steps", "train_s", "sample_s", "mean_distance", "final_loss"}.
Needs Debian's python3-torch (and python3-h5py for --out / --distance).
"""
import argparse
import json
import math
import time

import torch
from torch import nn


def swissroll(n=100, tmin=math.pi / 2, tmax=5 * math.pi, dtype=torch.float32):
    t = tmin + torch.linspace(0, 1, n, dtype=dtype) * tmax
    return torch.stack([t * torch.cos(t) / tmax, t * torch.sin(t) / tmax]).T


def curve_distance(points, tmin=math.pi / 2, tmax=5 * math.pi):
    """Distance of each point to the continuous spiral, on a fine grid of t."""
    curve = swissroll(20001, tmin, tmax, torch.float64)
    return torch.cdist(points.to(torch.float64), curve).min(dim=1).values


class TimeInputMLP(nn.Module):
    def __init__(self, dim=2, hidden_dims=(16, 128, 128, 128, 128, 16)):
        super().__init__()
        layers, dims = [], (dim + 2,) + hidden_dims
        for i, o in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(i, o), nn.GELU()]
        layers.append(nn.Linear(hidden_dims[-1], dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, sigma):
        s = torch.log(sigma.reshape(-1).expand(x.shape[0])).unsqueeze(1) * 0.5
        return self.net(torch.cat([x, torch.sin(s), torch.cos(s)], dim=1))


def sample_sigmas(sigmas, steps):
    n = len(sigmas)
    idx = [int(round(n * (1 - i / steps))) - 1 for i in range(steps)] + [0]
    return sigmas[idx]


@torch.no_grad()
def sample(model, sigmas, n, gam=2.0, mu=0.0):
    x = torch.randn(n, 2) * sigmas[0]
    eps = None
    for i in range(len(sigmas) - 1):
        sig, sig_prev = sigmas[i], sigmas[i + 1]
        eps_prev, eps = eps, model(x, sig)
        eps_av = eps * gam + eps_prev * (1 - gam) if i > 0 else eps
        sig_p = (sig_prev / sig ** mu) ** (1 / (1 - mu))
        eta = (sig_prev ** 2 - sig_p ** 2).sqrt()
        x = x - (sig - sig_p) * eps_av + eta * torch.randn_like(x)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the samples here (HDF5 dataset 'samples')")
    ap.add_argument("--distance", help="only print the mean curve distance of this samples.h5")
    args = ap.parse_args()
    if args.distance:
        import h5py
        with h5py.File(args.distance, "r") as f:
            pts = torch.from_numpy(f["samples"][()])
        print(json.dumps({"file": args.distance, "n": len(pts), "mean_distance": curve_distance(pts).mean().item()}))
        return
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x0 = swissroll()
    model = TimeInputMLP()
    sigmas = torch.logspace(math.log10(0.005), math.log10(10), 200)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    losses = []
    for _ in range(args.steps):
        opt.zero_grad()
        sigma = sigmas[torch.randint(len(sigmas), (x0.shape[0],))].unsqueeze(1)
        eps = torch.randn_like(x0)
        loss = nn.functional.mse_loss(model(x0 + sigma * eps, sigma), eps)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pts = sample(model, sample_sigmas(sigmas, 20), 2000, gam=2.0)
    sample_s = time.perf_counter() - t0
    if args.out:
        import h5py
        with h5py.File(args.out, "w") as f:
            f["samples"] = pts.numpy()
    print(json.dumps({"steps": args.steps, "train_s": round(train_s, 3), "sample_s": round(sample_s, 3),
                      "mean_distance": curve_distance(pts).mean().item(),
                      "final_loss": sum(losses[-100:]) / len(losses[-100:])}))


if __name__ == "__main__":
    main()
