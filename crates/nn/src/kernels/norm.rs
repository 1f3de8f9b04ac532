//! Fused training-mode batch normalisation for CPU tensors `[B, C, H, W]`.
//!
//! Per channel `c`, over the `N = B·H·W` values of the batch (PyTorch's formulas):
//!
//! - statistics (one pass, per-channel in parallel, accumulated in f64 around a shift for accuracy):
//!   `μ = Σx / N`, `σ² = Σ(x − μ)² / N` (biased; the caller turns it into the unbiased running
//!   variance `σ²·N/(N−1)`), `r = 1/√(σ² + ε)`;
//! - forward (one pass): `y = γ·r·(x − μ) + β`, written as `y = x·s + t` with `s = γ·r`,
//!   `t = β − μ·s`;
//! - backward, from the upstream gradient `g` (one reduction pass, one element-wise pass):
//!   `∂β = Σg`, `∂γ = Σ g·x̂ = r·Σ g·(x − μ)` with `x̂ = (x − μ)·r`, and
//!   `∂x = (γ·r/N)·(N·g − ∂β − x̂·∂γ)`.
//!
//! Optionally an activation `z = f(y)` is fused into the same op (ReLU, LeakyReLU with slope ≥ 0,
//! tanh, sigmoid: their derivative is a function of `z`), so the backward uses `g·f'(z)` in place
//! of `g` without storing `y` or `g·f'`.
//!
//! [`BatchNormTrain`] is a candle [`CustomOp3`] on `(x, γ, β)`; the statistics of its forward
//! are kept in the op for its backward and handed to the caller for the running-statistics update.
//! Its backward is not itself differentiable (second-order gradients through it would be zero), so
//! `easel_nn::ops` uses the generic path when `CANDLE_GRAD_DO_NOT_DETACH` asks for them.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::act::Activation;
use super::real::{build, cpu, dims4, float_dtype, slice, storage, Real};

/// Per-channel batch statistics of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// `μ` per channel.
    pub mean: Vec<f64>,
    /// Biased variance `σ²` per channel.
    pub var: Vec<f64>,
    /// `1/√(σ² + ε)` per channel.
    pub inv_std: Vec<f64>,
    /// Values per channel, `N = B·H·W`.
    pub count: usize,
}

/// Training-mode batch norm `(x [B,C,H,W], γ [C], β [C]) → y`, CPU f32/f64, contiguous inputs,
/// optionally followed by a fused activation `z = f(y)`.
#[derive(Debug, Clone)]
pub struct BatchNormTrain {
    eps: f64,
    act: Option<Activation>,
    stats: Arc<Mutex<Option<BatchStats>>>,
}

impl BatchNormTrain {
    /// A new op with `ε = eps`.
    pub fn new(eps: f64) -> Self {
        Self {
            eps,
            act: None,
            stats: Arc::new(Mutex::new(None)),
        }
    }

    /// The same followed by `act`, fused: the op outputs `z = act(y)` and its backward forms
    /// `∂y = g·act'` on the fly from `z` (see [`Activation::derivative_from_output`]), so neither
    /// `y` nor `∂y` is ever stored. Fails for activations whose derivative cannot be read from
    /// the output (LeakyReLU with a negative slope).
    pub fn with_activation(eps: f64, act: Activation) -> Result<Self> {
        if !act.derivative_from_output() {
            candle_core::bail!(
                "batch norm: cannot fuse {act:?} (its derivative is not a function of its output)"
            )
        }
        Ok(Self {
            act: Some(act),
            ..Self::new(eps)
        })
    }

    /// The statistics of the forward pass once it has run.
    pub fn stats(&self) -> Option<BatchStats> {
        self.stats.lock().ok().and_then(|s| s.clone())
    }

    fn fwd<T: Real>(
        &self,
        x: &[T],
        g: &[T],
        b: &[T],
        dims: (usize, usize, usize, usize),
    ) -> Vec<T> {
        let st = channel_stats(x, dims, self.eps);
        let y = normalize_act(x, g, b, &st, self.act, dims);
        if let Ok(mut slot) = self.stats.lock() {
            *slot = Some(st);
        }
        y
    }
}

/// `act(γ·(x − μ)·r + β)` per channel with the statistics `st` (`r = 1/√(σ² + ε)`): the
/// normalising pass of training-mode batch norm, with the activation applied on the way out.
pub(crate) fn normalize_act<T: Real>(
    x: &[T],
    g: &[T],
    b: &[T],
    st: &BatchStats,
    act: Option<Activation>,
    (_, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    // y = x·s + t per channel.
    let s: Vec<T> = (0..c)
        .map(|i| T::from_f64(g[i].to_f64() * st.inv_std[i]))
        .collect();
    let t: Vec<T> = (0..c)
        .map(|i| T::from_f64(b[i].to_f64() - st.mean[i] * g[i].to_f64() * st.inv_std[i]))
        .collect();
    let hw = h * w;
    // `move` closures over constants and copied values keep the loops branch-free and
    // vectorised (captured references would be reloaded every iteration).
    let (zero, one) = (T::ZERO, T::ONE);
    match act {
        None => affine_map(x, &s, &t, hw, |v| v),
        Some(Activation::Relu) => {
            affine_map(x, &s, &t, hw, move |v| if v > zero { v } else { zero })
        }
        Some(Activation::LeakyRelu(a)) => {
            let a = T::from_f64(a);
            affine_map(x, &s, &t, hw, move |v| if v > zero { v } else { a * v })
        }
        Some(Activation::Tanh) => affine_map(x, &s, &t, hw, |v| v.tanh()),
        Some(Activation::Sigmoid) => {
            affine_map(x, &s, &t, hw, move |v| one / (one + (zero - v).exp()))
        }
    }
}

/// `f(x·s_c + t_c)` block by block (a block is one `H·W` plane of channel `c`).
fn affine_map<T: Real>(
    x: &[T],
    s: &[T],
    t: &[T],
    hw: usize,
    f: impl Fn(T) -> T + Sync + Send + Copy,
) -> Vec<T> {
    let c = s.len();
    if hw == 0 || c == 0 {
        return Vec::new();
    }
    // SAFETY: output block `i` and input block `i` both have `hw` elements (the output has
    // `x.len()` elements, a multiple of `hw`); the zip writes each output element once.
    unsafe {
        build(x.len(), hw, min_blocks(hw), |i, y| {
            let (s, t) = (s[i % c], t[i % c]);
            let x = &x[i * hw..i * hw + y.len()];
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(f(x * s + t));
            }
        })
    }
}

/// Blocks per rayon task so that each task touches at least ~8k values.
fn min_blocks(block: usize) -> usize {
    (8192 / block.max(1)).max(1)
}

/// Lanes of the f32/f64 partial sums (independent accumulators, so the loops vectorise).
const LANES: usize = 8;
/// Values summed in `T` per lane before the partial sums move to f64 (bounds the rounding error
/// of f32 accumulation to `SUB / LANES` additions).
const SUB: usize = 1024;

/// `Σ(v − shift)` and `Σ(v − shift)²` over `block`, accumulated in `T` lanes over sub-blocks of
/// [`SUB`] values and in f64 across them.
#[inline]
fn sum_sq<T: Real>(block: &[T], shift: T) -> (f64, f64) {
    let (mut s64, mut q64) = (0.0, 0.0);
    for sub in block.chunks(SUB) {
        let mut s = [T::ZERO; LANES];
        let mut q = [T::ZERO; LANES];
        let chunks = sub.chunks_exact(LANES);
        let rest = chunks.remainder();
        for ch in chunks {
            for k in 0..LANES {
                let v = ch[k] - shift;
                s[k] += v;
                q[k] += v * v;
            }
        }
        for k in 0..LANES {
            s64 += s[k].to_f64();
            q64 += q[k].to_f64();
        }
        for &v in rest {
            let v = (v - shift).to_f64();
            s64 += v;
            q64 += v * v;
        }
    }
    (s64, q64)
}

/// `Σg'` and `Σ g'·(x − mean)` over one block, with `g' = d(g, z)`, accumulated as in [`sum_sq`].
#[inline]
fn sum_gx<T: Real>(g: &[T], z: &[T], x: &[T], mean: T, d: impl Fn(T, T) -> T + Copy) -> (f64, f64) {
    let (mut s64, mut q64) = (0.0, 0.0);
    let n = g.len().min(z.len()).min(x.len());
    let mut start = 0;
    while start < n {
        let end = (start + SUB).min(n);
        let (g, z, x) = (&g[start..end], &z[start..end], &x[start..end]);
        // g' = d(g, z) first, into an L1-resident buffer: a plain element-wise loop vectorises
        // the activation's select, which the lane-unrolled reduction below would not.
        let mut buf = [T::ZERO; SUB];
        let gp = &mut buf[..end - start];
        for ((o, &g), &z) in gp.iter_mut().zip(g).zip(z) {
            *o = d(g, z);
        }
        let mut s = [T::ZERO; LANES];
        let mut q = [T::ZERO; LANES];
        let (gc, xc) = (gp.chunks_exact(LANES), x.chunks_exact(LANES));
        let (gr, xr) = (gc.remainder(), xc.remainder());
        for (g, x) in gc.zip(xc) {
            for k in 0..LANES {
                s[k] += g[k];
                q[k] += g[k] * (x[k] - mean);
            }
        }
        for k in 0..LANES {
            s64 += s[k].to_f64();
            q64 += q[k].to_f64();
        }
        for (&gv, &x) in gr.iter().zip(xr) {
            s64 += gv.to_f64();
            q64 += (gv * (x - mean)).to_f64();
        }
        start = end;
    }
    (s64, q64)
}

/// Per-channel sums `Σ f(block)` of `[B, C, H·W]` data: all `B·C` blocks in parallel (contiguous
/// reads; a batch of one image — instance norm's `[1, B·C, H, W]` view — still uses every thread),
/// then each channel's per-image partial sums added in image order, so the result does not depend
/// on the number of threads.
fn per_channel_sums(
    b: usize,
    c: usize,
    f: impl Fn(usize, usize) -> (f64, f64) + Sync + Send,
) -> Vec<(f64, f64)> {
    let parts: Vec<(f64, f64)> = (0..b * c)
        .into_par_iter()
        .map(|i| f(i / c.max(1), i % c.max(1)))
        .collect();
    let mut acc = vec![(0.0, 0.0); c];
    for p in parts.chunks(c.max(1)) {
        for (a, v) in acc.iter_mut().zip(p) {
            a.0 += v.0;
            a.1 += v.1;
        }
    }
    acc
}

/// Mean, biased variance and `1/√(σ² + ε)` of every channel of `x` `[B, C, H, W]` in one pass.
pub(crate) fn channel_stats<T: Real>(
    x: &[T],
    (b, c, h, w): (usize, usize, usize, usize),
    eps: f64,
) -> BatchStats {
    let hw = h * w;
    let n = b * hw;
    // Shifting by one value of the channel keeps Σ(x−k)² − (Σ(x−k))²/N accurate when |μ| ≫ σ.
    let shift: Vec<T> = (0..c)
        .map(|ch| if n == 0 { T::ZERO } else { x[ch * hw] })
        .collect();
    let sums = per_channel_sums(b, c, |bi, ch| {
        let o = (bi * c + ch) * hw;
        sum_sq(&x[o..o + hw], shift[ch])
    });
    let nf = n.max(1) as f64;
    let mut mean = Vec::with_capacity(c);
    let mut var = Vec::with_capacity(c);
    for (ch, (s, q)) in sums.into_iter().enumerate() {
        let m = s / nf;
        mean.push(shift[ch].to_f64() + m);
        var.push((q / nf - m * m).max(0.0));
    }
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    BatchStats {
        mean,
        var,
        inv_std,
        count: n,
    }
}

/// `(∂x, ∂γ, ∂β)` of training-mode batch norm (followed by `act`, whose output is `z`) given the
/// upstream gradient `g`.
pub(crate) fn batch_norm_bwd<T: Real>(
    x: &[T],
    g: &[T],
    z: Option<&[T]>,
    gamma: &[T],
    st: &BatchStats,
    act: Option<Activation>,
    dims: (usize, usize, usize, usize),
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (zero, one) = (T::ZERO, T::ONE);
    let z = z.unwrap_or(g); // read only by the activations' derivatives
    match act {
        None => bn_bwd(x, g, z, gamma, st, dims, |g, _| g),
        Some(Activation::Relu) => bn_bwd(
            x,
            g,
            z,
            gamma,
            st,
            dims,
            move |g, z| if z > zero { g } else { zero },
        ),
        Some(Activation::LeakyRelu(a)) => {
            let a = T::from_f64(a);
            bn_bwd(
                x,
                g,
                z,
                gamma,
                st,
                dims,
                // g·(1 or a): a select of constants and a multiply, branch-free.
                move |g, z| g * if z > zero { one } else { a },
            )
        }
        Some(Activation::Tanh) => bn_bwd(x, g, z, gamma, st, dims, move |g, z| g * (one - z * z)),
        Some(Activation::Sigmoid) => {
            bn_bwd(x, g, z, gamma, st, dims, move |g, z| g * z * (one - z))
        }
    }
}

/// [`batch_norm_bwd`] with the activation's derivative `d(g, z) = g·f'` as a closure.
fn bn_bwd<T: Real>(
    x: &[T],
    g: &[T],
    z: &[T],
    gamma: &[T],
    st: &BatchStats,
    (b, c, h, w): (usize, usize, usize, usize),
    d: impl Fn(T, T) -> T + Sync + Send + Copy,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let hw = h * w;
    let n = (b * hw).max(1) as f64;
    // Pass 1 (per channel): Σg' and Σ g'·(x − μ).
    let mean_t: Vec<T> = st.mean.iter().map(|&m| T::from_f64(m)).collect();
    let sums = per_channel_sums(b, c, |bi, ch| {
        let r = (bi * c + ch) * hw..(bi * c + ch + 1) * hw;
        sum_gx(&g[r.clone()], &z[r.clone()], &x[r], mean_t[ch], d)
    });
    let dbeta: Vec<f64> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<f64> = sums.iter().zip(&st.inv_std).map(|(s, r)| s.1 * r).collect();
    // ∂x = A·g + B·(x − μ) + C with A = γr, B = −γr²·∂γ/N, C = −A·∂β/N.
    let coef: Vec<(T, T, T, T)> = (0..c)
        .map(|ch| {
            let r = st.inv_std[ch];
            let a = gamma[ch].to_f64() * r;
            let bb = -a * r * dgamma[ch] / n;
            let cc = -a * dbeta[ch] / n;
            (
                T::from_f64(a),
                T::from_f64(bb),
                T::from_f64(cc),
                T::from_f64(st.mean[ch]),
            )
        })
        .collect();
    let dx = if hw == 0 || c == 0 {
        Vec::new()
    } else {
        // SAFETY: output block `i` and the input blocks `i` of `g`, `z`, `x` all have `hw`
        // elements (all four have `B·C·H·W`); the zip writes each output element once.
        unsafe {
            build(x.len(), hw, min_blocks(hw), |i, dx| {
                let (a, bb, cc, m) = coef[i % c];
                let r = i * hw..i * hw + dx.len();
                let (g, z, x) = (&g[r.clone()], &z[r.clone()], &x[r]);
                for (((o, &g), &z), &x) in dx.iter_mut().zip(g).zip(z).zip(x) {
                    o.write(a * d(g, z) + bb * (x - m) + cc);
                }
            })
        }
    };
    let to_t = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    (dx, to_t(dgamma), to_t(dbeta))
}

fn check_params(l: &Layout, c: usize, what: &str, x: &Layout) -> Result<()> {
    if l.dims() != [c] {
        candle_core::bail!(
            "batch norm: {what} must have shape [{c}] for input {:?}, got {:?}",
            x.dims(),
            l.dims()
        )
    }
    Ok(())
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "easel-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = dims4(l1, name)?;
        check_params(l2, dims.1, "weight (γ)", l1)?;
        check_params(l3, dims.1, "bias (β)", l1)?;
        let dt = float_dtype(s1, l1, name)?;
        if s2.dtype() != dt || s3.dtype() != dt {
            candle_core::bail!(
                "{name}: input is {dt:?} but γ is {:?} and β {:?}",
                s2.dtype(),
                s3.dtype()
            )
        }
        Ok(match dt {
            DType::F32 => storage(
                self.fwd(
                    slice::<f32>(s1, l1, name)?,
                    slice(s2, l2, name)?,
                    slice(s3, l3, name)?,
                    dims,
                ),
                l1.shape(),
            ),
            _ => storage(
                self.fwd(
                    slice::<f64>(s1, l1, name)?,
                    slice(s2, l2, name)?,
                    slice(s3, l3, name)?,
                    dims,
                ),
                l1.shape(),
            ),
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad, x, gamma) = (grad.contiguous()?, x.contiguous()?, gamma.contiguous()?);
        let res = res.contiguous()?;
        if grad.dims() != x.dims() {
            candle_core::bail!(
                "{}: gradient shape {:?} differs from input shape {:?}",
                self.name(),
                grad.dims(),
                x.dims()
            )
        }
        let (dx, dg, db) = match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(&x, &gamma, &res, &grad)?,
            DType::F64 => self.bwd_t::<f64>(&x, &gamma, &res, &grad)?,
            d => candle_core::bail!("{}: supports f32 and f64, got {d:?}", self.name()),
        };
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

impl BatchNormTrain {
    fn bwd_t<T: Real>(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let name = self.name();
        let dims = x.dims4()?;
        let (xg, xl) = x.storage_and_layout();
        let (gg, gl) = grad.storage_and_layout();
        let (wg, wl) = gamma.storage_and_layout();
        let (zg, zl) = res.storage_and_layout();
        let xs = slice::<T>(cpu(&xg, name)?, xl, name)?;
        let gs = slice::<T>(cpu(&gg, name)?, gl, name)?;
        let ws = slice::<T>(cpu(&wg, name)?, wl, name)?;
        let zs = slice::<T>(cpu(&zg, name)?, zl, name)?;
        if zs.len() != xs.len() {
            candle_core::bail!(
                "{name}: output shape {:?} differs from input {:?}",
                zl.dims(),
                dims
            )
        }
        if ws.len() != dims.1 {
            candle_core::bail!("{name}: γ has shape {:?} for input {:?}", wl.dims(), dims)
        }
        let st = match self.stats() {
            Some(s) => s,
            None => channel_stats(xs, dims, self.eps),
        };
        let z = self.act.map(|_| zs);
        let (dx, dg, db) = batch_norm_bwd(xs, gs, z, ws, &st, self.act, dims);
        let c = dims.1;
        Ok((
            Tensor::from_vec(dx, dims, &Device::Cpu)?,
            Tensor::from_vec(dg, c, &Device::Cpu)?,
            Tensor::from_vec(db, c, &Device::Cpu)?,
        ))
    }
}

/// Training-mode batch norm on CPU, optionally followed by a fused activation: `(act(y), μ, σ²)`
/// with `μ`, `σ²` (biased) `[C]` detached, in `x`'s dtype. Inputs must be CPU f32/f64; they are
/// made contiguous here. Fails for an activation that [`BatchNormTrain::with_activation`] rejects.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Option<Activation>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = match act {
        None => BatchNormTrain::new(eps),
        Some(a) => BatchNormTrain::with_activation(eps, a)?,
    };
    let stats = op.stats.clone();
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let st =
        stats.lock().ok().and_then(|s| s.clone()).ok_or_else(|| {
            candle_core::Error::Msg("batch norm: forward kept no statistics".into())
        })?;
    let c = st.mean.len();
    let mean = Tensor::from_vec(st.mean, c, &Device::Cpu)?.to_dtype(x.dtype())?;
    let var = Tensor::from_vec(st.var, c, &Device::Cpu)?.to_dtype(x.dtype())?;
    Ok((y, mean, var))
}
