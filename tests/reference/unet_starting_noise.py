"""Why a U-Net's samples end as noise: a difftrain U-Net checkpoint through the reference
library's own modules and sampler (smalldiffusion's Unet, Scaled, PredV and samples()).

    pip install smalldiffusion einops          # into a Python with torch, h5py, pyyaml
    difftrain sample --checkpoint CKPT --out s.h5 --n 64
    python3 tests/reference/unet_starting_noise.py CKPT --samples s.h5

1. The checkpoint's EMA weights load into smalldiffusion's Unet with strict=True, and its
   sampler, started from the noise `difftrain sample --seed 0` starts from (difftrain's
   documented Philox stream), ends where difftrain's did (--samples): the forward pass and
   the sampler are the reference's.
2. At sigma_max the model is given x = sigma_max z for z rescaled to a standard deviation
   of 0.95, 1 and 1.05: the std of its eps estimate should follow (the excess is noise
   the sampler must remove).
3. The same starting noises as drawn, each rescaled to std 1, and each to std 1.05, are
   sampled: how many end as noise (rougher than any Fashion-MNIST image, see `eval`'s
   noise_share) tells whether the norm of z decides it.
smalldiffusion imports accelerate and torchvision at the top; where they are missing,
empty stand-ins are put in their place (nothing here uses them).
"""
import argparse
import os
import sys
import types

import h5py
import torch
import yaml


def stand_in(name):
    class Anything:
        def __getattr__(self, attr):
            return Anything()

        def __call__(self, *args, **kwargs):
            return Anything()

    module = types.ModuleType(name)
    module.__path__ = []
    module.__getattr__ = lambda attr: Anything()
    return module


for missing, parts in (("accelerate", ()), ("torchvision", ("transforms", "datasets", "utils"))):
    try:
        __import__(missing)
    except ImportError:
        for name in (missing,) + tuple(f"{missing}.{part}" for part in parts):
            sys.modules[name] = stand_in(name)
if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):  # PyTorch 1.x
    torch.nn.functional.scaled_dot_product_attention = (
        lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, -1) @ v)

from smalldiffusion.diffusion import ScheduleLDM, ScheduleLogLinear, ScheduleDDPM, samples  # noqa: E402
from smalldiffusion.model import PredV, PredX0, Scaled  # noqa: E402
from smalldiffusion.model_unet import Unet  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from test_checkpoint_torch import STREAM_SAMPLE, PhiloxNormals, stream_key  # noqa: E402


class OnCpu:
    device = "cpu"


def roughness(x):
    return ((x.diff(dim=-2).abs().mean((1, 2, 3)) + x.diff(dim=-1).abs().mean((1, 2, 3))) / 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--samples", help="difftrain sample --seed 0 --n N output to compare with")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rough", type=float, default=0.41, help="roughness above which a sample counts as noise "
                    "(0.41: the roughest of 1000 Fashion-MNIST test images; measured here on the samples as "
                    "they come, where eval's noise_share clamps them to [-1, 1] first)")
    args = ap.parse_args()

    ck = torch.load(args.checkpoint)
    config = yaml.safe_load(ck["config"])
    m, s = config["model"], config["schedule"]
    cls = Scaled(Unet) if m.get("scaled_input", True) else Unet
    cls = {"v": PredV, "x0": PredX0}.get(m.get("parameterization", "eps"), lambda c: c)(cls)
    channels, side = ck["sample_shape"][0], ck["sample_shape"][1]
    net = cls(side, channels, channels, ch=m["ch"], ch_mult=tuple(m["ch_mult"]), attn_resolutions=tuple(m["attn_res"]),
              num_res_blocks=m["num_res_blocks"], dropout=0.0)
    net.load_state_dict(ck["ema"], strict=True)
    net.eval()
    schedule = {"ldm": lambda: ScheduleLDM(s["N"], s["beta_start"], s["beta_end"]),
                "ddpm": lambda: ScheduleDDPM(s["N"], s["beta_start"], s["beta_end"]),
                "loglinear": lambda: ScheduleLogLinear(s["N"], s["sigma_min"], s["sigma_max"])}[s["type"]]()
    sampler = config["sample"]
    sigmas = schedule.sample_sigmas(sampler["steps"])
    z = PhiloxNormals(stream_key(0, 0, STREAM_SAMPLE, 0))((args.n, channels, side, side))
    unit = z / z.std((1, 2, 3), keepdim=True)

    def run(start):
        *_, x = samples(net, sigmas, gam=sampler["gam"], mu=sampler["mu"], xt=start * sigmas[0], accelerator=OnCpu())
        return x

    with torch.no_grad():
        as_drawn = run(z)
        if args.samples:
            with h5py.File(args.samples, "r") as f:
                theirs = torch.from_numpy(f["samples"][...])
            print(f"1. difftrain's samples vs the reference's: max difference "
                  f"{(theirs - as_drawn).abs().max().item():.2e} (values up to {as_drawn.abs().max().item():.2f})")
        for scale in (0.95, 1.0, 1.05):
            eps = net.predict_eps(sigmas[0] * scale * unit, sigmas[0])
            print(f"2. z of std {scale:.2f} at sigma_max: eps_hat std {eps.std((1, 2, 3)).mean().item():.4f}")
        rough = roughness(as_drawn) > args.rough
        print(f"3. as drawn: {int(rough.sum())}/{args.n} noise; their z std {z[rough].std((1, 2, 3)).mean().item():.3f} "
              f"against {z[~rough].std((1, 2, 3)).mean().item():.3f} for the rest")
        for name, start in (("each z rescaled to std 1", unit), ("each z rescaled to std 1.05", 1.05 * unit)):
            print(f"3. {name}: {int((roughness(run(start)) > args.rough).sum())}/{args.n} noise")


if __name__ == "__main__":
    main()
