#!/usr/bin/env python3
"""Load one TensorBoard event file with TensorBoard's own EventAccumulator and
print what it sees as JSON on stdout.

Usage: tensorboard_roundtrip.py EVENT_FILE

Output:
  {
    "scalars":    {tag: [[step, value], ...]},
    "images":     {tag: [[step, width, height, decoded], ...]},
    "histograms": {tag: [[step, min, max, num, sum, sum_squares,
                          bucket_limit, bucket, n_compressed], ...]}
  }
where width/height are those of the Summary.Image as TensorBoard reports
them and `decoded` is {"width", "height", "channels", "sha256", "pixels"}
from decoding the PNG itself (pixels: the raw row-major HWC bytes in the
PNG's own channel layout, as a list when there are at most 65536 of them,
else null; sha256 is always of those raw bytes). PNGs are decoded by a small
pure-Python decoder (8-bit, non-interlaced), cross-checked against Pillow when
Pillow is installed.

Exit status 3 (with a message on stderr) if the `tensorboard` package cannot
be imported, so callers can tell "not available" apart from a failure.
"""

import hashlib
import json
import struct
import sys
import zlib

try:
    from tensorboard.backend.event_processing import event_accumulator as ea
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"tensorboard python package not available: {e}", file=sys.stderr)
    sys.exit(3)


CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels


def decode_png(data):
    """Decode an 8-bit non-interlaced PNG (gray, RGB, gray+alpha, RGBA) into
    (width, height, channels, raw HWC bytes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    idat = b""
    width = height = channels = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(ctype + body) != crc:
            raise ValueError(f"bad CRC in PNG chunk {ctype!r}")
        pos += 12 + length
        if ctype == b"IHDR":
            width, height, depth, color, _comp, _filt, interlace = struct.unpack(
                ">IIBBBBB", body
            )
            if depth != 8 or interlace != 0 or color not in CHANNELS:
                raise ValueError(
                    f"unsupported PNG: depth {depth}, colour {color}, interlace {interlace}"
                )
            channels = CHANNELS[color]
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
    raw = zlib.decompress(idat)
    bpp = channels
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    p = 0
    for _ in range(height):
        ftype = raw[p]
        line = bytearray(raw[p + 1 : p + 1 + stride])
        p += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                raise ValueError(f"bad PNG filter type {ftype}")
            line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return width, height, channels, bytes(out)


def cross_check_with_pillow(png, width, height, channels, raw):
    try:
        import io

        from PIL import Image
    except ImportError:
        return
    img = Image.open(io.BytesIO(png))
    img.load()
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if img.size != (width, height) or img.mode != mode or img.tobytes() != raw:
        raise ValueError(
            f"Pillow disagrees: {img.size} {img.mode} vs {(width, height)} {mode}"
        )


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    guidance = {
        ea.COMPRESSED_HISTOGRAMS: 0,
        ea.IMAGES: 0,
        ea.AUDIO: 0,
        ea.SCALARS: 0,
        ea.HISTOGRAMS: 0,
        ea.TENSORS: 0,
    }
    acc = ea.EventAccumulator(sys.argv[1], size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()
    result = {"scalars": {}, "images": {}, "histograms": {}}
    for tag in tags.get(ea.SCALARS, []):
        result["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags.get(ea.IMAGES, []):
        rows = []
        for e in acc.Images(tag):
            png = e.encoded_image_string
            w, h, c, raw = decode_png(png)
            cross_check_with_pillow(png, w, h, c, raw)
            decoded = {
                "width": w,
                "height": h,
                "channels": c,
                "sha256": hashlib.sha256(raw).hexdigest(),
                "pixels": list(raw) if len(raw) <= 65536 else None,
            }
            rows.append([e.step, e.width, e.height, decoded])
        result["images"][tag] = rows
    for tag in tags.get(ea.HISTOGRAMS, []):
        compressed = {e.step: len(e.compressed_histogram_values) for e in acc.CompressedHistograms(tag)}
        rows = []
        for e in acc.Histograms(tag):
            v = e.histogram_value
            rows.append(
                [
                    e.step,
                    v.min,
                    v.max,
                    v.num,
                    v.sum,
                    v.sum_squares,
                    list(v.bucket_limit),
                    list(v.bucket),
                    compressed.get(e.step, 0),
                ]
            )
        result["histograms"][tag] = rows
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
