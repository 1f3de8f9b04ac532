#!/usr/bin/env python3
"""Writes the PyTorch golden values `easel_train::transfer`'s test compares against.

A narrow VGG19 in the Keras/caffe layout (seeded random weights, widths 4, 6, 6, 8, 8), small
content and style images of different sizes, and a point x; PyTorch (float64) evaluates the
objective `easel transfer` minimises (content relu4_2, style relu1_1..relu5_1 with weights 1/5,
per-position Grams, squared TV on 0..255 pixels) and its gradient with respect to x.

    /work/venv/bin/python bench/transfer_torch_golden.py   # from the workspace root

Outputs tests/fixtures/transfer/tiny-vgg19-caffe.safetensors and torch-golden.json.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from transfer_torch import PER_BLOCK, STYLE, CONTENT, Vgg19, gram_per_position  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "transfer")
WIDTHS = [4, 6, 6, 8, 8]
ALPHA, BETA, GAMMA = 100.0, 1e5, 1e-6  # each term contributes a similar share


def main():
    torch.manual_seed(7)
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    c_in = 3
    for b, n in enumerate(PER_BLOCK, start=1):
        for c in range(1, n + 1):
            o = WIDTHS[b - 1]
            # He-like scale, and the input layer scaled for 0..255 pixels as the real network is.
            k = (2.0 / (c_in * 9)) ** 0.5 * (1 / 60 if (b, c) == (1, 1) else 1.0)
            tensors[f"block{b}_conv{c}.weight"] = (torch.randn(o, c_in, 3, 3) * k).float()
            tensors[f"block{b}_conv{c}.bias"] = (torch.randn(o) * 0.1).float()
            c_in = o
    weights = os.path.join(OUT, "tiny-vgg19-caffe.safetensors")
    save_file(tensors, weights)

    vgg = Vgg19(weights)
    # float64 for the reference arithmetic (the weights are float32 values).
    vgg.convs = [[(w.double(), bias.double()) for (w, bias) in block] for block in vgg.convs]

    def img(h, w):
        return (torch.rand(1, 3, h, w, dtype=torch.float64) * 2 - 1)

    content, style, x0 = img(20, 24), img(28, 18), img(20, 24)
    mean = torch.tensor([123.68, 116.779, 103.939], dtype=torch.float64).view(1, 3, 1, 1)
    import transfer_torch
    transfer_torch.CAFFE_MEAN_RGB = mean

    with torch.no_grad():
        p = vgg.features(content, {CONTENT})[CONTENT]
        sf = vgg.features(style, set(STYLE))
        targets = {k: gram_per_position(v) for k, v in sf.items()}
    x = x0.clone().requires_grad_(True)
    f = vgg.features(x, set(STYLE + [CONTENT]))
    c_loss = 0.5 * (f[CONTENT] - p).pow(2).sum()
    s_loss = 0.0
    for k in STYLE:
        n = f[k].shape[1]
        s_loss = s_loss + (gram_per_position(f[k]) - targets[k]).pow(2).sum() / (4 * n * n) / len(STYLE)
    px = x * 127.5
    a = px[:, :, :-1, :-1] - px[:, :, 1:, :-1]
    b = px[:, :, :-1, :-1] - px[:, :, :-1, 1:]
    tv = (a * a + b * b).sum()
    total = ALPHA * c_loss + BETA * s_loss + GAMMA * tv
    total.backward()

    flat = lambda t: t.detach().reshape(-1).tolist()
    golden = {
        "about": "bench/transfer_torch_golden.py: PyTorch float64 objective of easel transfer",
        "alpha": ALPHA, "beta": BETA, "gamma": GAMMA,
        "content_layers": [CONTENT], "style_layers": STYLE,
        "content": {"shape": list(content.shape), "data": flat(content)},
        "style": {"shape": list(style.shape), "data": flat(style)},
        "x": {"shape": list(x0.shape), "data": flat(x0)},
        "loss": {"total": total.item(), "content": c_loss.item(), "style": s_loss.item(), "tv": tv.item()},
        "grad": flat(x.grad),
    }
    with open(os.path.join(OUT, "torch-golden.json"), "w") as fh:
        json.dump(golden, fh)
    print(golden["loss"])


if __name__ == "__main__":
    main()
