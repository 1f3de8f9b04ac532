//! Fused activations for CPU tensors: one pass forward, one pass backward.
//!
//! | activation | forward `y = f(x)` | backward `dx = g · f'(·)` |
//! |---|---|---|
//! | ReLU | `max(x, 0)` | `g · [x > 0]` |
//! | LeakyReLU(`a`) | `x` if `x > 0`, else `a·x` | `g` if `x > 0`, else `a·g` |
//! | Tanh | `tanh(x)` | `g · (1 − y²)` |
//! | Sigmoid | `1 / (1 + e^(−x))` | `g · y · (1 − y)` |
//!
//! These are PyTorch's definitions (the derivative at `x = 0` is taken from the left, as
//! `threshold_backward`/`leaky_relu_backward` do). Tanh and sigmoid differentiate from the result
//! `y`, so the backward reads one saved tensor like the others.
//!
//! Candle builds the backward of a composite LeakyReLU (`max(x, a·x)`) from about 14 generic
//! passes; here [`ActivationOp`]'s `bwd` is a single [`ActivationGrad`] pass. `ActivationGrad` is
//! itself differentiable (it is linear in `g`; for tanh and sigmoid it also depends on `y`), so
//! second-order gradients (`CANDLE_GRAD_DO_NOT_DETACH=1`) stay correct.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::real::{float_dtype, map1, map2, slice, storage, Real};

/// An element-wise activation with a fused CPU kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `slope·x` otherwise.
    LeakyRelu(f64),
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^(−x))`.
    Sigmoid,
}

impl Activation {
    /// Whether the backward reads the result `y` (tanh, sigmoid) rather than the input `x`.
    pub fn grad_from_result(self) -> bool {
        matches!(self, Self::Tanh | Self::Sigmoid)
    }

    /// Whether `f'(x)` is a function of the output `y = f(x)` (so a fused op can differentiate
    /// from its output): true except for LeakyReLU with a negative slope, where `y > 0` no longer
    /// means `x > 0`.
    pub fn derivative_from_output(self) -> bool {
        match self {
            Self::LeakyRelu(a) => a >= 0.0,
            _ => true,
        }
    }

    pub(crate) fn fwd_slice<T: Real>(self, x: &[T]) -> Vec<T> {
        match self {
            Self::Relu => map1(x, |v| if v > T::ZERO { v } else { T::ZERO }),
            Self::LeakyRelu(a) => {
                let a = T::from_f64(a);
                map1(x, move |v| if v > T::ZERO { v } else { a * v })
            }
            Self::Tanh => map1(x, |v| v.tanh()),
            Self::Sigmoid => map1(x, |v| T::ONE / (T::ONE + (T::ZERO - v).exp())),
        }
    }

    /// `g · f'`, where `s` is `x` or `y` as [`Self::grad_from_result`] says.
    pub(crate) fn bwd_slice<T: Real>(self, g: &[T], s: &[T]) -> Vec<T> {
        match self {
            // NaN inputs propagate like PyTorch's: `x > 0` is false, so the gradient is 0 (ReLU)
            // or a·g (LeakyReLU).
            Self::Relu => map2(g, s, |g, x| if x > T::ZERO { g } else { T::ZERO }),
            Self::LeakyRelu(a) => {
                let a = T::from_f64(a);
                map2(g, s, move |g, x| if x > T::ZERO { g } else { a * g })
            }
            Self::Tanh => map2(g, s, |g, y| g * (T::ONE - y * y)),
            Self::Sigmoid => map2(g, s, |g, y| g * y * (T::ONE - y)),
        }
    }

    fn fwd_name(self) -> &'static str {
        match self {
            Self::Relu => "easel-relu",
            Self::LeakyRelu(_) => "easel-leaky-relu",
            Self::Tanh => "easel-tanh",
            Self::Sigmoid => "easel-sigmoid",
        }
    }

    fn bwd_name(self) -> &'static str {
        match self {
            Self::Relu => "easel-relu-grad",
            Self::LeakyRelu(_) => "easel-leaky-relu-grad",
            Self::Tanh => "easel-tanh-grad",
            Self::Sigmoid => "easel-sigmoid-grad",
        }
    }
}

/// Forward of an [`Activation`] as a candle custom op (CPU, f32/f64, contiguous input).
#[derive(Debug, Clone, Copy)]
pub struct ActivationOp(pub Activation);

impl CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        self.0.fwd_name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        Ok(match float_dtype(s, l, name)? {
            DType::F32 => storage(self.0.fwd_slice(slice::<f32>(s, l, name)?), l.shape()),
            _ => storage(self.0.fwd_slice(slice::<f64>(s, l, name)?), l.shape()),
        })
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let saved = if self.0.grad_from_result() { res } else { arg };
        Ok(Some(activation_grad(self.0, grad, saved)?))
    }
}

/// `g · f'(s)` for tensors `g` and `s` (`x` or `y`, see [`Activation::grad_from_result`]) of the
/// same shape, as one fused op.
pub fn activation_grad(act: Activation, g: &Tensor, s: &Tensor) -> Result<Tensor> {
    g.contiguous()?
        .apply_op2(&s.contiguous()?, ActivationGrad(act))
}

/// Backward of an [`Activation`]: `(g, s) → g · f'(s)` in one pass (CPU, f32/f64).
#[derive(Debug, Clone, Copy)]
pub struct ActivationGrad(pub Activation);

impl CustomOp2 for ActivationGrad {
    fn name(&self) -> &'static str {
        self.0.bwd_name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        if l1.shape() != l2.shape() || s1.dtype() != s2.dtype() {
            candle_core::bail!(
                "{name}: gradient {:?} {:?} and saved tensor {:?} {:?} differ",
                l1.dims(),
                s1.dtype(),
                l2.dims(),
                s2.dtype()
            )
        }
        Ok(match float_dtype(s1, l1, name)? {
            DType::F32 => storage(
                self.0
                    .bwd_slice(slice::<f32>(s1, l1, name)?, slice::<f32>(s2, l2, name)?),
                l1.shape(),
            ),
            _ => storage(
                self.0
                    .bwd_slice(slice::<f64>(s1, l1, name)?, slice::<f64>(s2, l2, name)?),
                l1.shape(),
            ),
        })
    }

    /// Second order: `∂/∂g = f'(s)`, so the gradient of `g` is this op applied to the incoming
    /// gradient `gg`; `∂/∂s` is 0 almost everywhere for (leaky) ReLU, `−2y·g` for tanh and
    /// `g·(1 − 2y)` for sigmoid.
    fn bwd(
        &self,
        g: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        gg: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dg = activation_grad(self.0, gg, s)?;
        let ds = match self.0 {
            Activation::Relu | Activation::LeakyRelu(_) => None,
            Activation::Tanh => Some((g * gg)?.mul(&s.affine(-2., 0.)?)?),
            Activation::Sigmoid => Some((g * gg)?.mul(&s.affine(-2., 1.)?)?),
        };
        Ok((Some(dg), ds))
    }
}
