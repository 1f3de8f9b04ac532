//! Gaussian and Laplacian pyramids (Burt & Adelson 1983), as used by LAPGAN (Denton et al. 2015)
//! and by the sliced Wasserstein distance of Karras et al. 2018.
//!
//! - `reduce`: blur with the 5-tap binomial filter `[1, 4, 6, 4, 1] / 16` (separable, edges
//!   replicated) and keep every second row and column: `[B, C, H, W] → [B, C, ⌈H/2⌉, ⌈W/2⌉]`.
//! - `expand`: insert zeros between samples and blur with the same filter (×4 to restore the
//!   gain), normalised by the expansion of an all-ones image so borders keep their brightness;
//!   cropped to the requested size.
//! - A Laplacian pyramid stores the band-pass residuals `h_k = G_k − expand(G_{k+1})` and the
//!   coarsest Gaussian level; reconstruction `G_k = expand(G_{k+1}) + h_k` is exact by
//!   construction.
//!
//! Written with candle's own ops, so it runs on every device. It is not meant to be
//! differentiated (LAPGAN precomputes its training pairs; SWD measures).

use candle_core::{DType, Result, Tensor};

const TAPS: [f64; 5] = [1.0, 4.0, 6.0, 4.0, 1.0];

fn kernel(x: &Tensor, gain: f64) -> Result<Tensor> {
    let mut k = Vec::with_capacity(25);
    for a in TAPS {
        for b in TAPS {
            k.push(a * b / 256.0 * gain);
        }
    }
    Tensor::from_vec(k, (1, 1, 5, 5), x.device())?.to_dtype(x.dtype())
}

fn check(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    let dims = x.dims4().map_err(|_| {
        candle_core::Error::Msg(format!(
            "{what} expects images [B, C, H, W], got shape {:?}",
            x.dims()
        ))
    })?;
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        candle_core::bail!("{what} expects f32 or f64 images, got {:?}", x.dtype())
    }
    Ok(dims)
}

/// One Gaussian pyramid step down: `[B, C, H, W] → [B, C, ⌈H/2⌉, ⌈W/2⌉]`.
pub fn reduce(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = check(x, "pyramid reduce")?;
    let flat = x.reshape((b * c, 1, h, w))?; // [B·C, 1, H, W]
    let padded = flat.pad_with_same(2, 2, 2)?.pad_with_same(3, 2, 2)?; // [B·C, 1, H+4, W+4]
    let blurred = padded.conv2d(&kernel(x, 1.0)?, 0, 2, 1, 1)?; // [B·C, 1, ⌈H/2⌉, ⌈W/2⌉]
    let (_, _, oh, ow) = blurred.dims4()?;
    blurred.reshape((b, c, oh, ow))
}

/// One step up to `[B, C, h, w]` (`h ∈ {2H−1, 2H}`, `w` likewise).
pub fn expand(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, ih, iw) = check(x, "pyramid expand")?;
    if !(h == 2 * ih || h + 1 == 2 * ih) || !(w == 2 * iw || w + 1 == 2 * iw) {
        candle_core::bail!(
            "pyramid expand of {:?} can give {}×{} or {}×{}, not {h}×{w}",
            x.dims(),
            2 * ih - 1,
            2 * iw - 1,
            2 * ih,
            2 * iw
        )
    }
    let k = kernel(x, 4.0)?;
    // Transposed convolution with stride 2 = zero insertion + blur: output 2H × 2W.
    let up = |t: &Tensor| -> Result<Tensor> { t.conv_transpose2d(&k, 2, 1, 2, 1) };
    let flat = x.reshape((b * c, 1, ih, iw))?;
    let num = up(&flat)?; // [B·C, 1, 2H, 2W]
    let ones = Tensor::ones((1, 1, ih, iw), x.dtype(), x.device())?;
    let den = up(&ones)?; // gain of the zero-padded filter at each position
    let out = num.broadcast_div(&den)?.narrow(2, 0, h)?.narrow(3, 0, w)?;
    out.reshape((b, c, h, w))
}

/// A Laplacian pyramid: band-pass residuals from fine to coarse, then the coarsest image.
#[derive(Debug, Clone)]
pub struct Laplacian {
    /// `h_0` (full size) … `h_{L−1}`.
    pub bands: Vec<Tensor>,
    /// The Gaussian level `G_L` (coarsest).
    pub base: Tensor,
}

/// The Gaussian pyramid `[G_0 = x, G_1, …, G_levels]`.
pub fn gaussian(x: &Tensor, levels: usize) -> Result<Vec<Tensor>> {
    let mut out = vec![x.clone()];
    for _ in 0..levels {
        let next = reduce(out.last().expect("non-empty"))?;
        out.push(next);
    }
    Ok(out)
}

/// The Laplacian pyramid of `x` with `levels` band-pass levels.
pub fn laplacian(x: &Tensor, levels: usize) -> Result<Laplacian> {
    let g = gaussian(x, levels)?;
    let mut bands = Vec::with_capacity(levels);
    for k in 0..levels {
        let (_, _, h, w) = g[k].dims4()?;
        bands.push((&g[k] - expand(&g[k + 1], h, w)?)?);
    }
    Ok(Laplacian {
        bands,
        base: g[levels].clone(),
    })
}

/// Rebuilds the image: `G_k = expand(G_{k+1}) + h_k`, coarse to fine.
pub fn reconstruct(p: &Laplacian) -> Result<Tensor> {
    let mut img = p.base.clone();
    for band in p.bands.iter().rev() {
        let (_, _, h, w) = band.dims4()?;
        img = (expand(&img, h, w)? + band)?;
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn reconstruction_is_exact_at_even_and_odd_sizes() {
        for (h, w) in [(32, 32), (28, 20), (17, 9)] {
            let x = Tensor::randn(0f64, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            let p = laplacian(&x, 3).unwrap();
            assert_eq!(p.bands[0].dims(), [2, 3, h, w]);
            assert_eq!(p.base.dims(), [2, 3, h.div_ceil(8), w.div_ceil(8)]);
            assert!(max_abs(&reconstruct(&p).unwrap(), &x) < 1e-12);
        }
    }

    #[test]
    fn constants_pass_through_and_filter_matches_formula() {
        let c = Tensor::full(0.7f64, (1, 2, 9, 12), &Device::Cpu).unwrap();
        let r = reduce(&c).unwrap();
        assert_eq!(r.dims(), [1, 2, 5, 6]);
        assert!(
            max_abs(
                &r,
                &Tensor::full(0.7f64, (1, 2, 5, 6), &Device::Cpu).unwrap()
            ) < 1e-12
        );
        let e = expand(&r, 9, 12).unwrap();
        assert!(max_abs(&e, &c) < 1e-12);
        // An impulse at the centre (4, 4) of a 9×9 image. Output (i, j) samples input (2i, 2j), so
        // output (2, 2) sees the kernel's centre tap 6·6/256, output (2, 3) the tap two columns
        // away, 6·1/256, and output (1, 1) the corner tap 1/256.
        let mut v = vec![0f64; 81];
        v[4 * 9 + 4] = 1.0;
        let imp = Tensor::from_vec(v, (1, 1, 9, 9), &Device::Cpu).unwrap();
        let r = reduce(&imp)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!((r[2 * 5 + 2] - 36.0 / 256.0).abs() < 1e-15, "{r:?}");
        assert!((r[2 * 5 + 3] - 6.0 / 256.0).abs() < 1e-15, "{r:?}");
        assert!((r[5 + 1] - 1.0 / 256.0).abs() < 1e-15, "{r:?}");
        assert!((r.iter().sum::<f64>() - 64.0 / 256.0).abs() < 1e-15); // taps at even offsets: (1+6+1)²/256
        let bad = expand(
            &Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap(),
            10,
            8,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("not 10×8"), "{bad}");
    }
}
