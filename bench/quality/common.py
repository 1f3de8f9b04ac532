"""Shared pieces of the PyTorch reference trainers in bench/quality/.

Every trainer here mirrors one easel recipe (networks, initialisation, losses, optimisers, data
preprocessing, steps) so that `easel eval FOLDER --against RECIPE` scores its samples with exactly
the extractor and protocol used for easel's own runs. See bench/quality/README.md.

Data follow easel's `[data]` table: images in [-1, 1] (x / 127.5 - 1); `pad` zero-pads (pixel
value 0) that many pixels per side after resizing the source to `image_size - 2 * pad`; batches
are drawn from an epoch-shuffled order with the last partial batch dropped (easel's loader, like
`DataLoader(shuffle=True, drop_last=True)`).
"""

import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    _zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{root}: no {stem}[.gz] (point --data at the MNIST idx files)")


def to_range(x_uint8):
    """uint8 [N, C, H, W] → float32 in [-1, 1], as easel (x / 127.5 - 1)."""
    return torch.from_numpy(x_uint8.astype(np.float32) / 127.5 - 1.0)


def resize_pad(x, image_size, pad):
    """Resize [N, C, H, W] in [-1, 1] to image_size - 2·pad (bilinear with antialias, like
    torchvision's Resize / easel's triangle filter; identity at the native size) and zero-pad
    (value −1 in [-1, 1]) to image_size."""
    inner = image_size - 2 * pad
    if x.shape[-1] != inner or x.shape[-2] != inner:
        x = F.interpolate(x, size=(inner, inner), mode="bilinear", antialias=True, align_corners=False)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    return x


def load_mnist(root, split="train", image_size=32, pad=2):
    """MNIST idx(.gz) files in `root` → (images [N, 1, S, S] in [-1, 1], labels [N] int64)."""
    prefix = "train" if split == "train" else "t10k"
    imgs = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    x = to_range(imgs[:, None, :, :])
    return resize_pad(x, image_size, pad), torch.from_numpy(labels.astype(np.int64))


def load_folder(root, image_size, channels):
    """A folder of PNG/JPEG images (optionally one subfolder per class) → (images, labels or None).
    Shorter side resized to image_size then centre-cropped, as easel's folder reader."""
    exts = (".png", ".jpg", ".jpeg")
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files, labels = [], []
    if subdirs:
        for k, d in enumerate(subdirs):
            for f in sorted(os.listdir(os.path.join(root, d))):
                if f.lower().endswith(exts):
                    files.append(os.path.join(root, d, f))
                    labels.append(k)
    else:
        files = [os.path.join(root, f) for f in sorted(os.listdir(root)) if f.lower().endswith(exts)]
    if not files:
        raise FileNotFoundError(f"{root}: no PNG/JPEG images")
    mode = "L" if channels == 1 else "RGB"
    out = []
    for p in files:
        im = Image.open(p).convert(mode)
        w, h = im.size
        s = image_size / min(w, h)
        if (w, h) != (image_size, image_size):
            im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
        a = np.asarray(im, dtype=np.uint8)
        out.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
    x = to_range(np.stack(out))
    return x, (torch.tensor(labels) if subdirs else None)


class Batches:
    """Endless batches of indices: each epoch a fresh permutation from a seeded generator, the
    last partial batch dropped."""

    def __init__(self, n, batch_size, seed):
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the {n} images")
        self.n, self.b = n, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.g), 0

    def next(self):
        if self.pos + self.b > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
        idx = self.perm[self.pos : self.pos + self.b]
        self.pos += self.b
        return idx


def to_uint8(x):
    """[N, C, H, W] in [-1, 1] → uint8 HWC arrays, rounded as easel's sample writer
    ((x + 1) · 127.5, clamped)."""
    y = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def write_samples(out_dir, images, grid_n=64):
    """Writes every image as `out_dir/samples/NNNNNN.png` (the folder `easel eval` scores) and the
    first `grid_n` as `out_dir/grid.png`."""
    d = os.path.join(out_dir, "samples")
    os.makedirs(d, exist_ok=True)
    arr = to_uint8(images)
    for i, a in enumerate(arr):
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(os.path.join(d, f"{i:06d}.png"))
    n = min(grid_n, len(arr))
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, c = arr.shape[1:]
    grid = np.zeros((rows * (h + 2) + 2, cols * (w + 2) + 2, c), np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + q * (w + 2) : 2 + q * (w + 2) + w] = arr[i]
    Image.fromarray(grid[:, :, 0] if c == 1 else grid).save(os.path.join(out_dir, "grid.png"))


def base_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True, help="MNIST idx folder (or image folder for --source folder)")
    p.add_argument("--out", required=True, help="output folder: samples/, grid.png, meta.json, log.jsonl")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=2000, help="generator updates")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=10000, help="samples written at the end")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--log-every", type=int, default=100)
    return p


class Log:
    """Console lines and `out/log.jsonl`, and `out/meta.json` at the end (wall time, load)."""

    def __init__(self, out_dir, args):
        os.makedirs(out_dir, exist_ok=True)
        self.out, self.args = out_dir, args
        self.f = open(os.path.join(out_dir, "log.jsonl"), "w")
        self.t0 = time.time()
        self.load0 = os.getloadavg()

    def step(self, step, **scalars):
        rec = {"step": step, "time": round(time.time() - self.t0, 2), **{k: float(v) for k, v in scalars.items()}}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()), flush=True)

    def finish(self, **extra):
        meta = {
            "args": vars(self.args),
            "train_seconds": round(time.time() - self.t0, 1),
            "load_before": self.load0,
            "load_after": os.getloadavg(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            **extra,
        }
        with open(os.path.join(self.out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        self.f.close()
