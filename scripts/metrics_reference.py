"""Writes the oracle fixtures of easel's metrics and metric networks to tests/fixtures/metrics/.

Every value is computed here independently of the Rust code, with the reference formulas of the
implementations people compare against:

- FID: pytorch-fid's `calculate_frechet_distance` (scipy.linalg.sqrtm of Σ1·Σ2, np.cov with
  ddof = 1); for singular covariances, where sqrtm is unreliable, an exact oracle instead:
  Tr((Σ1^½ Σ2 Σ1^½)^½) = Σ σ_i(X1c·X2cᵀ) / √((n1 − 1)(n2 − 1)) (singular values of the product of
  the centred data matrices), which never forms Σ at all.
- KID: torch-fidelity's `mmd2` (unbiased) with the polynomial kernel (xᵀy/d + 1)³, on subsets whose
  indices are stored so the Rust test evaluates the same subsets; mean and np.std (ddof = 0).
- Inception Score: torch-fidelity's `isc_features_to_metric` (chunks i·N//splits, exp of the mean
  KL(p(y|x) || p(y)), np.std), in float64, without shuffling.
- Precision/recall: Kynkäänniemi et al. 2019 as torch-fidelity's `calculate_precision_recall_full`
  (k-th nearest neighbour radius with k = 3, self excluded; `d ≤ radius` for any reference point).
- SWD: Karras et al. 2018 (progressive_growing_of_gans `metrics/sliced_wasserstein.py`):
  Laplacian pyramid with scipy.ndimage.convolve (mode "mirror", the 5×5 binomial kernel),
  descriptors at stored patch positions, per-channel normalisation, and the sliced Wasserstein
  distance on stored projection directions (float64 here; the original casts to float32).
- PSNR / SSIM: scikit-image's `peak_signal_noise_ratio` and `structural_similarity`
  (gaussian_weights=True, σ = 1.5, use_sample_covariance=False, K1 = 0.01, K2 = 0.03,
  data_range = 255), cross-checked against a direct numpy implementation; Y channel of BT.601
  (Y = 16 + 65.481·R + 128.553·G + 24.966·B for R, G, B in [0, 1]) with a border crop, as BasicSR.
- Nearest neighbours, diversity and mode coverage: scipy.spatial.distance.cdist / pdist and numpy.

Networks (outputs of PyTorch modules, checked by crates/models/tests/metric_networks.rs):
- pytorch-fid's own `InceptionV3([3])` (FIDInceptionA/C/E_1/E_2 patched into torchvision's
  Inception3, resize to 299 with F.interpolate bilinear align_corners=False) with deterministic
  weights from `hash_uniform` below (the real weights cannot be downloaded here, and 95 MB of random
  weights would not belong in the repository: the Rust test regenerates the same bits from the
  same integer hash). Stored: the state_dict names and shapes, an input, pool3 features and
  logits_unbiased, and a few F.interpolate results (up- and down-sampling).
- The classifier of crates/models/src/classifier.rs at a reduced width, with its weights.

Requirements: numpy, scipy, torch, safetensors, torchvision and pytorch-fid (`pip install
torchvision pytorch-fid`; only their module definitions are used, no download), and scikit-image
for the SSIM cross-check (`pip install scikit-image`; skipped with a warning if missing).

    python scripts/metrics_reference.py
"""
import json
import os
import warnings

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.spatial.distance import cdist, pdist

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics")

out = {}  # name -> np.ndarray, written as one safetensors file


def put(name, value, dtype=np.float64):
    out[name] = np.array(value, dtype=dtype, copy=True).reshape(np.shape(value) or (1,))


# ------------------------------------------------------------------------------------------------
# FID


def frechet_distance_pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid `calculate_frechet_distance` (src/pytorch_fid/fid_score.py)."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # `disp` is deprecated in SciPy ≥ 1.16; kept as pytorch-fid has it
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("imaginary component")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def frechet_distance_exact(x1, x2):
    """The same distance without forming a matrix square root (valid for any rank)."""
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = len(x1), len(x2)
    tr_sqrt = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    diff = x1.mean(0) - x2.mean(0)
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt


def fid_cases(rng):
    d = 8
    a1 = rng.normal(size=(d, d))
    a2 = rng.normal(size=(d, d)) * 0.7 + np.eye(d)
    cases = {
        # Full-rank covariances (n > d): pytorch-fid's sqrtm route is the oracle.
        "basic": (rng.normal(size=(200, d)) @ a1 + 0.3, rng.normal(size=(150, d)) @ a2 - 0.2),
        # Features with a large common offset: cancellation in Σx xᵀ − n μ μᵀ.
        "offset": (
            rng.normal(size=(120, 6)) * 0.5 + 1000.0,
            rng.normal(size=(100, 6)) * 0.8 + 1000.5,
        ),
        # Fewer samples than dimensions: both covariances are singular.
        "singular": (rng.normal(size=(6, 10)), rng.normal(size=(9, 10)) * 1.5 + 0.1),
        # Inception-like: non-negative features, rank-deficient (n = 40 < d = 64).
        "relu64": (
            np.maximum(rng.normal(size=(40, 64)) + 0.2, 0),
            np.maximum(rng.normal(size=(50, 64)) * 1.1, 0),
        ),
    }
    for name, (x1, x2) in cases.items():
        put(f"fid.{name}.x1", x1)
        put(f"fid.{name}.x2", x2)
        mu1, mu2 = x1.mean(0), x2.mean(0)
        s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
        if name in ("basic", "offset"):
            put(f"fid.{name}.mu1", mu1)
            put(f"fid.{name}.cov1", s1)
        exact = frechet_distance_exact(x1, x2)
        put(f"fid.{name}.exact", exact)
        full_rank = len(x1) > x1.shape[1] and len(x2) > x2.shape[1]
        if full_rank:
            ref = frechet_distance_pytorch_fid(mu1, s1, mu2, s2)
            put(f"fid.{name}.pytorch_fid", ref)
            assert abs(ref - exact) <= 1e-9 * abs(exact), (name, ref, exact)
        print(f"FID {name}: {exact:.12g}")


# ------------------------------------------------------------------------------------------------
# KID


def mmd2_unbiased(k_xx, k_xy, k_yy):
    """torch-fidelity metric_kid.mmd2(..., mmd_est='unbiased')."""
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - np.diagonal(k_xx).sum()
    kt_yy = k_yy.sum() - np.diagonal(k_yy).sum()
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def polynomial_kernel(x, y, degree=3, coef0=1):
    return (x @ y.T / x.shape[1] + coef0) ** degree


def kid_case(rng):
    d, subsets, size = 8, 5, 20
    x = np.maximum(rng.normal(size=(60, d)) + 0.3, 0)
    y = np.maximum(rng.normal(size=(50, d)) * 1.2 + 0.8, 0)
    idx1 = np.stack([rng.choice(len(x), size, replace=False) for _ in range(subsets)])
    idx2 = np.stack([rng.choice(len(y), size, replace=False) for _ in range(subsets)])
    mmds = []
    for i1, i2 in zip(idx1, idx2):
        f1, f2 = x[i1], y[i2]
        mmds.append(
            mmd2_unbiased(polynomial_kernel(f1, f1), polynomial_kernel(f1, f2), polynomial_kernel(f2, f2))
        )
    mmds = np.array(mmds)
    put("kid.x", x)
    put("kid.y", y)
    put("kid.idx1", idx1, np.int64)
    put("kid.idx2", idx2, np.int64)
    put("kid.mmd2", mmds)
    put("kid.mean", mmds.mean())
    put("kid.std", mmds.std())
    print(f"KID: {mmds.mean():.12g} ± {mmds.std():.6g}")


# ------------------------------------------------------------------------------------------------
# Inception Score


def inception_score(logits, splits):
    """torch-fidelity isc_features_to_metric (shuffle=False), float64."""
    n = logits.shape[0]
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        pc, lpc = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        q = pc.mean(0, keepdims=True)
        scores.append(np.exp((pc * (lpc - np.log(q))).sum(1).mean()))
    return np.mean(scores), np.std(scores)


def is_case(rng):
    logits = rng.normal(size=(53, 6)) * 2.5
    put("is.logits", logits)
    for splits in (1, 5, 10):
        m, s = inception_score(logits, splits)
        put(f"is.splits{splits}", [m, s])
        print(f"IS ({splits} splits): {m:.12g} ± {s:.6g}")


# ------------------------------------------------------------------------------------------------
# Precision / recall


def precision_recall(real, fake, k=3):
    """torch-fidelity calculate_precision_recall_full (Kynkäänniemi et al. 2019)."""
    r_rr = np.sort(cdist(real, real), axis=1)[:, k]  # kthvalue(k + 1): self is the 0-th
    r_ff = np.sort(cdist(fake, fake), axis=1)[:, k]
    d_fr = cdist(fake, real)
    precision = (d_fr <= r_rr[None, :]).any(1).mean()
    recall = (d_fr.T <= r_ff[None, :]).any(1).mean()
    return precision, recall


def pr_case(rng):
    real = rng.normal(size=(40, 5))
    fake = rng.normal(size=(30, 5)) * 1.3 + 0.4
    put("pr.real", real)
    put("pr.fake", fake)
    for k in (1, 3, 5):
        p, r = precision_recall(real, fake, k)
        put(f"pr.k{k}", [p, r])
        print(f"PR k={k}: precision {p:.6g}, recall {r:.6g}")


# ------------------------------------------------------------------------------------------------
# SWD (progressive_growing_of_gans metrics/sliced_wasserstein.py, in float64)

GAUSS = np.float64([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


def pyr_down(mb):
    return scipy.ndimage.convolve(mb, GAUSS[None, None], mode="mirror")[:, :, ::2, ::2]


def pyr_up(mb):
    s = mb.shape
    res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), mb.dtype)
    res[:, :, ::2, ::2] = mb
    return scipy.ndimage.convolve(res, GAUSS[None, None] * 4.0, mode="mirror")


def laplacian_pyramid(mb, levels):
    pyramid = [np.array(mb, dtype=np.float64, copy=True)]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] -= pyr_up(pyramid[-1])
    return pyramid


def finalize_descriptors(desc):
    desc = desc - np.mean(desc, axis=(0, 2, 3), keepdims=True)
    desc = desc / np.std(desc, axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a, b, dirs):
    dirs = dirs / np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return np.mean(np.abs(pa - pb))


def swd_case(rng):
    imgs = scipy.ndimage.uniform_filter(rng.uniform(-1, 1, size=(2, 3, 24, 24)), size=(1, 1, 3, 3))
    put("swd.images", imgs)
    for i, level in enumerate(laplacian_pyramid(imgs, 3)):
        put(f"swd.level{i}", level)
    # Descriptors (7×7 patches) at given centres: (image, y, x), y and x in [3, 24 − 3).
    n = 10
    pos = np.stack([rng.integers(0, 2, n), rng.integers(3, 21, n), rng.integers(3, 21, n)], 1)
    put("swd.positions", pos, np.int64)
    desc = np.stack([imgs[i, :, y - 3:y + 4, x - 3:x + 4] for i, y, x in pos])
    put("swd.descriptors", desc)
    raw = rng.normal(size=(40, 3, 7, 7)) * np.array([1.0, 2.0, 0.5])[None, :, None, None] + 0.3
    put("swd.raw", raw)
    put("swd.finalized", finalize_descriptors(raw))
    a = rng.normal(size=(40, 12))
    b = rng.normal(size=(40, 12)) * 1.2 + 0.1
    dirs = rng.normal(size=(12, 5))
    put("swd.a", a)
    put("swd.b", b)
    put("swd.dirs", dirs)
    v = sliced_wasserstein(a, b, dirs)
    put("swd.value", v)
    print(f"SW: {v:.12g}")


# ------------------------------------------------------------------------------------------------
# PSNR / SSIM


def gaussian_window(sigma=1.5, truncate=3.5):
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * x * x / sigma**2)
    return g / g.sum()


def ssim_numpy(a, b, data_range):
    """SSIM of 2-D float images as skimage (valid region of an 11-tap Gaussian, population cov)."""
    g = gaussian_window()
    r = len(g) // 2

    def filt(im):  # separable 'valid' filtering
        im = scipy.ndimage.correlate1d(im, g, axis=0, mode="reflect")
        im = scipy.ndimage.correlate1d(im, g, axis=1, mode="reflect")
        return im[r:-r, r:-r]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = filt(a), filt(b)
    vx, vy, vxy = filt(a * a) - ux * ux, filt(b * b) - uy * uy, filt(a * b) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean()


def to_y(rgb01):
    """BT.601 luma on the 0–255 scale from RGB in [0, 1], channel-first."""
    return 16.0 + 65.481 * rgb01[0] + 128.553 * rgb01[1] + 24.966 * rgb01[2]


def psnr(a, b, data_range):
    return 10 * np.log10(data_range**2 / np.mean((a - b) ** 2))


def quality_case(rng):
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError:
        structural_similarity = None
        warnings.warn("scikit-image not installed: SSIM oracle from the numpy implementation only")
    x = scipy.ndimage.uniform_filter(rng.uniform(-1, 1, size=(2, 3, 24, 20)), size=(1, 1, 5, 5)) * 2.5
    x = np.clip(x, -1, 1)
    y = np.clip(x + rng.normal(size=x.shape) * 0.08, -1, 1)
    put("quality.x", x)
    put("quality.y", y)
    for crop in (0, 2):
        ps_rgb, ss_rgb, ps_y, ss_y = [], [], [], []
        for xi, yi in zip(x, y):
            a, b = (xi + 1) / 2, (yi + 1) / 2
            sl = (slice(None), slice(crop, a.shape[1] - crop), slice(crop, a.shape[2] - crop))
            a255, b255 = (a * 255)[sl], (b * 255)[sl]
            ya, yb = to_y(a)[sl[1:]], to_y(b)[sl[1:]]
            ps_rgb.append(psnr(a255, b255, 255.0))
            ps_y.append(psnr(ya, yb, 255.0))
            s_rgb = np.mean([ssim_numpy(a255[c], b255[c], 255.0) for c in range(3)])
            s_y = ssim_numpy(ya, yb, 255.0)
            if structural_similarity is not None:
                kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0)
                sk_rgb = structural_similarity(a255, b255, channel_axis=0, **kw)
                sk_y = structural_similarity(ya, yb, **kw)
                assert abs(sk_rgb - s_rgb) < 1e-12 and abs(sk_y - s_y) < 1e-12, (sk_rgb, s_rgb, sk_y, s_y)
                assert abs(peak_signal_noise_ratio(a255, b255, data_range=255.0) - ps_rgb[-1]) < 1e-12
                s_rgb, s_y = sk_rgb, sk_y
            ss_rgb.append(s_rgb)
            ss_y.append(s_y)
        put(f"quality.crop{crop}.psnr_rgb", ps_rgb)
        put(f"quality.crop{crop}.ssim_rgb", ss_rgb)
        put(f"quality.crop{crop}.psnr_y", ps_y)
        put(f"quality.crop{crop}.ssim_y", ss_y)
        print(f"crop {crop}: PSNR rgb {ps_rgb}, y {ps_y}; SSIM rgb {ss_rgb}, y {ss_y}")


# ------------------------------------------------------------------------------------------------
# Nearest neighbours, diversity, mode coverage


def misc_case(rng):
    samples, train, test = rng.normal(size=(5, 3)), rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    put("nn.samples", samples)
    put("nn.train", train)
    put("nn.test", test)
    d = cdist(samples, train)
    put("nn.index", d.argmin(1), np.int64)
    put("nn.distance", d.min(1))
    put("diversity.value", pdist(samples).mean())
    logits = rng.normal(size=(20, 4))
    logits[:, 3] -= 10  # class 3 never wins
    put("modes.logits", logits)
    hist = np.bincount(logits.argmax(1), minlength=4)
    p = hist / hist.sum()
    kl = sum(pi * np.log(pi * 4) for pi in p if pi > 0)
    put("modes.histogram", hist, np.int64)
    put("modes.kl", kl)


# ------------------------------------------------------------------------------------------------
# Networks


def hash_uniform(k, n):
    """n values in [-1, 1) from tensor index k: splitmix64 of (k, j), top 24 bits. Exactly
    reproducible in Rust (u64 wrapping arithmetic, 24-bit mantissas)."""
    with np.errstate(over="ignore"):
        j = np.arange(n, dtype=np.uint64)
        h = np.uint64(k) * np.uint64(0x9E3779B97F4A7C15) + j * np.uint64(0xD1B54A32D192ED03)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24) * 2.0 - 1.0


def formula_weight(k, name, shape):
    """The deterministic value of state_dict tensor `name` (k-th in sorted order) — see the Rust twin
    in crates/models/tests/metric_networks.rs."""
    n = int(np.prod(shape))
    v = hash_uniform(k, n)
    if name.endswith("running_var"):
        x = 0.75 + 0.25 * v
    elif name.endswith("running_mean") or name.endswith("bn.bias") or name == "fc.bias":
        x = 0.1 * v
    elif name.endswith("bn.weight"):
        x = 1.0 + 0.2 * v
    else:  # conv / fc weights: uniform with variance 2 / fan_in (He)
        fan_in = n // shape[0]
        x = v * np.sqrt(6.0 / fan_in)
    return torch.from_numpy(x.astype(np.float32).reshape(shape))


def inception_case():
    import pytorch_fid.inception as fid_inception

    base = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    names = [(k, list(v.shape)) for k, v in base.state_dict().items()]
    with open(os.path.join(OUT, "inception_state_dict.json"), "w") as f:
        json.dump(names, f, indent=0)
    params = sorted(k for k, _ in names if not k.endswith("num_batches_tracked"))
    shapes = dict(names)
    state = {k: formula_weight(i, k, shapes[k]) for i, k in enumerate(params)}
    for k, s in names:
        if k.endswith("num_batches_tracked"):
            state[k] = torch.zeros(s, dtype=torch.long)
    # pytorch-fid's own construction path, with the weights above in place of the download.
    fid_inception.load_state_dict_from_url = lambda *a, **kw: state
    net = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    fc_w = state["fc.weight"]
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 37, 29, generator=gen) * 2 - 1  # easel's [-1, 1] convention
    with torch.no_grad():
        pool3 = net((x + 1) / 2)[0].flatten(1)  # pytorch-fid takes [0, 1]
        logits = pool3 @ fc_w.T
    print("Inception pool3: mean", pool3.mean().item(), "std", pool3.std().item(),
          "| image 0 vs 1 relative difference",
          ((pool3[0] - pool3[1]).norm() / pool3[0].norm()).item())
    t = {"x": x, "pool3": pool3, "logits_unbiased": logits}
    r = torch.rand(1, 2, 7, 5, generator=gen)
    t["resize.in"] = r
    for h, w in [(13, 11), (3, 4), (7, 3), (40, 33)]:
        t[f"resize.{h}x{w}"] = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False)
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT, "inception_fid_random.safetensors"))


class Classifier(nn.Module):
    """The module documented in crates/models/src/classifier.rs."""

    def __init__(self, c=1, w=32, s=28, f=128, k=10):
        super().__init__()
        blk = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        self.block1 = nn.Sequential(*blk(c, w), *blk(w, w), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*blk(w, 2 * w), *blk(2 * w, 2 * w), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(2 * w * (s // 4) ** 2, f)
        self.fc2 = nn.Linear(f, k)

    def forward(self, x):
        h = F.relu(self.fc1(self.block2(self.block1(x)).flatten(1)))
        return h, self.fc2(h)


def classifier_case():
    torch.manual_seed(3)
    net = Classifier(c=1, w=8, s=28, f=16, k=10)
    # A few training-mode forwards so the running statistics are not 0 / 1.
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 1, 28, 28) * 0.7 + 0.1)
    net.eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        feats, logits = net(x)
    t = {f"net.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    t.update({"x": x, "features": feats, "logits": logits})
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT, "classifier_pytorch.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240605)
    fid_cases(rng)
    kid_case(rng)
    is_case(rng)
    pr_case(rng)
    swd_case(rng)
    quality_case(rng)
    misc_case(rng)
    save_file({k: torch.from_numpy(v) for k, v in out.items()}, os.path.join(OUT, "reference.safetensors"))
    inception_case()
    classifier_case()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
