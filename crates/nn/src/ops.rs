//! Tensor ops used by easel's layers and models, gathered in one place: the only place where a
//! device decides how an op is computed.
//!
//! Every op has two implementations:
//!
//! - **CPU kernels** ([`crate::kernels`]): fused candle custom ops with their own backward, used
//!   for CPU tensors of dtype f32 (and f64, which the gradient tests use);
//! - **generic**: written with candle's own ops, so CUDA and Metal builds run it unchanged; its
//!   gradients come from candle's autograd and are correct (the pooling and upsampling here avoid
//!   candle's `max_pool2d`/`upsample_nearest2d` backward bugs by construction).
//!
//! The generic path is also used on CPU when
//! - `EASEL_NN_GENERIC_OPS` is `1` (every op) or lists op families, e.g. `act,norm,pool,pad` (read
//!   once per process; for A/B measurements), or
//! - for batch norm and max-pooling, `CANDLE_GRAD_DO_NOT_DETACH=1` asks for second-order
//!   gradients, since those two kernels' backward passes are not themselves differentiable (the
//!   activation, average-pool and upsample kernels' are).
//!
//! Model code calls only these functions, never candle's convolution, activation, pooling or
//! upsampling ops.

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor, D};

pub use crate::kernels::act::Activation;
pub use crate::kernels::conv::{Conv2dParams, ConvTranspose2dParams, FusedBatchNorm};
pub use crate::kernels::pool::Pool2d;
use crate::kernels::{act, conv, norm, pad, pool};

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|s| !s.is_empty() && s != "0")
}

/// Whether `EASEL_NN_GENERIC_OPS` forces the generic path for the op family `family`: the
/// variable is `1`/`all` (every family) or a comma-separated list of families (`act`, `norm`,
/// `pool`, …).
fn generic_forced(family: &str) -> bool {
    static F: OnceLock<Vec<String>> = OnceLock::new();
    let list = F.get_or_init(|| match std::env::var("EASEL_NN_GENERIC_OPS") {
        Ok(s) if !s.is_empty() && s != "0" => s.split(',').map(|t| t.trim().to_string()).collect(),
        _ => Vec::new(),
    });
    list.iter().any(|t| t == "1" || t == "all" || t == family)
}

/// Whether candle keeps the backward graph (`CANDLE_GRAD_DO_NOT_DETACH`), i.e. second-order
/// gradients may be taken.
fn second_order() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| env_flag("CANDLE_GRAD_DO_NOT_DETACH"))
}

thread_local! {
    static GENERIC_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static FROZEN_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every layer parameter on this thread treated as a constant: gradients still flow
/// to the inputs, but none are computed for weights, biases or batch-norm γ/β. A GAN's generator
/// update differentiates through the discriminator only to reach the generator, so it runs the
/// discriminator like this and skips its weight gradients (about a tenth of a DCGAN step's
/// convolution work). Nests; restores the previous setting even if `f` fails.
pub fn with_frozen_params<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FROZEN_SCOPE.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(FROZEN_SCOPE.with(|g| g.replace(true)));
    f()
}

/// A layer parameter as the current scope wants it: detached inside [`with_frozen_params`],
/// itself otherwise. Layers pass every parameter through this before using it.
pub fn param(t: &Tensor) -> Tensor {
    if FROZEN_SCOPE.with(|g| g.get()) {
        t.detach()
    } else {
        t.clone()
    }
}

/// Runs `f` with every op on this thread taking the generic path (candle's own ops), whose
/// backward passes are themselves differentiable — for gradients of gradients such as the WGAN-GP
/// penalty. Nests; restores the previous setting even if `f` fails.
pub fn with_generic_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC_SCOPE.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GENERIC_SCOPE.with(|g| g.replace(true)));
    f()
}

/// Whether `x` is computed by easel's CPU kernels.
fn cpu_kernel(x: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && !generic_forced("all")
        && !GENERIC_SCOPE.with(|g| g.get())
}

/// Same, for the op family `family` (see [`generic_forced`]).
fn cpu_kernel_for(x: &Tensor, family: &str) -> bool {
    cpu_kernel(x) && !generic_forced(family)
}

/// Same, for kernels whose backward is not itself differentiable.
fn cpu_kernel_first_order(x: &Tensor, family: &str) -> bool {
    cpu_kernel_for(x, family) && !second_order()
}

// ---------------------------------------------------------------------------------------------
// Activations

/// Applies `act` (dispatching as the module docs say).
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    if cpu_kernel_for(x, "act") {
        x.contiguous()?.apply_op1(act::ActivationOp(act))
    } else {
        activation_generic(x, act)
    }
}

/// `act` with candle's ops (any device).
pub(crate) fn activation_generic(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Relu => x.relu(),
        // max(x, a·x) equals LeakyReLU for 0 ≤ a ≤ 1 and needs two ops instead of four.
        Activation::LeakyRelu(a) if (0.0..=1.0).contains(&a) => x.maximum(&x.affine(a, 0.)?),
        Activation::LeakyRelu(a) => candle_nn::ops::leaky_relu(x, a),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    activation(x, Activation::Relu)
}

/// `x` where `x > 0`, `slope·x` elsewhere (PyTorch `nn.LeakyReLU(slope)`).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    activation(x, Activation::LeakyRelu(slope))
}

/// `tanh(x)`.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    activation(x, Activation::Tanh)
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    activation(x, Activation::Sigmoid)
}

// ---------------------------------------------------------------------------------------------
// Batch normalisation

/// Result of [`batch_norm_train`] / [`batch_norm_act_train`].
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// Normalised output `[B, C, H, W]` (after the activation, if any), differentiable w.r.t.
    /// `x`, `γ` and `β`.
    pub y: Tensor,
    /// Batch mean `[C]`, detached.
    pub mean: Tensor,
    /// Biased batch variance `[C]`, detached.
    pub var: Tensor,
}

/// Training-mode batch norm of `x` `[B, C, H, W]` with the batch's statistics:
/// `y = γ·(x − μ)/√(σ² + ε) + β`, `μ` and biased `σ²` per channel over `B·H·W` values.
/// Also returns `μ` and `σ²` (for the running statistics). `γ`, `β` are `[C]`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    batch_norm_act_train(x, gamma, beta, eps, None)
}

/// [`batch_norm_train`] followed by `act`: `y = act(γ·(x − μ)/√(σ² + ε) + β)`. On CPU the
/// activation is fused into the batch-norm kernel (one op, no intermediate tensor, and its
/// derivative is applied inside the batch-norm backward) when its derivative is a function of its
/// output (all but LeakyReLU with a negative slope).
pub fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Option<Activation>,
) -> Result<BatchNormOutput> {
    let (gamma, beta) = (&param(gamma), &param(beta));
    let (_, c, _, _) = x.dims4()?;
    if gamma.dims() != [c] || beta.dims() != [c] {
        candle_core::bail!(
            "batch norm: input {:?} needs γ and β of shape [{c}], got {:?} and {:?}",
            x.dims(),
            gamma.dims(),
            beta.dims()
        )
    }
    if cpu_kernel_first_order(x, "norm") && gamma.dtype() == x.dtype() && beta.dtype() == x.dtype()
    {
        let fused = act.filter(|a| a.derivative_from_output());
        let (y, mean, var) = norm::batch_norm_train(x, gamma, beta, eps, fused)?;
        let y = match act {
            Some(a) if fused.is_none() => activation(&y, a)?,
            _ => y,
        };
        Ok(BatchNormOutput { y, mean, var })
    } else {
        let out = batch_norm_train_generic(x, gamma, beta, eps)?;
        Ok(match act {
            None => out,
            Some(a) => BatchNormOutput {
                y: activation(&out.y, a)?,
                ..out
            },
        })
    }
}

/// [`batch_norm_train`] with candle's ops (any device; statistics in f32 for f16/bf16 inputs,
/// returned in f32 then).
pub(crate) fn batch_norm_train_generic(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<BatchNormOutput> {
    let (b, c, h, w) = x.dims4()?;
    let n = b * h * w;
    let sdt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let xf = x.to_dtype(sdt)?;
    let flat = xf.transpose(0, 1)?.reshape((c, n))?; // [C, B·H·W]
    let mean = flat.mean(D::Minus1)?; // [C]
    let var = flat
        .broadcast_sub(&mean.unsqueeze(1)?)?
        .sqr()?
        .mean(D::Minus1)?; // biased, [C]
    let param = |t: &Tensor| t.reshape((1, c, 1, 1));
    let m4 = param(&mean.to_dtype(x.dtype())?)?;
    let v4 = param(&var.to_dtype(x.dtype())?)?;
    let inv_std = (v4 + eps)?.sqrt()?.recip()?; // [1, C, 1, 1]
    let scale = inv_std.broadcast_mul(&param(&gamma.to_dtype(x.dtype())?)?)?;
    let shift = param(&beta.to_dtype(x.dtype())?)?.broadcast_sub(&m4.broadcast_mul(&scale)?)?;
    let y = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
    Ok(BatchNormOutput {
        y,
        mean: mean.detach(),
        var: var.detach(),
    })
}

// ---------------------------------------------------------------------------------------------
// Pooling and upsampling

/// Max-pooling of `x` `[B, C, H, W]` with a `kernel`×`kernel` window, `stride` and implicit −∞
/// padding `padding ≤ kernel/2` (PyTorch `F.max_pool2d`, `ceil_mode=False`). The gradient goes to
/// the first maximum of each window (PyTorch's tie rule). Output `[B, C, H', W']`,
/// `H' = ⌊(H + 2·padding − kernel)/stride⌋ + 1`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = Pool2d {
        kernel,
        stride,
        padding,
    };
    if cpu_kernel_first_order(x, "pool") {
        x.contiguous()?.apply_op1(pool::MaxPool2dOp::new(g))
    } else {
        max_pool2d_generic(x, g)
    }
}

/// Average pooling with zero padding counted in the divisor (PyTorch `F.avg_pool2d` defaults:
/// `count_include_pad=True`, `ceil_mode=False`): every output is the window sum over `kernel²`.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = Pool2d {
        kernel,
        stride,
        padding,
    };
    if cpu_kernel_for(x, "pool") {
        x.contiguous()?.apply_op1(pool::AvgPool2dOp(g))
    } else {
        avg_pool2d_generic(x, g)
    }
}

/// Nearest-neighbour upsampling of `x` `[B, C, H, W]` to `[B, C, target_h, target_w]`, which must
/// be positive integer multiples of `H` and `W` (PyTorch `F.interpolate(mode="nearest")` with an
/// integer `scale_factor`). Its gradient sums each block and accumulates with the input's other
/// uses.
pub fn upsample_nearest2d(x: &Tensor, target_h: usize, target_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h == 0
        || w == 0
        || target_h == 0
        || target_w == 0
        || !target_h.is_multiple_of(h)
        || !target_w.is_multiple_of(w)
    {
        candle_core::bail!(
            "upsample_nearest2d: target {target_h}×{target_w} must be a positive integer multiple of the input {:?}",
            x.dims()
        )
    }
    let (fh, fw) = (target_h / h, target_w / w);
    if cpu_kernel_for(x, "pool") {
        x.contiguous()?
            .apply_op1(pool::UpsampleNearest2dOp { fh, fw })
    } else {
        upsample_nearest2d_generic(x, fh, fw)
    }
}

/// Reflection padding of `x` `[B, C, H, W]` by `(left, right, top, bottom)` (PyTorch
/// `F.pad(x, (l, r, t, b), mode="reflect")`): output `[B, C, H + t + b, W + l + r]`; each pad
/// must be smaller than the side it pads (the edge is not repeated: `[a b c d]` padded by 2 is
/// `[c b a b c d c b]`). The gradient of every copy is added to its source pixel.
pub fn reflection_pad2d(x: &Tensor, pad: (usize, usize, usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (left, right, top, bottom) = pad;
    let p = pad::Pad4 {
        left,
        right,
        top,
        bottom,
    };
    p.check(h, w, &format!("reflection_pad2d of input {:?}", x.dims()))?;
    if left + right + top + bottom == 0 {
        return Ok(x.clone());
    }
    if cpu_kernel_for(x, "pad") {
        x.contiguous()?.apply_op1(pad::ReflectionPad2dOp(p))
    } else {
        reflection_pad2d_generic(x, pad)
    }
}

/// Source index of every output position of a reflection pad of `n` values by `before`/`after`
/// (the edge value is not repeated: `[a b c d]` padded by 2 is `[c b a b c d c b]`).
fn reflect_indices(n: usize, before: usize, after: usize) -> Vec<u32> {
    (0..before + n + after)
        .map(|i| {
            let j = i as i64 - before as i64;
            let r = if j < 0 {
                -j
            } else if j >= n as i64 {
                2 * (n as i64 - 1) - j
            } else {
                j
            };
            r as u32
        })
        .collect()
}

/// [`reflection_pad2d`] with candle's ops (any device): two index-selects, whose backward
/// (candle's index-select gradient) adds the gradient of every copy to its source pixel.
pub(crate) fn reflection_pad2d_generic(
    x: &Tensor,
    pad: (usize, usize, usize, usize),
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (l, r, t, b) = pad;
    let mut y = x.clone();
    if t + b > 0 {
        let idx = Tensor::new(reflect_indices(h, t, b), x.device())?;
        y = y.index_select(&idx, 2)?;
    }
    if l + r > 0 {
        let idx = Tensor::new(reflect_indices(w, l, r), x.device())?;
        y = y.index_select(&idx, 3)?;
    }
    Ok(y)
}

/// Pads dim `dim` of `x` with `before`/`after` copies of `value`.
fn pad_const(x: &Tensor, dim: usize, before: usize, after: usize, value: f64) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let block = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(value, dims, x.device())?.to_dtype(x.dtype())
    };
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// The `k²` values of every pooling window, `[B, C, H', W', k²]` in row-major window order, with
/// `pad` outside the image; built from narrow/reshape/cat only, so its backward is exact.
fn pool_windows(x: &Tensor, g: Pool2d, pad: f64) -> Result<Tensor> {
    let dims = x.dims4()?;
    let (b, c, h, w) = dims;
    let (ho, wo) = g.out_hw(dims, "pooling")?;
    let Pool2d {
        kernel: k,
        stride: s,
        padding: p,
    } = g;
    if s == k && p == 0 {
        // Non-overlapping windows: one reshape and one permute.
        return x
            .narrow(2, 0, ho * k)?
            .narrow(3, 0, wo * k)?
            .reshape((b, c, ho, k, wo, k))?
            .permute((0, 1, 2, 4, 3, 5))?
            .reshape((b, c, ho, wo, k * k));
    }
    // Pad so that rows i, i+s, …, i+s·(H'−1) exist for every i < k as a narrow of length s·H'.
    let hp = (h + 2 * p).max(k - 1 + s * ho);
    let wp = (w + 2 * p).max(k - 1 + s * wo);
    let xp = pad_const(x, 2, p, hp - h - p, pad)?;
    let xp = pad_const(&xp, 3, p, wp - w - p, pad)?;
    let mut wins = Vec::with_capacity(k * k);
    for i in 0..k {
        let rows = xp
            .narrow(2, i, s * ho)?
            .reshape((b, c, ho, s, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?; // [B, C, H', Wp]
        for j in 0..k {
            wins.push(
                rows.narrow(3, j, s * wo)?
                    .reshape((b, c, ho, wo, s))?
                    .narrow(4, 0, 1)?,
            ); // [B, C, H', W', 1]
        }
    }
    Tensor::cat(&wins, 4)
}

/// Max-pooling with candle's ops: the window values, a one-hot mask of each window's first
/// arg-max, and a masked sum (so the gradient reaches exactly one element per window). NaN
/// handling follows candle's `argmax` rather than PyTorch's.
pub(crate) fn max_pool2d_generic(x: &Tensor, g: Pool2d) -> Result<Tensor> {
    let wins = pool_windows(x, g, f64::NEG_INFINITY)?; // [B, C, H', W', k²]
    let kk = g.kernel * g.kernel;
    let idx = wins.argmax_keepdim(4)?; // [B, C, H', W', 1], first maximum
    let ar = Tensor::arange(0u32, kk as u32, x.device())?.reshape((1, 1, 1, 1, kk))?;
    let mask = idx.broadcast_eq(&ar)?; // one-hot
    mask.where_cond(&wins, &wins.zeros_like()?)?.sum(4)
}

/// Average pooling with candle's ops (window sum over `k²`).
pub(crate) fn avg_pool2d_generic(x: &Tensor, g: Pool2d) -> Result<Tensor> {
    let kk = (g.kernel * g.kernel) as f64;
    pool_windows(x, g, 0.0)?.sum(4)?.affine(1.0 / kk, 0.0)
}

/// Nearest upsampling with candle's ops: broadcast to `[B, C, H, f_h, W, f_w]` and reshape, so the
/// backward is a sum over the broadcast dims.
pub(crate) fn upsample_nearest2d_generic(x: &Tensor, fh: usize, fw: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, fh, w, fw))?
        .reshape((b, c, h * fh, w * fw))
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// `conv2d(x, w)`: `x` `[N, C, H, W]`, `w` `[O, C, KH, KW]` → `[N, O, OH, OW]` (groups = 1).
///
/// CPU f32/f64 tensors run easel's im2col + GEMM kernels ([`conv::conv2d`], whose backward
/// uses the same kernels and skips arguments that need no gradient); other devices and dtypes
/// run candle's `Tensor::conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let w = &param(w);
    if cpu_kernel(x) && conv::supports(x, w) {
        conv::conv2d(x, w, p)
    } else {
        x.conv2d(w, p.padding, p.stride, p.dilation, 1)
    }
}

/// [`conv2d`] plus a bias `b` `[O]` (PyTorch `F.conv2d(x, w, b)`): on the CPU kernels the bias is
/// added inside the convolution; elsewhere candle's conv2d and a broadcast add.
pub fn conv2d_bias(x: &Tensor, w: &Tensor, b: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let (w, b) = (&param(w), &param(b));
    if cpu_kernel(x) && conv::supports(x, w) && b.dtype() == x.dtype() && b.device().is_cpu() {
        conv::conv2d_bias(x, w, b, p)
    } else {
        x.conv2d(w, p.padding, p.stride, p.dilation, 1)?
            .broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)
    }
}

/// Transposed convolution (PyTorch `conv_transpose2d`): `x` `[N, Ci, H, W]`, `w`
/// `[Ci, Co, KH, KW]` → `[N, Co, (H−1)·stride − 2·padding + dilation·(KH−1) + output_padding + 1,
/// …]`. Dispatched like [`conv2d`] (candle's `Tensor::conv_transpose2d` off the CPU).
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, p: ConvTranspose2dParams) -> Result<Tensor> {
    let w = &param(w);
    if cpu_kernel(x) && conv::supports(x, w) {
        conv::conv_transpose2d(x, w, p)
    } else {
        x.conv_transpose2d(w, p.padding, p.output_padding, p.stride, p.dilation)
    }
}

// ---------------------------------------------------------------------------------------------
// Fused layers

/// The output of [`conv2d_norm_act`] / [`conv_transpose2d_norm_act`].
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// `act(bn(conv(x, w)))`.
    pub y: Tensor,
    /// With batch norm: the batch mean and biased variance of `conv(x, w)` per channel, `[C]`,
    /// detached (for the running statistics).
    pub stats: Option<(Tensor, Tensor)>,
}

/// `act(bn(conv2d(x, w)))`: a convolution, then (optionally) training-mode batch norm with the
/// batch's statistics, then (optionally) an activation — DCGAN's block.
///
/// On the CPU kernels, when no second-order gradients are asked for and the activation's
/// derivative can be read from its output, the three run as one op ([`conv::conv2d_norm_act`]):
/// the convolution's output is never a graph tensor, which saves a zero-filled gradient buffer,
/// an addition pass and a graph node per block in every backward. Otherwise (other devices,
/// `EASEL_NN_GENERIC_OPS=fuse`, `CANDLE_GRAD_DO_NOT_DETACH=1`) it is [`conv2d`], then
/// [`batch_norm_act_train`] or [`activation`]. The results agree to rounding.
pub fn conv2d_norm_act(
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<LayerOutput> {
    norm_act_layer(
        x,
        (w, bn, act),
        |w, bn| conv::conv2d_norm_act(x, w, p, bn, act),
        |w| conv2d(x, w, p),
    )
}

/// [`conv2d_norm_act`] with a transposed convolution (PyTorch `conv_transpose2d`, weight
/// `[Ci, Co, KH, KW]`), fused likewise ([`conv::conv_transpose2d_norm_act`]).
pub fn conv_transpose2d_norm_act(
    x: &Tensor,
    w: &Tensor,
    p: ConvTranspose2dParams,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<LayerOutput> {
    norm_act_layer(
        x,
        (w, bn, act),
        |w, bn| conv::conv_transpose2d_norm_act(x, w, p, bn, act),
        |w| conv_transpose2d(x, w, p),
    )
}

/// The dispatch of both fused layers: the parameters as the current scope wants them
/// ([`param`]), then `fused` (the CPU op) or `linear` followed by the separate batch norm and
/// activation.
fn norm_act_layer(
    x: &Tensor,
    (w, bn, act): (&Tensor, Option<FusedBatchNorm<'_>>, Option<Activation>),
    fused: impl FnOnce(&Tensor, Option<FusedBatchNorm<'_>>) -> Result<conv::FusedOutput>,
    linear: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<LayerOutput> {
    let w = &param(w);
    let scoped = bn.map(|b| (param(b.gamma), param(b.beta), b.eps));
    let bn = scoped.as_ref().map(|(gamma, beta, eps)| FusedBatchNorm {
        gamma,
        beta,
        eps: *eps,
    });
    if fusable(x, w, bn.as_ref(), act) {
        fused_output(fused(w, bn)?, x)
    } else {
        unfused(linear(w)?, bn, act)
    }
}

/// Whether the fused CPU op can run this layer.
fn fusable(
    x: &Tensor,
    w: &Tensor,
    bn: Option<&FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> bool {
    cpu_kernel_first_order(x, "fuse")
        && conv::supports(x, w)
        && act.is_none_or(|a| a.derivative_from_output())
        && bn.is_none_or(|b| {
            !generic_forced("norm")
                && [b.gamma, b.beta]
                    .iter()
                    .all(|t| t.dtype() == x.dtype() && t.device().is_cpu())
        })
}

fn fused_output(out: conv::FusedOutput, x: &Tensor) -> Result<LayerOutput> {
    let stats = match out.stats {
        None => None,
        Some(st) => {
            let c = st.mean.len();
            let dev = x.device();
            Some((
                Tensor::from_vec(st.mean, c, dev)?.to_dtype(x.dtype())?,
                Tensor::from_vec(st.var, c, dev)?.to_dtype(x.dtype())?,
            ))
        }
    };
    Ok(LayerOutput { y: out.y, stats })
}

fn unfused(
    y: Tensor,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<LayerOutput> {
    match bn {
        Some(b) => {
            let out = batch_norm_act_train(&y, b.gamma, b.beta, b.eps, act)?;
            Ok(LayerOutput {
                y: out.y,
                stats: Some((out.mean, out.var)),
            })
        }
        None => Ok(LayerOutput {
            y: match act {
                Some(a) => activation(&y, a)?,
                None => y,
            },
            stats: None,
        }),
    }
}

#[cfg(test)]
mod tests;
