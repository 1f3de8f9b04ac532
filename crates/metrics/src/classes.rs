//! Metrics on a classifier's outputs: the Inception-style score and mode coverage.
//!
//! **Inception Score** (Salimans, Goodfellow, Zaremba, Cheung, Radford & Chen, "Improved Techniques
//! for Training GANs", NeurIPS 2016): with `p(y|x)` the softmax of the logits and `p(y)` its mean
//! over a split,
//!
//! ```text
//! IS = exp( E_x KL(p(y|x) ‖ p(y)) )
//! ```
//!
//! computed on `splits` consecutive chunks (rows `i·N/splits .. (i+1)·N/splits`, 10 by default)
//! and reported as the mean and population standard deviation over the chunks, in f64, as
//! torch-fidelity's `isc_features_to_metric`. With Inception the logits are the 1008 `fc`
//! outputs without bias; with easel's classifier (a "domain" score) they are its class logits.
//!
//! **Mode coverage** (as in Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017, and
//! Srivastava et al., "VEEGAN", NeurIPS 2017): the histogram of the classifier's argmax over the
//! samples, the number of classes hit, and `KL(q ‖ U) = Σ_c q_c log(K·q_c)` of the class
//! frequencies `q` to the uniform distribution over the `K` classes (0 when every class is equally
//! frequent, `log K` when one class takes everything).

use candle_core::{Result, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::linalg::Mat;

/// Mean and standard deviation of the per-split scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionScore {
    /// Mean over splits.
    pub mean: f64,
    /// Population standard deviation over splits.
    pub std: f64,
}

/// The Inception-style score of `logits` `[N, K]` over `splits` chunks. `shuffle_seed` permutes
/// the rows first (torch-fidelity shuffles by default); `None` keeps the given order.
pub fn inception_score(
    logits: &Tensor,
    splits: usize,
    shuffle_seed: Option<u64>,
) -> Result<InceptionScore> {
    let l = Mat::from_tensor(logits, "Inception-score logits")?;
    let n = l.rows;
    if splits == 0 || n < splits {
        candle_core::bail!(
            "Inception score needs at least one sample per split: {n} samples, {splits} splits"
        )
    }
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = shuffle_seed {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    // log-softmax per row.
    let k = l.cols;
    let mut log_p = vec![0.0; n * k];
    for (r, &i) in order.iter().enumerate() {
        let row = l.row(i);
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        for (o, v) in log_p[r * k..(r + 1) * k].iter_mut().zip(row) {
            *o = v - lse;
        }
    }
    let mut scores = Vec::with_capacity(splits);
    for s in 0..splits {
        let (a, b) = (s * n / splits, (s + 1) * n / splits);
        let m = (b - a) as f64;
        let mut py = vec![0.0; k];
        for r in a..b {
            for (q, lp) in py.iter_mut().zip(&log_p[r * k..(r + 1) * k]) {
                *q += lp.exp() / m;
            }
        }
        let log_py: Vec<f64> = py.iter().map(|q| q.ln()).collect();
        let mut kl = 0.0;
        for r in a..b {
            for (lp, lq) in log_p[r * k..(r + 1) * k].iter().zip(&log_py) {
                let p = lp.exp();
                if p > 0.0 {
                    kl += p * (lp - lq);
                }
            }
        }
        scores.push((kl / m).exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / splits as f64;
    Ok(InceptionScore {
        mean,
        std: var.sqrt(),
    })
}

/// How a classifier's argmax spreads over its classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeCoverage {
    /// Samples per class.
    pub histogram: Vec<usize>,
    /// Classes predicted at least once.
    pub classes_hit: usize,
    /// `K`, the number of classes.
    pub num_classes: usize,
    /// `KL(q ‖ U)` of the class frequencies to uniform, in nats.
    pub kl_to_uniform: f64,
}

/// Mode coverage of samples whose classifier logits (or probabilities) are `logits` `[N, K]`.
pub fn mode_coverage(logits: &Tensor) -> Result<ModeCoverage> {
    let l = Mat::from_tensor(logits, "mode-coverage logits")?;
    if l.rows == 0 || l.cols == 0 {
        candle_core::bail!(
            "mode coverage needs logits [N, K] with N, K ≥ 1, got [{}, {}]",
            l.rows,
            l.cols
        )
    }
    let mut histogram = vec![0usize; l.cols];
    for i in 0..l.rows {
        let row = l.row(i);
        // First maximum, as argmax in PyTorch and numpy.
        let mut best = 0;
        for (j, v) in row.iter().enumerate() {
            if *v > row[best] {
                best = j;
            }
        }
        histogram[best] += 1;
    }
    let n = l.rows as f64;
    let k = l.cols as f64;
    let kl_to_uniform = histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let q = c as f64 / n;
            q * (q * k).ln()
        })
        .sum();
    Ok(ModeCoverage {
        classes_hit: histogram.iter().filter(|&&c| c > 0).count(),
        num_classes: l.cols,
        histogram,
        kl_to_uniform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn score_extremes() {
        // Confident and uniform over K classes: IS = K. All the same class: IS = 1.
        let k = 5;
        let mut v = Vec::new();
        for i in 0..50 {
            for j in 0..k {
                v.push(if j == i % k { 30.0 } else { 0.0 });
            }
        }
        let t = Tensor::from_vec(v, (50, k), &Device::Cpu).unwrap();
        let s = inception_score(&t, 5, None).unwrap();
        assert!((s.mean - k as f64).abs() < 1e-9 && s.std < 1e-9, "{s:?}");
        let same = Tensor::ones((20, k), candle_core::DType::F32, &Device::Cpu).unwrap();
        let s = inception_score(&same, 2, Some(3)).unwrap();
        assert!((s.mean - 1.0).abs() < 1e-12, "{s:?}");
        assert!(inception_score(&same, 21, None).is_err());
    }

    #[test]
    fn coverage_of_one_class_and_of_all() {
        let t = Tensor::new(&[[0f32, 1.], [0., 2.], [3., 1.], [1., 1.]], &Device::Cpu).unwrap();
        let m = mode_coverage(&t).unwrap();
        assert_eq!(m.histogram, [2, 2]); // the tie goes to the first class
        assert_eq!(m.classes_hit, 2);
        assert!(m.kl_to_uniform.abs() < 1e-15);
        let t = Tensor::new(&[[0f32, 1., 0.], [0., 2., 0.]], &Device::Cpu).unwrap();
        let m = mode_coverage(&t).unwrap();
        assert_eq!((m.classes_hit, m.num_classes), (1, 3));
        assert!((m.kl_to_uniform - 3f64.ln()).abs() < 1e-15);
    }
}
