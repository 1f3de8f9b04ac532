"""PyTorch CPU reference for `easel bench dcgan`: the same DCGAN training step, timed the same way.

Networks: pytorch/examples `dcgan/main.py` (ngf = ndf = 64, nz = 100, BatchNorm in training mode,
ReLU / LeakyReLU(0.2) in place, Tanh output), with the discriminator's final Sigmoid replaced by
`BCEWithLogitsLoss` on its logits, as easel does. Two configurations:

- 64×64×3: G  ConvT(nz, 512, 4, 1, 0) → 256 → 128 → 64 → 3 (stride-2 ConvT(4, 2, 1) stages),
  D  mirrors it (Conv(3, 64, 4, 2, 1) → 128 → 256 → 512 → Conv(512, 1, 4, 1, 0));
- 32×32×1: one stride-2 stage fewer: G ConvT(nz, 256, 4, 1, 0) → 128 → 64 → 1, D mirrors it.

One step = easel's `DcganStep::step`: G(z); D on the real batch and on G(z).detach(); one backward
of errD_real + errD_fake; Adam step on D; D on G(z); backward of errG (non-saturating, target 1);
Adam step on G. Adam(lr 2e-4, betas (0.5, 0.999)); batch 64; the real batch is a fixed random
tensor in [-1, 1] (data loading is not measured), noise is drawn every step.

Prints, per configuration, the min / median / max seconds per step and throughput over `--steps`
timed steps after `--warmup` steps, and the forward / backward / optimiser split per step, in the
same format as `easel bench dcgan` (bench/compare.sh parses both).

    python bench/torch_reference.py [--steps 10] [--warmup 2] [--threads 2] [--quick]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn


def generator(nz, ngf, nc, stages):
    # Widths ngf·2^(stages-1) at 4×4, halving every stage down to ngf, then nc.
    c = ngf << (stages - 1)
    layers = [nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
    for _ in range(1, stages):
        layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
        c //= 2
    layers += [nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(ndf, nc, stages):
    layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    c = ndf
    for _ in range(1, stages):
        layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, inplace=True)]
        c *= 2
    layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False)]  # logits; the Sigmoid is in the loss
    return nn.Sequential(*layers)


def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def bench(size, nc, batch, steps, warmup, nz=100, ngf=64, ndf=64):
    stages = {64: 4, 32: 3}[size]
    torch.manual_seed(0)
    g = generator(nz, ngf, nc, stages)
    d = discriminator(ndf, nc, stages)
    g.apply(weights_init)
    d.apply(weights_init)
    g.train()
    d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    real = torch.rand(batch, nc, size, size) * 2 - 1
    ones = torch.ones(batch)
    zeros = torch.zeros(batch)
    times = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    step_secs = []

    def step(record):
        t = [time.perf_counter()]

        def mark(phase):
            now = time.perf_counter()
            if record:
                times[phase] += now - t[0]
            t[0] = now

        z = torch.randn(batch, nz, 1, 1)
        # (1) D: log D(x) + log(1 − D(G(z))).
        fake = g(z)
        d_real = d(real).view(-1)
        d_fake = d(fake.detach()).view(-1)
        loss_d = crit(d_real, ones) + crit(d_fake, zeros)
        mark("forward")
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        mark("backward")
        opt_d.step()
        mark("optimizer")
        # (2) G: log D(G(z)).
        d_fake2 = d(fake).view(-1)
        loss_g = crit(d_fake2, ones)
        mark("forward")
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        mark("backward")
        opt_g.step()
        mark("optimizer")

    for _ in range(warmup):
        step(False)
    for _ in range(steps):
        t0 = time.perf_counter()
        step(True)
        step_secs.append(time.perf_counter() - t0)
    return step_secs, times


def report(label, secs, times, batch):
    n = len(secs)
    med = sorted(secs)[n // 2]  # the same median as easel (upper median for even n)
    total = sum(times.values()) or 1e-12
    pct = lambda x: 100.0 * x / total
    print(label)
    print(f"  step time  min {min(secs):.3f} s  median {med:.3f} s  max {max(secs):.3f} s  ({n} steps)")
    print(f"  throughput {batch / med:.1f} images/s  ({1 / med:.3f} steps/s) at the median")
    f, b, o = times["forward"], times["backward"], times["optimizer"]
    print(
        f"  split      forward {f / n:.3f} s ({pct(f):.0f}%)  backward {b / n:.3f} s ({pct(b):.0f}%)"
        f"  optimiser {o / n:.3f} s ({pct(o):.0f}%)  per step"
    )


def sgemm(threads, reps=5):
    """torch.mm GFLOP/s on the (m, n, k) shapes easel's `conv_bench --sgemm` times."""
    print(f"sgemm | torch {torch.__version__} mm f32 | median of {reps} | GFLOP/s")
    for m, n, k in [(2048, 2048, 2048), (128, 256, 1024), (256, 256, 2048), (2048, 256, 256)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        inner = max(1, round(1e10 / (m * n * k)))
        rates = []
        for t in (1, threads):
            torch.set_num_threads(t)
            a @ b
            v = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(inner):
                    a @ b
                v.append((time.perf_counter() - t0) / inner)
            rates.append(2 * m * n * k / statistics.median(v) / 1e9)
        print(f"  {m:>4} × {n:>4} × {k:>4}   1 thread {rates[0]:6.1f}   {threads} threads {rates[1]:6.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="32×32×1 only")
    ap.add_argument(
        "--sgemm",
        action="store_true",
        help="only time torch.mm (f32) on the shapes of `conv_bench --sgemm`, 1 and --threads threads",
    )
    a = ap.parse_args()
    if a.sgemm:
        sgemm(a.threads)
        return
    torch.set_num_threads(a.threads)
    print(
        f"torch bench dcgan | torch {torch.__version__} cpu ({torch.get_num_threads()} threads) | "
        f"{a.steps} timed steps after {a.warmup} warm-up"
    )
    configs = [(32, 1)] if a.quick else [(64, 3), (32, 1)]
    for size, nc in configs:
        secs, times = bench(size, nc, a.batch, max(a.steps, 1), a.warmup)
        report(f"DCGAN {size}×{size}×{nc}, ngf=ndf=64, batch {a.batch}", secs, times, a.batch)


if __name__ == "__main__":
    main()
