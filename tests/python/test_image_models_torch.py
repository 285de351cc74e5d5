"""difftrain's image models (DiT, U-Net) against PyTorch modules of the reference library's
structure, written here from the formulas.

Run as: python3 test_image_models_torch.py /path/to/difftrain /path/to/optimizer_probe
(the model probe is taken from the optimizer probe's directory; exit 77: torch missing)

For each model, `model_probe` builds difftrain's model from config overrides, fills its
parameters with seeded values, runs one forward pass and saves the state dict, the inputs
and the output. Here the state dict must load into the PyTorch module with
load_state_dict(strict=True) (same names, same shapes, nothing missing or extra), the
DiT's fixed position embedding must equal the formula's, and the PyTorch forward pass on
the same inputs must give the same output to 1e-5 of its scale.
"""
import math
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"skipped: {e}")
    sys.exit(77)

PROBE = os.path.join(os.path.dirname(os.path.abspath(sys.argv[2])), "model_probe") if len(sys.argv) > 2 else None
TOLERANCE = 1e-5
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print(f"FAIL: {message}", flush=True)


# ---------------------------------------------------------------- shared pieces

def sigma_features(batch, sigma):
    """[sin, cos](0.5 log sigma) per example; sigma is one value or one per example."""
    sigma = sigma.reshape(-1)
    if sigma.numel() == 1:
        sigma = sigma.expand(batch)
    half_log = 0.5 * torch.log(sigma)
    return torch.stack([torch.sin(half_log), torch.cos(half_log)], dim=1)


class SigmaEmbedder(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, batch, sigma):
        return self.mlp(sigma_features(batch, sigma))


class LabelEmbedder(nn.Module):
    def __init__(self, width, num_classes):
        super().__init__()
        self.embeddings = nn.Embedding(num_classes + 1, width)  # last row: "no label"
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, width))

    def forward(self, labels):
        return self.mlp(self.embeddings(labels))


class SelfAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v per head; the projection's output is laid out as
    (q|k|v, head, d) along the last axis."""

    def __init__(self, head_dim, heads, qkv_bias):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        width = heads * head_dim
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, _ = x.shape
        parts = self.qkv(x).view(b, n, 3, self.heads, self.head_dim)
        q, k, v = parts[:, :, 0], parts[:, :, 1], parts[:, :, 2]           # [b, n, h, d]
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(self.head_dim)
        mixed = torch.einsum("bhij,bjhd->bihd", scores.softmax(dim=-1), v)  # [b, n, h, d]
        return self.proj(mixed.reshape(b, n, self.heads * self.head_dim))


# ---------------------------------------------------------------- DiT

def position_embedding(per_side, width):
    """Token (row, col): [sin(col w), cos(col w), sin(row w), cos(row w)], w_j = 10000^(-4j/width)."""
    quarter = width // 4
    w = torch.tensor([10000.0 ** (-j / quarter) for j in range(quarter)], dtype=torch.float64)
    table = torch.zeros(per_side * per_side, width, dtype=torch.float64)
    for row in range(per_side):
        for col in range(per_side):
            t = row * per_side + col
            table[t] = torch.cat([torch.sin(col * w), torch.cos(col * w), torch.sin(row * w), torch.cos(row * w)])
    return table.float().unsqueeze(0)


class Modulation(nn.Module):
    def __init__(self, width, parts):
        super().__init__()
        self.parts = parts
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(width, parts * width))

    def forward(self, cond):
        return [m[:, None, :] for m in self.proj(cond).chunk(self.parts, dim=1)]


class ModulatedNorm(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width
        self.modulation = Modulation(width, 2)

    def forward(self, x, cond):
        scale, shift = self.modulation(cond)
        return F.layer_norm(x, (self.width,), eps=1e-6) * (1 + scale) + shift


class DiTBlock(nn.Module):
    def __init__(self, head_dim, heads, mlp_ratio):
        super().__init__()
        width = head_dim * heads
        hidden = int(width * mlp_ratio)
        self.norm1 = ModulatedNorm(width)
        self.attn = SelfAttention(head_dim, heads, qkv_bias=True)
        self.norm2 = ModulatedNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.scale_modulation = Modulation(width, 2)

    def forward(self, x, cond):
        gate_attn, gate_mlp = self.scale_modulation(cond)
        x = x + gate_attn * self.attn(self.norm1(x, cond))
        return x + gate_mlp * self.mlp(self.norm2(x, cond))


class PatchEmbed(nn.Module):
    def __init__(self, patch, channels, width):
        super().__init__()
        self.proj = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)


class DiT(nn.Module):
    def __init__(self, side, channels, patch, depth, head_dim, heads, mlp_ratio, num_classes):
        super().__init__()
        width = head_dim * heads
        self.side, self.channels, self.patch = side, channels, patch
        self.register_buffer("pos_embed", position_embedding(side // patch, width))
        self.x_embed = PatchEmbed(patch, channels, width)
        self.sig_embed = SigmaEmbedder(width)
        self.cond_embed = LabelEmbedder(width, num_classes) if num_classes > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(head_dim, heads, mlp_ratio) for _ in range(depth)])
        self.final_norm = ModulatedNorm(width)
        self.final_linear = nn.Linear(width, patch * patch * channels)

    def forward(self, x, sigma, labels=None):
        b = x.shape[0]
        tokens = self.x_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        cond = self.sig_embed(b, sigma)
        if self.cond_embed is not None:
            cond = cond + self.cond_embed(labels)
        for block in self.blocks:
            tokens = block(tokens, cond)
        tokens = self.final_linear(self.final_norm(tokens, cond))  # [b, n*n, (p p c)]
        # Each token back to its patch: values ordered (row in patch, column in patch, channel).
        p, n = self.patch, self.side // self.patch
        out = torch.empty_like(x)
        for row in range(n):
            for col in range(n):
                patch = tokens[:, row * n + col].reshape(b, p, p, self.channels).permute(0, 3, 1, 2)
                out[:, :, row * p:(row + 1) * p, col * p:(col + 1) * p] = patch
        return out


# ---------------------------------------------------------------- U-Net

def group_norm(ch):
    return nn.GroupNorm(32, ch, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch, out_ch, temb_ch):
        super().__init__()
        self.layer1 = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.temb_proj = nn.Sequential(nn.SiLU(), nn.Linear(temb_ch, out_ch))
        self.layer2 = nn.Sequential(group_norm(out_ch), nn.SiLU(), nn.Dropout(0.1),
                                    nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):
        h = self.layer2(self.layer1(x) + self.temb_proj(temb)[:, :, None, None])
        return (self.shortcut(x) if self.shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = group_norm(ch)
        self.attn = SelfAttention(ch, 1, qkv_bias=False)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, temb):
        b, c, h, w = x.shape
        pixels = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        return x + self.proj_out(self.attn(pixels).transpose(1, 2).reshape(b, c, h, w))


def cond_block(layers):
    return nn.ModuleList(layers)  # children "0" (ResnetBlock), "1" (AttnBlock, if any)


def run_block(block, x, temb):
    for layer in block:
        x = layer(x, temb)
    return x


class UNet(nn.Module):
    def __init__(self, side, channels, ch, ch_mult, attn_res, num_res_blocks, num_classes, scaled_input):
        super().__init__()
        temb = 4 * ch
        self.scaled_input = scaled_input
        self.sig_embed = SigmaEmbedder(temb)
        self.cond_embed = LabelEmbedder(temb, num_classes) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        levels = len(ch_mult)
        res = [side // 2 ** i for i in range(levels)]
        self.downs = nn.ModuleList()
        c = ch
        for i in range(levels):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                layers = [ResnetBlock(c, widths[i + 1], temb)]
                c = widths[i + 1]
                if res[i] in attn_res:
                    layers.append(AttnBlock(c))
                level.blocks.append(cond_block(layers))
            if i < levels - 1:
                level.downsample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c, c, 3, stride=2))
            self.downs.append(level)
        self.mid = cond_block([ResnetBlock(c, c, temb), AttnBlock(c), ResnetBlock(c, c, temb)])
        self.ups = nn.ModuleList()
        for i in reversed(range(levels)):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            for j in range(num_res_blocks + 1):
                skip = widths[i] if j == num_res_blocks else widths[i + 1]
                layers = [ResnetBlock(c + skip, widths[i + 1], temb)]
                c = widths[i + 1]
                if res[i] in attn_res:
                    layers.append(AttnBlock(c))
                level.blocks.append(cond_block(layers))
            if i > 0:
                level.upsample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1))
            self.ups.append(level)
        self.out_layer = nn.Sequential(group_norm(c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1))

    def forward(self, x, sigma, labels=None):
        emb = self.sig_embed(x.shape[0], sigma)
        if self.cond_embed is not None:
            emb = emb + self.cond_embed(labels)
        if self.scaled_input:
            x = x / torch.sqrt(1 + sigma.reshape(-1, 1, 1, 1) ** 2)
        skips = [self.conv_in(x)]
        for level in self.downs:
            for block in level.blocks:
                skips.append(run_block(block, skips[-1], emb))
            if hasattr(level, "downsample"):
                skips.append(level.downsample(skips[-1]))
        h = run_block(self.mid, skips[-1], emb)
        for level in self.ups:
            for block in level.blocks:
                h = run_block(block, torch.cat([h, skips.pop()], dim=1), emb)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.out_layer(h)


# ---------------------------------------------------------------- the comparison

def probe(workdir, name, shape, overrides):
    out = os.path.join(workdir, name + ".pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([PROBE, out, ",".join(map(str, shape))] + overrides, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: model_probe {name} exited {result.returncode}:\n{result.stdout}")
    return torch.load(out)


def compare(workdir, name, shape, overrides, model):
    record = probe(workdir, name, shape, overrides)
    state = record["state"]
    if "pos_embed" in state:
        diff = (state["pos_embed"] - model.pos_embed).abs().max().item()
        check(diff < 1e-6, f"{name}: pos_embed differs from the formula by {diff}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        check(False, f"{name}: state dict does not load strictly: {e}")
        return
    model.eval()
    with torch.no_grad():
        expected = model(record["x"], record["sigma"], record.get("labels"))
    got = record["out"]
    check(got.shape == expected.shape, f"{name}: output shape {tuple(got.shape)} != {tuple(expected.shape)}")
    scale = expected.abs().max().item()
    diff = (got - expected).abs().max().item()
    check(scale > 0.01, f"{name}: output scale {scale} too small to compare anything")
    check(diff <= TOLERANCE * scale, f"{name}: max |difftrain - torch| = {diff} > {TOLERANCE} * {scale}")
    print(f"{name}: {len(state)} tensors, output scale {scale:.3g}, max diff {diff:.3g}", flush=True)


def main():
    if PROBE is None or not os.path.exists(PROBE):
        raise SystemExit(f"usage: {sys.argv[0]} DIFFTRAIN OPTIMIZER_PROBE (model_probe beside it); got {PROBE}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        compare(workdir, "dit_conditional", (3, 8, 8),
                ["model.type=dit", "model.patch=2", "model.depth=2", "model.head_dim=8", "model.num_heads=2",
                 "model.mlp_ratio=4.0", "model.num_classes=5"],
                DiT(8, 3, 2, 2, 8, 2, 4.0, 5))
        compare(workdir, "dit_unconditional", (2, 8, 8),
                ["model.type=dit", "model.patch=4", "model.depth=1", "model.head_dim=4", "model.num_heads=3",
                 "model.mlp_ratio=1.5"],
                DiT(8, 2, 4, 1, 4, 3, 1.5, 0))
        compare(workdir, "unet_conditional", (3, 8, 8),
                ["model.type=unet", "model.ch=32", "model.ch_mult=[1,2]", "model.attn_res=[4]", "model.num_classes=5"],
                UNet(8, 3, 32, (1, 2), (4,), 2, 5, True))
        compare(workdir, "unet_unconditional", (1, 8, 8),
                ["model.type=unet", "model.ch=32", "model.ch_mult=[1,1,2]", "model.attn_res=[8,2]",
                 "model.num_res_blocks=1", "model.scaled_input=false"],
                UNet(8, 1, 32, (1, 1, 2), (8, 2), 1, 0, False))
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all image model checks passed")


if __name__ == "__main__":
    main()
