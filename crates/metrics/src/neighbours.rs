//! Metrics on nearest neighbours in feature space: precision/recall, the overfitting check and
//! diversity.
//!
//! **Improved precision and recall** (Kynkäänniemi, Karras, Laine, Lehtinen & Aila, NeurIPS 2019):
//! each real feature `r` gets the radius `ρ_k(r)` of its k-th nearest real neighbour (itself
//! excluded, k = 3); the real manifold is the union of those balls. Precision is the fraction of
//! generated samples inside the real manifold, recall the fraction of real samples inside the
//! generated manifold (built the same way):
//!
//! ```text
//! precision = 1/|G| Σ_g [∃ r: ‖g − r‖ ≤ ρ_k(r)]      recall = 1/|R| Σ_r [∃ g: ‖r − g‖ ≤ ρ_k(g)]
//! ```
//!
//! as torch-fidelity's `calculate_precision_recall_full`. Distances come from the Gram matrix
//! (`‖a‖² + ‖b‖² − 2aᵀb`) in f64, in blocks of 1024 rows, so memory stays at `1024·N` values.
//!
//! **Overfitting check**: for every generated sample its nearest training feature (index and
//! Euclidean distance), and the same for held-out test features. A generator that copies its
//! training set has samples much closer to the training data than unseen real images are, so the
//! two distance distributions are compared by quantiles ([`OverfitReport`]).
//!
//! **Diversity**: the mean Euclidean distance over all pairs of distinct samples.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::linalg::{sq_distances, Mat, BLOCK};

/// Precision and recall of generated features against real ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecall {
    /// Fraction of generated samples inside the real manifold.
    pub precision: f64,
    /// Fraction of real samples inside the generated manifold.
    pub recall: f64,
}

/// Squared distance of every row of `x` to its k-th nearest other row (k ≥ 1; the row itself is
/// the 0-th).
fn kth_radius_sq(x: &Mat, k: usize) -> Result<Vec<f64>> {
    let norms = x.row_sq_norms();
    let mut radii = Vec::with_capacity(x.rows);
    for start in (0..x.rows).step_by(BLOCK) {
        let len = BLOCK.min(x.rows - start);
        let mut d = sq_distances(&x.row_block(start, len), x, &norms)?;
        for i in 0..len {
            let row = &mut d.data[i * x.rows..(i + 1) * x.rows];
            row[start + i] = 0.0; // exactly 0 to itself, whatever the rounding of the Gram route
            let (_, kth, _) = row.select_nth_unstable_by(k, f64::total_cmp);
            radii.push(*kth);
        }
    }
    Ok(radii)
}

/// For every row of `q`, whether some row `j` of `x` has `‖q − x_j‖² ≤ radii_sq[j]`.
fn inside_manifold(q: &Mat, x: &Mat, radii_sq: &[f64]) -> Result<usize> {
    let norms = x.row_sq_norms();
    let mut count = 0;
    for start in (0..q.rows).step_by(BLOCK) {
        let len = BLOCK.min(q.rows - start);
        let d = sq_distances(&q.row_block(start, len), x, &norms)?;
        for i in 0..len {
            let row = &d.data[i * x.rows..(i + 1) * x.rows];
            if row.iter().zip(radii_sq).any(|(d, r)| d <= r) {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Improved precision/recall of `fake` `[N_g, D]` against `real` `[N_r, D]` with the k-th
/// nearest-neighbour radius (`k = 3` in the paper); both sets need more than `k` rows.
pub fn precision_recall(real: &Tensor, fake: &Tensor, k: usize) -> Result<PrecisionRecall> {
    let r = Mat::from_tensor(real, "precision/recall real features")?;
    let g = Mat::from_tensor(fake, "precision/recall generated features")?;
    if r.cols != g.cols {
        candle_core::bail!(
            "precision/recall: feature dimensions differ, real [{}, {}] vs generated [{}, {}]",
            r.rows,
            r.cols,
            g.rows,
            g.cols
        )
    }
    if k == 0 || r.rows <= k || g.rows <= k {
        candle_core::bail!(
            "precision/recall with k = {k} needs k ≥ 1 and more than k samples in each set, got {} real and {} generated",
            r.rows,
            g.rows
        )
    }
    let rr = kth_radius_sq(&r, k)?;
    let rg = kth_radius_sq(&g, k)?;
    Ok(PrecisionRecall {
        precision: inside_manifold(&g, &r, &rr)? as f64 / g.rows as f64,
        recall: inside_manifold(&r, &g, &rg)? as f64 / r.rows as f64,
    })
}

/// A nearest neighbour: its row in the reference set and the Euclidean distance to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Row of the nearest reference feature.
    pub index: usize,
    /// Euclidean distance to it.
    pub distance: f64,
}

/// The nearest row of `reference` `[M, D]` for every row of `queries` `[N, D]`. The argmin is
/// found through the Gram matrix; the reported distance is recomputed directly from the two rows
/// (so an exact copy reports 0).
pub fn nearest_neighbours(queries: &Tensor, reference: &Tensor) -> Result<Vec<Neighbour>> {
    let q = Mat::from_tensor(queries, "nearest-neighbour queries")?;
    let x = Mat::from_tensor(reference, "nearest-neighbour reference")?;
    nearest_neighbours_mat(&q, &x)
}

fn nearest_neighbours_mat(q: &Mat, x: &Mat) -> Result<Vec<Neighbour>> {
    if q.cols != x.cols || x.rows == 0 {
        candle_core::bail!(
            "nearest neighbours: queries [{}, {}] and a non-empty reference [{}, {}] of the same dimension needed",
            q.rows,
            q.cols,
            x.rows,
            x.cols
        )
    }
    let norms = x.row_sq_norms();
    let mut out = Vec::with_capacity(q.rows);
    for start in (0..q.rows).step_by(BLOCK) {
        let len = BLOCK.min(q.rows - start);
        let d = sq_distances(&q.row_block(start, len), x, &norms)?;
        for i in 0..len {
            let row = &d.data[i * x.rows..(i + 1) * x.rows];
            let mut best = 0;
            for (j, v) in row.iter().enumerate() {
                if *v < row[best] {
                    best = j;
                }
            }
            let exact: f64 = q
                .row(start + i)
                .iter()
                .zip(x.row(best))
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            out.push(Neighbour {
                index: best,
                distance: exact.sqrt(),
            });
        }
    }
    Ok(out)
}

/// Quantile levels reported by [`OverfitReport`].
pub const OVERFIT_QUANTILES: [f64; 5] = [0.01, 0.05, 0.25, 0.5, 0.75];

/// Nearest training neighbours of generated samples beside those of held-out real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverfitReport {
    /// Nearest training feature of every generated sample.
    pub samples: Vec<Neighbour>,
    /// Nearest training feature of every test feature.
    pub test: Vec<Neighbour>,
    /// Quantiles ([`OVERFIT_QUANTILES`]) of the samples' nearest-neighbour distances.
    pub sample_quantiles: Vec<f64>,
    /// The same quantiles for the test images.
    pub test_quantiles: Vec<f64>,
    /// Median sample distance over median test distance: well below 1 suggests memorisation.
    pub median_ratio: f64,
    /// Fraction of samples closer to the training set than the closest 1 % of test images
    /// (≈ 0.01 without memorisation).
    pub fraction_below_test_p01: f64,
}

/// Linear-interpolation quantile (numpy's default) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The overfitting check of generated `samples` against `train`, calibrated by `test` (all
/// `[·, D]`: features, or flattened pixels for a pixel-space check).
pub fn overfitting_check(samples: &Tensor, train: &Tensor, test: &Tensor) -> Result<OverfitReport> {
    let s = Mat::from_tensor(samples, "overfitting-check samples")?;
    let x = Mat::from_tensor(train, "overfitting-check training set")?;
    let t = Mat::from_tensor(test, "overfitting-check test set")?;
    if s.rows == 0 || t.rows == 0 {
        candle_core::bail!(
            "overfitting check needs samples and test images, got {} and {}",
            s.rows,
            t.rows
        )
    }
    let samples = nearest_neighbours_mat(&s, &x)?;
    let test = nearest_neighbours_mat(&t, &x)?;
    let sorted = |n: &[Neighbour]| {
        let mut d: Vec<f64> = n.iter().map(|n| n.distance).collect();
        d.sort_by(f64::total_cmp);
        d
    };
    let (sd, td) = (sorted(&samples), sorted(&test));
    let qs = |d: &[f64]| {
        OVERFIT_QUANTILES
            .iter()
            .map(|&q| quantile(d, q))
            .collect::<Vec<_>>()
    };
    let p01 = quantile(&td, 0.01);
    let median_t = quantile(&td, 0.5);
    Ok(OverfitReport {
        sample_quantiles: qs(&sd),
        test_quantiles: qs(&td),
        median_ratio: if median_t > 0.0 {
            quantile(&sd, 0.5) / median_t
        } else {
            f64::INFINITY
        },
        fraction_below_test_p01: sd.iter().filter(|&&d| d < p01).count() as f64 / sd.len() as f64,
        samples,
        test,
    })
}

/// Mean Euclidean distance over all pairs of distinct rows of `features` `[N, D]` (N ≥ 2).
pub fn mean_pairwise_distance(features: &Tensor) -> Result<f64> {
    let x = Mat::from_tensor(features, "diversity features")?;
    if x.rows < 2 {
        candle_core::bail!("diversity needs at least 2 samples, got {}", x.rows)
    }
    let norms = x.row_sq_norms();
    let mut sum = 0.0;
    for start in (0..x.rows).step_by(BLOCK) {
        let len = BLOCK.min(x.rows - start);
        let d = sq_distances(&x.row_block(start, len), &x, &norms)?;
        for i in 0..len {
            let gi = start + i;
            sum += d.data[i * x.rows + gi + 1..(i + 1) * x.rows]
                .iter()
                .map(|v| v.sqrt())
                .sum::<f64>();
        }
    }
    let n = x.rows as f64;
    Ok(sum / (n * (n - 1.0) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_sets_have_full_precision_and_recall() {
        let x = Tensor::new(
            &[[0f64, 0.], [1., 0.], [0., 1.], [5., 5.], [5., 6.]],
            &Device::Cpu,
        )
        .unwrap();
        let pr = precision_recall(&x, &x, 3).unwrap();
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
        // Far-away fakes are outside the real manifold; the real set is outside theirs.
        let far = (x.clone() + 100.0).unwrap();
        let pr = precision_recall(&x, &far, 3).unwrap();
        assert_eq!((pr.precision, pr.recall), (0.0, 0.0));
        assert!(precision_recall(&x, &x, 5).is_err());
    }

    #[test]
    fn copies_are_found_at_distance_zero() {
        let train =
            Tensor::new(&[[0f64, 0., 3.], [1e6, 2., 1.], [4., 4., 4.]], &Device::Cpu).unwrap();
        let samples = Tensor::new(&[[1e6f64, 2., 1.], [4., 4., 4.5]], &Device::Cpu).unwrap();
        let nn = nearest_neighbours(&samples, &train).unwrap();
        assert_eq!(
            nn[0],
            Neighbour {
                index: 1,
                distance: 0.0
            }
        );
        assert_eq!(nn[1].index, 2);
        assert!((nn[1].distance - 0.5).abs() < 1e-12);
        let test =
            Tensor::new(&[[1f64, 1., 3.], [3., 5., 4.], [1e6, 3., 3.]], &Device::Cpu).unwrap();
        let r = overfitting_check(&samples, &train, &test).unwrap();
        assert!(
            r.median_ratio < 1.0 && r.fraction_below_test_p01 == 1.0,
            "{r:?}"
        );
    }

    #[test]
    fn diversity_of_a_square() {
        let x = Tensor::new(&[[0f32, 0.], [1., 0.], [0., 1.], [1., 1.]], &Device::Cpu).unwrap();
        let want = (4.0 + 2.0 * 2f64.sqrt()) / 6.0;
        assert!((mean_pairwise_distance(&x).unwrap() - want).abs() < 1e-12);
    }
}
