"""Stylising one 512×512 image: easel vs PyTorch CPU, the same TransformerNet (issue 8).

PyTorch: pytorch/examples' TransformerNet (tests/fixtures/make_style_sr_fixture.py holds the same
class), full size (32, 64, 128; 5 blocks), forward of a [1, 3, 512, 512] tensor under
torch.no_grad(), median of REPS after one warm-up, torch.get_num_threads() threads.

easel: `easel stylize MODEL IMG×k --device cpu --quiet` for k = 1 and k = 1 + REPS copies of a
512×512 PNG; (t(1 + REPS) − t(1)) / REPS is the per-image time with the process start, model
load and (first-image) warm-up subtracted; it still includes PNG decode/encode (a few ms).

    /work/venv/bin/python bench/style_speed.py RUN_OR_MODEL_DIR [REPS]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
from make_style_sr_fixture import TransformerNet  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EASEL = os.path.join(ROOT, "target", "release", "easel")


def main():
    model = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    net = TransformerNet().eval()
    x = torch.rand(1, 3, 512, 512) * 255
    times = []
    with torch.no_grad():
        net(x)
        for _ in range(reps):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    torch_s = statistics.median(times)

    d = tempfile.mkdtemp()
    img = (np.random.rand(512, 512, 3) * 255).astype(np.uint8)
    paths = []
    for i in range(reps + 1):
        p = os.path.join(d, f"in{i}.png")
        Image.fromarray(img).save(p)
        paths.append(p)

    def run(files):
        t0 = time.perf_counter()
        subprocess.run([EASEL, "stylize", model, *files, "--out", os.path.join(d, "out"),
                        "--device", "cpu", "--quiet"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    one = min(run(paths[:1]) for _ in range(2))
    many = run(paths)
    easel_s = (many - one) / reps
    shutil.rmtree(d)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: {torch_s:.3f} s per 512×512 image (median of {reps})")
    print(f"easel stylize: {easel_s:.3f} s per 512×512 image ((t({reps + 1}) − t(1)) / {reps}; t(1) = {one:.2f} s)")
    print(f"ratio easel / torch = {easel_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
