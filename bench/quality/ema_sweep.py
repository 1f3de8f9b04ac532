"""Weight averages of one easel GAN run computed offline from its checkpoints, to choose the
schedule of `model.ema_decay` by measurement (BENCHMARKS.md, "Issue 15").

Train a run that keeps a checkpoint every K steps, e.g.
  easel train recipes/dcgan-mnist.toml --set data.dir=../shared/data/mnist --set seed=1 \
      --set train.checkpoint_every=10 --set train.keep_last=1000 --run-dir runs/ema-snap-s1
then
  python bench/quality/ema_sweep.py runs/ema-snap-s1 OUT_DIR
writes one model folder per schedule into OUT_DIR (the run's final/ recipe with
`sample_bn = "batch"`, since the averaged weights have no running statistics of their own, and
the averaged `generator.safetensors`), which `easel eval` scores like any run.

The snapshots are K steps apart, so an exponential average with per-step factor β becomes one
with β^K per snapshot (exact when the weights move linearly within a block; K = 10 against
averaging windows of 100+ steps). The `tf-0.999` schedule is the one easel runs
(β_t = min(0.999, (1 + t)/(10 + t))): comparing it with the run's own `generator_ema` checks the
approximation.
"""

import json
import math
import os
import re
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def snapshots(run):
    d = os.path.join(run, "checkpoints")
    steps = sorted(int(m.group(1)) for n in os.listdir(d) if (m := re.match(r"step-(\d+)$", n)))
    return [(s, os.path.join(d, f"step-{s:08d}", "generator.safetensors")) for s in steps]


def trainable(t):
    return {k: v.astype(np.float64) for k, v in t.items() if not re.search(r"running_|num_batches", k)}


def schedules():
    # name → function(step_from, step_to) giving the factor on the old average over that block.
    def tf(decay):
        def f(a, b):
            return math.prod(min(decay, (1 + t) / (10 + t)) for t in range(a, b))
        return f

    def const(beta):
        return lambda a, b: beta ** (b - a)

    out = {f"tf-{d}": (tf(d), False) for d in (0.95, 0.98, 0.99, 0.995, 0.999)}
    out.update({f"const-{b}-bias-corrected": (const(b), True) for b in (0.998, 0.999, 0.9995)})
    return out


def main():
    run, out = sys.argv[1], sys.argv[2]
    snaps = snapshots(run)
    final = os.path.join(run, "final")
    template = load_file(os.path.join(final, "generator.safetensors"))
    os.makedirs(out, exist_ok=True)
    report = {}
    for name, (factor, bias_correct) in schedules().items():
        ema, weight, prev = None, 0.0, 0
        for step, path in snaps:
            g = trainable(load_file(path))
            f = factor(prev, step)
            if ema is None:
                # Before the first snapshot: easel starts the average from the initial weights;
                # the block's factor applied to the first snapshot stands for them.
                ema = {k: v.copy() for k, v in g.items()}
                weight = 1 - f if bias_correct else 1.0
            else:
                ema = {k: f * ema[k] + (1 - f) * g[k] for k in ema}
                weight = f * weight + (1 - f) if bias_correct else 1.0
            prev = step
        avg = {k: (v / weight if bias_correct else v) for k, v in ema.items()}
        tensors = {k: (avg[k].astype(np.float32) if k in avg else v) for k, v in template.items()}
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for f in ("state.json", "optimizer.safetensors"):
            shutil.copy(os.path.join(final, f), d)
        with open(os.path.join(final, "recipe.toml")) as src, open(os.path.join(d, "recipe.toml"), "w") as dst:
            dst.write(src.read().replace('sample_bn = "eval"', 'sample_bn = "batch"'))
        save_file(tensors, os.path.join(d, "generator.safetensors"))
        if name == "tf-0.999" and os.path.exists(os.path.join(final, "generator_ema.safetensors")):
            real = load_file(os.path.join(final, "generator_ema.safetensors"))
            diff = max(float(np.abs(real[k] - tensors[k]).max()) for k in avg)
            scale = max(float(np.abs(real[k]).max()) for k in avg)
            report["tf-0.999 vs the run's generator_ema: max |Δw|"] = diff
            report["largest |w|"] = scale
        print(name, "written", flush=True)
    with open(os.path.join(out, "check.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
