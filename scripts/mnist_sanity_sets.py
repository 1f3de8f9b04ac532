"""Writes the image folders of the metrics sanity check (issue 5, "Done when" point 2).

    python scripts/mnist_sanity_sets.py ../shared/data/mnist data/sanity-mnist [--n 10000] [--seed 0]

From MNIST's training idx files in MNIST_DIR (gzipped or not) it writes three folders of 28×28
8-bit greyscale PNGs under OUT:

- ``train-N/``: N training images, a uniformly random subset drawn with ``--seed`` (the pixels are
  copied exactly: PNG is lossless and MNIST is 8-bit, so easel reads the same values as from the
  idx file);
- ``shuffled-N/``: the same N images, each with its 784 pixels put in an independent random
  order (same intensity histogram, no strokes);
- ``noise-N/``: N images of independent uniform noise, every pixel uniform on {0, …, 255}.

Compare each with the test split through `easel eval FOLDER --against recipes/classifier-mnist.toml
--set data.split=test …` (the commands are in bench/results-metrics.md). Needs numpy only.
"""

import argparse
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np


def read_idx_images(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise SystemExit(f"{path}: not an idx image file (magic {magic}, expected 2051)")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h, w)


def find_train_images(mnist_dir: Path) -> Path:
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        p = mnist_dir / name
        if p.exists():
            return p
    raise SystemExit(
        f"{mnist_dir}: no train-images-idx3-ubyte(.gz) (see data/README.md for MNIST's files)"
    )


def png_grey(img: np.ndarray) -> bytes:
    """A minimal 8-bit greyscale PNG (no filter) of a 2-d uint8 array."""
    h, w = img.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def write_folder(out: Path, images: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        (out / f"{i:05d}.png").write_bytes(png_grey(img))
    print(f"wrote {len(images)} images to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mnist_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    train = read_idx_images(find_train_images(a.mnist_dir))
    rng = np.random.default_rng(a.seed)
    idx = np.sort(rng.choice(len(train), size=a.n, replace=False))
    subset = train[idx]
    flat = subset.reshape(a.n, -1)
    shuffled = np.stack([row[rng.permutation(row.size)] for row in flat]).reshape(subset.shape)
    noise = rng.integers(0, 256, size=subset.shape, dtype=np.uint8)

    write_folder(a.out / f"train-{a.n}", subset)
    write_folder(a.out / f"shuffled-{a.n}", shuffled)
    write_folder(a.out / f"noise-{a.n}", noise)
    np.savetxt(a.out / f"train-{a.n}-indices.txt", idx, fmt="%d")


if __name__ == "__main__":
    main()
