//! Sliced Wasserstein distance on Laplacian-pyramid patches: Karras, Aila, Laine & Lehtinen,
//! "Progressive Growing of GANs for Improved Quality, Stability, and Variation", ICLR 2018 (§5,
//! and `metrics/sliced_wasserstein.py` of their code). It needs no network.
//!
//! For each image a Laplacian pyramid is built (`pyrDown`/`pyrUp` with the 5×5 binomial kernel
//! `[1 4 6 4 1]ᵀ[1 4 6 4 1]/256` and mirror borders, as OpenCV's `BORDER_REFLECT_101`), one level
//! per resolution from the image size down to 16×16 (at most `max_levels`). From every level,
//! `nhoods_per_image` random 7×7 neighbourhoods are taken as descriptors of `C·49` values. Per
//! level, the descriptors of a whole set are normalised per channel (zero mean, unit standard
//! deviation over all descriptors and pixels), then the distance between two sets `A`, `B` of equal
//! size is the sliced Wasserstein distance: for random unit directions `θ` (128 per repeat, 4
//! repeats), the mean over directions of `1/N Σᵢ |sort(Aθ)ᵢ − sort(Bθ)ᵢ|`, times 10³. The result
//! lists one distance per level (finest first) and their mean.
//!
//! Descriptors are stored and projected in f32, as in the original code. Patch positions and
//! directions come from ChaCha8 streams seeded by [`SwdConfig::seed`]. Images whose side is odd
//! at some level get their `pyrUp` cropped to that level's size (the original only handles powers
//! of two). Channels with zero variance are left unscaled instead of dividing by zero.

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::linalg::Mat;

/// SWD settings (defaults: Karras et al.'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwdConfig {
    /// Side of the square neighbourhoods (7).
    pub nhood_size: usize,
    /// Neighbourhoods drawn per image and level (128).
    pub nhoods_per_image: usize,
    /// Repeats with fresh directions (4).
    pub dir_repeats: usize,
    /// Random directions per repeat (128).
    pub dirs_per_repeat: usize,
    /// Coarsest pyramid resolution (16): levels are the image side halved while ≥ this.
    pub min_resolution: usize,
    /// At most this many levels (4; the original keeps all of them, which differs only for
    /// images larger than 128×128).
    pub max_levels: usize,
    /// Seed of the patch positions and of the directions.
    pub seed: u64,
}

impl Default for SwdConfig {
    fn default() -> Self {
        Self {
            nhood_size: 7,
            nhoods_per_image: 128,
            dir_repeats: 4,
            dirs_per_repeat: 128,
            min_resolution: 16,
            max_levels: 4,
            seed: 0,
        }
    }
}

impl SwdConfig {
    /// Number of pyramid levels for images of side `size` (0 if smaller than `min_resolution`).
    pub fn levels(&self, size: usize) -> usize {
        let mut n = 0;
        let mut res = size;
        while res >= self.min_resolution.max(1) && n < self.max_levels {
            n += 1;
            res /= 2;
        }
        n
    }
}

/// A host batch of images `[B, C, H, W]` in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    /// `[B, C, H, W]`.
    pub dims: [usize; 4],
    /// Row-major values.
    pub data: Vec<f64>,
}

impl Planes {
    /// Copies a tensor `[B, C, H, W]` (any device and float dtype) to the host.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (b, c, h, w) = t.dims4()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Ok(Self {
            dims: [b, c, h, w],
            data,
        })
    }

    fn plane(&self, p: usize) -> &[f64] {
        let hw = self.dims[2] * self.dims[3];
        &self.data[p * hw..(p + 1) * hw]
    }
}

/// Mirror (reflect-101) index into `0..n`: `… 2 1 | 0 1 2 … n−1 | n−2 …`, as scipy's `mirror`.
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(p);
    if i >= n as isize {
        i = p - i;
    }
    i as usize
}

const BINOMIAL: [f64; 5] = [1.0, 4.0, 6.0, 4.0, 1.0];

/// Separable correlation of one `h×w` plane with `BINOMIAL/16` along both axes, times `scale`,
/// mirror borders (the 5×5 kernel of the original is this outer product).
fn blur(plane: &[f64], h: usize, w: usize, scale: f64) -> Vec<f64> {
    let k: Vec<f64> = BINOMIAL.iter().map(|v| v / 16.0).collect();
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = scale
                * (0..5)
                    .map(|t| k[t] * plane[y * w + mirror(x as isize + t as isize - 2, w)])
                    .sum::<f64>();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..5)
                .map(|t| k[t] * tmp[mirror(y as isize + t as isize - 2, h) * w + x])
                .sum();
        }
    }
    out
}

/// OpenCV-style `pyrDown`: blur, then keep even rows and columns (`⌈H/2⌉×⌈W/2⌉`).
pub fn pyr_down(x: &Planes) -> Planes {
    let [b, c, h, w] = x.dims;
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut data = Vec::with_capacity(b * c * h2 * w2);
    for p in 0..b * c {
        let bl = blur(x.plane(p), h, w, 1.0);
        for y in (0..h).step_by(2) {
            for xx in (0..w).step_by(2) {
                data.push(bl[y * w + xx]);
            }
        }
    }
    Planes {
        dims: [b, c, h2, w2],
        data,
    }
}

/// OpenCV-style `pyrUp`: insert zeros to `2H×2W`, blur with 4× the kernel.
pub fn pyr_up(x: &Planes) -> Planes {
    let [b, c, h, w] = x.dims;
    let (h2, w2) = (2 * h, 2 * w);
    let mut data = Vec::with_capacity(b * c * h2 * w2);
    for p in 0..b * c {
        let mut up = vec![0.0; h2 * w2];
        for (y, row) in x.plane(p).chunks(w).enumerate() {
            for (xx, v) in row.iter().enumerate() {
                up[2 * y * w2 + 2 * xx] = *v;
            }
        }
        data.extend(blur(&up, h2, w2, 4.0));
    }
    Planes {
        dims: [b, c, h2, w2],
        data,
    }
}

/// Laplacian pyramid with `levels` levels, finest first: every level but the last is the image at
/// that resolution minus the upsampled next one; the last is the low-pass residual.
pub fn laplacian_pyramid(images: &Planes, levels: usize) -> Vec<Planes> {
    let mut pyr = vec![images.clone()];
    for _ in 1..levels {
        let down = pyr_down(pyr.last().expect("non-empty"));
        let up = pyr_up(&down);
        let fine = pyr.last_mut().expect("non-empty");
        let [_, _, h, w] = fine.dims;
        let [b, c, _, w2] = up.dims;
        for p in 0..b * c {
            for y in 0..h {
                for x in 0..w {
                    fine.data[(p * h + y) * w + x] -= up.data[(p * up.dims[2] + y) * w2 + x];
                }
            }
        }
        pyr.push(down);
    }
    pyr
}

/// The `C·k²` values of the `k×k` neighbourhood centred at (`y`, `x`) of image `img`
/// (channel-major, then rows), as the original's `get_descriptors_for_minibatch`.
pub fn descriptor_at(level: &Planes, img: usize, y: usize, x: usize, k: usize) -> Result<Vec<f64>> {
    let [b, c, h, w] = level.dims;
    let half = k / 2;
    if img >= b || y < half || x < half || y + half >= h || x + half >= w {
        candle_core::bail!(
            "SWD neighbourhood {k}×{k} at image {img}, ({y}, {x}) does not fit a level of shape {:?}",
            level.dims
        )
    }
    let mut out = Vec::with_capacity(c * k * k);
    for ch in 0..c {
        let plane = level.plane(img * c + ch);
        for yy in y - half..=y + half {
            out.extend_from_slice(&plane[yy * w + x - half..yy * w + x + half + 1]);
        }
    }
    Ok(out)
}

/// Descriptors of one pyramid level: `n` rows of `channels·k²` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptors {
    /// Number of descriptors.
    pub n: usize,
    /// Channels per descriptor.
    pub channels: usize,
    /// Values per descriptor (`channels·k²`).
    pub dim: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Descriptors {
    /// Normalises every channel to zero mean and unit (population) standard deviation over all
    /// descriptors and pixels (`finalize_descriptors` of the original); constant channels are
    /// only centred.
    pub fn normalize(&mut self) {
        let per = self.dim / self.channels.max(1);
        for ch in 0..self.channels {
            let (mut sum, mut count) = (0.0f64, 0usize);
            for r in 0..self.n {
                let s = &self.data[r * self.dim + ch * per..r * self.dim + (ch + 1) * per];
                sum += s.iter().map(|&v| v as f64).sum::<f64>();
                count += per;
            }
            let mean = sum / count.max(1) as f64;
            let mut var = 0.0f64;
            for r in 0..self.n {
                let s = &self.data[r * self.dim + ch * per..r * self.dim + (ch + 1) * per];
                var += s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
            }
            let std = (var / count.max(1) as f64).sqrt();
            let scale = if std > 0.0 { 1.0 / std } else { 1.0 };
            for r in 0..self.n {
                for v in &mut self.data[r * self.dim + ch * per..r * self.dim + (ch + 1) * per] {
                    *v = ((*v as f64 - mean) * scale) as f32;
                }
            }
        }
    }

    fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.n, self.dim), &Device::Cpu)
    }
}

/// Sliced Wasserstein distance between descriptor sets of equal size along the columns of `dirs`
/// `[dim, n_dirs]` (normalised here): the mean over directions and ranks of
/// `|sort(Aθ) − sort(Bθ)|` (not yet scaled by 10³).
pub fn sliced_wasserstein(a: &Descriptors, b: &Descriptors, dirs: &Mat) -> Result<f64> {
    if a.n != b.n || a.dim != b.dim || dirs.rows != a.dim || a.n == 0 || dirs.cols == 0 {
        candle_core::bail!(
            "sliced Wasserstein needs equal, non-empty descriptor sets and directions [dim, k]: [{}, {}] vs [{}, {}], directions [{}, {}] (use the same number of images for both sets)",
            a.n,
            a.dim,
            b.n,
            b.dim,
            dirs.rows,
            dirs.cols
        )
    }
    let k = dirs.cols;
    let mut unit = vec![0f32; dirs.rows * k];
    for j in 0..k {
        let norm = (0..dirs.rows)
            .map(|i| dirs.data[i * k + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            candle_core::bail!("sliced Wasserstein: direction {j} is zero")
        }
        for i in 0..dirs.rows {
            unit[i * k + j] = (dirs.data[i * k + j] / norm) as f32;
        }
    }
    let unit = Tensor::from_vec(unit, (dirs.rows, k), &Device::Cpu)?;
    let project = |d: &Descriptors| -> Result<Vec<f32>> {
        // [n, k] → [k, n] so that each direction is a contiguous row to sort.
        d.to_tensor()?
            .matmul(&unit)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let (mut pa, mut pb) = (project(a)?, project(b)?);
    let n = a.n;
    let mut total = 0.0f64;
    for j in 0..k {
        let ra = &mut pa[j * n..(j + 1) * n];
        let rb = &mut pb[j * n..(j + 1) * n];
        ra.sort_by(f32::total_cmp);
        rb.sort_by(f32::total_cmp);
        total += ra
            .iter()
            .zip(rb.iter())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>();
    }
    Ok(total / (n * k) as f64)
}

/// Collects pyramid descriptors of image batches (one set: real or generated).
#[derive(Debug, Clone)]
pub struct SwdAccumulator {
    cfg: SwdConfig,
    rng: ChaCha8Rng,
    /// `[C, H, W]` of the images, fixed by the first batch.
    shape: Option<[usize; 3]>,
    levels: Vec<Descriptors>,
}

impl SwdAccumulator {
    /// An empty accumulator; its patch positions come from `cfg.seed`.
    pub fn new(cfg: &SwdConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            shape: None,
            levels: Vec::new(),
        }
    }

    /// Adds images `[B, C, H, W]` (any range: descriptors are normalised per set).
    pub fn update(&mut self, images: &Tensor) -> Result<()> {
        let x = Planes::from_tensor(images)?;
        let [b, c, h, w] = x.dims;
        let cfg = &self.cfg;
        match self.shape {
            Some(s) if s != [c, h, w] => candle_core::bail!(
                "SWD: images of shape [B, {}, {}, {}] expected (as the first batch), got {:?}",
                s[0],
                s[1],
                s[2],
                images.dims()
            ),
            Some(_) => {}
            None => {
                let nl = cfg.levels(h.min(w));
                if nl == 0 || cfg.nhood_size == 0 || cfg.nhood_size.is_multiple_of(2) {
                    candle_core::bail!(
                        "SWD needs images of at least {0}×{0} and an odd neighbourhood size, got {:?} and nhood_size {1}",
                        cfg.min_resolution,
                        cfg.nhood_size,
                    )
                }
                let coarsest = (0..nl - 1).fold(h.min(w), |s, _| s.div_ceil(2));
                if coarsest < cfg.nhood_size {
                    candle_core::bail!(
                        "SWD: the coarsest level ({coarsest} pixels) is smaller than the {} pixel neighbourhood",
                        cfg.nhood_size
                    )
                }
                self.shape = Some([c, h, w]);
                let dim = c * cfg.nhood_size * cfg.nhood_size;
                self.levels = (0..nl)
                    .map(|_| Descriptors {
                        n: 0,
                        channels: c,
                        dim,
                        data: Vec::new(),
                    })
                    .collect();
            }
        }
        let k = cfg.nhood_size;
        let half = k / 2;
        let pyramid = laplacian_pyramid(&x, self.levels.len());
        for (level, desc) in pyramid.iter().zip(self.levels.iter_mut()) {
            let [_, _, lh, lw] = level.dims;
            for img in 0..b {
                for _ in 0..cfg.nhoods_per_image {
                    let y = self.rng.random_range(half..lh - half);
                    let xx = self.rng.random_range(half..lw - half);
                    let d = descriptor_at(level, img, y, xx, k)?;
                    desc.data.extend(d.iter().map(|&v| v as f32));
                    desc.n += 1;
                }
            }
        }
        Ok(())
    }

    /// The normalised descriptors, one set per level (finest first).
    pub fn finish(mut self) -> Result<Vec<Descriptors>> {
        if self.levels.is_empty() || self.levels[0].n == 0 {
            candle_core::bail!("SWD: no images were accumulated")
        }
        for l in &mut self.levels {
            l.normalize();
        }
        Ok(self.levels)
    }
}

/// SWD per level (×10³, finest first) and their mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwdResult {
    /// Distance of every pyramid level, times 10³.
    pub per_level: Vec<f64>,
    /// Mean over levels.
    pub mean: f64,
}

/// SWD between two sets of normalised descriptors from [`SwdAccumulator::finish`] (same image
/// shape and number of images), with `cfg.dir_repeats × cfg.dirs_per_repeat` random directions per
/// level drawn from `cfg.seed`.
pub fn swd(a: &[Descriptors], b: &[Descriptors], cfg: &SwdConfig) -> Result<SwdResult> {
    if a.len() != b.len() || a.is_empty() {
        candle_core::bail!(
            "SWD: descriptor sets have {} and {} pyramid levels (images of different sizes?)",
            a.len(),
            b.len()
        )
    }
    if cfg.dir_repeats == 0 || cfg.dirs_per_repeat == 0 {
        candle_core::bail!("SWD needs dir_repeats and dirs_per_repeat ≥ 1")
    }
    // A stream distinct from the patch positions' (which use `seed` itself).
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0057_445f_4449_5253);
    let mut per_level = Vec::with_capacity(a.len());
    for (la, lb) in a.iter().zip(b) {
        let mut sum = 0.0;
        for _ in 0..cfg.dir_repeats {
            let data = (0..la.dim * cfg.dirs_per_repeat)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let dirs = Mat::new(la.dim, cfg.dirs_per_repeat, data)?;
            sum += sliced_wasserstein(la, lb, &dirs)?;
        }
        per_level.push(sum / cfg.dir_repeats as f64 * 1e3);
    }
    let mean = per_level.iter().sum::<f64>() / per_level.len() as f64;
    Ok(SwdResult { per_level, mean })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_matches_reflect_101() {
        let got: Vec<usize> = (-3..7).map(|i| mirror(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(mirror(-2, 1), 0);
    }

    #[test]
    fn levels_follow_the_resolution() {
        let c = SwdConfig::default();
        assert_eq!(
            (c.levels(28), c.levels(32), c.levels(64), c.levels(1024)),
            (1, 2, 3, 4)
        );
        assert_eq!(c.levels(8), 0);
    }

    fn noise(seed: u64, b: usize, scale: f64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..b * 3 * 32 * 32)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * scale) as f32
            })
            .collect();
        Tensor::from_vec(v, (b, 3, 32, 32), &Device::Cpu).unwrap()
    }

    #[test]
    fn same_distribution_is_closer_than_a_different_one() {
        let cfg = SwdConfig {
            dir_repeats: 2,
            dirs_per_repeat: 32,
            ..SwdConfig::default()
        };
        let desc = |t: &Tensor, seed| {
            let mut acc = SwdAccumulator::new(&SwdConfig {
                seed,
                ..cfg.clone()
            });
            acc.update(t).unwrap();
            acc.finish().unwrap()
        };
        let a = desc(&noise(1, 32, 1.0), 1);
        let a2 = desc(&noise(2, 32, 1.0), 2);
        // Smoothed noise: different local structure.
        let smooth = {
            let x = noise(3, 32, 1.0);
            let p = Planes::from_tensor(&x).unwrap();
            let d = pyr_up(&pyr_down(&p));
            Tensor::from_vec(d.data, (32, 3, 32, 32), &Device::Cpu).unwrap()
        };
        let s = desc(&smooth, 3);
        let same = swd(&a, &a2, &cfg).unwrap();
        let diff = swd(&a, &s, &cfg).unwrap();
        assert_eq!(same.per_level.len(), 2);
        assert!(diff.mean > 2.0 * same.mean, "{same:?} vs {diff:?}");
        assert_eq!(swd(&a, &a, &cfg).unwrap().mean, 0.0);
    }
}
