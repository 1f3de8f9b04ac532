//! Fréchet distance between Gaussians fitted to features (FID when the features are Inception
//! pool3): Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
//! Equilibrium", NeurIPS 2017.
//!
//! ```text
//! d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁^½ Σ₂ Σ₁^½)^½)
//! ```
//!
//! Means and covariances (unbiased, `n − 1`, as `np.cov` in pytorch-fid) are accumulated in f64,
//! batch by batch ([`FidAccumulator`]), around a shift taken from the first batch so that large
//! feature offsets do not cancel. The trace term uses symmetric eigendecompositions instead of a
//! general matrix square root: with `Σ₁ = V Λ Vᵀ` and `F = V Λ^½`, the matrix `Fᵀ Σ₂ F` is
//! similar to `Σ₁^½ Σ₂ Σ₁^½`, symmetric and positive semi-definite, so
//! `Tr((Σ₁^½ Σ₂ Σ₁^½)^½) = Σᵢ √μᵢ(Fᵀ Σ₂ F)`. This equals pytorch-fid's `Tr(sqrtm(Σ₁Σ₂))` for
//! full-rank covariances and stays exact when they are singular (fewer samples than dimensions):
//! negative rounding noise is clamped to 0 and eigenvalues below `n·ε·μ_max` (zero at working
//! precision) contribute nothing, where `sqrtm` would need pytorch-fid's `εI` offset.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::linalg::{symmetric_eigen, symmetric_eigenvalues, Mat};

/// Mean and covariance of a set of features, with where they came from.
///
/// Serialisable, so reference statistics of a dataset can be cached by the caller under
/// (`dataset`, `extractor`); [`FeatureStats::to_tensors`] gives a safetensors-ready form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Feature dimension `D`.
    pub dim: usize,
    /// Number of feature vectors accumulated.
    pub n: usize,
    /// Mean, `D` values.
    pub mean: Vec<f64>,
    /// Unbiased covariance (divided by `n − 1`), `D×D` row-major.
    pub cov: Vec<f64>,
    /// [`FeatureExtractor::hash`](crate::FeatureExtractor::hash) of the network that produced the
    /// features (empty when unknown).
    pub extractor: String,
    /// Free-form description of the data (e.g. `"mnist train, 60000 images"`).
    pub dataset: String,
}

impl FeatureStats {
    /// Statistics of features `[N, D]` in one go.
    pub fn from_features(features: &Tensor, extractor: &str, dataset: &str) -> Result<Self> {
        let (_, d) = features.dims2()?;
        let mut acc = FidAccumulator::new(d);
        acc.update(features)?;
        acc.finish(extractor, dataset)
    }

    /// The covariance as a matrix.
    pub fn cov_mat(&self) -> Result<Mat> {
        Mat::new(self.dim, self.dim, self.cov.clone())
    }

    /// The Fréchet distance to `other`. Errors when the dimensions differ, or when both carry an
    /// extractor hash and the hashes differ (features of different networks are not comparable).
    pub fn frechet_distance(&self, other: &FeatureStats) -> Result<f64> {
        if !self.extractor.is_empty()
            && !other.extractor.is_empty()
            && self.extractor != other.extractor
        {
            candle_core::bail!(
                "FID between statistics of different feature extractors: {:?} ({}) vs {:?} ({})",
                self.extractor,
                self.dataset,
                other.extractor,
                other.dataset
            )
        }
        frechet_distance(&self.mean, &self.cov_mat()?, &other.mean, &other.cov_mat()?)
    }

    /// Tensors for a safetensors file: `mean` `[D]` f64, `cov` `[D, D]` f64, `n` `[1]` f64, and the
    /// UTF-8 bytes of `extractor` and `dataset` as u8 vectors.
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "mean".to_string(),
            Tensor::from_slice(&self.mean, self.dim, &dev)?,
        );
        t.insert(
            "cov".to_string(),
            Tensor::from_slice(&self.cov, (self.dim, self.dim), &dev)?,
        );
        t.insert(
            "n".to_string(),
            Tensor::from_slice(&[self.n as f64], 1, &dev)?,
        );
        for (k, s) in [("extractor", &self.extractor), ("dataset", &self.dataset)] {
            let bytes = s.as_bytes();
            t.insert(k.to_string(), Tensor::from_slice(bytes, bytes.len(), &dev)?);
        }
        Ok(t)
    }

    /// The inverse of [`FeatureStats::to_tensors`]; errors name the missing or malformed entry.
    pub fn from_tensors(t: &HashMap<String, Tensor>) -> Result<Self> {
        let get = |k: &str| {
            t.get(k).ok_or_else(|| {
                candle_core::Error::Msg(format!("feature statistics: missing tensor {k:?}"))
            })
        };
        let mean = get("mean")?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let dim = mean.len();
        let cov_t = get("cov")?;
        if cov_t.dims() != [dim, dim] {
            candle_core::bail!(
                "feature statistics: cov has shape {:?}, expected [{dim}, {dim}] for a mean of length {dim}",
                cov_t.dims()
            )
        }
        let cov = cov_t
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let n = get("n")?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let n = match n.as_slice() {
            [n] if *n >= 0.0 && n.fract() == 0.0 => *n as usize,
            other => candle_core::bail!("feature statistics: n must be one count, got {other:?}"),
        };
        let text = |k: &str| -> Result<String> {
            let b = get(k)?.to_dtype(DType::U8)?.to_vec1::<u8>()?;
            String::from_utf8(b).map_err(|e| {
                candle_core::Error::Msg(format!("feature statistics: {k} is not UTF-8: {e}"))
            })
        };
        Ok(Self {
            dim,
            n,
            mean,
            cov,
            extractor: text("extractor")?,
            dataset: text("dataset")?,
        })
    }
}

/// Streaming mean and covariance of feature batches, in f64.
#[derive(Debug, Clone)]
pub struct FidAccumulator {
    dim: usize,
    n: usize,
    /// Subtracted from every feature before accumulation (the first batch's mean).
    shift: Option<Vec<f64>>,
    sum: Vec<f64>,
    /// Σ (x − shift)(x − shift)ᵀ, `[D, D]` f64 on the CPU.
    sum_sq: Option<Tensor>,
}

impl FidAccumulator {
    /// An empty accumulator for `dim`-dimensional features.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            n: 0,
            shift: None,
            sum: vec![0.0; dim],
            sum_sq: None,
        }
    }

    /// Number of feature vectors seen.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Adds a batch of features `[B, D]` (any float dtype and device).
    pub fn update(&mut self, features: &Tensor) -> Result<()> {
        let x = Mat::from_tensor(features, "FID features")?;
        if x.cols != self.dim {
            candle_core::bail!(
                "FID features: expected [B, {}], got [{}, {}]",
                self.dim,
                x.rows,
                x.cols
            )
        }
        if x.rows == 0 {
            return Ok(());
        }
        let shift = self.shift.get_or_insert_with(|| {
            let mut m = vec![0.0; x.cols];
            for i in 0..x.rows {
                for (mj, v) in m.iter_mut().zip(x.row(i)) {
                    *mj += v;
                }
            }
            m.iter_mut().for_each(|v| *v /= x.rows as f64);
            m
        });
        let mut c = x;
        for i in 0..c.rows {
            let row = &mut c.data[i * c.cols..(i + 1) * c.cols];
            for ((v, s), acc) in row.iter_mut().zip(shift.iter()).zip(self.sum.iter_mut()) {
                *v -= s;
                *acc += *v;
            }
        }
        let ct = c.to_tensor()?;
        let outer = ct.t()?.matmul(&ct)?; // [D, D]
        self.sum_sq = Some(match self.sum_sq.take() {
            None => outer,
            Some(s) => (s + outer)?,
        });
        self.n += c.rows;
        Ok(())
    }

    /// The statistics so far; needs at least two feature vectors.
    pub fn finish(&self, extractor: &str, dataset: &str) -> Result<FeatureStats> {
        let (Some(shift), Some(sum_sq)) = (&self.shift, &self.sum_sq) else {
            candle_core::bail!("FID statistics: no features were accumulated")
        };
        if self.n < 2 {
            candle_core::bail!(
                "FID statistics need at least 2 feature vectors for a covariance, got {}",
                self.n
            )
        }
        let n = self.n as f64;
        let d = self.dim;
        let m: Vec<f64> = self.sum.iter().map(|s| s / n).collect(); // mean of shifted features
        let sq = sum_sq.flatten_all()?.to_vec1::<f64>()?;
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = (sq[i * d + j] - n * m[i] * m[j]) / (n - 1.0);
            }
        }
        Ok(FeatureStats {
            dim: d,
            n: self.n,
            mean: shift.iter().zip(&m).map(|(s, m)| s + m).collect(),
            cov,
            extractor: extractor.to_string(),
            dataset: dataset.to_string(),
        })
    }
}

/// `‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁^½ Σ₂ Σ₁^½)^½)` (see the module doc for the route).
pub fn frechet_distance(mu1: &[f64], cov1: &Mat, mu2: &[f64], cov2: &Mat) -> Result<f64> {
    let d = mu1.len();
    if mu2.len() != d || [cov1.rows, cov1.cols, cov2.rows, cov2.cols] != [d; 4] {
        candle_core::bail!(
            "Fréchet distance: means of length {} and {} with covariances {}×{} and {}×{}",
            d,
            mu2.len(),
            cov1.rows,
            cov1.cols,
            cov2.rows,
            cov2.cols
        )
    }
    let diff: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    Ok(diff + cov1.trace() + cov2.trace() - 2.0 * trace_sqrt_product(cov1, cov2)?)
}

/// `Tr((Σ₁^½ Σ₂ Σ₁^½)^½)` for symmetric positive semi-definite `Σ₁`, `Σ₂`.
pub fn trace_sqrt_product(cov1: &Mat, cov2: &Mat) -> Result<f64> {
    let eig = symmetric_eigen(cov1)?;
    let d = cov1.rows;
    // Fᵀ = Λ^½ Vᵀ: row j of Vᵀ scaled by √λ_j (negative rounding noise clamped to 0).
    let mut ft = eig.vectors_t;
    for (j, &lam) in eig.values.iter().enumerate() {
        let s = lam.max(0.0).sqrt();
        ft.data[j * d..(j + 1) * d].iter_mut().for_each(|v| *v *= s);
    }
    let m = ft.matmul(cov2)?.matmul_t(&ft)?; // Fᵀ Σ₂ F
    let mu = symmetric_eigenvalues(&m)?;
    let top = mu.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let tol = d as f64 * f64::EPSILON * top;
    Ok(mu.iter().filter(|&&v| v > tol).map(|v| v.sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, d: usize, scale: f64, shift: f64, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f64> = (0..n * d)
            .map(|i| {
                let z: f64 = StandardNormal.sample(&mut rng);
                z * scale * (1.0 + (i % d) as f64 / d as f64) + shift
            })
            .collect();
        Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric() {
        for (n, d) in [(500, 16), (30, 64)] {
            let a = FeatureStats::from_features(&gaussian(n, d, 1.0, 0.3, 1), "", "").unwrap();
            let b = FeatureStats::from_features(&gaussian(n, d, 1.4, 0.0, 2), "", "").unwrap();
            let self_fid = a.frechet_distance(&a).unwrap();
            assert!(
                self_fid.abs() < 1e-9 * a.cov_mat().unwrap().trace(),
                "{self_fid}"
            );
            let ab = a.frechet_distance(&b).unwrap();
            let ba = b.frechet_distance(&a).unwrap();
            assert!(ab > 0.1 && (ab - ba).abs() < 1e-9 * ab, "{ab} vs {ba}");
        }
    }

    #[test]
    fn streaming_equals_one_batch_and_stats_round_trip() {
        let x = gaussian(103, 5, 2.0, 1e4, 3);
        let all = FeatureStats::from_features(&x, "h", "d").unwrap();
        let mut acc = FidAccumulator::new(5);
        for (s, l) in [(0, 1), (1, 40), (41, 62)] {
            acc.update(&x.narrow(0, s, l).unwrap()).unwrap();
        }
        let parts = acc.finish("h", "d").unwrap();
        for (a, b) in all.cov.iter().zip(&parts.cov) {
            assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{a} {b}");
        }
        for (a, b) in all.mean.iter().zip(&parts.mean) {
            assert!((a - b).abs() < 1e-12 * a.abs(), "{a} {b}");
        }
        let back = FeatureStats::from_tensors(&all.to_tensors().unwrap()).unwrap();
        assert_eq!(back, all);
        let json: FeatureStats =
            serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
        assert_eq!(
            (json.n, &json.extractor, &json.dataset),
            (103, &all.extractor, &all.dataset)
        );
        for (a, b) in json.cov.iter().zip(&all.cov) {
            assert!((a - b).abs() <= 1e-15 * b.abs());
        }
    }

    #[test]
    fn errors_are_clear() {
        let mut acc = FidAccumulator::new(4);
        let err = acc
            .update(&Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[B, 4]") && err.contains("[2, 3]"), "{err}");
        acc.update(&Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert!(acc
            .finish("", "")
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
        let nan = Tensor::new(&[[0f32, f32::NAN]], &Device::Cpu).unwrap();
        let err = FidAccumulator::new(2).update(&nan).unwrap_err().to_string();
        assert!(
            err.contains("non-finite") && err.contains("column 1"),
            "{err}"
        );
        let a = FeatureStats::from_features(&gaussian(10, 3, 1.0, 0.0, 1), "net-a", "x").unwrap();
        let b = FeatureStats::from_features(&gaussian(10, 3, 1.0, 0.0, 2), "net-b", "y").unwrap();
        let err = a.frechet_distance(&b).unwrap_err().to_string();
        assert!(err.contains("net-a") && err.contains("net-b"), "{err}");
    }
}
