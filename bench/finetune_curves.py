"""Steps-to-quality of style fine-tuning vs training from scratch (issue 8, point 3).

Reads the `metrics.jsonl` of two style runs on the same painting and settings — one started from
another style network (`model.init_from`), one from scratch — smooths the weighted style loss
with a running mean over WINDOW logged values (the loss of one batch of random crops is noisy),
prints both curves side by side, and the first step at which each run's smoothed style loss
reaches the scratch run's final smoothed value.

    python3 bench/finetune_curves.py FINETUNE_RUN SCRATCH_RUN [WINDOW]
"""
import json
import os
import sys


def curve(run, key="style"):
    pts = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            if key in d and "step" in d:
                pts.append((d["step"], d[key]))
    return pts


def smooth(pts, window):
    out = []
    for i in range(len(pts)):
        lo = max(0, i - window + 1)
        vals = [v for _, v in pts[lo : i + 1]]
        out.append((pts[i][0], sum(vals) / len(vals)))
    return out


def first_reaching(pts, target):
    for step, v in pts:
        if v <= target:
            return step
    return None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ft_run, sc_run = sys.argv[1], sys.argv[2]
    window = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    ft, sc = smooth(curve(ft_run), window), smooth(curve(sc_run), window)
    if not ft or not sc:
        sys.exit("no `style` values in one of the runs' metrics.jsonl")
    target = sc[-1][1]
    print(f"smoothed (running mean of {window} logged values) weighted style loss")
    print(f"{'step':>6} | {'fine-tune':>10} | {'scratch':>10}")
    ftd, scd = dict(ft), dict(sc)
    last = min(ft[-1][0], sc[-1][0])
    marks = sorted({s for s, _ in sc if s <= last} & {s for s, _ in ft})
    stride = max(1, len(marks) // 12)
    for s in marks[::stride] + ([marks[-1]] if marks and marks[-1] not in marks[::stride] else []):
        print(f"{s:>6} | {ftd[s]:>10.4g} | {scd[s]:>10.4g}")
    print(f"scratch: final smoothed style loss {target:.4g} at step {sc[-1][0]}")
    print(f"fine-tune reaches it at step {first_reaching(ft, target)}; "
          f"scratch at step {first_reaching(sc, target)}")


if __name__ == "__main__":
    main()
