"""Markdown rows of the side-by-side quality table from the reports `bench/quality/run.sh` wrote.

Usage: python3 bench/quality/table.py OUT [KIND...]

Per KIND and variant: mean ± sample standard deviation over seeds of FID, KID (×10³ as easel
reports it), precision, recall, modes and KL(class histogram ‖ uniform), with the seeds' FIDs
listed and the mean training wall time (from metrics.jsonl / meta.json).
Variants: `easel + EMA` (the run's weight average, what `easel eval` measures by default),
`easel` (`--raw`: the trained generator), `easel, batch BN` (the trained generator sampled with
batch statistics, `sample_bn = "batch"`), `PyTorch` (reference samples drawn with running
batch-norm statistics, eval mode, as easel samples), `PyTorch, batch BN` (the reference with
batch statistics, what pytorch/examples' script shows).
"""

import glob
import json
import os
import re
import statistics
import sys


def stats(xs):
    if not xs:
        return "–"
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return m, s


def fmt(xs, digits=1):
    if not xs:
        return "–"
    m, s = stats(xs)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def wall_easel(run):
    try:
        last = open(os.path.join(run, "metrics.jsonl")).read().strip().splitlines()
        for line in reversed(last):
            v = json.loads(line)
            if "train_seconds" in v:
                return v["train_seconds"]
    except OSError:
        pass
    return None


def wall_ref(run):
    try:
        return json.load(open(os.path.join(run, "meta.json")))["train_seconds"]
    except OSError:
        return None


VARIANTS = [
    ("easel + EMA", "easel", "quality.json", wall_easel, True),
    ("easel", "easel", "quality-raw.json", wall_easel, False),
    ("easel, batch BN", "easel", "quality-batch.json", wall_easel, None),
    ("PyTorch", "ref", "quality.json", wall_ref, None),
    ("PyTorch, batch BN", "ref", "quality-batch.json", wall_ref, None),
]


def rows(out, kind):
    lines = []
    for label, side, report, wall, ema in VARIANTS:
        runs = sorted(glob.glob(os.path.join(out, f"{side}-{kind}-s*")))
        runs = [r for r in runs if os.path.isdir(r)]
        vals, seeds, walls = [], [], []
        for r in runs:
            p = os.path.join(r, report)
            has_ema = os.path.exists(os.path.join(r, "final", "generator_ema.safetensors"))
            if ema is True and not has_ema:
                continue
            if ema is False and not has_ema:  # a run without an average: quality.json is raw
                p = os.path.join(r, "quality.json")
            if not os.path.exists(p):
                continue
            vals.append(json.load(open(p))["values"])
            seeds.append(re.search(r"-s(\d+)$", r).group(1))
            w = wall(r)
            if w:
                walls.append(w)
        if not vals:
            continue
        g = lambda k: [v[k] for v in vals if k in v]
        fids = ", ".join(f"{v['fid']:.1f}" for v in vals)
        secs = f"{statistics.mean(walls):.0f}" if walls else "–"
        lines.append(
            f"| {kind} | {label} | {len(vals)} ({', '.join(seeds)}) | **{fmt(g('fid'))}** ({fids}) | "
            f"{fmt(g('kid'), 0)} | {fmt(g('precision'), 3)} | {fmt(g('recall'), 3)} | "
            f"{fmt(g('modes'), 1)} | {fmt(g('modes_kl'), 3)} | {secs} |"
        )
    return lines


def main():
    out = sys.argv[1]
    kinds = sys.argv[2:] or ["dcgan", "cgan", "sngan", "wgan", "wgan-gp", "lapgan", "quickstart"]
    print("| recipe | trainer | seeds | FID (per seed) | KID ×10³ | precision | recall | modes | KL to uniform | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in kinds:
        for line in rows(out, k):
            print(line)


if __name__ == "__main__":
    main()
