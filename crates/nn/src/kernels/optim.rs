//! Fused in-place optimiser updates on the CPU.
//!
//! Adam written with tensor ops allocates a fresh buffer for each of about a dozen operations per
//! parameter; here the moments and the parameter are updated in place, in three element-wise
//! passes (first moment, second moment, parameter), split across threads for large tensors. The
//! arithmetic is PyTorch's (`torch.optim.Adam`, `foreach=False`):
//!
//! ```text
//! m ← β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! [`adam_update`] returns `false` (and changes nothing) when a tensor is not a contiguous CPU
//! f32/f64 tensor; the caller then uses its generic tensor-op path.

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use super::real::PAR_MIN;

/// Adam's hyper-parameters for one update (bias corrections precomputed for the step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f64,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f64,
}

fn range(l: &Layout) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused optimiser: non-contiguous tensor".into()))
}

fn dtype_error(s: &CpuStorage) -> candle_core::Error {
    use candle_core::backend::BackendStorage;
    candle_core::Error::Msg(format!(
        "fused optimiser: unsupported dtype {:?}",
        s.dtype()
    ))
}

/// Applies `f` to matching chunks of `dst` and `src` (in parallel when large).
fn zip_chunks<T: Send + Sync, U: Sync>(
    dst: &mut [T],
    src: &[U],
    f: impl Fn(&mut [T], &[U]) + Sync,
) {
    const CHUNK: usize = 1 << 14;
    if dst.len() >= PAR_MIN {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| f(d, s));
    } else {
        f(dst, src)
    }
}

/// `m ← a·m + b·g` (first moment) or `v ← a·v + b·g²` (second moment).
struct Moment {
    a: f64,
    b: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "easel-adam-moment"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let ((m0, m1), (g0, g1)) = (range(l1)?, range(l2)?);
        let square = self.square;
        macro_rules! run {
            ($m:expr, $g:expr, $t:ty) => {{
                let (a, b) = (self.a as $t, self.b as $t);
                zip_chunks(&mut $m[m0..m1], &$g[g0..g1], |m, g| {
                    if square {
                        for (m, g) in m.iter_mut().zip(g) {
                            *m = a * *m + b * *g * *g;
                        }
                    } else {
                        for (m, g) in m.iter_mut().zip(g) {
                            *m = a * *m + b * *g;
                        }
                    }
                });
            }};
        }
        match (s1, s2) {
            (CpuStorage::F32(m), CpuStorage::F32(g)) => run!(m, g, f32),
            (CpuStorage::F64(m), CpuStorage::F64(g)) => run!(m, g, f64),
            (s, _) => return Err(dtype_error(s)),
        }
        Ok(())
    }
}

/// `θ ← θ − step_size · m / (√v / bc2_sqrt + ε)`.
struct Apply(AdamStep);

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "easel-adam-apply"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let h = self.0;
        let ((t0, t1), (m0, m1), (v0, v1)) = (range(l1)?, range(l2)?, range(l3)?);
        macro_rules! run {
            ($theta:expr, $m:expr, $v:expr, $t:ty) => {{
                let (theta, m, v) = (&mut $theta[t0..t1], &$m[m0..m1], &$v[v0..v1]);
                let (step, inv_bc2, eps) =
                    (h.step_size as $t, (1.0 / h.bc2_sqrt) as $t, h.eps as $t);
                const CHUNK: usize = 1 << 14;
                // Also reports whether a second moment has overflowed to +∞ (|g| ≳ 6e20 in
                // f32): the update of that weight would then be 0 forever, silently.
                let body = |t: &mut [$t], m: &[$t], v: &[$t]| -> bool {
                    let mut vmax: $t = 0.0;
                    for ((t, m), v) in t.iter_mut().zip(m).zip(v) {
                        *t -= step * *m / (v.sqrt() * inv_bc2 + eps);
                        vmax = vmax.max(*v);
                    }
                    !vmax.is_finite()
                };
                let overflow = if theta.len() >= PAR_MIN {
                    theta
                        .par_chunks_mut(CHUNK)
                        .zip(m.par_chunks(CHUNK))
                        .zip(v.par_chunks(CHUNK))
                        .map(|((t, m), v)| body(t, m, v))
                        .reduce(|| false, |a, b| a | b)
                } else {
                    body(theta, m, v)
                };
                if overflow {
                    return Err(overflow_error());
                }
            }};
        }
        match (s1, s2, s3) {
            (CpuStorage::F32(t), CpuStorage::F32(m), CpuStorage::F32(v)) => run!(t, m, v, f32),
            (CpuStorage::F64(t), CpuStorage::F64(m), CpuStorage::F64(v)) => run!(t, m, v, f64),
            (s, _, _) => return Err(dtype_error(s)),
        }
        Ok(())
    }
}

/// The error for a second moment that overflowed (see [`adam_update`]).
pub fn overflow_error() -> candle_core::Error {
    candle_core::Error::Msg(
        "Adam: a second-moment estimate overflowed to infinity (a gradient of ~1e20 or more), \
         which would freeze the affected weights without any sign; the run is diverging: lower \
         the learning rate or check the loss"
            .into(),
    )
}

fn fusable(ts: &[&Tensor]) -> bool {
    let first = ts[0];
    first.device().is_cpu()
        && matches!(first.dtype(), DType::F32 | DType::F64)
        && ts
            .iter()
            .all(|t| t.dtype() == first.dtype() && t.dims() == first.dims() && t.is_contiguous())
}

/// One in-place Adam update of `theta` with moments `m`, `v` and gradient `g` (all the same shape).
/// Returns `Ok(false)` without touching anything when the fused path does not apply, and an
/// error ([`overflow_error`]) when a second moment has become infinite.
pub fn adam_update(
    theta: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    h: AdamStep,
) -> Result<bool> {
    if !fusable(&[theta, m, v, g]) {
        return Ok(false);
    }
    m.inplace_op2(
        g,
        &Moment {
            a: h.beta1,
            b: 1.0 - h.beta1,
            square: false,
        },
    )?;
    v.inplace_op2(
        g,
        &Moment {
            a: h.beta2,
            b: 1.0 - h.beta2,
            square: true,
        },
    )?;
    theta.inplace_op3(m, v, &Apply(h))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_adam_matches_the_formula_in_f64_and_f32() {
        for n in [7usize, 70_000] {
            let dev = Device::Cpu;
            let theta = Tensor::randn(0f64, 1., n, &dev).unwrap();
            let g = Tensor::randn(0f64, 1., n, &dev).unwrap();
            let m = Tensor::randn(0f64, 0.1, n, &dev).unwrap();
            let v = Tensor::rand(0f64, 0.1, n, &dev).unwrap();
            let (b1, b2, eps, lr, t) = (0.5, 0.999, 1e-8, 2e-4, 3);
            let h = AdamStep {
                beta1: b1,
                beta2: b2,
                eps,
                step_size: lr / (1.0 - f64::powi(b1, t)),
                bc2_sqrt: (1.0 - f64::powi(b2, t)).sqrt(),
            };
            let (tv, gv, mv, vv) = (
                theta.to_vec1::<f64>().unwrap(),
                g.to_vec1::<f64>().unwrap(),
                m.to_vec1::<f64>().unwrap(),
                v.to_vec1::<f64>().unwrap(),
            );
            // f32 copies go through the same kernels.
            let f = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
            let (t32, m32, v32, g32) = (f(&theta), f(&m), f(&v), f(&g));
            assert!(adam_update(&theta, &m, &v, &g, h).unwrap());
            assert!(adam_update(&t32, &m32, &v32, &g32, h).unwrap());
            let (to, mo, vo) = (
                theta.to_vec1::<f64>().unwrap(),
                m.to_vec1::<f64>().unwrap(),
                v.to_vec1::<f64>().unwrap(),
            );
            let t32o = t32.to_vec1::<f32>().unwrap();
            for i in 0..n {
                let me = b1 * mv[i] + (1.0 - b1) * gv[i];
                let ve = b2 * vv[i] + (1.0 - b2) * gv[i] * gv[i];
                let te = tv[i] - h.step_size * me / (ve.sqrt() / h.bc2_sqrt + eps);
                assert!(
                    (mo[i] - me).abs() < 1e-15 && (vo[i] - ve).abs() < 1e-15,
                    "{i}"
                );
                assert!((to[i] - te).abs() < 1e-14, "{i}: {} vs {te}", to[i]);
                assert!((t32o[i] as f64 - te).abs() < 1e-5, "{i}");
            }
        }
    }

    #[test]
    fn unsupported_layouts_are_left_to_the_caller() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        let t = a.t().unwrap(); // not contiguous
        let h = AdamStep {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step_size: 1e-3,
            bc2_sqrt: 1.0,
        };
        let z = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
        assert!(!adam_update(&t, &z, &z.clone(), &z.clone(), h).unwrap());
        let i = Tensor::zeros(3, DType::U32, &dev).unwrap();
        assert!(!adam_update(&i, &i, &i, &i, h).unwrap());
    }
}
