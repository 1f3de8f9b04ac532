"""Independent check of an `easel eval --extractor pixels` FID on real files (numpy/scipy only).

    python scripts/pixel_fid_check.py FOLDER MNIST_DIR [--n N] [--easel-json REPORT.json]

Reads the first N PNGs of FOLDER (sorted by name, as easel's folder reader does) and MNIST's
test split from MNIST_DIR, maps bytes to [-1, 1] (x / 127.5 - 1, as easel's readers), and
computes the Fréchet distance of the flattened pixels two ways:

- pytorch-fid's `calculate_frechet_distance` (np.cov, scipy.linalg.sqrtm of Σ1·Σ2, real part);
  MNIST's pixel covariances are singular (constant border pixels), where sqrtm is known to be
  inaccurate, so it is printed for comparison only;
- the exact route for positive semi-definite matrices with LAPACK (numpy.linalg.eigh):
  Tr((Σ1^½ Σ2 Σ1^½)^½), the number easel's own eigensolver must reproduce.

With --easel-json, compares with the `fid` value of that report and exits non-zero when the
relative difference exceeds 1e-6.
"""

import argparse
import gzip
import json
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import linalg


def mnist_test(mnist_dir: Path) -> np.ndarray:
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        p = mnist_dir / name
        if p.exists():
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rb") as f:
                data = f.read()
            _, n, h, w = struct.unpack(">IIII", data[:16])
            return np.frombuffer(data, np.uint8, offset=16).reshape(n, h * w)
    raise SystemExit(f"{mnist_dir}: no t10k-images-idx3-ubyte(.gz)")


def folder(path: Path, n: int) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")[:n]
    return np.stack([np.asarray(Image.open(p).convert("L")).reshape(-1) for p in files])


def stats(x: np.ndarray):
    x = x.astype(np.float64) / 127.5 - 1.0
    return x.mean(0), np.cov(x, rowvar=False)


def fid_pytorch(mu1, s1, mu2, s2, eps=1e-6):
    """pytorch-fid 0.3's calculate_frechet_distance."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # "Matrix is singular", and `disp` deprecated in SciPy 1.16
        warnings.simplefilter("ignore")
        covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def fid_exact(mu1, s1, mu2, s2):
    lam, v = np.linalg.eigh(s1)
    f = v * np.sqrt(np.clip(lam, 0, None))
    mu = np.linalg.eigvalsh(f.T @ s2 @ f)
    tol = len(mu) * np.finfo(float).eps * np.abs(mu).max()
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(mu[mu > tol]).sum()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("mnist_dir", type=Path)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--easel-json", type=Path)
    a = ap.parse_args()
    mu1, s1 = stats(folder(a.folder, a.n))
    mu2, s2 = stats(mnist_test(a.mnist_dir))
    exact = fid_exact(mu1, s1, mu2, s2)
    print(f"pixel FID, exact (eigh):        {exact:.10g}")
    print(f"pixel FID, pytorch-fid (sqrtm): {fid_pytorch(mu1, s1, mu2, s2):.10g}")
    if a.easel_json:
        got = json.loads(a.easel_json.read_text())["values"]["fid"]
        rel = abs(got - exact) / abs(exact)
        print(f"easel:                          {got:.10g} (relative difference {rel:.2e})")
        if rel > 1e-6:
            sys.exit(1)


if __name__ == "__main__":
    main()
