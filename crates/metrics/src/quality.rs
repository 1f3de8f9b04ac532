//! Full-reference image quality: PSNR and SSIM, as the super-resolution literature reports them.
//!
//! Images are easel tensors `[B, C, H, W]` in [−1, 1]; they are mapped to the 0–255 scale
//! (`(x + 1)/2 · 255`, no rounding) and compared image by image. With
//! [`QualityConfig::y_channel`], RGB images are first converted to the luma of ITU-R BT.601 as
//! MATLAB's `rgb2ycbcr` and BasicSR's `bgr2ycbcr(y_only=True)` do,
//!
//! ```text
//! Y = 16 + 65.481·R + 128.553·G + 24.966·B        (R, G, B in [0, 1]; Y in [16, 235])
//! ```
//!
//! (grey images are used as they are). [`QualityConfig::crop_border`] pixels (the upscaling factor,
//! by convention) are removed from every side before measuring.
//!
//! - **PSNR** = `10·log₁₀(255² / MSE)` per image (∞ for identical images).
//! - **SSIM** (Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error Visibility
//!   to Structural Similarity", IEEE TIP 2004) as scikit-image's `structural_similarity` with
//!   `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255`: local
//!   statistics under an 11-tap Gaussian window (σ = 1.5, truncated at 3.5σ, normalised),
//!   `C₁ = (0.01·255)²`, `C₂ = (0.03·255)²`,
//!
//!   ```text
//!   SSIM = (2μₓμᵧ + C₁)(2σₓᵧ + C₂) / ((μₓ² + μᵧ² + C₁)(σₓ² + σᵧ² + C₂))
//!   ```
//!
//!   averaged over the positions where the window fits inside the image (skimage's border crop of
//!   5), then over channels.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::swd::Planes;

/// How images are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Pixels removed from every side before measuring (the scale factor in SR papers).
    pub crop_border: usize,
    /// Measure on the BT.601 Y channel (RGB input) instead of every channel.
    pub y_channel: bool,
}

impl QualityConfig {
    /// The super-resolution convention: Y channel, `scale` pixels cropped.
    pub fn super_resolution(scale: usize) -> Self {
        Self {
            crop_border: scale,
            y_channel: true,
        }
    }
    /// Every channel, no crop.
    pub fn rgb() -> Self {
        Self {
            crop_border: 0,
            y_channel: false,
        }
    }
}

const DATA_RANGE: f64 = 255.0;

/// Planes of one image on the 0–255 scale after the colour conversion and crop.
fn prepare(x: &Planes, img: usize, cfg: &QualityConfig) -> Result<(Vec<Vec<f64>>, usize, usize)> {
    let [_, c, h, w] = x.dims;
    let cb = cfg.crop_border;
    if h <= 2 * cb || w <= 2 * cb {
        candle_core::bail!("crop_border {cb} leaves nothing of {h}×{w} images")
    }
    let (ho, wo) = (h - 2 * cb, w - 2 * cb);
    let plane = |ch: usize| -> Vec<f64> {
        let base = (img * c + ch) * h * w;
        let mut out = Vec::with_capacity(ho * wo);
        for y in cb..h - cb {
            out.extend(
                x.data[base + y * w + cb..base + y * w + w - cb]
                    .iter()
                    .map(|v| (v + 1.0) / 2.0),
            );
        }
        out
    };
    let planes = if cfg.y_channel && c == 3 {
        let (r, g, b) = (plane(0), plane(1), plane(2));
        vec![r
            .iter()
            .zip(&g)
            .zip(&b)
            .map(|((r, g), b)| 16.0 + 65.481 * r + 128.553 * g + 24.966 * b)
            .collect()]
    } else if cfg.y_channel && c != 1 {
        candle_core::bail!("the Y channel needs RGB or grey images, got {c} channels")
    } else {
        (0..c)
            .map(|ch| plane(ch).into_iter().map(|v| v * DATA_RANGE).collect())
            .collect()
    };
    Ok((planes, ho, wo))
}

fn check_pair(x: &Tensor, y: &Tensor) -> Result<(Planes, Planes)> {
    if x.dims() != y.dims() || x.rank() != 4 {
        candle_core::bail!(
            "image quality needs two batches of the same shape [B, C, H, W], got {:?} and {:?}",
            x.dims(),
            y.dims()
        )
    }
    Ok((Planes::from_tensor(x)?, Planes::from_tensor(y)?))
}

/// PSNR in dB of every image pair of `x` and `y` `[B, C, H, W]` in [−1, 1].
pub fn psnr(x: &Tensor, y: &Tensor, cfg: &QualityConfig) -> Result<Vec<f64>> {
    let (a, b) = check_pair(x, y)?;
    (0..a.dims[0])
        .map(|i| {
            let (pa, _, _) = prepare(&a, i, cfg)?;
            let (pb, _, _) = prepare(&b, i, cfg)?;
            let (mut se, mut n) = (0.0, 0usize);
            for (qa, qb) in pa.iter().zip(&pb) {
                se += qa
                    .iter()
                    .zip(qb)
                    .map(|(u, v)| (u - v) * (u - v))
                    .sum::<f64>();
                n += qa.len();
            }
            let mse = se / n as f64;
            Ok(10.0 * (DATA_RANGE * DATA_RANGE / mse).log10())
        })
        .collect()
}

/// The normalised Gaussian window of skimage (σ = 1.5, radius ⌊3.5σ + ½⌋ = 5).
fn gaussian_window() -> Vec<f64> {
    let sigma = 1.5f64;
    let r = (3.5 * sigma + 0.5) as isize;
    let g: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// Separable 'valid' filtering of an `h×w` plane: `(h − 10)×(w − 10)`.
fn filter_valid(p: &[f64], h: usize, w: usize, g: &[f64]) -> Vec<f64> {
    let k = g.len();
    let (ho, wo) = (h + 1 - k, w + 1 - k);
    let mut tmp = vec![0.0; h * wo];
    for y in 0..h {
        for x in 0..wo {
            tmp[y * wo + x] = g
                .iter()
                .enumerate()
                .map(|(t, gt)| gt * p[y * w + x + t])
                .sum();
        }
    }
    let mut out = vec![0.0; ho * wo];
    for y in 0..ho {
        for x in 0..wo {
            out[y * wo + x] = g
                .iter()
                .enumerate()
                .map(|(t, gt)| gt * tmp[(y + t) * wo + x])
                .sum();
        }
    }
    out
}

/// Mean SSIM of two planes (`h×w`, 0–255 scale).
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let g = gaussian_window();
    let f = |p: &[f64]| filter_valid(p, h, w, &g);
    let prod = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(x, y)| x * y).collect::<Vec<_>>();
    let (ux, uy) = (f(a), f(b));
    let (uxx, uyy, uxy) = (f(&prod(a, a)), f(&prod(b, b)), f(&prod(a, b)));
    let c1 = (0.01 * DATA_RANGE).powi(2);
    let c2 = (0.03 * DATA_RANGE).powi(2);
    let mut sum = 0.0;
    for i in 0..ux.len() {
        let (mx, my) = (ux[i], uy[i]);
        let vx = uxx[i] - mx * mx;
        let vy = uyy[i] - my * my;
        let vxy = uxy[i] - mx * my;
        sum +=
            ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
    sum / ux.len() as f64
}

/// SSIM of every image pair of `x` and `y` `[B, C, H, W]` in [−1, 1] (mean over channels unless
/// on the Y channel). The cropped images must be at least 11×11.
pub fn ssim(x: &Tensor, y: &Tensor, cfg: &QualityConfig) -> Result<Vec<f64>> {
    let (a, b) = check_pair(x, y)?;
    (0..a.dims[0])
        .map(|i| {
            let (pa, h, w) = prepare(&a, i, cfg)?;
            let (pb, _, _) = prepare(&b, i, cfg)?;
            if h < 11 || w < 11 {
                candle_core::bail!(
                    "SSIM needs images of at least 11×11 after cropping, got {h}×{w} from {:?}",
                    x.dims()
                )
            }
            let s: f64 = pa
                .iter()
                .zip(&pb)
                .map(|(u, v)| ssim_plane(u, v, h, w))
                .sum();
            Ok(s / pa.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(b: usize, c: usize, h: usize, w: usize) -> Tensor {
        let n = b * c * h * w;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        Tensor::from_vec(v, (b, c, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn ssim_of_an_image_with_itself_is_one() {
        let x = ramp(2, 3, 20, 17);
        for cfg in [QualityConfig::rgb(), QualityConfig::super_resolution(2)] {
            for s in ssim(&x, &x, &cfg).unwrap() {
                assert!((s - 1.0).abs() < 1e-12, "{s}");
            }
            assert!(psnr(&x, &x, &cfg).unwrap().iter().all(|p| p.is_infinite()));
        }
    }

    #[test]
    fn psnr_of_a_known_mse() {
        // A constant offset of 0.1 in [−1, 1] is 12.75 on the 0–255 scale: MSE = 12.75².
        let x = ramp(1, 3, 12, 12);
        let y = (&x + 0.1).unwrap();
        let p = psnr(&x, &y, &QualityConfig::rgb()).unwrap()[0];
        let want = 10.0 * (255f64.powi(2) / 12.75f64.powi(2)).log10();
        assert!((p - want).abs() < 1e-5, "{p} vs {want}");
        // On Y the offset becomes 0.05·(65.481 + 128.553 + 24.966) = 10.95.
        let p = psnr(&x, &y, &QualityConfig::super_resolution(0)).unwrap()[0];
        let want = 10.0 * (255f64.powi(2) / 10.95f64.powi(2)).log10();
        assert!((p - want).abs() < 1e-4, "{p} vs {want}");
    }

    #[test]
    fn errors() {
        let x = ramp(1, 3, 12, 12);
        let err = ssim(&x, &x, &QualityConfig::super_resolution(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10×10"), "{err}");
        let err = psnr(&x, &ramp(1, 3, 12, 11), &QualityConfig::rgb())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[1, 3, 12, 11]"), "{err}");
        let four = ramp(1, 4, 12, 12);
        assert!(psnr(&four, &four, &QualityConfig::super_resolution(0)).is_err());
    }
}
