#!/usr/bin/env python3
"""PyTorch CPU reference for `easel transfer`: the same VGG19 + Gatys loss step, timed.

Loads the same safetensors weights easel uses (Keras/caffe layout: blockB_convC, BGR 0..255
minus the ImageNet mean), builds VGG19's convolutional part up to relu5_1, and evaluates the
objective easel minimises with its defaults:

    L = alpha * 1/2 sum (F_relu4_2 - P)^2
      + beta * sum_l 1/5 * sum (F_l F_l^T / M_l - A_l)^2 / (4 N_l^2),  l = relu1_1 .. relu5_1

on chelsea resized to the same size easel uses (longest side S, Lanczos), starting from the
content image. It times (1) one forward + backward of the loss ("eval"), (2) one Adam iteration,
(3) one torch.optim.LBFGS iteration (strong Wolfe; max_iter=1), each after warm-up, and also
prints the loss at the content image so the two implementations can be checked against each
other (easel's log has it as iteration 0).

Usage (threads default to the machine's cores, as easel's rayon pool):
    /work/venv/bin/python bench/transfer_torch.py --vgg ../shared/weights/vgg19_features_caffe_bgr_f32.safetensors \
        --content ../shared/images/content/skimage-chelsea.png \
        --style ../shared/images/style/opencv-starry_night.jpg --sizes 256,512 --reps 5
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

CAFFE_MEAN_RGB = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)
PER_BLOCK = [2, 2, 4, 4, 4]


def load_image(path, side):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w >= h:
        size = (side, max(1, round(h * side / w)))
    else:
        size = (max(1, round(w * side / h)), side)
    img = img.resize(size, Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()  # [1, 3, H, W] in [-1, 1]


class Vgg19:
    def __init__(self, path):
        t = load_file(path)
        self.convs = []
        for b, n in enumerate(PER_BLOCK, start=1):
            block = []
            for c in range(1, n + 1):
                w = t[f"block{b}_conv{c}.weight"]
                if b == 1 and c == 1:
                    w = w.flip(1)  # BGR -> RGB input channels
                block.append((w.contiguous(), t[f"block{b}_conv{c}.bias"]))
            self.convs.append(block)

    def features(self, x, taps):
        """taps: set of names like relu4_2; returns dict name -> activation."""
        out = {}
        x = x * 127.5 + (127.5 - CAFFE_MEAN_RGB)
        deepest = max((int(n[4]), int(n[6])) for n in taps)
        for b, block in enumerate(self.convs, start=1):
            for c, (w, bias) in enumerate(block, start=1):
                x = F.relu(F.conv2d(x, w, bias, padding=1))
                name = f"relu{b}_{c}"
                if name in taps:
                    out[name] = x
                if (b, c) == deepest:
                    return out
            x = F.max_pool2d(x, 2, 2)
        return out


def gram_per_position(f):
    _, n, h, w = f.shape
    f = f.reshape(n, h * w)
    return f @ f.t() / (h * w)


STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT = "relu4_2"


def make_loss(vgg, content, style, alpha, beta):
    taps = set(STYLE + [CONTENT])
    with torch.no_grad():
        p = vgg.features(content, {CONTENT})[CONTENT]
        sf = vgg.features(style, set(STYLE))
        targets = {k: gram_per_position(v) for k, v in sf.items()}

    def loss(x):
        f = vgg.features(x, taps)
        c = 0.5 * (f[CONTENT] - p).pow(2).sum()
        s = 0.0
        for k in STYLE:
            n = f[k].shape[1]
            s = s + (gram_per_position(f[k]) - targets[k]).pow(2).sum() / (4 * n * n) / len(STYLE)
        return alpha * c + beta * s, c, s

    return loss


def timeit(fn, reps):
    """Median and minimum seconds of `reps` calls after two warm-up calls (the minimum is the
    better estimate of the unloaded speed on a shared machine)."""
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vgg", required=True)
    ap.add_argument("--content", required=True)
    ap.add_argument("--style", required=True)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=1e3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vgg = Vgg19(a.vgg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    for side in [int(s) for s in a.sizes.split(",")]:
        content = load_image(a.content, side)
        style = load_image(a.style, side)
        loss = make_loss(vgg, content, style, a.alpha, a.beta)
        x = content.clone().requires_grad_(True)
        total, c, s = loss(x)
        print(f"{side}px {tuple(content.shape[2:])}: loss at the content image: total {total.item():.6e} "
              f"content {c.item():.6e} style {s.item():.6e}")

        def eval_step():
            x.grad = None
            t, _, _ = loss(x)
            t.backward()

        t_eval = timeit(eval_step, a.reps)

        xa = content.clone().requires_grad_(True)
        adam = torch.optim.Adam([xa], lr=0.02)

        def adam_step():
            adam.zero_grad()
            t, _, _ = loss(xa)
            t.backward()
            adam.step()
            with torch.no_grad():
                xa.clamp_(-1, 1)

        t_adam = timeit(adam_step, a.reps)

        xl = content.clone().requires_grad_(True)
        lbfgs = torch.optim.LBFGS([xl], lr=1, max_iter=1, history_size=10, line_search_fn="strong_wolfe")
        evals = [0]

        def closure():
            evals[0] += 1
            lbfgs.zero_grad()
            t, _, _ = loss(xl)
            t.backward()
            return t

        def lbfgs_step():
            lbfgs.step(closure)

        # Warm up past the first (tiny, 1/|g|) step so the timed iterations are typical ones.
        lbfgs_step()
        evals[0] = 0
        t_lbfgs = timeit(lbfgs_step, a.reps)
        n_evals = evals[0] / (a.reps + 2)
        fmt = lambda t: f"{t[0]:.3f} (min {t[1]:.3f})"
        print(f"torch {side}px: eval (forward+backward) {fmt(t_eval)} s | Adam {fmt(t_adam)} s/iter | "
              f"L-BFGS {fmt(t_lbfgs)} s/iter ({n_evals:.2f} evals/iter)")


if __name__ == "__main__":
    main()
