//! Spectral normalisation (Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for
//! Generative Adversarial Networks", ICLR 2018), with the semantics and `state_dict` names of
//! PyTorch's `torch.nn.utils.spectral_norm`: the trainable weight is `weight_orig`, the power-
//! iteration vectors are the buffers `weight_u` `[out]` and `weight_v` `[in·kh·kw]`.
//!
//! In training, each forward runs one power iteration (`v ← normalise(Wᵀu)`, `u ← normalise(Wv)`,
//! no gradient) and stores `u`, `v`; then `σ = uᵀ W v` (gradient flows through `W` only) and the
//! layer uses `W / σ`. In evaluation the stored vectors are used unchanged. `u` and `v` are saved in
//! checkpoints, so a resumed run continues the same iteration.

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use crate::ops;

const EPS: f64 = 1e-12;

fn normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_all()?.sqrt()?.maximum(EPS)?; // PyTorch F.normalize: x / max(‖x‖, eps)
    x.broadcast_div(&n)
}

/// A spectrally normalised weight `[out, …]`.
#[derive(Debug, Clone)]
pub struct SpectralNorm {
    weight_orig: Tensor,
    u: Var,
    v: Var,
}

impl SpectralNorm {
    /// Creates `weight_orig` of `shape` (drawn from `init`) and random unit `weight_u`, `weight_v`
    /// under `vb`, as `spectral_norm(module)` does.
    pub fn new(shape: &[usize], init: Init, vb: &VarBuilder) -> Result<Self> {
        if shape.len() < 2 {
            candle_core::bail!("spectral norm needs a weight with at least 2 dims, got {shape:?}")
        }
        let out = shape[0];
        let rest: usize = shape[1..].iter().product();
        let weight_orig = vb.get_with_hints(shape, "weight_orig", init)?;
        let unit = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let u = Var::from_tensor(&vb.get_with_hints(out, "weight_u", unit)?)?;
        let v = Var::from_tensor(&vb.get_with_hints(rest, "weight_v", unit)?)?;
        // Fresh vectors are random normal; PyTorch normalises them at creation. A loaded
        // checkpoint's vectors are already unit length, so this changes nothing for them.
        u.set(&normalize(u.as_tensor())?)?;
        v.set(&normalize(v.as_tensor())?)?;
        Ok(Self { weight_orig, u, v })
    }

    /// `W / σ(W)`; `update` runs one power iteration first (training mode).
    pub fn weight(&self, update: bool) -> Result<Tensor> {
        let out = self.weight_orig.dim(0)?;
        let w = self.weight_orig.reshape((out, ()))?; // [out, in·k·k]
        if update {
            let wd = w.detach();
            let v = normalize(
                &wd.t()?
                    .matmul(&self.u.as_tensor().unsqueeze(1)?)?
                    .squeeze(1)?,
            )?; // [in·k·k]
            let u = normalize(&wd.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?; // [out]
            self.v.set(&v)?;
            self.u.set(&u)?;
        }
        let u = self.u.as_tensor().detach();
        let v = self.v.as_tensor().detach();
        let wv = w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?; // [out]
        let sigma = (u * wv)?.sum_all()?; // uᵀ W v
        self.weight_orig.broadcast_div(&sigma)
    }

    /// The current estimate of the largest singular value, `uᵀ W v` (no update).
    pub fn sigma(&self) -> Result<f64> {
        let out = self.weight_orig.dim(0)?;
        let w = self.weight_orig.reshape((out, ()))?;
        let wv = w.matmul(&self.v.as_tensor().unsqueeze(1)?)?.squeeze(1)?;
        (self.u.as_tensor() * wv)?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()
    }
}

/// A convolution whose weight is spectrally normalised (`spectral_norm(nn.Conv2d(..))`).
#[derive(Debug, Clone)]
pub struct SnConv2d {
    sn: SpectralNorm,
    bias: Option<Tensor>,
    cfg: crate::Conv2dConfig,
}

impl SnConv2d {
    /// Creates `weight_orig`, `weight_u`, `weight_v` (and `bias` if configured) under `vb`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        cfg: crate::Conv2dConfig,
        init: Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let sn = SpectralNorm::new(&[c_out, c_in, cfg.kernel, cfg.kernel], init, &vb)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(c_out, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self { sn, bias, cfg })
    }

    /// Convolves `x` with `W/σ`; `update` (training) advances the power iteration.
    pub fn forward_t(&self, x: &Tensor, update: bool) -> Result<Tensor> {
        let w = self.sn.weight(update)?;
        let c = &self.cfg;
        let y = ops::conv2d(
            x,
            &w,
            ops::Conv2dParams {
                stride: c.stride,
                padding: c.padding,
                dilation: c.dilation,
            },
        )?;
        match &self.bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&ops::param(b).reshape((1, b.dim(0)?, 1, 1))?),
        }
    }

    /// The spectral norm state (σ estimate for tests and logs).
    pub fn spectral(&self) -> &SpectralNorm {
        &self.sn
    }
}

/// Largest singular value of a `[m, n]` f64 matrix by many power iterations (a test oracle).
#[doc(hidden)]
pub fn reference_sigma(w: &Tensor, iters: usize) -> Result<f64> {
    let w = &w.detach();
    let (_, n) = w.dims2()?;
    let mut v = Tensor::ones(n, w.dtype(), w.device())?;
    for _ in 0..iters {
        let u = normalize(&w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?;
        v = normalize(&w.t()?.matmul(&u.unsqueeze(1)?)?.squeeze(1)?)?;
    }
    let wv = w.matmul(&v.unsqueeze(1)?)?.squeeze(D::Minus1)?;
    wv.sqr()?
        .sum_all()?
        .sqrt()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    /// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (the SVD oracle: the singular
    /// values of W are the square roots of the eigenvalues of W·Wᵀ).
    fn jacobi_eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
        let n = a.len();
        for _sweep in 0..100 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                .map(|(i, j)| a[i][j] * a[i][j])
                .sum();
            if off < 1e-30 {
                break;
            }
            for p in 0..n {
                for q in p + 1..n {
                    if a[p][q].abs() < 1e-300 {
                        continue;
                    }
                    let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for row in a.iter_mut() {
                        let (akp, akq) = (row[p], row[q]);
                        row[p] = c * akp - s * akq;
                        row[q] = s * akp + c * akq;
                    }
                    let (rp, rq) = (a[p].clone(), a[q].clone());
                    for k in 0..n {
                        a[p][k] = c * rp[k] - s * rq[k];
                        a[q][k] = s * rp[k] + c * rq[k];
                    }
                }
            }
        }
        (0..n).map(|i| a[i][i]).collect()
    }

    fn svd_sigma_max(w: &Tensor) -> f64 {
        let w = &w.detach();
        let wwt = w.matmul(&w.t().unwrap()).unwrap().to_vec2::<f64>().unwrap();
        jacobi_eigenvalues(wwt)
            .into_iter()
            .fold(0.0, f64::max)
            .sqrt()
    }

    #[test]
    fn sigma_converges_to_the_largest_singular_value() {
        let store = ParamStore::with_dtype(&Device::Cpu, DType::F64, 3);
        let sn = SpectralNorm::new(
            &[6, 2, 3, 3],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            &store.var_builder(),
        )
        .unwrap();
        let w = store.tensors()["weight_orig"].reshape((6, 18)).unwrap();
        // Oracle: σ₁ = √λ_max(WWᵀ) by Jacobi eigen-decomposition (a direct SVD).
        let truth = svd_sigma_max(&w);
        assert!((reference_sigma(&w, 2000).unwrap() - truth).abs() / truth < 1e-9);
        // One power iteration per training forward: the estimate approaches σ₁ from below.
        let mut prev = 0.0;
        for i in 0..300 {
            sn.weight(true).unwrap();
            let s = sn.sigma().unwrap();
            assert!(s <= truth * (1.0 + 1e-9), "iteration {i}: {s} > {truth}");
            assert!(s >= prev - 1e-9, "not monotone at {i}: {s} < {prev}");
            prev = s;
        }
        assert!((prev - truth).abs() / truth < 1e-6, "{prev} vs {truth}");
        // The normalised weight then has spectral norm 1.
        let wn = sn.weight(false).unwrap().reshape((6, 18)).unwrap();
        assert!((svd_sigma_max(&wn) - 1.0).abs() < 1e-6);
        // Buffers are named as PyTorch names them and are not trainable.
        let names: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight_orig"]);
        assert!(
            store.tensors().contains_key("weight_u") && store.tensors().contains_key("weight_v")
        );
    }

    #[test]
    fn eval_does_not_move_the_vectors_and_gradient_flows_to_weight_orig() {
        let store = ParamStore::with_dtype(&Device::Cpu, DType::F64, 4);
        let conv = SnConv2d::new(
            2,
            3,
            crate::Conv2dConfig::new(3, 1, 1),
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            store.var_builder(),
        )
        .unwrap();
        let u0 = store.tensors()["weight_u"].to_vec1::<f64>().unwrap();
        let x = Tensor::randn(0f64, 1., (1, 2, 5, 5), &Device::Cpu).unwrap();
        conv.forward_t(&x, false).unwrap();
        assert_eq!(store.tensors()["weight_u"].to_vec1::<f64>().unwrap(), u0);
        let y = conv.forward_t(&x, true).unwrap();
        assert_ne!(store.tensors()["weight_u"].to_vec1::<f64>().unwrap(), u0);
        let g = y.sum_all().unwrap().backward().unwrap();
        let w = store.trainable()[1].1.clone(); // sorted: bias, weight_orig
        assert!(g.get(w.as_tensor()).is_some());
    }
}
