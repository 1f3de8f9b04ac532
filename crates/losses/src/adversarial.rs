//! Adversarial losses (Goodfellow et al. 2014; the non-saturating generator loss).

use candle_core::{Result, Tensor};

/// Mean binary cross-entropy between `sigmoid(logits)` and a constant `target` in [0, 1].
///
/// PyTorch: `F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))`,
/// i.e. mean over elements of `max(x, 0) − x·t + log(1 + exp(−|x|))`, which is stable for large |x|.
/// A target below 1 for real images is one-sided label smoothing (Salimans et al. 2016).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&target) {
        candle_core::bail!("bce_with_logits target must be in [0, 1], got {target}")
    }
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let per = ((logits.relu()? - (logits * target)?)? + softplus_neg_abs)?;
    per.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Naive formula −[t·log σ(x) + (1−t)·log(1−σ(x))], valid for moderate x.
    fn naive(x: f64, t: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
    }

    #[test]
    fn matches_formula_and_is_stable() {
        let xs = [-3.0f64, -0.5, 0.0, 0.7, 4.0];
        let x = Tensor::new(&xs, &Device::Cpu).unwrap();
        for t in [0.0, 0.9, 1.0] {
            let got = bce_with_logits(&x, t).unwrap().to_scalar::<f64>().unwrap();
            let want = xs.iter().map(|&v| naive(v, t)).sum::<f64>() / xs.len() as f64;
            assert!((got - want).abs() < 1e-12, "t={t}: {got} vs {want}");
        }
        // Large logits: the naive form overflows to inf, the stable one gives ≈ |x| for the wrong label.
        let big = Tensor::new(&[-200.0f32], &Device::Cpu).unwrap();
        let v = bce_with_logits(&big, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((v - 200.0).abs() < 1e-3, "{v}");
        assert!(bce_with_logits(&big, 1.5).is_err());
    }

    #[test]
    fn gradient_is_sigmoid_minus_target() {
        // d/dx mean(bce) = (σ(x) − t) / n.
        let x = Var::new(&[-1.0f64, 0.3, 2.0], &Device::Cpu).unwrap();
        let g = bce_with_logits(x.as_tensor(), 0.9)
            .unwrap()
            .backward()
            .unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        for (gv, xv) in gx.iter().zip([-1.0f64, 0.3, 2.0]) {
            let want = (1.0 / (1.0 + (-xv).exp()) - 0.9) / 3.0;
            assert!((gv - want).abs() < 1e-12, "{gv} vs {want}");
        }
    }
}
