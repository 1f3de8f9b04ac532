//! Perceptual losses on network features (Gatys, Ecker & Bethge, "Image Style Transfer Using
//! Convolutional Neural Networks", CVPR 2016; Johnson, Alahi & Fei-Fei, "Perceptual Losses for
//! Real-Time Style Transfer and Super-Resolution", ECCV 2016): feature reconstruction ("content"),
//! Gram matrices and the style loss built on them, total variation, and weighted sums over layers.
//!
//! Features are `[B, C, H, W]`; write `N = C` (channels) and `M = H·W` (positions), and `F` for
//! one image's features as an `N × M` matrix. The published formulations differ only in their
//! normalising constants, which matter because the loss weights people quote are tied to them; each
//! is named here:
//!
//! | | Gram ([`GramNorm`]) | style layer loss ([`StyleNorm`]) | content ([`ContentNorm`]) |
//! |---|---|---|---|
//! | Gatys et al. 2016 (eqs. 1, 3, 4); Keras `neural_style_transfer.py` | `F·Fᵀ` | `Σ(G − A)² / (4 N² M²)` | `½ Σ(F − P)²` |
//! | the seeds' Keras tutorial (`style_reconstruction_loss`, `seed-losses.json`) | `F·Fᵀ` | `Σ(G − A)² / (2M)²` | `Σ(F − P)²` |
//! | pytorch/examples `fast_neural_style`; Johnson's `neural-style` | `F·Fᵀ / (N·M)` | `mean((G − A)²)` | `mean((F − P)²)` |
//! | the TensorFlow style-transfer tutorial | `F·Fᵀ / M` | `mean((G − A)²)` | `mean((F − P)²)` |
//!
//! Every function here is pure and differentiable (candle ops only), on any device and dtype.
//! Batched inputs give one loss summed over the batch for the `Σ` forms and averaged over every
//! element for the `mean` forms (as PyTorch's `mse_loss` does).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Normalisation of a Gram matrix `G = F·Fᵀ` (`N × N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GramNorm {
    /// `F·Fᵀ` (Gatys et al.; Keras).
    None,
    /// `F·Fᵀ / M`, per position (the TensorFlow tutorial).
    Positions,
    /// `F·Fᵀ / (N·M)`, per element (pytorch/examples `fast_neural_style`, `neural-style`).
    Elements,
}

impl GramNorm {
    /// The divisor for `n` channels and `m` positions.
    pub fn divisor(self, n: usize, m: usize) -> f64 {
        match self {
            GramNorm::None => 1.0,
            GramNorm::Positions => m as f64,
            GramNorm::Elements => (n * m) as f64,
        }
    }
}

/// Gram matrices `[B, C, C]` of features `[B, C, H, W]`: `G = F·Fᵀ / divisor` with `F` the
/// `C × H·W` matrix of each image (numpy: `F = x.reshape(C, H*W); F @ F.T`).
pub fn gram_matrix(features: &Tensor, norm: GramNorm) -> Result<Tensor> {
    let (b, c, h, w) = features.dims4()?;
    let f = features.reshape((b, c, h * w))?; // [B, C, M]
    let g = f.matmul(&f.t()?)?; // [B, C, C]
    let d = norm.divisor(c, h * w);
    if d == 1.0 {
        Ok(g)
    } else {
        g.affine(1.0 / d, 0.0)
    }
}

/// A style layer loss: a Gram normalisation with the reduction of `(G − A)²` that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StyleNorm {
    /// Gatys et al. eq. 4 (and Keras' `neural_style_transfer.py`): `G = F·Fᵀ`,
    /// `E = Σ(G − A)² / (4 N² M²)`.
    Gatys,
    /// The seeds' Keras tutorial: `G = F·Fᵀ`, `E = Σ(G − A)² / (2M)²` (no channel factor).
    Tutorial,
    /// pytorch/examples `fast_neural_style` and Johnson's `neural-style`: `G = F·Fᵀ / (N·M)`,
    /// `E = mean((G − A)²)`.
    Mse,
}

impl StyleNorm {
    /// The Gram normalisation this loss compares (targets must be computed with it).
    pub fn gram_norm(self) -> GramNorm {
        match self {
            StyleNorm::Gatys | StyleNorm::Tutorial => GramNorm::None,
            StyleNorm::Mse => GramNorm::Elements,
        }
    }
}

/// The style loss of one layer: the Gram matrix of `features` (`[B, C, H, W]`, e.g. the
/// generated image's) against `target_gram` (`[B, C, C]` or `[1, C, C]`, computed with
/// `norm.gram_norm()` — for [`GramNorm::None`] from an image of the same size), normalised as
/// `norm` says. Summed over the batch for [`StyleNorm::Gatys`] / [`StyleNorm::Tutorial`].
pub fn style_layer_loss(
    features: &Tensor,
    target_gram: &Tensor,
    norm: StyleNorm,
) -> Result<Tensor> {
    let (b, c, h, w) = features.dims4()?;
    let (tb, tc, tc2) = target_gram.dims3()?;
    if tc != c || tc2 != c || (tb != b && tb != 1) {
        candle_core::bail!(
            "style loss: features {:?} need a target Gram matrix [{b} or 1, {c}, {c}], got {:?}",
            features.dims(),
            target_gram.dims()
        )
    }
    let g = gram_matrix(features, norm.gram_norm())?;
    let sq = g.broadcast_sub(target_gram)?.sqr()?;
    let (n, m) = (c as f64, (h * w) as f64);
    match norm {
        StyleNorm::Gatys => sq.sum_all()?.affine(1.0 / (4.0 * n * n * m * m), 0.0),
        StyleNorm::Tutorial => sq.sum_all()?.affine(1.0 / (4.0 * m * m), 0.0),
        StyleNorm::Mse => sq.mean_all(),
    }
}

/// Reduction of the squared feature difference for the content (feature reconstruction) loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentNorm {
    /// `Σ(F − P)²` (the seeds' Keras tutorial, `seed-losses.json`).
    Sum,
    /// `½ Σ(F − P)²` (Gatys et al. eq. 1).
    Half,
    /// `mean((F − P)²)` (PyTorch `mse_loss`: `fast_neural_style`, `neural-style`).
    Mse,
}

/// The content loss between `features` and `target` (same shape, or `target` with batch 1,
/// broadcast over the batch), reduced as `norm` says.
pub fn content_loss(features: &Tensor, target: &Tensor, norm: ContentNorm) -> Result<Tensor> {
    let fd = features.dims();
    let td = target.dims();
    if fd.len() != td.len() || fd[1..] != td[1..] || (td[0] != fd[0] && td[0] != 1) {
        candle_core::bail!(
            "content loss: features {fd:?} and target {td:?} must have the same shape (or a \
             target batch of 1)"
        )
    }
    let sq = features.broadcast_sub(target)?.sqr()?;
    match norm {
        ContentNorm::Sum => sq.sum_all(),
        ContentNorm::Half => sq.sum_all()?.affine(0.5, 0.0),
        ContentNorm::Mse => sq.mean_all(),
    }
}

/// Which total-variation penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TvNorm {
    /// Squared differences on the `(H−1)×(W−1)` grid (the seeds' Keras tutorial, Mahendran &
    /// Vedaldi's β = 2): `Σ (x[i,j] − x[i+1,j])² + (x[i,j] − x[i,j+1])²` over `i < H−1, j < W−1`.
    #[default]
    Squared,
    /// Absolute differences over every neighbouring pair (`tf.image.total_variation`):
    /// `Σ |x[i+1,j] − x[i,j]| + Σ |x[i,j+1] − x[i,j]|`.
    Abs,
}

/// Total variation of images `[B, C, H, W]`, summed over the batch and channels.
pub fn total_variation(x: &Tensor, norm: TvNorm) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!(
            "total variation needs at least 2×2 pixels, got {:?}",
            x.dims()
        )
    }
    match norm {
        TvNorm::Squared => {
            // numpy (NCHW): a = x[:, :, :-1, :-1] - x[:, :, 1:, :-1]; b = x[:, :, :-1, :-1] - x[:, :, :-1, 1:]
            let corner = x.narrow(2, 0, h - 1)?.narrow(3, 0, w - 1)?;
            let down = x.narrow(2, 1, h - 1)?.narrow(3, 0, w - 1)?;
            let right = x.narrow(2, 0, h - 1)?.narrow(3, 1, w - 1)?;
            let a = (&corner - down)?.sqr()?;
            let b = (&corner - right)?.sqr()?;
            (a + b)?.sum_all()
        }
        TvNorm::Abs => {
            let dv = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?.abs()?;
            let dh = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?.abs()?;
            dv.sum_all()? + dh.sum_all()?
        }
    }
}

/// `Σ wᵢ·Lᵢ` over scalar losses (e.g. style layers with their weights, or the content, style and
/// TV terms). An empty list is an error: there would be nothing to differentiate.
pub fn weighted_sum(terms: &[(f64, Tensor)]) -> Result<Tensor> {
    let mut it = terms.iter();
    let Some((w0, l0)) = it.next() else {
        candle_core::bail!("weighted_sum of no losses")
    };
    let mut total = l0.affine(*w0, 0.0)?;
    for (w, l) in it {
        total = (total + l.affine(*w, 0.0)?)?;
    }
    Ok(total)
}

/// The style loss over several layers: `Σ_l w_l · style_layer_loss(features_l, targets_l)`.
pub fn style_loss(
    features: &[Tensor],
    target_grams: &[Tensor],
    weights: &[f64],
    norm: StyleNorm,
) -> Result<Tensor> {
    if features.len() != target_grams.len() || features.len() != weights.len() {
        candle_core::bail!(
            "style loss: {} feature maps, {} targets and {} weights must match",
            features.len(),
            target_grams.len(),
            weights.len()
        )
    }
    let terms = features
        .iter()
        .zip(target_grams)
        .zip(weights)
        .map(|((f, t), w)| Ok((*w, style_layer_loss(f, t, norm)?)))
        .collect::<Result<Vec<_>>>()?;
    weighted_sum(&terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use serde_json::Value;

    /// `tests/fixtures/seed-losses.json`: a copy of `../shared/conformance/seed-losses.json` (numpy
    /// `seed(1)` inputs and the expected values of the seeds' Keras tutorial).
    fn fixture() -> Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/seed-losses.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// A nested HWC (or NHWC with N = 1) list as `[1, C, H, W]` f64.
    fn nchw(v: &Value) -> Tensor {
        let mut v = v;
        if v[0][0][0].is_array() {
            v = &v[0]; // NHWC, N = 1
        }
        let rows = v.as_array().unwrap();
        let (h, w, c) = (
            rows.len(),
            rows[0].as_array().unwrap().len(),
            rows[0][0].as_array().unwrap().len(),
        );
        let mut data = Vec::with_capacity(h * w * c);
        for row in rows {
            for px in row.as_array().unwrap() {
                for x in px.as_array().unwrap() {
                    data.push(x.as_f64().unwrap());
                }
            }
        }
        Tensor::from_vec(data, (h, w, c), &Device::Cpu)
            .unwrap()
            .permute((2, 0, 1))
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn conformance_with_the_seed_values() {
        let f = fixture();
        // content_loss = Σ(output − base)²: 605.62195 printed by the seed.
        let c = &f["content_loss"];
        let got =
            scalar(content_loss(&nchw(&c["output"]), &nchw(&c["base"]), ContentNorm::Sum).unwrap());
        assert!(
            (got - c["expected"].as_f64().unwrap()).abs() < 1e-9,
            "{got}"
        );
        assert!((got - 605.62195).abs() < 1e-4);

        // gram_matrix = F·Fᵀ, F = x as (C, H·W).
        let g = &f["gram_matrix"];
        let got = gram_matrix(&nchw(&g["x"]), GramNorm::None).unwrap();
        let got = got.squeeze(0).unwrap().to_vec2::<f64>().unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(g["expected"].clone()).unwrap();
        for (r, w) in got.iter().zip(&want) {
            for (a, b) in r.iter().zip(w) {
                assert!((a - b).abs() < 1e-9, "{got:?} vs {want:?}");
            }
        }
        // The seed's printed values (float32 Keras): [[99.75723, -9.96186, -1.4740534], …].
        assert!((got[0][0] - 99.75723).abs() < 1e-4 && (got[1][2] + 4.141108).abs() < 1e-5);

        // style_layer_loss = Σ(G(output) − G(base))² / (2·H·W)²: 0.09799164.
        let s = &f["style_layer_loss"];
        let target = gram_matrix(&nchw(&s["base"]), GramNorm::None).unwrap();
        let got =
            scalar(style_layer_loss(&nchw(&s["output"]), &target, StyleNorm::Tutorial).unwrap());
        assert!(
            (got - s["expected"].as_f64().unwrap()).abs() < 1e-12,
            "{got}"
        );
        assert!((got - 0.09799164).abs() < 1e-7);

        // total_variation: 937.0538.
        let t = &f["total_variation"];
        let got = scalar(total_variation(&nchw(&t["x"]), TvNorm::Squared).unwrap());
        assert!(
            (got - t["expected"].as_f64().unwrap()).abs() < 1e-9,
            "{got}"
        );
        assert!((got - 937.0538).abs() < 1e-3);

        // f32 gives the same to float precision.
        let x32 = nchw(&t["x"]).to_dtype(DType::F32).unwrap();
        let got32 = scalar(total_variation(&x32, TvNorm::Squared).unwrap());
        assert!((got32 - 937.0538).abs() < 1e-2, "{got32}");
    }

    /// The other normalisations against their numpy formulas on a small hand-checkable input.
    #[test]
    fn normalisations_match_numpy_formulas() {
        // x: C = 2, H = 2, W = 3 (M = 6); F = [[1, 2, 3, 4, 5, 6], [0, -1, 0, 1, 0, 2]].
        // numpy: G = F @ F.T = [[91, 14], [14, 6]].
        let x = Tensor::new(
            &[[
                [[1f64, 2., 3.], [4., 5., 6.]],
                [[0., -1., 0.], [1., 0., 2.]],
            ]],
            &Device::Cpu,
        )
        .unwrap();
        let g = |n| {
            gram_matrix(&x, n)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap()
        };
        assert_eq!(g(GramNorm::None), [[91.0, 14.0], [14.0, 6.0]]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let p = g(GramNorm::Positions);
        assert!(close(p[0][0], 91.0 / 6.) && close(p[0][1], 14.0 / 6.) && close(p[1][1], 1.0));
        assert!(close(g(GramNorm::Elements)[1][0], 14.0 / 12.0));
        // Against a zero target A = 0: Σ G² = 91² + 2·14² + 6² = 8709.
        let zero = Tensor::zeros((1, 2, 2), DType::F64, &Device::Cpu).unwrap();
        let e = |n| scalar(style_layer_loss(&x, &zero, n).unwrap());
        assert!((e(StyleNorm::Gatys) - 8709.0 / (4.0 * 4.0 * 36.0)).abs() < 1e-12);
        assert!((e(StyleNorm::Tutorial) - 8709.0 / (4.0 * 36.0)).abs() < 1e-12);
        assert!((e(StyleNorm::Mse) - 8709.0 / 144.0 / 4.0).abs() < 1e-12);
        // Content: Σ x² = 91 + 6 = 97 over 12 elements.
        let zx = x.zeros_like().unwrap();
        let c = |n| scalar(content_loss(&x, &zx, n).unwrap());
        assert_eq!((c(ContentNorm::Sum), c(ContentNorm::Half)), (97.0, 48.5));
        assert!((c(ContentNorm::Mse) - 97.0 / 12.0).abs() < 1e-12);
        // TV squared (grid i < 1, j < 2): channel 0: (1−4)² + (1−2)² + (2−5)² + (2−3)² = 20;
        // channel 1: (0−1)² + (0+1)² + (−1−0)² + (−1−0)² = 4 → 24.
        assert_eq!(scalar(total_variation(&x, TvNorm::Squared).unwrap()), 24.0);
        // TV abs: vertical |3|·3 + |1|+|1|+|2| = 13; horizontal 1+1+1+1 + 1+1+1+2 = 9 → 22.
        assert_eq!(scalar(total_variation(&x, TvNorm::Abs).unwrap()), 22.0);
        // Weighted sums.
        let two = Tensor::new(2f64, &Device::Cpu).unwrap();
        let three = Tensor::new(3f64, &Device::Cpu).unwrap();
        assert_eq!(
            scalar(weighted_sum(&[(0.5, two), (2.0, three)]).unwrap()),
            7.0
        );
        assert!(weighted_sum(&[]).is_err());
        // Shape errors name both shapes.
        let bad = Tensor::zeros((1, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let e = style_layer_loss(&x, &bad, StyleNorm::Mse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[1, 2, 2, 3]") && e.contains("[1, 3, 3]"), "{e}");
    }

    /// Analytic gradients of every loss against central finite differences (f64).
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let x0 = (easel_nn::testing::uniform(&[2, 3, 4, 5], 1).unwrap() * 1.7).unwrap();
        let target = (easel_nn::testing::uniform(&[1, 3, 4, 5], 2).unwrap() * 1.7).unwrap();
        let tg = |n: StyleNorm| gram_matrix(&target, n.gram_norm()).unwrap();
        type LossFn<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
        let losses: Vec<(&str, LossFn)> = vec![
            (
                "gatys",
                Box::new(|x| style_layer_loss(x, &tg(StyleNorm::Gatys), StyleNorm::Gatys).unwrap()),
            ),
            (
                "tutorial",
                Box::new(|x| {
                    style_layer_loss(x, &tg(StyleNorm::Tutorial), StyleNorm::Tutorial).unwrap()
                }),
            ),
            (
                "mse",
                Box::new(|x| style_layer_loss(x, &tg(StyleNorm::Mse), StyleNorm::Mse).unwrap()),
            ),
            (
                "content",
                Box::new(|x| content_loss(x, &target, ContentNorm::Half).unwrap()),
            ),
            (
                "content-mse",
                Box::new(|x| content_loss(x, &target, ContentNorm::Mse).unwrap()),
            ),
            (
                "tv",
                Box::new(|x| total_variation(x, TvNorm::Squared).unwrap()),
            ),
            (
                "tv-abs",
                Box::new(|x| total_variation(x, TvNorm::Abs).unwrap()),
            ),
        ];
        let xs = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for (name, f) in &losses {
            let v = Var::from_tensor(&x0).unwrap();
            let g = f(v.as_tensor()).backward().unwrap();
            let g = g
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for k in (0..xs.len()).step_by(7) {
                let at = |d: f64| {
                    let mut p = xs.clone();
                    p[k] += d;
                    scalar(f(&Tensor::from_vec(p, x0.dims(), &dev).unwrap()))
                };
                let h = 1e-6;
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-6 * fd.abs().max(1.0),
                    "{name} element {k}: analytic {} vs finite difference {fd}",
                    g[k]
                );
            }
        }
    }
}
