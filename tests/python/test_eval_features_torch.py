"""`difftrain eval`'s figures, recomputed here from what `eval --features` wrote.

Run as: python3 test_eval_features_torch.py /path/to/difftrain
(exit 77: torch, h5py or scipy missing)

On a small labelled image set (written here with h5py, resharded by difftrain) difftrain
trains its classifier and a few steps of a conditional DiT; `eval --features` then writes
the four sets' features and images. Here:
- the Fréchet distances computed with NumPy/SciPy (scipy.linalg.sqrtm, np.cov) from those
  features equal eval's fid, fid_floor and fid_untrained to 1e-4 relative;
- the classifier's weights, loaded with load_state_dict(strict=True) into a PyTorch module
  written here from its description, give the file's features of every set's images to
  1e-5, and their argmax gives eval's class accuracy;
- far_share, far_threshold and noise_share recomputed with NumPy from the images equal
  eval's.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
    import scipy.linalg
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"skipped: {e}")
    sys.exit(77)

DIFFTRAIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
FID_RTOL = 1e-4
FEATURE_TOL = 1e-5
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print(f"FAIL: {message}", flush=True)


def run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([DIFFTRAIN] + args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: difftrain {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


class Classifier(nn.Module):
    """difftrain's classifier: conv3x3 32 + batch norm + ReLU + maxpool 2, conv3x3 64 +
    batch norm + ReLU + maxpool 2, flatten, linear 128 + ReLU (the features), linear."""

    def __init__(self, channels, side, num_classes):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.norm2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.hidden = nn.Linear(64 * (side // 2 // 2) ** 2, 128)
        self.head = nn.Linear(128, num_classes)

    def features(self, x):
        h = torch.max_pool2d(torch.relu(self.norm1(self.conv1(x))), 2)
        h = torch.max_pool2d(torch.relu(self.norm2(self.conv2(h))), 2)
        return torch.relu(self.hidden(h.flatten(1)))


def frechet(a, b):
    """The Fréchet distance between Gaussians fitted to feature sets a and b [n, d]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def nearest(a, b):
    """For each row of a, the L2 distance to the nearest row of b (flattened images)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)


def roughness(x):
    x = x.astype(np.float64)
    return (np.abs(np.diff(x, axis=-2)).mean((1, 2, 3)) + np.abs(np.diff(x, axis=-1)).mean((1, 2, 3))) / 2


def labelled_images(n, seed):
    """n images [1, 12, 12] of 3 classes: a bright bar in the top, middle or bottom third."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = -0.7 + 0.25 * rng.standard_normal((n, 1, 12, 12))
    for k in range(3):
        x[y == k, :, 4 * k:4 * k + 4, :] += 1.4
    return np.clip(x, -1, 1).astype(np.float32), y.astype(np.int64)


def main():
    if DIFFTRAIN is None:
        raise SystemExit("usage: test_eval_features_torch.py /path/to/difftrain")
    with tempfile.TemporaryDirectory() as tmp:
        for split, n, seed in (("train", 300, 1), ("test", 150, 2)):
            x, y = labelled_images(n, seed)
            with h5py.File(os.path.join(tmp, f"{split}.h5"), "w") as f:
                f["x"], f["y"] = x, y
            run(["prepare", "reshard", "--from", f"{split}.h5", "--out", f"data/{split}"], tmp)
        run(["classifier", "--data", "data/train", "--test", "data/test", "--out", "data/classifier.pt",
             "--epochs", "2", "--batch", "32"], tmp)
        run(["train", "run_dir=run", "data.path=data/train", "model.type=dit", "model.patch=4", "model.depth=1",
             "model.head_dim=16", "model.num_heads=2", "model.num_classes=3", "schedule.type=ldm", "schedule.N=100",
             "train.steps=40", "train.batch_size=32", "train.lr=3e-3", "train.log_every=20",
             "train.checkpoint_every=40", "sample.steps=10", "sample.cfg_scale=1.5"], tmp)
        report = json.loads(run(["eval", "--checkpoint", "run/checkpoints/latest.pt", "--n", "120", "--features",
                                 "features.h5"], tmp).strip().splitlines()[-1])
        with h5py.File(os.path.join(tmp, "features.h5"), "r") as f:
            data = {name: f[name][...] for name in f}
        classifier_file = torch.load(os.path.join(tmp, "data", "classifier.pt"))

    sets = ("generated", "untrained", "train", "test")
    for name in sets:
        check(data[name].shape == (120, 128), f"{name}: features of shape {data[name].shape}")
        check(data[name + "_images"].shape == (120, 1, 12, 12), f"{name}_images: shape {data[name + '_images'].shape}")

    # 1. The Fréchet distances from the features, by SciPy.
    for key, a, b in (("fid", "generated", "test"), ("fid_floor", "train", "test"),
                      ("fid_untrained", "untrained", "test")):
        ours = frechet(data[a], data[b])
        check(abs(ours - report[key]) <= FID_RTOL * abs(ours),
              f"{key}: eval says {report[key]}, NumPy/SciPy {ours} (relative {abs(ours - report[key]) / ours:.2e})")
        print(f"{key}: eval {report[key]:.6f}, scipy {ours:.6f}")

    # 2. The classifier's features, by PyTorch.
    model = Classifier(1, 12, 3)
    model.load_state_dict(classifier_file["model"], strict=True)
    model.eval()
    with torch.no_grad():
        for name in sets:
            images = torch.from_numpy(data[name + "_images"])
            theirs = model.features(images).numpy()
            scale = max(1.0, float(np.abs(theirs).max()))
            err = float(np.abs(theirs - data[name]).max())
            check(err <= FEATURE_TOL * scale, f"{name}: features differ from PyTorch's by {err} (scale {scale})")
            print(f"{name}: features within {err:.2e} of PyTorch's (scale {scale:.1f})")
        predicted = model.head(torch.from_numpy(data["generated"])).argmax(1).numpy()
    accuracy = float((predicted == data["generated_labels"]).mean())
    check(abs(accuracy - report["class_accuracy"]) < 1e-12,
          f"class accuracy: eval {report['class_accuracy']}, PyTorch {accuracy}")

    # 3. The distance and roughness shares, by NumPy.
    threshold = nearest(data["test_images"], data["train_images"]).max()
    check(abs(threshold - report["far_threshold"]) <= 1e-9 * threshold,
          f"far_threshold: eval {report['far_threshold']}, NumPy {threshold}")
    for key, name in (("far_share", "generated"), ("far_share_untrained", "untrained")):
        share = float((nearest(data[name + "_images"], data["test_images"]) > threshold).mean())
        check(share == report[key], f"{key}: eval {report[key]}, NumPy {share}")
    rough = roughness(data["test_images"]).max()
    for key, name in (("noise_share", "generated"), ("noise_share_untrained", "untrained")):
        share = float((roughness(data[name + "_images"]) > rough).mean())
        check(share == report[key], f"{key}: eval {report[key]}, NumPy {share}")
    check(report["noise_share_untrained"] > 0.5, f"untrained samples are noise, yet noise_share_untrained is "
          f"{report['noise_share_untrained']}")

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("eval's figures match NumPy/SciPy and PyTorch")


if __name__ == "__main__":
    main()
