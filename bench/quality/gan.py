"""PyTorch reference trainer for easel's DCGAN-family recipes: DCGAN, conditional GAN, SNGAN,
WGAN (weight clipping) and WGAN-GP on MNIST (or an image folder), for the side-by-side quality
table in BENCHMARKS.md ("Issue 15").

What it mirrors (read these beside it):
- networks: `crates/models/src/dcgan.rs` — pytorch/examples `dcgan/main.py`'s Generator and
  Discriminator generalised to image_size = base · 2^stages (base 4 or 7); bias-free
  convolutions; batch norm (eps 1e-5, momentum 0.1) after every hidden layer of G and D (D's
  optional, `--d-norm none`); ReLU/Tanh in G, LeakyReLU(0.2) in D; D's last layer a
  base×base convolution to one logit. Conditional: `label_emb` = Embedding(K, K) concatenated to z
  (PyTorch-GAN's cgan); D sees one-hot label maps stacked on the image channels (`concat`).
  Spectral norm: `torch.nn.utils.spectral_norm` on every D convolution (easel's `SnConv2d`, one
  power iteration per training forward).
- initialisation: pytorch/examples `weights_init` — conv weights N(0, 0.02), batch-norm γ
  N(1, 0.02), β 0; the embedding keeps PyTorch's N(0, 1) (easel: `Init::Randn{0, 1}`).
- the step: `crates/train/src/steps/gan.rs` — BCE: D on real (target 1 − label smoothing) and on
  the detached fakes, one D update; then G's non-saturating loss on the same fakes through the
  updated D (all in training mode). Wasserstein: n critic updates (Arjovsky's schedule: 100 for
  the first 25 generator steps and every 500th), each on a fresh batch and fresh noise, clipping
  to ±c after each (WGAN) or adding λ·E[(‖∇D(x̂)‖ − 1)²] (WGAN-GP), then one G update on fresh
  noise minimising −E[D(G(z))].
- optimisers: Adam(2e-4, β = (0.5, 0.999), ε 1e-8) for DCGAN/cGAN/SNGAN; RMSprop(5e-5,
  α 0.99, ε 1e-8) for WGAN; Adam(1e-4, (0.5, 0.9)) for WGAN-GP — `recipes/*.toml`.
- data: `common.load_mnist` (native 28 → zero-pad to 32, [-1, 1]); epoch-shuffled batches,
  drop_last.
- sampling: `--n-samples` images at the end from fixed noise; conditional class i mod K (as
  `easel eval`). BN generators write `samples/` with running statistics (eval mode, easel's
  `sample_bn = "eval"` default) and `samples-batch/` with batch statistics over batches of the
  training batch size (train mode, what pytorch/examples' script shows: it never calls
  netG.eval()).

Differences from easel that cannot be removed: random streams (torch's generator vs easel's
ChaCha8), so seeds are not comparable one to one; candle/PyTorch floating-point order.

Usage (see bench/quality/README.md):
  /work/venv/bin/python bench/quality/gan.py --kind dcgan --data ../shared/data/mnist --out runs/ref-dcgan-s1 --seed 1
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def geometry(image_size):
    for base in (4, 7):
        size, stages = base, 0
        while size < image_size:
            size, stages = size * 2, stages + 1
        if size == image_size and stages >= 1:
            return base, stages
    raise ValueError(f"image_size must be 4·2^k or 7·2^k, got {image_size}")


class Generator(nn.Module):
    def __init__(self, image_size, channels, nz, ngf, num_classes=0):
        super().__init__()
        base, stages = geometry(image_size)
        self.nz, self.k = nz, num_classes
        if num_classes:
            self.label_emb = nn.Embedding(num_classes, num_classes)
        c = ngf << (stages - 1)
        layers = [nn.ConvTranspose2d(nz + num_classes, c, base, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(1, stages):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        if self.k:
            z = torch.cat([z, self.label_emb(labels)], 1)  # [B, nz + K]
        return self.main(z[:, :, None, None])  # [B, C, S, S]


class Discriminator(nn.Module):
    def __init__(self, image_size, channels, ndf, num_classes=0, d_norm="batch", sn=False):
        super().__init__()
        base, stages = geometry(image_size)
        self.k = num_classes
        wrap = nn.utils.spectral_norm if sn else (lambda m: m)
        layers = [wrap(nn.Conv2d(channels + num_classes, ndf, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
        c = ndf
        for _ in range(1, stages):
            layers.append(wrap(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False)))
            if d_norm == "batch":
                layers.append(nn.BatchNorm2d(2 * c))
            layers.append(nn.LeakyReLU(0.2, True))
            c *= 2
        layers.append(wrap(nn.Conv2d(c, 1, base, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)

    def forward(self, x, labels=None):
        if self.k:
            b, _, h, w = x.shape
            maps = F.one_hot(labels, self.k).to(x.dtype)[:, :, None, None].expand(b, self.k, h, w)
            x = torch.cat([x, maps], 1)  # [B, C + K, S, S]
        return self.main(x).view(-1)  # [B] logits


def weights_init(m):
    # pytorch/examples dcgan: Conv* weights N(0, 0.02); BatchNorm γ N(1, 0.02), β 0.
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        w = m.weight_orig if hasattr(m, "weight_orig") else m.weight
        nn.init.normal_(w, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


PRESETS = {
    # kind: (loss, d_norm, spectral norm, optimiser, conditional)
    "dcgan": ("bce", "batch", False, ("adam", 2e-4, 0.5, 0.999), False),
    "cgan": ("bce", "batch", False, ("adam", 2e-4, 0.5, 0.999), True),
    "sngan": ("bce", "none", True, ("adam", 2e-4, 0.5, 0.999), False),
    "wgan": ("clip", "batch", False, ("rmsprop", 5e-5), False),
    "wgan-gp": ("gp", "none", False, ("adam", 1e-4, 0.5, 0.9), False),
}


def make_opt(spec, params):
    if spec[0] == "adam":
        return torch.optim.Adam(params, lr=spec[1], betas=(spec[2], spec[3]), eps=1e-8)
    return torch.optim.RMSprop(params, lr=spec[1], alpha=0.99, eps=1e-8)


def gradient_penalty(netD, real, fake):
    alpha = torch.rand(real.shape[0], 1, 1, 1)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(netD(x_hat).sum(), x_hat, create_graph=True)
    norm = (g.reshape(g.shape[0], -1).pow(2).sum(1) + 1e-12).sqrt()
    return ((norm - 1) ** 2).mean()


def main():
    p = common.base_args(__doc__.split("\n")[0])
    p.add_argument("--kind", choices=sorted(PRESETS), default="dcgan")
    p.add_argument("--source", choices=["mnist", "folder"], default="mnist")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--pad", type=int, default=2, help="zero padding per side (MNIST: 28 + 2·2 = 32)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--schedule", choices=["arjovsky", "constant"], default=None,
                   help="critic schedule (default: arjovsky for wgan, constant for wgan-gp)")
    p.add_argument("--clip", type=float, default=0.01)
    p.add_argument("--gp-weight", type=float, default=10.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    loss_kind, d_norm, sn, opt_spec, conditional = PRESETS[args.kind]
    schedule = args.schedule or ("arjovsky" if args.kind == "wgan" else "constant")

    if args.source == "mnist":
        data, labels = common.load_mnist(args.data, "train", args.image_size, args.pad)
    else:
        data, labels = common.load_folder(args.data, args.image_size, args.channels)
    k = 10 if conditional else 0
    if conditional and labels is None:
        raise SystemExit(f"{args.data}: a conditional GAN needs labelled data (one subfolder per class)")
    channels = data.shape[1]
    netG = Generator(args.image_size, channels, args.nz, args.ngf, k)
    netD = Discriminator(args.image_size, channels, args.ndf, k, d_norm, sn)
    netG.apply(weights_init)
    netD.apply(weights_init)
    count = lambda m: sum(p.numel() for p in m.parameters())
    print(f"{args.kind}: {len(data)} images {tuple(data.shape[1:])}; G {count(netG)} parameters, D {count(netD)}")
    optG, optD = make_opt(opt_spec, netG.parameters()), make_opt(opt_spec, netD.parameters())
    batches = common.Batches(len(data), args.batch_size, args.seed)
    log = common.Log(args.out, args)
    b = args.batch_size
    real_target = 1.0 - args.label_smoothing

    for step in range(args.steps):
        if loss_kind == "bce":
            idx = batches.next()
            real = data[idx]
            y = labels[idx] if k else None
            z = torch.randn(b, args.nz)
            yf = torch.randint(0, k, (b,)) if k else None
            # (1) D: maximise log D(x) + log(1 − D(G(z))) on the detached fakes.
            fake = netG(z, yf)
            d_real = netD(real, y)
            d_fake = netD(fake.detach(), yf)
            loss_d = F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, real_target)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            netD.zero_grad()
            loss_d.backward()
            optD.step()
            # (2) G: maximise log D(G(z)) on the same fakes.
            d_fake2 = netD(fake, yf)
            loss_g = F.binary_cross_entropy_with_logits(d_fake2, torch.ones_like(d_fake2))
            netG.zero_grad()
            loss_g.backward()
            optG.step()
            if step % args.log_every == 0 or step == args.steps - 1:
                log.step(step + 1, loss_d=loss_d.item(), loss_g=loss_g.item(),
                         d_x=torch.sigmoid(d_real).mean().item(), d_g_z1=torch.sigmoid(d_fake).mean().item(),
                         d_g_z2=torch.sigmoid(d_fake2).mean().item())
        else:
            iters = 100 if schedule == "arjovsky" and (step < 25 or step % 500 == 0) else args.n_critic
            for _ in range(iters):
                real = data[batches.next()]
                z = torch.randn(b, args.nz)
                fake = netG(z).detach()
                d_real, d_fake = netD(real).mean(), netD(fake).mean()
                loss_d = d_fake - d_real
                if loss_kind == "gp":
                    loss_d = loss_d + args.gp_weight * gradient_penalty(netD, real, fake)
                netD.zero_grad()
                loss_d.backward()
                optD.step()
                if loss_kind == "clip":
                    with torch.no_grad():
                        for q in netD.parameters():
                            q.clamp_(-args.clip, args.clip)
            z = torch.randn(b, args.nz)
            loss_g = -netD(netG(z)).mean()
            netG.zero_grad()
            loss_g.backward()
            optG.step()
            if step % args.log_every == 0 or step == args.steps - 1:
                log.step(step + 1, loss_d=loss_d.item(), loss_g=loss_g.item(),
                         wasserstein=(d_real - d_fake).item(), critic_iters=iters)

    # Samples: fixed noise from a generator seeded apart from training; class i mod K.
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    n = args.n_samples
    z = torch.randn(n, args.nz, generator=gen)
    y = torch.arange(n) % k if k else None
    with torch.no_grad():
        netG.eval()
        out = torch.cat([netG(z[i : i + 500], y[i : i + 500] if k else None) for i in range(0, n, 500)])
        common.write_samples(args.out, out)
        netG.train()
        # Batch statistics over batches of the training size (running stats are restored after).
        saved = {name: t.clone() for name, t in netG.state_dict().items()}
        outb = torch.cat([netG(z[i : i + b], y[i : i + b] if k else None) for i in range(0, n, b)])
        netG.load_state_dict(saved)
        d = args.out + "/batch"
        common.write_samples(d, outb)
    torch.save({"netG": netG.state_dict(), "netD": netD.state_dict()}, args.out + "/weights.pt")
    log.finish(kind=args.kind, parameters_g=count(netG), parameters_d=count(netD))


if __name__ == "__main__":
    main()
