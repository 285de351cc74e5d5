#!/usr/bin/env python3
"""The conditional DiT smoke recipe (configs/fashion_mnist_dit_cond_smoke.yaml) in plain
PyTorch, written from the reference library's formulas, as the quality baseline for
difftrain: the same architecture and parameter names, data, schedule, parameterization
(the loss's target), batch, steps, optimizer, warm-up and EMA. It writes a checkpoint `difftrain eval` reads (a LibTorch 2.x
build: LibTorch 1.13 cannot unpickle Python's files), so both are measured alike.

    python3 tests/reference/dit_cond_torch.py --data data/fashion-mnist/train \\
        --config configs/fashion_mnist_dit_cond_smoke.yaml --seed 0 --out torch-0.pt
    build/torch-2.13.0+cpu/difftrain eval --checkpoint torch-0.pt --cfg-scale 2

Prints one JSON line: {"steps", "train_s", "final_loss", "out"}. Needs torch, h5py, pyyaml.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import h5py
import numpy as np
import torch
import yaml
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from test_image_models_torch import (  # noqa: E402  (the modules, written from the reference's formulas)
    DiTBlock, LabelEmbedder, ModulatedNorm, PatchEmbed, SigmaEmbedder, position_embedding)


class DiT(nn.Module):
    """The reference's DiT with its adaLN-Zero initialisation and (model.scaled_input) the
    input seen as x / sqrt(1 + sigma^2)."""

    def __init__(self, side, channels, patch, depth, head_dim, heads, mlp_ratio, num_classes, scaled_input):
        super().__init__()
        width = head_dim * heads
        self.side, self.channels, self.patch, self.scaled_input = side, channels, patch, scaled_input
        self.register_buffer("pos_embed", position_embedding(side // patch, width))
        self.x_embed = PatchEmbed(patch, channels, width)
        self.sig_embed = SigmaEmbedder(width)
        self.cond_embed = LabelEmbedder(width, num_classes)
        self.blocks = nn.ModuleList([DiTBlock(head_dim, heads, mlp_ratio) for _ in range(depth)])
        self.final_norm = ModulatedNorm(width)
        self.final_linear = nn.Linear(width, patch * patch * channels)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            w = self.x_embed.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.x_embed.proj.bias)
            for i in (0, 2):
                nn.init.normal_(self.sig_embed.mlp[i].weight, 0.0, 0.02)
            for name, p in self.named_parameters():
                if "modulation" in name or name.startswith("final_linear"):
                    p.zero_()

    def forward(self, x, sigma, labels):
        b, p, n = x.shape[0], self.patch, self.side // self.patch
        if self.scaled_input:
            x = x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2).sqrt()
        tokens = self.x_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        cond = self.sig_embed(b, sigma) + self.cond_embed(labels)
        for block in self.blocks:
            tokens = block(tokens, cond)
        tokens = self.final_linear(self.final_norm(tokens, cond))  # [b, n*n, (p p c)]
        return tokens.reshape(b, n, n, p, p, self.channels).permute(0, 5, 1, 3, 2, 4).reshape(x.shape)


def ldm_sigmas(n, beta_start, beta_end):
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return (1 / torch.cumprod(1 - betas, 0) - 1).sqrt().float()


def read_shards(spec):
    files = sorted(glob.glob(os.path.join(spec, "*.h5"))) if os.path.isdir(spec) else [spec]
    xs, ys = [], []
    for path in files:
        with h5py.File(path, "r") as f:
            xs.append(f["x"][...])
            ys.append(f["y"][...])
    x = np.concatenate(xs)
    x = x.astype(np.float32) / 127.5 - 1 if x.dtype == np.uint8 else x.astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(np.concatenate(ys).astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="Fashion-MNIST training shards (difftrain prepare fashion-mnist)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, help="instead of the config's train.steps (a quick check)")
    args = ap.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    if args.steps:
        config["train"]["steps"] = args.steps
    m, s, t = config["model"], config["schedule"], config["train"]
    assert m["type"] == "dit" and s["type"] == "ldm" and t["optimizer"] == "adamw", "written for the smoke recipe"
    unmirrored = [k for k in ("betas", "adam_eps", "grad_clip", "grad_accum", "precision") if k in t]
    assert not unmirrored, f"train.{unmirrored} are not mirrored here (difftrain's defaults are)"
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x_all, y_all = read_shards(args.data)
    channels, side = x_all.shape[1], x_all.shape[2]
    model = DiT(side, channels, m["patch"], m["depth"], m["head_dim"], m["num_heads"], m["mlp_ratio"],
                m["num_classes"], m.get("scaled_input", False))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=t.get("weight_decay", 0.01))
    warmup = t.get("warmup_steps", 0)
    parameterization = m.get("parameterization", "eps")

    def target(eps, x0, sigma):  # what the network learns to output (model.parameterization)
        alpha = 1 / (1 + sigma ** 2)
        return {"eps": lambda: eps, "x0": lambda: x0,
                "v": lambda: alpha.sqrt() * eps - (1 - alpha).sqrt() * x0}[parameterization]()

    sigmas = ldm_sigmas(s["N"], s["beta_start"], s["beta_end"])
    batch, null_label = t["batch_size"], m["num_classes"]
    order, position = torch.randperm(len(x_all)), 0
    losses, t0 = [], time.perf_counter()
    for step in range(t["steps"]):
        for group in opt.param_groups:  # linear warm-up from lr/warmup to lr
            group["lr"] = t["lr"] * min(1.0, (step + 1) / warmup) if warmup else t["lr"]
        if position + batch > len(order):
            order, position = torch.randperm(len(x_all)), 0
        rows = order[position:position + batch]
        position += batch
        x0, labels = x_all[rows].clone(), y_all[rows].clone()
        if config["data"].get("hflip", False):
            flip = torch.rand(batch) < 0.5
            x0[flip] = x0[flip].flip(-1)
        labels[torch.rand(batch) < t.get("cond_drop", 0.1)] = null_label
        sigma = sigmas[torch.randint(len(sigmas), (batch,))]
        eps = torch.randn_like(x0)
        s4 = sigma.view(-1, 1, 1, 1)
        loss = nn.functional.mse_loss(model(x0 + s4 * eps, sigma, labels), target(eps, x0, s4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay = min(t["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    config["run_dir"] = os.path.dirname(os.path.abspath(args.out))
    config["data"]["path"] = os.path.abspath(args.data)
    config["seed"] = args.seed
    torch.save({"model": dict(model.state_dict()), "ema": ema, "optimizer": {}, "step": t["steps"], "skipped_steps": 0,
                "config": yaml.safe_dump(config), "sample_shape": [channels, side, side],
                "data": {"world_size": 1, "position": 0}, "rng": {"seed": args.seed}}, args.out)
    print(json.dumps({"steps": t["steps"], "train_s": round(train_s, 1),
                      "final_loss": sum(losses[-50:]) / len(losses[-50:]), "out": args.out}))


if __name__ == "__main__":
    main()
