"""The finest-level images of an `easel sample` LAPGAN sheet as a grid (issue 4 quality checks).

`easel sample RUN` on a LAPGAN writes one row per sample with every pyramid level side by side
(coarse to fine); this keeps only the last column and lays the samples out COLS per row, scaled
×SCALE (nearest). For a class-conditional model `--n 80` gives 8 samples of each class in class
order, so COLS = 8 makes one row per class.

    /work/venv/bin/python bench/lapgan_grid.py SHEET.png OUT.png [COLS] [LEVELS] [SCALE]
"""
import sys

import numpy as np
from PIL import Image


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sheet, out = sys.argv[1], sys.argv[2]
    cols = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    levels = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    scale = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    im = np.array(Image.open(sheet).convert("L"))
    tw = im.shape[1] // levels  # tile width (image + padding)
    rows = im.shape[0] // tw
    tiles = [im[r * tw:(r + 1) * tw, (levels - 1) * tw:levels * tw] for r in range(rows)]
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                 Image.NEAREST).save(out)
    print(f"{len(tiles)} tiles of {tw}px → {out}")


if __name__ == "__main__":
    main()
