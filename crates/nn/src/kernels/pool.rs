//! Max-pooling, average pooling and nearest-neighbour upsampling for CPU tensors
//! `[B, C, H, W]`, with correct gradients for any square kernel `k`, stride `s` and zero padding
//! `p ≤ k/2` (PyTorch's `ceil_mode = False`).
//!
//! Output size: `H' = ⌊(H + 2p − k)/s⌋ + 1` (likewise for `W`). With window
//! `W(o) = {(o_h·s − p + i, o_w·s − p + j) : 0 ≤ i, j < k}`:
//!
//! - max-pool: `y[o] = max_{q ∈ W(o)} x[q]` over the positions inside the image (padding acts as
//!   −∞); the gradient goes to the arg-max only, `∂x[q] = Σ_{o : argmax(o) = q} g[o]`, with
//!   PyTorch's rule for ties (the first maximum in row-major window order wins) and NaN
//!   (a NaN wins);
//! - average pool (`count_include_pad = True`): `y[o] = Σ_{q ∈ W(o)} x[q] / k²`, so
//!   `∂x[q] = Σ_{o : q ∈ W(o)} g[o] / k²`;
//! - nearest upsample by integer factors `(f_h, f_w)`: `y[h, w] = x[⌊h/f_h⌋, ⌊w/f_w⌋]`, so
//!   `∂x[h, w] = Σ_{i<f_h, j<f_w} g[h·f_h + i, w·f_w + j]`.
//!
//! Candle 0.11.1 gets two of these wrong: its `max_pool2d` backward is scaled by `1/k²`, and its
//! `upsample_nearest2d` backward overwrites the gradient already accumulated for its input instead
//! of adding to it. Both only support `k = s` as well. The ops here accumulate through candle's
//! autograd like any other op. Average pooling and upsampling are linear, so their backward ops
//! are each other's adjoints and second-order gradients work; the max-pool backward is not itself
//! differentiable (`easel_nn::ops` uses the generic path when `CANDLE_GRAD_DO_NOT_DETACH` asks for
//! second-order gradients).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::real::{cpu, dims4, float_dtype, slice, storage, Real};

/// Geometry of a square pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Kernel size `k`.
    pub kernel: usize,
    /// Stride `s`.
    pub stride: usize,
    /// Zero padding `p` on every side.
    pub padding: usize,
}

impl Pool2d {
    /// Output side for an input side `n`: `⌊(n + 2p − k)/s⌋ + 1`, or an error naming `what` and
    /// the input shape when the geometry is invalid.
    pub fn out_size(&self, n: usize, what: &str, dims: &[usize]) -> Result<usize> {
        let Self {
            kernel: k,
            stride: s,
            padding: p,
        } = *self;
        if k == 0 || s == 0 {
            candle_core::bail!("{what}: kernel {k} and stride {s} must be positive")
        }
        if 2 * p > k {
            candle_core::bail!("{what}: padding {p} must be at most half the kernel {k}")
        }
        if n + 2 * p < k {
            candle_core::bail!(
                "{what}: kernel {k} with padding {p} is larger than the input of shape {dims:?}"
            )
        }
        Ok((n + 2 * p - k) / s + 1)
    }

    /// `(H', W')` for a `[B, C, H, W]` input.
    pub fn out_hw(
        &self,
        (b, c, h, w): (usize, usize, usize, usize),
        what: &str,
    ) -> Result<(usize, usize)> {
        let dims = [b, c, h, w];
        Ok((
            self.out_size(h, what, &dims)?,
            self.out_size(w, what, &dims)?,
        ))
    }

    /// Valid input range `[start, end)` along one axis for output index `o`.
    #[inline]
    fn range(&self, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(n as isize);
        (start.max(0) as usize, end.max(0) as usize)
    }
}

fn par_planes<T: Real, U: Send>(
    out: &mut [T],
    out_plane: usize,
    extra: &mut [U],
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync + Send,
) {
    if out_plane == 0 {
        return;
    }
    let min = (4096 / out_plane).max(1);
    let extra_plane = extra.len() / (out.len() / out_plane).max(1);
    if extra_plane == 0 {
        out.par_chunks_mut(out_plane)
            .enumerate()
            .with_min_len(min)
            .for_each(|(i, o)| f(i, o, &mut []));
    } else {
        out.par_chunks_mut(out_plane)
            .zip(extra.par_chunks_mut(extra_plane))
            .enumerate()
            .with_min_len(min)
            .for_each(|(i, (o, e))| f(i, o, e));
    }
}

// ---------------------------------------------------------------------------------------------
// Max pooling

/// Max-pooling forward (CPU, f32/f64, contiguous); remembers the arg-max for its backward.
#[derive(Debug)]
pub struct MaxPool2dOp {
    geom: Pool2d,
    argmax: Mutex<Option<Vec<u32>>>,
}

impl MaxPool2dOp {
    /// A new op for the given window.
    pub fn new(geom: Pool2d) -> Self {
        Self {
            geom,
            argmax: Mutex::new(None),
        }
    }

    /// `(y, argmax)` where `argmax` indexes within each `H·W` input plane.
    fn fwd<T: Real>(
        &self,
        x: &[T],
        dims: (usize, usize, usize, usize),
    ) -> Result<(Vec<T>, Vec<u32>)> {
        let (b, c, h, w) = dims;
        let (ho, wo) = self.geom.out_hw(dims, "max_pool2d")?;
        if h * w > u32::MAX as usize {
            candle_core::bail!("max_pool2d: input plane of shape {dims:?} is too large")
        }
        let mut y = vec![T::ZERO; b * c * ho * wo];
        let mut am = vec![0u32; b * c * ho * wo];
        let g = self.geom;
        par_planes(&mut y, ho * wo, &mut am, |pl, y, am| {
            let x = &x[pl * h * w..(pl + 1) * h * w];
            for oh in 0..ho {
                let (h0, h1) = g.range(oh, h);
                for ow in 0..wo {
                    let (w0, w1) = g.range(ow, w);
                    let mut best = T::NEG_INF;
                    let mut idx = h0 * w + w0;
                    'win: for ih in h0..h1 {
                        for iw in w0..w1 {
                            let v = x[ih * w + iw];
                            if v > best || v.is_nan() {
                                best = v;
                                idx = ih * w + iw;
                                if v.is_nan() {
                                    break 'win;
                                }
                            }
                        }
                    }
                    y[oh * wo + ow] = best;
                    am[oh * wo + ow] = idx as u32;
                }
            }
        });
        Ok((y, am))
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "easel-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = dims4(l, name)?;
        let (ho, wo) = self.geom.out_hw(dims, name)?;
        let shape = (dims.0, dims.1, ho, wo);
        let (st, am) = match float_dtype(s, l, name)? {
            DType::F32 => {
                let (y, am) = self.fwd(slice::<f32>(s, l, name)?, dims)?;
                (storage(y, shape), am)
            }
            _ => {
                let (y, am) = self.fwd(slice::<f64>(s, l, name)?, dims)?;
                (storage(y, shape), am)
            }
        };
        if let Ok(mut slot) = self.argmax.lock() {
            *slot = Some(am);
        }
        Ok(st)
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let name = self.name();
        let dims = arg.dims4()?;
        let grad = grad.contiguous()?;
        if grad.dims() != res.dims() {
            candle_core::bail!(
                "{name}: gradient shape {:?} differs from output shape {:?}",
                grad.dims(),
                res.dims()
            )
        }
        let saved = self.argmax.lock().ok().and_then(|s| s.clone());
        let am = match saved {
            Some(a) => a,
            None => {
                let arg = arg.contiguous()?;
                let (s, l) = arg.storage_and_layout();
                let s = cpu(&s, name)?;
                match float_dtype(s, l, name)? {
                    DType::F32 => self.fwd(slice::<f32>(s, l, name)?, dims)?.1,
                    _ => self.fwd(slice::<f64>(s, l, name)?, dims)?.1,
                }
            }
        };
        let (gs, gl) = grad.storage_and_layout();
        let gs = cpu(&gs, name)?;
        let dx = match float_dtype(gs, gl, name)? {
            DType::F32 => Tensor::from_vec(
                max_pool_bwd(slice::<f32>(gs, gl, name)?, &am, dims),
                dims,
                &Device::Cpu,
            )?,
            _ => Tensor::from_vec(
                max_pool_bwd(slice::<f64>(gs, gl, name)?, &am, dims),
                dims,
                &Device::Cpu,
            )?,
        };
        Ok(Some(dx))
    }
}

/// `∂x[q] = Σ_{o : argmax(o) = q} g[o]`, plane by plane.
fn max_pool_bwd<T: Real>(
    g: &[T],
    am: &[u32],
    (b, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    let planes = b * c;
    let mut dx = vec![T::ZERO; planes * h * w];
    if planes == 0 || h * w == 0 {
        return dx;
    }
    let op = g.len() / planes;
    par_planes(&mut dx, h * w, &mut [] as &mut [u8], |pl, dx, _| {
        let g = &g[pl * op..(pl + 1) * op];
        let am = &am[pl * op..(pl + 1) * op];
        for (&gv, &i) in g.iter().zip(am) {
            dx[i as usize] += gv;
        }
    });
    dx
}

// ---------------------------------------------------------------------------------------------
// Average pooling

/// Sum of every window divided by `k²` (`count_include_pad = True`).
fn avg_pool_fwd<T: Real>(
    x: &[T],
    dims: (usize, usize, usize, usize),
    g: Pool2d,
    (ho, wo): (usize, usize),
) -> Vec<T> {
    let (b, c, h, w) = dims;
    let inv = T::from_f64(1.0 / (g.kernel * g.kernel) as f64);
    let mut y = vec![T::ZERO; b * c * ho * wo];
    par_planes(&mut y, ho * wo, &mut [] as &mut [u8], |pl, y, _| {
        let x = &x[pl * h * w..(pl + 1) * h * w];
        for oh in 0..ho {
            let (h0, h1) = g.range(oh, h);
            for ow in 0..wo {
                let (w0, w1) = g.range(ow, w);
                let mut acc = T::ZERO;
                for ih in h0..h1 {
                    for &v in &x[ih * w + w0..ih * w + w1] {
                        acc += v;
                    }
                }
                y[oh * wo + ow] = acc * inv;
            }
        }
    });
    y
}

/// `∂x[q] = Σ_{o : q ∈ W(o)} g[o] / k²`.
fn avg_pool_bwd<T: Real>(
    gr: &[T],
    dims: (usize, usize, usize, usize),
    g: Pool2d,
    (ho, wo): (usize, usize),
) -> Vec<T> {
    let (b, c, h, w) = dims;
    let inv = T::from_f64(1.0 / (g.kernel * g.kernel) as f64);
    let mut dx = vec![T::ZERO; b * c * h * w];
    par_planes(&mut dx, h * w, &mut [] as &mut [u8], |pl, dx, _| {
        let gr = &gr[pl * ho * wo..(pl + 1) * ho * wo];
        for oh in 0..ho {
            let (h0, h1) = g.range(oh, h);
            for ow in 0..wo {
                let (w0, w1) = g.range(ow, w);
                let v = gr[oh * wo + ow] * inv;
                for ih in h0..h1 {
                    for d in &mut dx[ih * w + w0..ih * w + w1] {
                        *d += v;
                    }
                }
            }
        }
    });
    dx
}

/// Average pooling forward (CPU, f32/f64, contiguous), `count_include_pad = True`.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2dOp(pub Pool2d);

/// Average pooling backward as an op on the gradient `[B, C, H', W']` → `[B, C, H, W]`; it is
/// the adjoint of [`AvgPool2dOp`] (and vice versa).
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2dGrad {
    /// The window.
    pub geom: Pool2d,
    /// Input height and width of the forward pass.
    pub in_hw: (usize, usize),
}

impl CustomOp1 for AvgPool2dOp {
    fn name(&self) -> &'static str {
        "easel-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = dims4(l, name)?;
        let out = self.0.out_hw(dims, name)?;
        let shape = (dims.0, dims.1, out.0, out.1);
        Ok(match float_dtype(s, l, name)? {
            DType::F32 => storage(
                avg_pool_fwd(slice::<f32>(s, l, name)?, dims, self.0, out),
                shape,
            ),
            _ => storage(
                avg_pool_fwd(slice::<f64>(s, l, name)?, dims, self.0, out),
                shape,
            ),
        })
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let op = AvgPool2dGrad {
            geom: self.0,
            in_hw: (h, w),
        };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}

impl CustomOp1 for AvgPool2dGrad {
    fn name(&self) -> &'static str {
        "easel-avg-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (b, c, gh, gw) = dims4(l, name)?;
        let (h, w) = self.in_hw;
        let dims = (b, c, h, w);
        let out = self.geom.out_hw(dims, name)?;
        if out != (gh, gw) {
            candle_core::bail!(
                "{name}: gradient of shape {:?} does not match pooled input [{b}, {c}, {h}, {w}] (expects {out:?})",
                l.dims()
            )
        }
        Ok(match float_dtype(s, l, name)? {
            DType::F32 => storage(
                avg_pool_bwd(slice::<f32>(s, l, name)?, dims, self.geom, out),
                dims,
            ),
            _ => storage(
                avg_pool_bwd(slice::<f64>(s, l, name)?, dims, self.geom, out),
                dims,
            ),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(AvgPool2dOp(self.geom))?))
    }
}

// ---------------------------------------------------------------------------------------------
// Nearest upsampling

/// Nearest-neighbour upsampling by integer factors `(f_h, f_w)` (CPU, f32/f64, contiguous).
#[derive(Debug, Clone, Copy)]
pub struct UpsampleNearest2dOp {
    /// Height factor.
    pub fh: usize,
    /// Width factor.
    pub fw: usize,
}

/// Backward of [`UpsampleNearest2dOp`]: sums every `f_h × f_w` block of the gradient (its
/// adjoint, and vice versa).
#[derive(Debug, Clone, Copy)]
pub struct UpsampleNearest2dGrad {
    /// Height factor.
    pub fh: usize,
    /// Width factor.
    pub fw: usize,
}

fn upsample_fwd<T: Real>(
    x: &[T],
    (b, c, h, w): (usize, usize, usize, usize),
    fh: usize,
    fw: usize,
) -> Vec<T> {
    let (ho, wo) = (h * fh, w * fw);
    let mut y = vec![T::ZERO; b * c * ho * wo];
    par_planes(&mut y, ho * wo, &mut [] as &mut [u8], |pl, y, _| {
        let x = &x[pl * h * w..(pl + 1) * h * w];
        for ih in 0..h {
            let (first, rest) = y[ih * fh * wo..(ih + 1) * fh * wo].split_at_mut(wo);
            for (iw, &v) in x[ih * w..(ih + 1) * w].iter().enumerate() {
                first[iw * fw..(iw + 1) * fw].fill(v);
            }
            for r in rest.chunks_exact_mut(wo) {
                r.copy_from_slice(first);
            }
        }
    });
    y
}

fn upsample_bwd<T: Real>(
    g: &[T],
    (b, c, h, w): (usize, usize, usize, usize),
    fh: usize,
    fw: usize,
) -> Vec<T> {
    let (ho, wo) = (h * fh, w * fw);
    let mut dx = vec![T::ZERO; b * c * h * w];
    par_planes(&mut dx, h * w, &mut [] as &mut [u8], |pl, dx, _| {
        let g = &g[pl * ho * wo..(pl + 1) * ho * wo];
        for ih in 0..h {
            let d = &mut dx[ih * w..(ih + 1) * w];
            for r in 0..fh {
                let row = &g[(ih * fh + r) * wo..(ih * fh + r + 1) * wo];
                for (dv, blk) in d.iter_mut().zip(row.chunks_exact(fw)) {
                    for &v in blk {
                        *dv += v;
                    }
                }
            }
        }
    });
    dx
}

fn check_factors(fh: usize, fw: usize, name: &str) -> Result<()> {
    if fh == 0 || fw == 0 {
        candle_core::bail!("{name}: factors ({fh}, {fw}) must be positive")
    }
    Ok(())
}

impl CustomOp1 for UpsampleNearest2dOp {
    fn name(&self) -> &'static str {
        "easel-upsample-nearest2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        check_factors(self.fh, self.fw, name)?;
        let dims = dims4(l, name)?;
        let shape = (dims.0, dims.1, dims.2 * self.fh, dims.3 * self.fw);
        Ok(match float_dtype(s, l, name)? {
            DType::F32 => storage(
                upsample_fwd(slice::<f32>(s, l, name)?, dims, self.fh, self.fw),
                shape,
            ),
            _ => storage(
                upsample_fwd(slice::<f64>(s, l, name)?, dims, self.fh, self.fw),
                shape,
            ),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = UpsampleNearest2dGrad {
            fh: self.fh,
            fw: self.fw,
        };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}

impl CustomOp1 for UpsampleNearest2dGrad {
    fn name(&self) -> &'static str {
        "easel-upsample-nearest2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        check_factors(self.fh, self.fw, name)?;
        let (b, c, gh, gw) = dims4(l, name)?;
        if gh % self.fh != 0 || gw % self.fw != 0 {
            candle_core::bail!(
                "{name}: gradient of shape {:?} is not a multiple of the factors ({}, {})",
                l.dims(),
                self.fh,
                self.fw
            )
        }
        let dims = (b, c, gh / self.fh, gw / self.fw);
        Ok(match float_dtype(s, l, name)? {
            DType::F32 => storage(
                upsample_bwd(slice::<f32>(s, l, name)?, dims, self.fh, self.fw),
                dims,
            ),
            _ => storage(
                upsample_bwd(slice::<f64>(s, l, name)?, dims, self.fh, self.fw),
                dims,
            ),
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = UpsampleNearest2dOp {
            fh: self.fh,
            fw: self.fw,
        };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}
