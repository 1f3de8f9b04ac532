"""PyTorch reference trainer for easel's LAPGAN recipe `recipes/lapgan-mnist.toml` (Denton et al.
2015: an 8×8 base GAN and finer levels 8 → 16 → 32, class-conditional on MNIST), for the
side-by-side quality table in BENCHMARKS.md.

What it mirrors (read these beside it):
- pyramid: `crates/nn/src/pyramid.rs` — `reduce` (5-tap binomial [1 4 6 4 1]/16 blur, edges
  replicated, every second row/column), `expand` (stride-2 transposed convolution with the same
  filter ×4, divided by the expansion of an all-ones image, cropped), `gaussian`.
- base networks: `crates/models/src/lapgan.rs` `MlpGenerator::new/forward` (Linear(nz+K, 1200),
  BatchNorm1d, ReLU, Linear(1200, 1200), BatchNorm1d, ReLU, Linear(1200, C·8·8), Tanh, view) and
  `MlpDiscriminator::new/forward` (flatten ⊕ one-hot, Linear(C·64+K, 600), LeakyReLU(0.2),
  Dropout(0.5), Linear(600, 600), LeakyReLU(0.2), Dropout(0.5), Linear(600, 1)); `inverted_dropout`
  = `nn.Dropout` (kept units ×1/(1−p), fresh masks every forward, training passes only).
- level networks: `LevelGenerator::new/forward` (cat[noise plane, l, one-hot label planes] →
  Conv 5×5 p2 no bias, BN, ReLU → Conv 3×3 p1 no bias, BN, ReLU → Conv 3×3 p1 with bias, linear
  output = residual h) and `LevelDiscriminator::new/features/forward` (cat[l + h (`sum`) or h, l
  (`concat`), label planes] → Conv 4×4 s2 p1 no bias, LeakyReLU(0.2) → Conv 4×4 s2 p1 no bias,
  BN, LeakyReLU(0.2) → Dropout(0.5) → Conv (S/4)×(S/4) with bias → logit).
- chain / sampling: `LapganGenerator::generate_levels` and `ImageGenerator::generate` — latent
  [z (nz) | 16² plane | 32² plane] ~ N(0, 1); I_8 = G_base(z, y); I_k = expand(I_{k−1}) +
  G_k(noise_k, expand(I_{k−1}), y); only the final image is clamped to [−1, 1]. Batch norm for
  sampling: `model.sample_bn` (`crates/train/src/recipe.rs` `SampleBn`, default `eval` = running
  statistics; `batch` = statistics of batches of the training batch size without updating the
  running ones, `crates/train/src/eval.rs` `generate`). Labels i mod K (`eval.rs` `generate`).
- initialisation: `lapgan.rs` `W_INIT`/`BN_INIT` and `Dense::new`, `crates/nn/src/layers.rs`
  `Conv2d::new`/`BatchNorm2d::new`, `crates/nn/src/store.rs` `init_values`: level conv weights
  N(0, 0.02), conv biases 0, level BN γ N(1, 0.02), β 0; MLP Linear weight and bias
  U(−1/√in, 1/√in); MLP BN1d γ 1, β 0. BN eps 1e-5, momentum 0.1, unbiased running variance.
- the step: `crates/train/src/steps/lapgan.rs` `LapganStep::step` — one batch per step, its
  Gaussian pyramid (detached); fake labels uniform over K, shared by every level of the step.
  Base: fake = G(z, y_fake); D loss = BCE(D(real 8×8, y), 1 − label_smoothing) +
  BCE(D(fake.detach(), y_fake), 0) (means over the batch, summed), one D update; then the
  non-saturating G loss BCE(D(fake, y_fake), 1) through the updated, frozen D, one G update.
  Then each finer level in order 16, 32, on l = expand(G_{k+1}), h_real = G_k − l (real
  pyramid, never generated images): h_fake = G_k(noise, l, y_fake), the same D-then-G update.
  No gradient crosses levels. Every pass is in training mode (BN batch statistics, dropout on).
- optimisers: six Adam(lr 2e-4, β (0.5, 0.999), ε 1e-8, no weight decay) — `steps/lapgan.rs`
  `adam()` default and the recipe's `[optim.base_generator]` (same values); `crates/train/src/
  optim.rs` is PyTorch's Adam update (per-parameter step count, bias corrections).
- data: `common.load_mnist` — [-1, 1] (x/127.5 − 1); `--pad 2`: native 28×28 zero-padded
  (−1) to 32 (the recipe's coming `data.pad = 2`); `--pad 0`: bilinear (antialiased) resize
  28 → 32 (the recipe today). Epoch-shuffled batches, last partial batch dropped.
- logging: per-level loss_d_8 / loss_g_8 / loss_d_16 / … and their sums loss_d, loss_g, as easel.

Differences from easel that cannot be removed:
- random streams: torch's generator vs easel's ChaCha8 streams (per-network init seeds
  `init/<name>`, the step stream for noise, fake labels and dropout masks), so seeds are not
  comparable one to one; dropout masks are Bernoulli(1 − p) draws either way.
- floating-point order (candle's fused conv/BN kernels vs PyTorch's).
- only `base = "mlp"` (the recipe's) is implemented; `base = "dcgan"` is refused.
- the reference also writes `batch/` (batch-statistics samples) beside `samples/` when sampling in
  eval mode, plus `levels.png` (each level's image, nearest-upsampled, like easel's preview) and
  weights.pt; these are extras, not part of easel's protocol.

Usage (see bench/quality/README.md):
  /work/venv/bin/python bench/quality/lapgan.py --data ../shared/data/mnist --out runs/ref-lapgan-s1 --seed 1 --steps 3000 --threads 2
"""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import common

# ---------------------------------------------------------------------------------------------
# Pyramid (crates/nn/src/pyramid.rs)

_TAPS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_KERNEL = (torch.outer(_TAPS, _TAPS) / 256.0).view(1, 1, 5, 5)


def reduce(x):
    """[B, C, H, W] → [B, C, ⌈H/2⌉, ⌈W/2⌉]: binomial blur, replicated edges, every 2nd sample."""
    b, c, h, w = x.shape
    flat = F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="replicate")
    out = F.conv2d(flat, _KERNEL.to(x.dtype), stride=2)
    return out.reshape(b, c, out.shape[2], out.shape[3])


def expand(x, h, w):
    """[B, C, H, W] → [B, C, h, w] (h ∈ {2H−1, 2H}): zero insertion + blur ×4, normalised by the
    expansion of an all-ones image."""
    b, c, ih, iw = x.shape
    assert h in (2 * ih, 2 * ih - 1) and w in (2 * iw, 2 * iw - 1), (x.shape, h, w)
    k = (_KERNEL * 4.0).to(x.dtype)
    up = lambda t: F.conv_transpose2d(t, k, stride=2, padding=2, output_padding=1)
    num = up(x.reshape(b * c, 1, ih, iw))  # [B·C, 1, 2H, 2W]
    den = up(torch.ones(1, 1, ih, iw, dtype=x.dtype))
    return (num / den)[:, :, :h, :w].reshape(b, c, h, w)


def gaussian(x, levels):
    out = [x]
    for _ in range(levels):
        out.append(reduce(out[-1]))
    return out


# ---------------------------------------------------------------------------------------------
# Networks (crates/models/src/lapgan.rs)


def label_planes(labels, k, like):
    b, _, h, w = like.shape
    return F.one_hot(labels, k).to(like.dtype)[:, :, None, None].expand(b, k, h, w)


class MlpGenerator(nn.Module):
    def __init__(self, nz, k, hidden, channels, size=8):
        super().__init__()
        self.nz, self.k, self.c, self.s = nz, k, channels, size
        self.main = nn.Sequential(
            nn.Linear(nz + k, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, channels * size * size), nn.Tanh(),
        )

    def forward(self, z, labels=None):
        if self.k:
            z = torch.cat([z, F.one_hot(labels, self.k).to(z.dtype)], 1)  # [B, nz + K]
        return self.main(z).view(-1, self.c, self.s, self.s)  # [B, C, 8, 8]


class MlpDiscriminator(nn.Module):
    def __init__(self, k, hidden, channels, dropout, slope=0.2, size=8):
        super().__init__()
        self.k = k
        self.main = nn.Sequential(
            nn.Linear(channels * size * size + k, hidden), nn.LeakyReLU(slope), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.LeakyReLU(slope), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x, labels=None):
        x = x.flatten(1)  # [B, C·64]
        if self.k:
            x = torch.cat([x, F.one_hot(labels, self.k).to(x.dtype)], 1)
        return self.main(x).view(-1)  # [B] logits


class LevelGenerator(nn.Module):
    def __init__(self, channels, ngf, k):
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv2d(1 + channels + k, ngf, 5, 1, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(ngf)
        self.conv2 = nn.Conv2d(ngf, ngf, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ngf)
        self.conv3 = nn.Conv2d(ngf, channels, 3, 1, 1, bias=True)

    def forward(self, noise, coarse_up, labels=None):
        parts = [noise, coarse_up]
        if self.k:
            parts.append(label_planes(labels, self.k, coarse_up))
        x = torch.cat(parts, 1)  # [B, 1 + C + K, S, S]
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)  # [B, C, S, S] residual, linear


class LevelDiscriminator(nn.Module):
    def __init__(self, size, channels, ndf, k, d_input, dropout):
        super().__init__()
        self.k, self.d_input = k, d_input
        c_in = (channels if d_input == "sum" else 2 * channels) + k
        self.conv1 = nn.Conv2d(c_in, ndf, 4, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ndf * 2)
        self.drop = nn.Dropout(dropout)
        self.conv3 = nn.Conv2d(ndf * 2, 1, size // 4, 1, 0, bias=True)

    def forward(self, residual, coarse_up, labels=None):
        parts = [residual + coarse_up] if self.d_input == "sum" else [residual, coarse_up]
        if self.k:
            parts.append(label_planes(labels, self.k, coarse_up))
        x = torch.cat(parts, 1)
        x = F.leaky_relu(self.conv1(x), 0.2)  # [B, ndf, S/2, S/2]
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)  # [B, 2ndf, S/4, S/4]
        return self.conv3(self.drop(x)).view(-1)  # [B]


def init_weights(m):
    # lapgan.rs W_INIT / BN_INIT (level nets), Dense::new and nn.BatchNorm1d defaults (MLP base),
    # layers.rs Conv2d::new (bias 0).
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm1d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        b = 1.0 / m.in_features ** 0.5
        nn.init.uniform_(m.weight, -b, b)
        nn.init.uniform_(m.bias, -b, b)


def easel_param_counts(a, channels, k, sizes):
    """Trainable parameters per network as implied by easel's Rust layer definitions (computed
    independently of the modules above; BN: γ and β; running statistics are buffers)."""
    c, nz, gh, dh = channels, a.nz, a.base_g_hidden, a.base_d_hidden
    img = c * 8 * 8
    out = {
        "base_generator": (nz + k) * gh + gh + 2 * gh + gh * gh + gh + 2 * gh + gh * img + img,
        "base_discriminator": (img + k) * dh + dh + dh * dh + dh + dh + 1,
    }
    ngf, ndf = a.level_ngf, a.level_ndf
    d_in = (c if a.level_d_input == "sum" else 2 * c) + k
    for i, s in enumerate(sizes, 1):
        out[f"level{i}_generator"] = (1 + c + k) * ngf * 25 + 2 * ngf + ngf * ngf * 9 + 2 * ngf + ngf * c * 9 + c
        out[f"level{i}_discriminator"] = d_in * ndf * 16 + ndf * 2 * ndf * 16 + 2 * 2 * ndf + 2 * ndf * (s // 4) ** 2 + 1
    return out


# ---------------------------------------------------------------------------------------------
# Sampling (LapganGenerator::generate_levels, eval.rs generate)


def generate_levels(base_g, level_g, sizes, z, labels):
    nz = base_g.nz
    img = base_g(z[:, :nz], labels)
    out, off = [img], nz
    for g, s in zip(level_g, sizes):
        noise = z[:, off : off + s * s].reshape(-1, 1, s, s)
        off += s * s
        up = expand(img, s, s)
        img = up + g(noise, up, labels)
        out.append(img)
    return out


def sample(nets, base_g, level_g, sizes, z, y, batch, mode):
    """Final images (clamped) and all levels, in batches; mode 'eval' = running statistics,
    'batch' = batch statistics with the running statistics left untouched."""
    saved = {id(m): {n: t.clone() for n, t in m.state_dict().items()} for m in nets}
    for m in nets:
        m.train(mode == "batch")
    outs = []
    with torch.no_grad():
        for i in range(0, len(z), batch):
            lv = generate_levels(base_g, level_g, sizes, z[i : i + batch], None if y is None else y[i : i + batch])
            outs.append(lv)
    for m in nets:
        m.load_state_dict(saved[id(m)])
        m.train()
    levels = [torch.cat([o[j] for o in outs]) for j in range(len(outs[0]))]
    return levels[-1].clamp(-1, 1), levels


def write_levels(path, levels, n=20):
    """Rows of every level's image nearest-upsampled to full size (easel's `side_by_side`)."""
    s = levels[-1].shape[-1]
    cols = [F.interpolate(l[:n].clamp(-1, 1), size=(s, s), mode="nearest") for l in levels]
    arr = common.to_uint8(torch.stack(cols, 1).flatten(0, 1))  # [n·L, s, s, C]
    L, c = len(levels), arr.shape[-1]
    grid = np.zeros((n * (s + 2) + 2, L * (s + 2) + 2, c), np.uint8)
    for i in range(n * L):
        r, q = divmod(i, L)
        grid[2 + r * (s + 2) : 2 + r * (s + 2) + s, 2 + q * (s + 2) : 2 + q * (s + 2) + s] = arr[i]
    Image.fromarray(grid[:, :, 0] if c == 1 else grid).save(path)


# ---------------------------------------------------------------------------------------------


def main():
    p = common.base_args(__doc__.split("\n")[0])
    p.set_defaults(steps=3000, log_every=50)  # recipes/lapgan-mnist.toml [train]
    p.add_argument("--image-size", type=int, default=32, help="8·2^k (recipe data.image_size)")
    p.add_argument("--pad", type=int, default=2, help="zero padding per side (MNIST: 28 + 2·2 = 32); 0 = resize")
    # [model] keys of recipes/lapgan-mnist.toml (defaults = the recipe's values).
    p.add_argument("--base", choices=["mlp"], default="mlp", help="model.base (only the recipe's mlp)")
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--base-g-hidden", type=int, default=1200)
    p.add_argument("--base-d-hidden", type=int, default=600)
    p.add_argument("--base-dropout", type=float, default=0.5)
    p.add_argument("--level-ngf", type=int, default=64)
    p.add_argument("--level-ndf", type=int, default=32)
    p.add_argument("--level-d-input", choices=["sum", "concat"], default="sum")
    p.add_argument("--level-d-dropout", type=float, default=0.5)
    p.add_argument("--conditional", type=int, choices=[0, 1], default=1, help="model.conditional (1 = true)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--sample-bn", choices=["eval", "batch"], default="eval")
    p.add_argument("--lr", type=float, default=2e-4, help="every network's Adam lr")
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--beta2", type=float, default=0.999)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    n_levels = (args.image_size // 8).bit_length() - 1
    if n_levels < 1 or 8 << n_levels != args.image_size:
        raise SystemExit(f"lapgan needs --image-size 8·2^k, k ≥ 1, got {args.image_size}")
    sizes = [8 << i for i in range(1, n_levels + 1)]  # [16, 32]
    data, labels = common.load_mnist(args.data, "train", args.image_size, args.pad)
    k = int(labels.max()) + 1 if args.conditional else 0
    channels = data.shape[1]

    base_g = MlpGenerator(args.nz, k, args.base_g_hidden, channels)
    base_d = MlpDiscriminator(k, args.base_d_hidden, channels, args.base_dropout)
    level_g = [LevelGenerator(channels, args.level_ngf, k) for _ in sizes]
    level_d = [LevelDiscriminator(s, channels, args.level_ndf, k, args.level_d_input, args.level_d_dropout) for s in sizes]
    gs, ds = [base_g] + level_g, [base_d] + level_d
    names_g = ["base_generator"] + [f"level{i}_generator" for i in range(1, n_levels + 1)]
    names_d = ["base_discriminator"] + [f"level{i}_discriminator" for i in range(1, n_levels + 1)]
    for m in gs + ds:
        m.apply(init_weights)

    count = lambda m: sum(q.numel() for q in m.parameters())
    want = easel_param_counts(args, channels, k, sizes)
    counts = {}
    for name, m in zip(names_g + names_d, gs + ds):
        counts[name] = count(m)
        ok = "ok" if counts[name] == want[name] else "MISMATCH"
        print(f"{name:22s} {counts[name]:>9d} parameters (easel, from the Rust layers: {want[name]}) {ok}")
    print(f"lapgan: {len(data)} images {tuple(data.shape[1:])} in [{data.min():.2f}, {data.max():.2f}], "
          f"levels {[8] + sizes}, classes {k}")

    adam = lambda m: torch.optim.Adam(m.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    opt_g, opt_d = [adam(m) for m in gs], [adam(m) for m in ds]
    batches = common.Batches(len(data), args.batch_size, args.seed)
    log = common.Log(args.out, args)
    b = args.batch_size
    real_target = 1.0 - args.label_smoothing
    bce = F.binary_cross_entropy_with_logits

    def update(i, real_in, fake_in):
        """One level's D update then G update (steps/lapgan.rs `bce_pair` and the G step).
        `real_in` / `fake_in`: D's inputs after the network (image or (h, l)) and the labels."""
        d = ds[i]
        d_real = d(*real_in)
        d_fake = d(*[t.detach() for t in fake_in[:-1]], fake_in[-1])
        loss_d = bce(d_real, torch.full_like(d_real, real_target)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d[i].zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d[i].step()
        # G through the updated D with D's parameters frozen (ops::with_frozen_params).
        for q in d.parameters():
            q.requires_grad_(False)
        d_out = d(*fake_in)
        for q in d.parameters():
            q.requires_grad_(True)
        loss_g = bce(d_out, torch.ones_like(d_out))
        opt_g[i].zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g[i].step()
        return loss_d.item(), loss_g.item()

    for step in range(args.steps):
        idx = batches.next()
        real = data[idx]
        y = labels[idx] if k else None
        yf = torch.randint(0, k, (b,)) if k else None  # fake labels, shared by every level
        gauss = gaussian(real, n_levels)  # [32, 16, 8]
        scalars = {}

        # Base level: a GAN on the 8×8 Gaussian level.
        z = torch.randn(b, args.nz)
        fake = base_g(z, yf)
        ld, lg = update(0, (gauss[n_levels], y), (fake, yf))
        scalars["loss_d_8"], scalars["loss_g_8"] = ld, lg

        # Finer levels on (residual, upsampled coarse) pairs of the real pyramid.
        for j, s in enumerate(sizes):
            fine = gauss[n_levels - 1 - j]
            coarse_up = expand(gauss[n_levels - j], s, s)
            h_real = fine - coarse_up
            noise = torch.randn(b, 1, s, s)
            h_fake = level_g[j](noise, coarse_up, yf)
            ld, lg = update(j + 1, (h_real, coarse_up, y), (h_fake, coarse_up, yf))
            scalars[f"loss_d_{s}"], scalars[f"loss_g_{s}"] = ld, lg

        if step % args.log_every == 0 or step == args.steps - 1:
            sd = sum(v for kk, v in scalars.items() if kk.startswith("loss_d"))
            sg = sum(v for kk, v in scalars.items() if kk.startswith("loss_g"))
            log.step(step + 1, loss_d=sd, loss_g=sg, **scalars)

    # Samples: fixed latent [z | 16² | 32²] from a generator seeded apart from training;
    # class i mod K (eval.rs generate).
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    n = args.n_samples
    dim = args.nz + sum(s * s for s in sizes)
    z = torch.randn(n, dim, generator=gen)
    y = torch.arange(n) % k if k else None
    batch = 500 if args.sample_bn == "eval" else b
    out, levels = sample(gs, base_g, level_g, sizes, z, y, batch, args.sample_bn)
    common.write_samples(args.out, out)
    write_levels(os.path.join(args.out, "levels.png"), levels)
    print(f"samples/: {len(out)} images {tuple(out.shape[1:])} in [{out.min():.3f}, {out.max():.3f}] "
          f"(sample_bn {args.sample_bn})")
    if args.sample_bn == "eval":
        outb, _ = sample(gs, base_g, level_g, sizes, z, y, b, "batch")
        common.write_samples(os.path.join(args.out, "batch"), outb)
    torch.save({nm: m.state_dict() for nm, m in zip(names_g + names_d, gs + ds)}, os.path.join(args.out, "weights.pt"))
    log.finish(kind="lapgan", parameters=counts, parameters_easel=want)


if __name__ == "__main__":
    main()
