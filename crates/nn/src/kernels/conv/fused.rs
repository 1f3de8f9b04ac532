//! A convolution or transposed convolution, then training-mode batch norm and/or an activation,
//! as one candle op (DCGAN's `conv → BatchNorm2d → ReLU/LeakyReLU` block, and its `conv →
//! LeakyReLU` / `convᵀ → tanh` ends).
//!
//! Composed of separate ops, such a block puts the convolution's output `y` into the graph as a
//! tensor of its own. candle's backward then gives `y` a zero-filled gradient buffer and adds the
//! batch norm's `∂y` into it — a memset and a read-read-write pass over an activation-sized tensor
//! for every block, every backward — and keeps a graph node for it. Here `y` never leaves the op:
//! the forward keeps it (with the batch statistics) for its own backward, which runs the batch-norm
//! and activation backward into a scratch `∂y` and feeds it straight to the convolution's
//! data-gradient and weight-gradient kernels. The arithmetic is exactly the separate ops'
//! (same kernels, same order), so results match them to rounding.
//!
//! The backward is not itself differentiable (like the batch-norm kernel's), so `easel_nn::ops`
//! only takes this path when no second-order gradients are asked for.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};

use super::{
    data_grad, forward, storage_pair, weight_grad, weight_matrix, Conv2dOp, ConvTransposeOp, Elem,
    Geom, View,
};
use crate::kernels::act::Activation;
use crate::kernels::norm::{self, BatchStats};
use crate::kernels::real::{cpu, slice, Real};

/// The linear layer in front of the normalisation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Linear {
    /// `conv2d(x, w)`.
    Conv(Conv2dOp),
    /// `conv_transpose2d(x, w)` (the data-gradient kernel).
    ConvTranspose(ConvTransposeOp),
}

impl Linear {
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        match self {
            Self::Conv(op) => op.geom(lx, lw),
            Self::ConvTranspose(op) => op.geom(lx, lw),
        }
    }

    /// Shape of the layer's output.
    fn out_dims(&self, g: &Geom) -> (usize, usize, usize, usize) {
        match self {
            Self::Conv(_) => (g.n, g.o, g.oh, g.ow),
            Self::ConvTranspose(_) => (g.n, g.c, g.h, g.w),
        }
    }

    /// The layer's output, contiguous.
    fn run<T: Elem>(&self, g: &Geom, x: View<T>, w: &[T]) -> Vec<T> {
        match self {
            Self::Conv(_) => forward(g, x, w, None),
            Self::ConvTranspose(_) => data_grad(g, x, w),
        }
    }

    /// `(∂x, ∂w)` (each only if asked for) from the output gradient `gy`.
    fn grads<T: Elem>(
        &self,
        g: &Geom,
        x: View<T>,
        w: &[T],
        gy: View<T>,
        (need_x, need_w): (bool, bool),
    ) -> (Option<Vec<T>>, Option<Vec<T>>) {
        match self {
            Self::Conv(_) => (
                need_x.then(|| data_grad(g, gy, w)),
                need_w.then(|| weight_grad(g, x, gy)),
            ),
            // A transposed convolution is the data-gradient of the convolution `g` describes:
            // its input `x` sits on that convolution's output side and `gy` on its input side.
            Self::ConvTranspose(_) => (
                need_x.then(|| forward(g, gy, w, None)),
                need_w.then(|| weight_grad(g, gy, x)),
            ),
        }
    }
}

/// What the forward keeps for the backward: the pre-normalisation output and its statistics.
#[derive(Debug)]
struct Saved {
    y: CpuStorage,
    stats: BatchStats,
}

/// `act(bn(linear(x, w)))` as one op; `bn` (if any) gets `γ` and `β` stacked as a `[2, C]`
/// third argument.
#[derive(Debug, Clone)]
pub(super) struct LinearNormAct {
    lin: Linear,
    /// `ε` of the training-mode batch norm, or `None` for none.
    eps: Option<f64>,
    act: Option<Activation>,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl LinearNormAct {
    pub(super) fn new(lin: Linear, eps: Option<f64>, act: Option<Activation>) -> Result<Self> {
        if let Some(a) = act.filter(|a| !a.derivative_from_output()) {
            bail!("fused convolution: cannot fuse {a:?} (its derivative is not a function of its output)")
        }
        Ok(Self {
            lin,
            eps,
            act,
            saved: Arc::new(Mutex::new(None)),
        })
    }

    /// The batch statistics of the forward pass, once it has run (with batch norm).
    pub(super) fn stats_handle(&self) -> impl Fn() -> Option<BatchStats> {
        let saved = self.saved.clone();
        move || {
            saved
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.stats.clone()))
        }
    }

    fn name_str(&self) -> &'static str {
        match (self.lin, self.eps.is_some()) {
            (Linear::Conv(_), true) => "easel-conv2d-bn-act",
            (Linear::Conv(_), false) => "easel-conv2d-act",
            (Linear::ConvTranspose(_), true) => "easel-conv-transpose2d-bn-act",
            (Linear::ConvTranspose(_), false) => "easel-conv-transpose2d-act",
        }
    }

    fn fwd_t<T: Elem + Real>(
        &self,
        (x, lx): (&[T], &Layout),
        (w, lw): (&[T], &Layout),
        params: Option<(&[T], &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.lin.geom(lx, lw)?;
        let dims = self.lin.out_dims(&g);
        let y = self.lin.run(&g, View::new(x, lx), &weight_matrix(w, lw));
        let z = match (self.eps, params) {
            (Some(eps), Some((p, lp))) => {
                let (gamma, beta) = gamma_beta(self.name_str(), p, lp, dims.1)?;
                let stats = norm::channel_stats(&y, dims, eps);
                let z = norm::normalize_act(&y, gamma, beta, &stats, self.act, dims);
                let y = T::to_cpu_storage_owned(y);
                if let Ok(mut slot) = self.saved.lock() {
                    *slot = Some(Saved { y, stats });
                }
                z
            }
            (None, None) => match self.act {
                Some(a) => a.fwd_slice(&y),
                None => y,
            },
            _ => bail!("{}: batch-norm parameters and ε disagree", self.name_str()),
        };
        Ok((T::to_cpu_storage_owned(z), Shape::from(dims)))
    }

    fn fwd(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        params: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name_str();
        match s1.dtype() {
            DType::F32 => {
                let (x, w) = storage_pair::<f32>(name, s1, s2)?;
                let p = match params {
                    Some((s3, l3)) => Some((storage_pair::<f32>(name, s1, s3)?.1, l3)),
                    None => None,
                };
                self.fwd_t((x, l1), (w, l2), p)
            }
            DType::F64 => {
                let (x, w) = storage_pair::<f64>(name, s1, s2)?;
                let p = match params {
                    Some((s3, l3)) => Some((storage_pair::<f64>(name, s1, s3)?.1, l3)),
                    None => None,
                };
                self.fwd_t((x, l1), (w, l2), p)
            }
            dt => bail!("{name}: supports f32 and f64, got {dt:?}"),
        }
    }

    fn bwd_t<T: Elem + Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: Option<&Tensor>,
        z: &Tensor,
        gz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name_str();
        let (need_x, need_w) = (x.track_op(), w.track_op());
        let need_p = params.is_some_and(|p| p.track_op());
        let (z, gz) = (z.contiguous()?, gz.contiguous()?);
        let (xg, xl) = x.storage_and_layout();
        let (wg, wl) = w.storage_and_layout();
        let (zg, zl) = z.storage_and_layout();
        let (gg, gl) = gz.storage_and_layout();
        let xs = T::cpu_storage_as_slice(cpu(&xg, name)?)?;
        let ws = T::cpu_storage_as_slice(cpu(&wg, name)?)?;
        let zs = slice::<T>(cpu(&zg, name)?, zl, name)?;
        let gs = slice::<T>(cpu(&gg, name)?, gl, name)?;
        let g = self.lin.geom(xl, wl)?;
        let dims = self.lin.out_dims(&g);
        let wm = weight_matrix(ws, wl);
        if zl.dims() != [dims.0, dims.1, dims.2, dims.3] || gl.dims() != zl.dims() {
            bail!(
                "{name}: output {:?} and its gradient {:?} do not have the layer's output shape {dims:?}",
                zl.dims(),
                gl.dims()
            )
        }
        let (gy, gp) = match (self.eps, params) {
            (Some(eps), Some(p)) => {
                let p = p.contiguous()?;
                let (pg, pl) = p.storage_and_layout();
                let ps = slice::<T>(cpu(&pg, name)?, pl, name)?;
                let (gamma, _) = gamma_beta(name, ps, pl, dims.1)?;
                let saved = self.saved.lock().map_err(|_| {
                    candle_core::Error::Msg(format!("{name}: saved state poisoned"))
                })?;
                // Recompute `y` if the forward's copy is gone (it is not, unless the op was
                // cloned before running).
                let recomputed;
                let (y, stats): (&[T], &BatchStats) = match saved.as_ref() {
                    Some(s) => (T::cpu_storage_as_slice(&s.y)?, &s.stats),
                    None => {
                        let y = self.lin.run(&g, View::new(xs, xl), &wm);
                        let st = norm::channel_stats(&y, dims, eps);
                        recomputed = (y, st);
                        (&recomputed.0, &recomputed.1)
                    }
                };
                let (gy, dgamma, dbeta) =
                    norm::batch_norm_bwd(y, gs, Some(zs), gamma, stats, self.act, dims);
                let gp = if need_p {
                    let mut v = dgamma;
                    v.extend(dbeta);
                    Some(Tensor::from_vec(v, (2, dims.1), &Device::Cpu)?)
                } else {
                    None
                };
                (gy, gp)
            }
            _ => (
                match self.act {
                    Some(a) => a.bwd_slice(gs, zs),
                    None => gs.to_vec(),
                },
                None,
            ),
        };
        let gyl = Layout::contiguous(Shape::from(dims));
        let (gx, gw) = self.lin.grads(
            &g,
            View::new(xs, xl),
            &wm,
            View::new(&gy, &gyl),
            (need_x, need_w),
        );
        let gx = match gx {
            Some(v) => Some(Tensor::from_vec(v, xl.shape(), &Device::Cpu)?),
            None => None,
        };
        let gw = match gw {
            Some(v) => Some(Tensor::from_vec(v, wl.shape(), &Device::Cpu)?),
            None => None,
        };
        Ok((gx, gw, gp))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: Option<&Tensor>,
        z: &Tensor,
        gz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, params, z, gz),
            DType::F64 => self.bwd_t::<f64>(x, w, params, z, gz),
            dt => bail!("{}: supports f32 and f64, got {dt:?}", self.name_str()),
        }
    }
}

/// `γ` and `β` from the stacked `[2, C]` parameter tensor.
fn gamma_beta<'a, T>(name: &str, p: &'a [T], lp: &Layout, c: usize) -> Result<(&'a [T], &'a [T])> {
    match (lp.dims(), lp.contiguous_offsets()) {
        (&[2, cc], Some((a, b))) if cc == c && b - a == 2 * c => {
            let p = &p[a..b];
            Ok((&p[..c], &p[c..]))
        }
        (d, _) => bail!("{name}: γ and β must be a contiguous [2, {c}] tensor, got shape {d:?}"),
    }
}

impl CustomOp3 for LinearNormAct {
    fn name(&self) -> &'static str {
        self.name_str()
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
        self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        z: &Tensor,
        gz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        LinearNormAct::bwd(self, x, w, Some(p), z, gz)
    }
}

/// The same without batch norm (`linear → act`).
#[derive(Debug, Clone)]
pub(super) struct LinearAct(pub(super) LinearNormAct);

impl CustomOp2 for LinearAct {
    fn name(&self) -> &'static str {
        self.0.name_str()
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.fwd((s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        z: &Tensor,
        gz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = self.0.bwd(x, w, None, z, gz)?;
        Ok((gx, gw))
    }
}
