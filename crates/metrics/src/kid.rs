//! Kernel Inception Distance: Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs",
//! ICLR 2018.
//!
//! The unbiased estimator of the squared maximum mean discrepancy with the polynomial kernel
//! `k(x, y) = (γ·xᵀy + c₀)^p` (defaults `γ = 1/D`, `c₀ = 1`, `p = 3`), on `m`-element subsets
//! `X`, `Y`:
//!
//! ```text
//! MMD²ᵤ = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m²
//! ```
//!
//! averaged over `subsets` random subset pairs (drawn without replacement within a subset), with
//! the population standard deviation — torch-fidelity's `kid_features_to_metric` (100 subsets of
//! 1000 by default). Its expectation is 0 when both sets come from the same distribution, so small
//! negative values are normal. Kernel sums are computed in f64.

use candle_core::{Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::linalg::Mat;

/// KID settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KidConfig {
    /// Number of subset pairs (100 in torch-fidelity).
    pub subsets: usize,
    /// Elements per subset (1000 in torch-fidelity); both sets need at least this many.
    pub subset_size: usize,
    /// Kernel degree `p` (3).
    pub degree: i32,
    /// Kernel scale `γ`; `None` is `1/D`.
    pub gamma: Option<f64>,
    /// Kernel offset `c₀` (1).
    pub coef0: f64,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidConfig {
    /// torch-fidelity's defaults: 100 subsets of 1000, `(xᵀy/D + 1)³`.
    fn default() -> Self {
        Self {
            subsets: 100,
            subset_size: 1000,
            degree: 3,
            gamma: None,
            coef0: 1.0,
            seed: 0,
        }
    }
}

/// KID estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KidResult {
    /// Mean of the per-subset MMD²ᵤ.
    pub mean: f64,
    /// Population standard deviation of the per-subset MMD²ᵤ.
    pub std: f64,
    /// MMD²ᵤ of every subset pair.
    pub per_subset: Vec<f64>,
}

/// Row indices of `cfg.subsets` subset pairs, drawn without replacement within each subset from a
/// ChaCha8 stream seeded by `cfg.seed`.
pub fn kid_subsets(n1: usize, n2: usize, cfg: &KidConfig) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    let m = cfg.subset_size;
    if m < 2 || cfg.subsets == 0 {
        candle_core::bail!(
            "KID needs subset_size ≥ 2 and subsets ≥ 1, got subset_size {m}, subsets {}",
            cfg.subsets
        )
    }
    if n1 < m || n2 < m {
        candle_core::bail!(
            "KID subset size {m} is larger than the number of samples ({n1} and {n2}): lower subset_size or provide more samples"
        )
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    Ok((0..cfg.subsets)
        .map(|_| {
            let a = rand::seq::index::sample(&mut rng, n1, m).into_vec();
            let b = rand::seq::index::sample(&mut rng, n2, m).into_vec();
            (a, b)
        })
        .collect())
}

/// KID of feature sets `real` `[N1, D]` and `fake` `[N2, D]`.
pub fn kid(real: &Tensor, fake: &Tensor, cfg: &KidConfig) -> Result<KidResult> {
    let x = Mat::from_tensor(real, "KID real features")?;
    let y = Mat::from_tensor(fake, "KID generated features")?;
    let subsets = kid_subsets(x.rows, y.rows, cfg)?;
    kid_on_subsets(&x, &y, &subsets, cfg)
}

/// KID on given subset pairs (row indices into `x` and `y`); `cfg.subsets`, `subset_size` and
/// `seed` are not used.
pub fn kid_on_subsets(
    x: &Mat,
    y: &Mat,
    subsets: &[(Vec<usize>, Vec<usize>)],
    cfg: &KidConfig,
) -> Result<KidResult> {
    if x.cols != y.cols {
        candle_core::bail!(
            "KID: feature dimensions differ, [{}, {}] vs [{}, {}]",
            x.rows,
            x.cols,
            y.rows,
            y.cols
        )
    }
    if subsets.is_empty() {
        candle_core::bail!("KID: no subsets")
    }
    let gamma = cfg.gamma.unwrap_or(1.0 / x.cols as f64);
    let mut per_subset = Vec::with_capacity(subsets.len());
    for (a, b) in subsets {
        if let Some(&i) = a.iter().find(|&&i| i >= x.rows) {
            candle_core::bail!("KID subset index {i} out of range for {} samples", x.rows)
        }
        if let Some(&i) = b.iter().find(|&&i| i >= y.rows) {
            candle_core::bail!("KID subset index {i} out of range for {} samples", y.rows)
        }
        per_subset.push(polynomial_mmd2_unbiased(
            &x.select_rows(a),
            &y.select_rows(b),
            cfg.degree,
            gamma,
            cfg.coef0,
        )?);
    }
    let n = per_subset.len() as f64;
    let mean = per_subset.iter().sum::<f64>() / n;
    let var = per_subset
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f64>()
        / n;
    Ok(KidResult {
        mean,
        std: var.sqrt(),
        per_subset,
    })
}

/// Unbiased MMD² of two `m`-row sets with the kernel `(γ·xᵀy + c₀)^degree` (torch-fidelity's
/// `mmd2(..., mmd_est="unbiased")`: the cross term keeps its diagonal and is divided by `m²`).
pub fn polynomial_mmd2_unbiased(
    x: &Mat,
    y: &Mat,
    degree: i32,
    gamma: f64,
    coef0: f64,
) -> Result<f64> {
    let m = x.rows;
    if y.rows != m || m < 2 {
        candle_core::bail!(
            "unbiased MMD² needs two sets of the same size m ≥ 2, got {} and {}",
            x.rows,
            y.rows
        )
    }
    let kernel_sum = |a: &Mat, b: &Mat, skip_diagonal: bool| -> Result<f64> {
        let g = a.matmul_t(b)?;
        let mut s = 0.0;
        for i in 0..a.rows {
            for j in 0..b.rows {
                if !(skip_diagonal && i == j) {
                    s += (gamma * g.data[i * b.rows + j] + coef0).powi(degree);
                }
            }
        }
        Ok(s)
    };
    let mf = m as f64;
    let kxx = kernel_sum(x, x, true)?;
    let kyy = kernel_sum(y, y, true)?;
    let kxy = kernel_sum(x, y, false)?;
    Ok((kxx + kyy) / (mf * (mf - 1.0)) - 2.0 * kxy / (mf * mf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn sample(rng: &mut ChaCha8Rng, n: usize, d: usize, shift: f64) -> Mat {
        Mat::new(
            n,
            d,
            (0..n * d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    z + shift
                })
                .collect::<Vec<f64>>(),
        )
        .unwrap()
    }

    #[test]
    fn unbiased_in_expectation_for_one_distribution() {
        // 400 independent pairs of 10-element sets from the same Gaussian: the mean MMD²ᵤ is 0
        // within 4 standard errors, while an estimator that also counts the k(x, x) diagonal
        // terms is clearly positive (so this check can tell the two apart).
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (reps, m, d) = (400, 10, 4);
        let mut vals = Vec::new();
        let mut biased = Vec::new();
        for _ in 0..reps {
            let x = sample(&mut rng, m, d, 0.0);
            let y = sample(&mut rng, m, d, 0.0);
            let u = polynomial_mmd2_unbiased(&x, &y, 3, 1.0 / d as f64, 1.0).unwrap();
            vals.push(u);
            // The same plus the diagonal terms Σ k(xᵢ, xᵢ)/m² of both sets.
            let diag = |a: &Mat| -> f64 {
                (0..m)
                    .map(|i| (a.row(i).iter().map(|v| v * v).sum::<f64>() / d as f64 + 1.0).powi(3))
                    .sum()
            };
            let mf = m as f64;
            let b = u + (diag(&x) + diag(&y)) / (mf * mf);
            biased.push(b);
        }
        let mean = vals.iter().sum::<f64>() / reps as f64;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / reps as f64).sqrt();
        let se = sd / (reps as f64).sqrt();
        assert!(mean.abs() < 4.0 * se, "mean {mean}, se {se}");
        let bmean = biased.iter().sum::<f64>() / reps as f64;
        assert!(bmean > 10.0 * se, "biased {bmean}, se {se}");
    }

    #[test]
    fn shifted_distribution_is_positive_and_subsets_are_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = sample(&mut rng, 200, 8, 0.0);
        let y = sample(&mut rng, 150, 8, 0.7);
        let cfg = KidConfig {
            subsets: 20,
            subset_size: 100,
            ..KidConfig::default()
        };
        let s1 = kid_subsets(200, 150, &cfg).unwrap();
        assert_eq!(s1, kid_subsets(200, 150, &cfg).unwrap());
        assert!(s1.iter().all(|(a, b)| {
            let mut a = a.clone();
            a.sort();
            a.dedup();
            a.len() == 100 && b.len() == 100 && a.iter().all(|&i| i < 200)
        }));
        let r = kid_on_subsets(&x, &y, &s1, &cfg).unwrap();
        assert!(
            r.mean > 5.0 * r.std / (cfg.subsets as f64).sqrt() && r.mean > 0.0,
            "{r:?}"
        );
        let err = kid_subsets(50, 150, &cfg).unwrap_err().to_string();
        assert!(
            err.contains("subset size 100") && err.contains("50"),
            "{err}"
        );
    }
}
