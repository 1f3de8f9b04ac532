//! 2-D convolution and transposed convolution on the CPU, as candle custom ops whose backward
//! passes run on the same kernels.
//!
//! # One geometry, three kernels
//!
//! Everything is described from the convolution's side: an input `x` `[N, C, H, W]` convolved
//! with a kernel `w` `[O, C, KH, KW]` (stride `s`, zero padding `p`, dilation `d`; groups = 1)
//! gives `y` `[N, O, OH, OW]`, `OH = (H + 2p − d(KH − 1) − 1)/s + 1` (likewise `OW`). Write
//! `P = OH·OW` (output positions per image) and `K = C·KH·KW` (taps per output value). Three
//! kernels cover every pass of both layers:
//!
//! | kernel | computes | used for |
//! |---|---|---|
//! | forward | `y = conv(x, w)` | conv2d forward; transposed-conv input gradient |
//! | data-gradient | `x̄ = convᵀ(ȳ, w)` | transposed-conv forward; conv2d input gradient |
//! | weight-gradient | `w̄ = Σₙ ȳₙ ⋆ xₙ` | the weight gradient of both |
//!
//! A transposed convolution with input `u` `[N, Ci, Hi, Wi]` and PyTorch weight `[Ci, Co, KH, KW]`
//! *is* the data-gradient of the convolution with `O = Ci`, `C = Co`, `(OH, OW) = (Hi, Wi)` and
//! `(H, W)` the transposed output size; its weight tensor is already laid out as `[O, C, KH, KW]`,
//! so no kernel ever copies or flips a weight.
//!
//! # im2col/col2im + GEMM
//!
//! All three are matrix products over a block of columns `j` = (image, output position), with
//! the weight as the `O × K` matrix `W`:
//!
//! - **forward**: `im2col` gathers the block's taps into `X` (`K × cols`, row-major, one row per
//!   tap, zeros for padding); `Y = W·X` is written straight into `y` when the block is (part of)
//!   one image, or into a scratch tile that is then copied into `y`'s `[N, O, P]` layout.
//! - **data-gradient**: `Xᵀ = Ȳᵀ·W` (`cols × K`) and `col2im` adds every column back onto the
//!   pixels it was read from. Blocks are (images × input channels), so two blocks never add to the
//!   same pixel and no atomics or locks are needed. For wide outputs (`OW ≥ 8`) the matrix is
//!   built tap-major instead, `X = Wᵀ·Ȳ` (`K × cols`, `Wᵀ` copied once per call), so that
//!   `col2im` adds long contiguous rows.
//! - **weight-gradient**: `im2row` gathers the taps as `Xᵀ` (`cols × K`, one row per output
//!   position); `W̄ += Ȳ·Xᵀ` accumulates into a partial sum per worker thread; the partials are
//!   added at the end (in parallel).
//!
//! The gathers work one image plane at a time when that saves work: for a strided kernel
//! (`im2col_phased`, `col2im_phased`) the plane is split once into its `s` zero-padded column
//! phases, so that each tap row of an output row is one contiguous copy (or addition); for a
//! padded kernel (`im2row_padded`, `col2im_padded`) the plane is zero-padded once, so that the
//! `KW` taps of a position need no boundary checks. (DCGAN's 4×4 stride-2 layers at 32×32: the
//! layout copies fell from ≈ 25 % to ≈ 14 % of the training step.)
//!
//! When the tap matrix is merely a view of the input — a 1×1 kernel with stride 1 and no
//! padding, or a kernel covering the whole unpadded image (DCGAN's first and last layers) — no
//! gather is made: the GEMM reads the input (and the data-gradient writes its result) in place
//! through strides. Likewise `Ȳ` is read in place when its columns are evenly spaced.
//!
//! The operand layouts are the ones the `gemm` crate ran fastest for each product (single
//! thread, AVX-512, DCGAN sizes): e.g. `Xᵀ = Ȳᵀ·W` ≈ 140–160 GFLOP/s with `Xᵀ` row-major but
//! ≈ 85–105 with `X` row-major, and `W̄ = Ȳ·Xᵀ` ≈ 140–160 with `Xᵀ` row-major but ≈ 60 with `X`
//! row-major read transposed.
//!
//! # Backward
//!
//! Each op's `bwd` runs the other two kernels as custom ops (so their own backward passes exist
//! for second-order gradients: all three are linear in each argument), and returns `None` for
//! an argument that needs no gradient (`!track_op()`: real images, detached fakes, latent
//! vectors), which skips that product entirely.
//!
//! # Blocking and threads
//!
//! The GEMM runs single-threaded inside each task; rayon spreads the tasks over its pool
//! (`rayon::current_num_threads()`, i.e. `RAYON_NUM_THREADS` or one per core).
//!
//! - Images with few output positions (deep layers: `P` = 16 or 64) are batched side by side so a
//!   block has ≈ [`TARGET_COLS`] columns: a GEMM with 16 columns runs at ≈ 60 % of one with 256.
//! - A block's column matrix is capped at [`COLS_BUDGET`] elements (it stays near the cache and
//!   large images never allocate `K × H·W` at once); large images are split into position tiles
//!   (forward, weight-gradient) or channel groups and sequential position tiles (data-gradient).
//! - With fewer blocks than threads (batch 1), images are split further so that every thread has
//!   work.
//! - Scratch tiles are per thread and reused across calls, so the hot path does not allocate
//!   beyond each op's output (and the per-thread weight-gradient partials); outputs that the
//!   GEMM overwrites entirely are not zeroed first.
//!
//! Inputs may have any strides (transposed, narrowed, broadcast views): `im2col`/`im2row` and
//! the gathers read through the layout, so no separate layout copy is made. Only weights are
//! ever copied (a non-contiguous weight once per call, and `Wᵀ` for a tap-major data-gradient;
//! both in parallel where large, and small next to the products).
//!
//! # GEMM
//!
//! [`gemm::gemm`] 0.19 with the workspace's `x86-v4` feature: AVX-512 micro-kernels. The feature
//! only compiles them in; `gemm-common` picks the kernel at run time
//! (`is_x86_feature_detected!("avx512f")`, else `"fma"` → AVX2/FMA, else scalar), so the same
//! binary runs on CPUs without AVX-512.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

use super::act::Activation;
use super::norm::BatchStats;

/// Columns (images × output positions) a GEMM block aims for when images are small.
pub const TARGET_COLS: usize = 256;
/// Largest column matrix (elements) one task builds.
pub const COLS_BUDGET: usize = 1 << 20;
/// Output width from which the data-gradient builds its column matrix tap-major (measured on
/// the DCGAN layers: +25–60 % at widths 16–32, +3–5 % at 8, −10–20 % at 4).
const TAP_MAJOR_MIN_OW: usize = 8;
/// Smallest position tile when an image is split.
const MIN_TILE: usize = 64;

// ---------------------------------------------------------------------------------------------
// Public API

/// Stride, padding and dilation of a 2-D convolution (equal along both axes, as candle's
/// `Tensor::conv2d`; the kernel may be rectangular).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Stride (≥ 1).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation (≥ 1).
    pub dilation: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

impl Conv2dParams {
    /// Stride and padding, dilation 1.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            dilation: 1,
        }
    }
}

/// Stride, padding, output padding and dilation of a transposed 2-D convolution (PyTorch
/// `nn.ConvTranspose2d`; equal along both axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    /// Stride (≥ 1).
    pub stride: usize,
    /// Padding removed from every side of the full output.
    pub padding: usize,
    /// Extra rows/columns on the bottom/right of the output (< max(stride, dilation)).
    pub output_padding: usize,
    /// Dilation (≥ 1).
    pub dilation: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
        }
    }
}

impl ConvTranspose2dParams {
    /// Stride and padding, no output padding, dilation 1.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            ..Self::default()
        }
    }
}

/// Whether these kernels can compute a convolution of `x` with `w`: both on the CPU, both f32 or
/// both f64.
pub fn supports(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == w.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `conv2d(x, w)`: `x` `[N, C, H, W]`, `w` `[O, C, KH, KW]` → `[N, O, OH, OW]`, differentiable in
/// both arguments (CPU, f32/f64; see [`supports`]).
pub fn conv2d(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    x.apply_op2(w, conv2d_op(x, w, p)?)
}

/// [`conv2d`] plus a bias `b` `[O]` broadcast over every output position, added inside the
/// kernel (no separate pass, no extra graph node); differentiable in all three arguments.
pub fn conv2d_bias(x: &Tensor, w: &Tensor, b: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let op = conv2d_op(x, w, p)?;
    let o = w.dim(0)?;
    if b.dims() != [o] {
        bail!(
            "conv2d: bias {:?} must have shape [{o}] for weight {:?}",
            b.dims(),
            w.dims()
        )
    }
    x.apply_op3(w, &b.contiguous()?, Conv2dBiasOp(op))
}

/// The checked geometry of `conv2d(x, w)`: channels agree and the kernel fits.
fn conv2d_op(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Conv2dOp> {
    let s = Spec::new(p.stride, p.padding, p.dilation, "conv2d")?;
    let (_, c, h, wd) = dims4(x, "conv2d", "input")?;
    let (_, cw, kh, kw) = dims4(w, "conv2d", "weight")?;
    if c != cw {
        bail!(
            "conv2d: input {:?} has {c} channels but weight {:?} expects {cw}",
            x.dims(),
            w.dims()
        )
    }
    let out = s.out_hw(h, wd, kh, kw).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "conv2d: kernel {kh}×{kw} (dilation {}) does not fit input {:?} with padding {}",
            s.d,
            x.dims(),
            s.p
        ))
    })?;
    Ok(Conv2dOp { s, out })
}

/// Transposed convolution (PyTorch `conv_transpose2d`): `x` `[N, Ci, H, W]`, `w`
/// `[Ci, Co, KH, KW]` → `[N, Co, (H−1)s − 2p + d(KH−1) + output_padding + 1, …]`, differentiable
/// in both arguments (CPU, f32/f64; see [`supports`]).
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, p: ConvTranspose2dParams) -> Result<Tensor> {
    x.apply_op2(w, conv_transpose2d_op(x, w, p)?)
}

/// The checked geometry of `conv_transpose2d(x, w)`.
fn conv_transpose2d_op(
    x: &Tensor,
    w: &Tensor,
    p: ConvTranspose2dParams,
) -> Result<ConvTransposeOp> {
    let s = Spec::new(p.stride, p.padding, p.dilation, "conv_transpose2d")?;
    if p.output_padding >= p.stride.max(p.dilation) {
        bail!(
            "conv_transpose2d: output padding {} must be smaller than stride {} or dilation {}",
            p.output_padding,
            p.stride,
            p.dilation
        )
    }
    let (_, ci, h, wd) = dims4(x, "conv_transpose2d", "input")?;
    let (cw, _, kh, kw) = dims4(w, "conv_transpose2d", "weight")?;
    if ci != cw {
        bail!(
            "conv_transpose2d: input {:?} has {ci} channels but weight {:?} expects {cw}",
            x.dims(),
            w.dims()
        )
    }
    if kh == 0 || kw == 0 || h == 0 || wd == 0 {
        bail!(
            "conv_transpose2d: empty input {:?} or weight {:?}",
            x.dims(),
            w.dims()
        )
    }
    let size = |i: usize, k: usize| {
        ((i - 1) * s.s + s.d * (k - 1) + 1 + p.output_padding)
            .checked_sub(2 * s.p)
            .filter(|&o| o > 0)
    };
    let (Some(oh), Some(ow)) = (size(h, kh), size(wd, kw)) else {
        bail!(
            "conv_transpose2d: padding {} leaves no output for input {:?} and weight {:?}",
            s.p,
            x.dims(),
            w.dims()
        )
    };
    Ok(ConvTransposeOp { s, out: (oh, ow) })
}

/// The input gradient of `conv2d(x, w, p)` for an `x` of spatial size `in_hw`, given the output
/// gradient `gy` `[N, O, OH, OW]` (the data-gradient kernel; differentiable).
pub fn conv2d_input_grad(
    gy: &Tensor,
    w: &Tensor,
    in_hw: (usize, usize),
    p: Conv2dParams,
) -> Result<Tensor> {
    let s = Spec::new(p.stride, p.padding, p.dilation, "conv2d_input_grad")?;
    dims4(gy, "conv2d_input_grad", "output gradient")?;
    dims4(w, "conv2d_input_grad", "weight")?;
    gy.apply_op2(w, ConvTransposeOp { s, out: in_hw })
}

/// The weight gradient of `conv2d(x, w, p)` for a `kh`×`kw` kernel, given the output gradient
/// `gy` `[N, O, OH, OW]`: `[O, C, KH, KW]` (the weight-gradient kernel; differentiable).
pub fn conv2d_weight_grad(
    x: &Tensor,
    gy: &Tensor,
    k_hw: (usize, usize),
    p: Conv2dParams,
) -> Result<Tensor> {
    let s = Spec::new(p.stride, p.padding, p.dilation, "conv2d_weight_grad")?;
    dims4(x, "conv2d_weight_grad", "input")?;
    dims4(gy, "conv2d_weight_grad", "output gradient")?;
    x.apply_op2(gy, WeightGradOp { s, k: k_hw })
}

/// Training-mode batch norm inside a fused layer ([`conv2d_norm_act`],
/// [`conv_transpose2d_norm_act`]): `γ`, `β` `[C_out]` and `ε`.
#[derive(Debug, Clone, Copy)]
pub struct FusedBatchNorm<'a> {
    /// Scale `γ`.
    pub gamma: &'a Tensor,
    /// Shift `β`.
    pub beta: &'a Tensor,
    /// `ε` added to the variance.
    pub eps: f64,
}

/// Output of a fused layer: `y` and, with batch norm, the batch's statistics (for the running
/// averages).
#[derive(Debug, Clone)]
pub struct FusedOutput {
    /// `act(bn(conv(x, w)))`.
    pub y: Tensor,
    /// Mean and biased variance of `conv(x, w)` per channel, with batch norm.
    pub stats: Option<BatchStats>,
}

/// `act(bn(conv2d(x, w)))` as one op, `bn` being training-mode batch norm (optional) and `act`
/// an activation whose derivative is a function of its output (optional): the convolution's
/// output never becomes a graph tensor (see the `fused` module). Differentiable in `x`, `w`, `γ`
/// and `β` (first order only). CPU, f32/f64.
pub fn conv2d_norm_act(
    x: &Tensor,
    w: &Tensor,
    p: Conv2dParams,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<FusedOutput> {
    let op = conv2d_op(x, w, p)?;
    run_fused(x, w, w.dim(0)?, fused::Linear::Conv(op), bn, act)
}

/// [`conv2d_norm_act`] with a transposed convolution (`w` `[Ci, Co, KH, KW]`).
pub fn conv_transpose2d_norm_act(
    x: &Tensor,
    w: &Tensor,
    p: ConvTranspose2dParams,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<FusedOutput> {
    let op = conv_transpose2d_op(x, w, p)?;
    run_fused(x, w, w.dim(1)?, fused::Linear::ConvTranspose(op), bn, act)
}

fn run_fused(
    x: &Tensor,
    w: &Tensor,
    c_out: usize,
    lin: fused::Linear,
    bn: Option<FusedBatchNorm<'_>>,
    act: Option<Activation>,
) -> Result<FusedOutput> {
    let op = fused::LinearNormAct::new(lin, bn.map(|b| b.eps), act)?;
    let Some(b) = bn else {
        return Ok(FusedOutput {
            y: x.apply_op2(w, fused::LinearAct(op))?,
            stats: None,
        });
    };
    if b.gamma.dims() != [c_out] || b.beta.dims() != [c_out] {
        bail!(
            "fused batch norm: weight {:?} gives {c_out} channels but γ is {:?} and β {:?}",
            w.dims(),
            b.gamma.dims(),
            b.beta.dims()
        )
    }
    let stats = op.stats_handle();
    let params = Tensor::stack(&[b.gamma, b.beta], 0)?.to_dtype(x.dtype())?; // [2, C_out]
    let y = x.apply_op3(w, &params, op)?;
    let stats = stats().ok_or_else(|| {
        candle_core::Error::Msg("fused batch norm: the forward kept no statistics".into())
    })?;
    Ok(FusedOutput {
        y,
        stats: Some(stats),
    })
}

fn dims4(t: &Tensor, op: &str, what: &str) -> Result<(usize, usize, usize, usize)> {
    match t.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        d => bail!("{op}: expects a 4-D {what} tensor, got shape {d:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry

/// Stride, padding and dilation, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    s: usize,
    p: usize,
    d: usize,
}

impl Spec {
    fn new(s: usize, p: usize, d: usize, op: &str) -> Result<Self> {
        if s == 0 || d == 0 {
            bail!("{op}: stride ({s}) and dilation ({d}) must be at least 1")
        }
        Ok(Self { s, p, d })
    }

    /// Output length of a convolution along one axis, if the (dilated) kernel fits.
    fn out_len(&self, len: usize, k: usize) -> Option<usize> {
        if k == 0 {
            return None;
        }
        (len + 2 * self.p)
            .checked_sub(self.d * (k - 1) + 1)
            .map(|r| r / self.s + 1)
    }

    fn out_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        Some((self.out_len(h, kh)?, self.out_len(w, kw)?))
    }
}

/// The convolution `x [n, c, h, w] ⋆ w [o, c, kh, kw] → y [n, o, oh, ow]` every kernel works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    s: usize,
    pad: usize,
    d: usize,
}

impl Geom {
    /// Builds and checks a geometry: `(oh, ow)` must not exceed what the kernel can produce.
    #[allow(clippy::too_many_arguments)]
    fn new(
        op: &str,
        spec: Spec,
        (n, c, h, w): (usize, usize, usize, usize),
        (o, kh, kw): (usize, usize, usize),
        (oh, ow): (usize, usize),
    ) -> Result<Self> {
        match spec.out_hw(h, w, kh, kw) {
            Some((mh, mw)) if oh <= mh && ow <= mw => {}
            _ => bail!(
                "{op}: a {kh}×{kw} kernel (stride {}, padding {}, dilation {}) cannot map input \
                 [{n}, {c}, {h}, {w}] to output [{n}, {o}, {oh}, {ow}]",
                spec.s,
                spec.p,
                spec.d
            ),
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            s: spec.s,
            pad: spec.p,
            d: spec.d,
        })
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn kk(&self) -> usize {
        self.kh * self.kw
    }
    fn k(&self) -> usize {
        self.c * self.kk()
    }
    /// Range of output columns `ow` whose tap `kj` lands inside the input row.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let off = kj * self.d; // input column = ow·s + off − pad
        let lo = if self.pad > off {
            (self.pad - off).div_ceil(self.s)
        } else {
            0
        };
        let hi = if self.w + self.pad > off {
            (self.w + self.pad - off).div_ceil(self.s)
        } else {
            0
        };
        (lo.min(self.ow), hi.min(self.ow).max(lo.min(self.ow)))
    }
    /// Input row read by output row `oh` through tap row `ki`, if inside the image.
    #[inline]
    fn in_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.s + ki * self.d)
            .checked_sub(self.pad)
            .filter(|&r| r < self.h)
    }
}

/// A 4-D strided view of a storage buffer.
#[derive(Clone, Copy)]
struct View<'a, T> {
    data: &'a [T],
    off: usize,
    st: [usize; 4],
}

impl<'a, T: Copy> View<'a, T> {
    fn new(data: &'a [T], l: &Layout) -> Self {
        let st = l.stride();
        Self {
            data,
            off: l.start_offset(),
            st: [st[0], st[1], st[2], st[3]],
        }
    }
    #[inline]
    fn plane(&self, n: usize, c: usize) -> usize {
        self.off + n * self.st[0] + c * self.st[1]
    }
    /// Whether positions `(i, j)` of a `rows × cols` plane sit at `i·cols + j`.
    fn plane_linear(&self, cols: usize, rows: usize) -> bool {
        (self.st[3] == 1 || cols <= 1) && (self.st[2] == cols || rows <= 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Element types, scratch, GEMM

/// The element types the kernels run on (f32, f64).
trait Elem: WithDType + Default {
    const ONE: Self;
    /// `self·a + b`, fused (one rounding) where the caller was compiled with FMA.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Runs `f` on a scratch buffer of `len` elements owned by the current thread (contents
    /// unspecified). Falls back to a fresh buffer if the thread's is already in use.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! elem {
    ($t:ty, $tls:ident) => {
        thread_local! {
            static $tls: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
        }
        impl Elem for $t {
            const ONE: Self = 1.0;
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $tls.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }
        }
    };
}
elem!(f32, SCRATCH_F32);
elem!(f64, SCRATCH_F64);

/// `dst = [dst +] lhs · rhs` with `dst` m×n, `lhs` m×k, `rhs` k×n, each given as a pointer with
/// (row stride, column stride) in elements. Runs on the calling thread.
///
/// # Safety
/// Every element `(i, j)` of each matrix must lie inside one live allocation; `dst` must not
/// alias `lhs` or `rhs`, and no other thread may access the `dst` elements during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (d_rs, d_cs): (usize, usize),
    accumulate: bool,
    lhs: *const T,
    (l_rs, l_cs): (usize, usize),
    rhs: *const T,
    (r_rs, r_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside dst by the caller's contract.
                    unsafe { *dst.add(i * d_rs + j * d_cs) = T::zero() };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller's contract; gemm reads lhs/rhs and writes dst only at
    // the given strides within m×k, k×n and m×n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            d_cs as isize,
            d_rs as isize,
            accumulate,
            lhs,
            l_cs as isize,
            l_rs as isize,
            rhs,
            r_cs as isize,
            r_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only used to let parallel tasks write disjoint elements of one buffer (documented at
// each use).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    #[inline]
    fn get(self) -> *mut T {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Work split

/// How a kernel splits the batch: blocks of `nb` images, each (when `nb == 1`) cut into `npt`
/// tiles of `pt` output positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiles {
    nb: usize,
    nblk: usize,
    pt: usize,
    npt: usize,
}

impl Tiles {
    /// `rows` is the height of the column matrix (elements per column).
    fn new(n: usize, p: usize, rows: usize, threads: usize) -> Self {
        let (n, p, rows, threads) = (n.max(1), p.max(1), rows.max(1), threads.max(1));
        let mut nb = TARGET_COLS
            .div_ceil(p)
            .min((COLS_BUDGET / (rows * p)).max(1))
            .min(n.div_ceil(threads))
            .max(1);
        let mut nblk = n.div_ceil(nb);
        if nb > 1 && nblk % threads != 0 {
            // Round the block count up to a multiple of the thread count, then even out the blocks.
            nblk = nblk.next_multiple_of(threads).min(n);
            nb = n.div_ceil(nblk);
            nblk = n.div_ceil(nb);
        }
        let (mut pt, mut npt) = (p, 1);
        if nb == 1 {
            let cap = (COLS_BUDGET / rows).max(MIN_TILE);
            let want = threads.div_ceil(nblk);
            pt = p.min(cap).min(p.div_ceil(want).max(MIN_TILE));
            npt = p.div_ceil(pt);
        }
        Self { nb, nblk, pt, npt }
    }

    /// (first image, images, first position, positions) of task `t`.
    fn task(&self, t: usize, n: usize, p: usize) -> (usize, usize, usize, usize) {
        let (blk, ti) = (t / self.npt, t % self.npt);
        let n0 = blk * self.nb;
        let p0 = ti * self.pt;
        (n0, self.nb.min(n - n0), p0, self.pt.min(p - p0))
    }
    fn tasks(&self) -> usize {
        self.nblk * self.npt
    }
}

// ---------------------------------------------------------------------------------------------
// Gathers

/// Calls `f(oh, ow0, ow1, j0)` for each output-row segment `oh, ow0..ow1` of the positions
/// `[p0, p0 + pn)` of one image, `j0` being the segment's offset from `p0`.
#[inline(always)]
fn for_segments(g: &Geom, p0: usize, pn: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let (mut oh, mut ow0) = if p0 == 0 {
        (0, 0)
    } else {
        (p0 / g.ow, p0 % g.ow)
    };
    let mut j0 = 0;
    while j0 < pn {
        let len = (g.ow - ow0).min(pn - j0);
        f(oh, ow0, ow0 + len, j0);
        j0 += len;
        oh += 1;
        ow0 = 0;
    }
}

/// `out[i] = src[start + i·step]`, with the common steps specialised so they vectorise.
#[inline(always)]
fn copy_strided<T: Copy>(out: &mut [T], src: &[T], start: usize, step: usize) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let src = &src[start..start + step * (n - 1) + 1];
    match step {
        1 => out.copy_from_slice(src),
        2 => {
            let (head, last) = out.split_at_mut(n - 1);
            for (v, pair) in head.iter_mut().zip(src.chunks_exact(2)) {
                *v = pair[0];
            }
            last[0] = src[2 * (n - 1)];
        }
        _ => {
            for (i, v) in out.iter_mut().enumerate() {
                *v = src[i * step];
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the few taps of one kernel row, without a `memcpy` call for
/// the usual widths.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    match (dst.len(), src.len()) {
        (4, 4) => {
            let s: &[T; 4] = src.try_into().expect("4 taps");
            let d: &mut [T; 4] = dst.try_into().expect("4 taps");
            *d = *s;
        }
        (3, 3) => {
            let s: &[T; 3] = src.try_into().expect("3 taps");
            let d: &mut [T; 3] = dst.try_into().expect("3 taps");
            *d = *s;
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `dst.copy_from_slice(&src[..dst.len()])` for the short runs of one output row (4–32 values
/// in DCGAN's layers), in 8- and 4-wide blocks with an overlapping last block instead of a
/// `memmove` call.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    let src = &src[..n];
    fn block<T: Copy, const W: usize>(dst: &mut [T], src: &[T], at: usize) {
        let s: &[T; W] = src[at..at + W].try_into().expect("block in range");
        let d: &mut [T; W] = (&mut dst[at..at + W]).try_into().expect("block in range");
        *d = *s;
    }
    match n {
        0 => {}
        1..=3 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        4..=7 => {
            block::<T, 4>(dst, src, 0);
            block::<T, 4>(dst, src, n - 4);
        }
        8..=63 => {
            let mut at = 0;
            while at + 8 <= n {
                block::<T, 8>(dst, src, at);
                at += 8;
            }
            if at < n {
                block::<T, 8>(dst, src, n - 8);
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `x[start + i·step] += src[i]`, specialised like [`copy_strided`].
#[inline(always)]
fn add_strided<T: Elem>(x: &mut [T], start: usize, step: usize, src: &[T]) {
    let n = src.len();
    if n == 0 {
        return;
    }
    let x = &mut x[start..start + step * (n - 1) + 1];
    match step {
        1 => {
            for (d, v) in x.iter_mut().zip(src) {
                *d += *v;
            }
        }
        2 => {
            let (head, last) = src.split_at(n - 1);
            for (pair, v) in x.chunks_exact_mut(2).zip(head) {
                pair[0] += *v;
            }
            x[2 * (n - 1)] += last[0];
        }
        _ => {
            for (i, v) in src.iter().enumerate() {
                x[i * step] += *v;
            }
        }
    }
}

/// The tap matrix of a block as a strided view of the input itself, when gathering it would
/// only copy: a 1×1 kernel with stride 1 and no padding (taps = channels, columns = pixels of
/// one image) or a kernel covering the whole unpadded image (taps = the image, columns =
/// images). Returns (offset, tap stride, column stride).
fn tap_view(
    g: &Geom,
    off: usize,
    st: [usize; 4],
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
) -> Option<(usize, usize, usize)> {
    let plane_linear = (st[3] == 1 || g.w <= 1) && (st[2] == g.w || g.h <= 1);
    if g.pad != 0 || !plane_linear {
        return None;
    }
    let one_to_one = g.kh == 1 && g.kw == 1 && g.s == 1 && g.oh == g.h && g.ow == g.w;
    if one_to_one && nb == 1 && (st[1] > 0 || g.c <= 1) {
        return Some((off + n0 * st[0] + p0, st[1], 1));
    }
    let whole = g.kh == g.h && g.kw == g.w && (g.d == 1 || g.kh * g.kw == 1);
    if whole && g.p() == 1 && pn == 1 && (st[1] == g.h * g.w || g.c <= 1) && (st[0] > 0 || nb == 1)
    {
        return Some((off + n0 * st[0], 1, st[0]));
    }
    None
}

/// `s.fill(0)` without a `memset` call for the one or two padding columns at an edge.
#[inline(always)]
fn zero_short<T: Elem>(s: &mut [T]) {
    match s.len() {
        0 => {}
        1 => s[0] = T::zero(),
        _ => s.fill(T::zero()),
    }
}

/// `cols[r][j]` (`K × nb·pn`, row-major): tap `r = (c, ki, kj)` of column `j = (b, p)`, for
/// images `n0..n0+nb` and positions `p0..p0+pn` of `x`. The `KW` rows of one `(c, ki)` are
/// filled together from the same input row.
fn im2col<T: Elem>(
    g: &Geom,
    x: &View<T>,
    blocks: (usize, usize),
    positions: (usize, usize),
    cols: &mut [T],
) {
    let sw = x.st[3];
    if g.s > 1 && g.d == 1 && g.kw > 1 && sw == 1 {
        im2col_phased(g, x, blocks, positions, cols);
        return;
    }
    let step = g.s * sw;
    // Per tap column: the valid output columns and the input column of the first one.
    let taps: Vec<(usize, usize, usize)> = (0..g.kw)
        .map(|kj| {
            let (lo, hi) = g.valid_cols(kj);
            (lo, hi, (lo * g.s + kj * g.d).saturating_sub(g.pad))
        })
        .collect();
    im2col_rows(
        g,
        x,
        blocks,
        positions,
        cols,
        |rows, ncols, range, (ow0, ow1), src| {
            for (seg, &(lo, hi, iw_lo)) in tap_segments(rows, ncols, range).zip(&taps) {
                let (a, e) = (lo.clamp(ow0, ow1), hi.clamp(ow0, ow1));
                let (z0, rest) = seg.split_at_mut(a - ow0);
                let (mid, z1) = rest.split_at_mut(e - a);
                zero_short(z0);
                zero_short(z1);
                if a < e {
                    let iw = iw_lo + (a - lo) * g.s;
                    copy_strided(mid, x.data, src + iw * sw, step);
                }
            }
        },
    );
}

/// The zero-padded rows of one image plane that the output positions `p0..p0+pn` read, as the
/// plane-at-a-time gathers buffer them: buffer row `i` is padded row `r_lo + i` (`wp` columns),
/// whose columns `lead..lead + inside` hold the image row (the rest stays zero).
#[derive(Debug, Clone, Copy)]
struct PlaneRows {
    r_lo: usize,
    nrows: usize,
    wp: usize,
    lead: usize,
    inside: usize,
}

impl PlaneRows {
    /// Rows `wp` padded columns wide for `positions`; `None` if there are none.
    fn new(g: &Geom, (p0, pn): (usize, usize), wp: usize) -> Option<Self> {
        if pn == 0 || g.ow == 0 {
            return None;
        }
        // From output row `oh_lo`'s first tap row to output row `oh_hi`'s last.
        let (oh_lo, oh_hi) = (p0 / g.ow, (p0 + pn - 1) / g.ow);
        let lead = g.pad.min(wp);
        Some(Self {
            r_lo: oh_lo * g.s,
            nrows: (oh_hi - oh_lo) * g.s + g.kh,
            wp,
            lead,
            inside: g.w.min(wp - lead),
        })
    }

    /// A zeroed buffer for all the rows.
    fn buffer<T: Elem>(&self) -> Vec<T> {
        vec![T::zero(); self.nrows * self.wp]
    }

    /// Offset in the buffer of padded column `col` of the row that output row `oh` reads
    /// through tap row `ki`.
    #[inline(always)]
    fn at(&self, g: &Geom, oh: usize, ki: usize, col: usize) -> usize {
        (oh * g.s + ki - self.r_lo) * self.wp + col
    }

    /// The image row of each buffer row, `None` for padding rows.
    fn image_rows(&self, g: &Geom) -> impl Iterator<Item = Option<usize>> {
        let (r_lo, pad, h) = (self.r_lo, g.pad, g.h);
        (0..self.nrows).map(move |i| (r_lo + i).checked_sub(pad).filter(|&ih| ih < h))
    }

    /// Fills `buf` from the plane at `plane` of `x`: `row(buffer row, image row)` for rows inside
    /// the image (the image row is `inside` long), zeros for padding rows.
    fn load<T: Elem>(
        &self,
        g: &Geom,
        x: &View<T>,
        plane: usize,
        buf: &mut [T],
        mut row: impl FnMut(&mut [T], &[T]),
    ) {
        for (prow, ih) in buf.chunks_exact_mut(self.wp).zip(self.image_rows(g)) {
            match ih {
                None => prow.fill(T::zero()),
                Some(ih) => {
                    let src = plane + ih * x.st[2];
                    row(prow, &x.data[src..src + self.inside]);
                }
            }
        }
    }

    /// Adds `buf` back into `plane` (`[H, W]`, contiguous): `row(buffer row, image row)` adds
    /// into the `inside` image columns each buffer row reaches.
    fn add_into<T: Elem>(
        &self,
        g: &Geom,
        buf: &[T],
        plane: &mut [T],
        mut row: impl FnMut(&[T], &mut [T]),
    ) {
        for (prow, ih) in buf.chunks_exact(self.wp).zip(self.image_rows(g)) {
            if let Some(ih) = ih {
                row(prow, &mut plane[ih * g.w..ih * g.w + self.inside]);
            }
        }
    }
}

/// `dst[i] += src[i]` over the shorter of the two.
#[inline(always)]
fn add_slice<T: Elem>(dst: &mut [T], src: &[T]) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d += *v;
    }
}

/// [`im2col`] for a strided kernel (dilation 1) over contiguous rows. Each image plane the block
/// reads is first split, zero-padded, into its `s` column phases, `phase_φ[r][j] =
/// padded[r][s·j + φ]` (one pass over the plane); tap `(ki, kj)` of output `(oh, ow)` is then
/// `phase_{kj mod s}[oh·s + ki][ow + kj div s]`, so every tap row of an output-row segment is one
/// short contiguous copy, with no padding checks and no strided reads.
fn im2col_phased<T: Elem>(
    g: &Geom,
    x: &View<T>,
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
    cols: &mut [T],
) {
    let s = g.s;
    // Phase length: output columns plus the taps' reach beyond them.
    let plen = g.ow + (g.kw - 1) / s;
    let Some(pr) = PlaneRows::new(g, (p0, pn), s * plen) else {
        return;
    };
    let mut padded = vec![T::zero(); pr.wp];
    let mut phases = pr.buffer(); // [padded row][φ][j]
    let ncols = nb * pn;
    let group = g.kk() * ncols; // the K rows of one channel
    for (c, rows_c) in cols.chunks_exact_mut(group).take(g.c).enumerate() {
        for b in 0..nb {
            pr.load(g, x, x.plane(n0 + b, c), &mut phases, |prow, src| {
                padded[pr.lead..pr.lead + src.len()].copy_from_slice(src);
                deinterleave(prow, &padded, s, plen);
            });
            for (t, row) in rows_c.chunks_exact_mut(ncols).enumerate() {
                let (ki, kj) = (t / g.kw, t % g.kw);
                let at = (kj % s) * plen + kj / s;
                let row = &mut row[b * pn..(b + 1) * pn];
                if p0 % g.ow == 0 && pn % g.ow == 0 {
                    // Whole output rows (the usual case): one copy per row, no segment logic.
                    for (r, dst) in row.chunks_exact_mut(g.ow).enumerate() {
                        let at = pr.at(g, p0 / g.ow + r, ki, at);
                        copy_run(dst, &phases[at..at + g.ow]);
                    }
                    continue;
                }
                for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                    let at = pr.at(g, oh, ki, at);
                    copy_run(&mut row[j0..j0 + (ow1 - ow0)], &phases[at + ow0..at + ow1]);
                });
            }
        }
    }
}

/// `out[φ·len + j] = src[s·j + φ]` for `φ < s`, `j < len`: the `s` phases of a row.
#[inline(always)]
fn deinterleave<T: Copy>(out: &mut [T], src: &[T], s: usize, len: usize) {
    if s == 2 {
        let (even, odd) = out.split_at_mut(len);
        let src = &src[..2 * len];
        // Blocks of 8 pairs as fixed-size arrays, so that the compiler shuffles whole vectors.
        let mut e8 = even.chunks_exact_mut(8);
        let mut o8 = odd.chunks_exact_mut(8);
        let mut s16 = src.chunks_exact(16);
        for ((e, o), p) in (&mut e8).zip(&mut o8).zip(&mut s16) {
            let e: &mut [T; 8] = e.try_into().expect("8 values");
            let o: &mut [T; 8] = o.try_into().expect("8 values");
            let p: &[T; 16] = p.try_into().expect("16 values");
            for i in 0..8 {
                e[i] = p[2 * i];
                o[i] = p[2 * i + 1];
            }
        }
        let (e, o, p) = (e8.into_remainder(), o8.into_remainder(), s16.remainder());
        for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(p.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        return;
    }
    for (phi, ph) in out.chunks_exact_mut(len).enumerate() {
        for (j, v) in ph.iter_mut().enumerate() {
            *v = src[s * j + phi];
        }
    }
}

/// Columns `range` of each of the `KW` rows (`ncols` long) of one `(c, ki)` group, in tap order.
fn tap_segments<T>(
    rows: &mut [T],
    ncols: usize,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = &mut [T]> {
    rows.chunks_exact_mut(ncols)
        .map(move |row| &mut row[range.clone()])
}

/// The loops of [`im2col`]: for every `(c, ki)` group of `KW` rows, image and output-row segment
/// `ow0..ow1`, zero-fills the segment's columns when tap row `ki` falls outside the image and
/// otherwise calls `fill(rows, ncols, columns, (ow0, ow1), src)` with the group's rows, the
/// segment's column range (see [`tap_segments`]) and the offset in `x.data` of the input row
/// they read.
fn im2col_rows<T: Elem>(
    g: &Geom,
    x: &View<T>,
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
    cols: &mut [T],
    mut fill: impl FnMut(&mut [T], usize, std::ops::Range<usize>, (usize, usize), usize),
) {
    let ncols = nb * pn;
    for (r, rows) in cols
        .chunks_exact_mut(ncols * g.kw)
        .take(g.c * g.kh)
        .enumerate()
    {
        let (c, ki) = (r / g.kh, r % g.kh);
        for b in 0..nb {
            let plane = x.plane(n0 + b, c);
            for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                let range = b * pn + j0..b * pn + j0 + (ow1 - ow0);
                match g.in_row(oh, ki) {
                    None => tap_segments(rows, ncols, range).for_each(|seg| seg.fill(T::zero())),
                    Some(ih) => fill(rows, ncols, range, (ow0, ow1), plane + ih * x.st[2]),
                }
            });
        }
    }
}

/// `rows[j][r]` (`nb·pn × K`, row-major): the transpose of [`im2col`]'s matrix. Filled one
/// output-row segment at a time, so that each `(c, ki)` input row is located once per segment.
fn im2row<T: Elem>(
    g: &Geom,
    x: &View<T>,
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
    out: &mut [T],
) {
    let k = g.k();
    let (sh, sw) = (x.st[2], x.st[3]);
    if g.d == 1 && sw == 1 && g.pad > 0 {
        im2row_padded(g, x, (n0, nb), (p0, pn), out);
        return;
    }
    // Output columns whose taps all fall inside the row.
    let (inner_lo, inner_hi) = (g.valid_cols(0).0, g.valid_cols(g.kw - 1).1);
    let contiguous_taps = g.d * sw == 1;
    for b in 0..nb {
        for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
            let rows = &mut out[(b * pn + j0) * k..(b * pn + j0 + ow1 - ow0) * k];
            for c in 0..g.c {
                let plane = x.plane(n0 + b, c);
                for ki in 0..g.kh {
                    let r0 = (c * g.kh + ki) * g.kw;
                    let Some(ih) = g.in_row(oh, ki) else {
                        for row in rows.chunks_exact_mut(k) {
                            zero_short(&mut row[r0..r0 + g.kw]);
                        }
                        continue;
                    };
                    let base = plane + ih * sh;
                    for (row, ow) in rows.chunks_exact_mut(k).zip(ow0..ow1) {
                        let taps = &mut row[r0..r0 + g.kw];
                        if ow >= inner_lo && ow < inner_hi {
                            let iw = ow * g.s - g.pad;
                            if contiguous_taps {
                                copy_short(taps, &x.data[base + iw..base + iw + g.kw]);
                            } else {
                                copy_strided(taps, x.data, base + iw * sw, g.d * sw);
                            }
                            continue;
                        }
                        for (kj, v) in taps.iter_mut().enumerate() {
                            *v = match (ow * g.s + kj * g.d).checked_sub(g.pad) {
                                Some(iw) if iw < g.w => x.data[base + iw * sw],
                                _ => T::zero(),
                            };
                        }
                    }
                }
            }
        });
    }
}

/// [`im2row`] for padded kernels with dilation 1 over contiguous rows: the rows of each image
/// plane the block reads are first copied into a zero-padded plane, so that the `KW` taps of
/// every `(position, ki)` are one contiguous copy with no boundary checks; the `KH·KW` taps of
/// one channel land next to each other in the position's row.
fn im2row_padded<T: Elem>(
    g: &Geom,
    x: &View<T>,
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
    out: &mut [T],
) {
    let (k, kk, s) = (g.k(), g.kk(), g.s);
    // Padded columns the taps reach.
    let Some(pr) = PlaneRows::new(g, (p0, pn), (g.ow.max(1) - 1) * s + g.kw) else {
        return;
    };
    let mut plane_buf = pr.buffer();
    for b in 0..nb {
        let rows = &mut out[b * pn * k..(b + 1) * pn * k];
        for c in 0..g.c {
            pr.load(g, x, x.plane(n0 + b, c), &mut plane_buf, |prow, src| {
                prow[pr.lead..pr.lead + src.len()].copy_from_slice(src);
            });
            let r0 = c * kk;
            for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                let seg = &mut rows[j0 * k..(j0 + ow1 - ow0) * k];
                for (row, ow) in seg.chunks_exact_mut(k).zip(ow0..ow1) {
                    let taps = &mut row[r0..r0 + kk];
                    for (ki, t) in taps.chunks_exact_mut(g.kw).enumerate() {
                        let at = pr.at(g, oh, ki, ow * s);
                        copy_short(t, &plane_buf[at..at + g.kw]);
                    }
                }
            });
        }
    }
}

/// `out[o][j]` (`O × nb·pn`): output-side values of images `n0..n0+nb`, positions `p0..p0+pn`.
fn gather_out<T: Elem>(
    g: &Geom,
    v: &View<T>,
    n0: usize,
    nb: usize,
    p0: usize,
    pn: usize,
    out: &mut [T],
) {
    let ncols = nb * pn;
    let linear = v.plane_linear(g.ow, g.oh);
    for o in 0..g.o {
        let row = &mut out[o * ncols..(o + 1) * ncols];
        for b in 0..nb {
            let plane = v.plane(n0 + b, o);
            let dst = &mut row[b * pn..(b + 1) * pn];
            if linear {
                dst.copy_from_slice(&v.data[plane + p0..plane + p0 + pn]);
            } else {
                for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                    for (i, ow) in (ow0..ow1).enumerate() {
                        dst[j0 + i] = v.data[plane + oh * v.st[2] + ow * v.st[3]];
                    }
                });
            }
        }
    }
}

/// Channels `c0..c0+cn` of image `n` of the contiguous `[g.n, g.c, g.h, g.w]` buffer `x`, as one
/// slice of `cn` planes.
///
/// # Safety
/// Those planes must lie inside `x`'s allocation, and no other thread may access them while the
/// slice lives.
unsafe fn planes_mut<'a, T>(
    g: &Geom,
    x: SharedMut<T>,
    n: usize,
    (c0, cn): (usize, usize),
) -> &'a mut [T] {
    let hw = g.h * g.w;
    // SAFETY: forwarded from the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(x.get().add((n * g.c + c0) * hw), cn * hw) }
}

/// Adds `cols[j][q]` (`nb·pn × ldc`, columns `q` = taps of channels `c0..c0+cn`) onto the input
/// pixels they were read from, in `x` (contiguous `[N, C, H, W]`).
///
/// # Safety
/// `x` must point to a contiguous `[g.n, g.c, g.h, g.w]` buffer, and no other thread may access
/// the planes of images `n0..n0+nb`, channels `c0..c0+cn` during the call.
unsafe fn col2im<T: Elem>(
    g: &Geom,
    cols: &[T],
    ldc: usize,
    (n0, nb): (usize, usize),
    (c0, cn): (usize, usize),
    (p0, pn): (usize, usize),
    x: SharedMut<T>,
) {
    if g.d == 1 && g.pad > 0 {
        // SAFETY: forwarded from this function's contract.
        unsafe { col2im_padded(g, cols, ldc, (n0, nb), (c0, cn), (p0, pn), x) };
        return;
    }
    let hw = g.h * g.w;
    let (inner_lo, inner_hi) = (g.valid_cols(0).0, g.valid_cols(g.kw - 1).1);
    for b in 0..nb {
        // SAFETY: these planes belong to image n0 + b, channels c0..c0+cn, which only this call
        // writes (caller's contract); they lie inside the buffer.
        let img = unsafe { planes_mut(g, x, n0 + b, (c0, cn)) };
        for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
            for ow in ow0..ow1 {
                let row = &cols[(b * pn + j0 + ow - ow0) * ldc..][..cn * g.kk()];
                let inner = ow >= inner_lo && ow < inner_hi;
                for (chan, plane) in row.chunks_exact(g.kk()).zip(img.chunks_exact_mut(hw)) {
                    for (ki, taps) in chan.chunks_exact(g.kw).enumerate() {
                        let Some(ih) = g.in_row(oh, ki) else { continue };
                        let xr = &mut plane[ih * g.w..(ih + 1) * g.w];
                        if inner {
                            add_strided(xr, ow * g.s - g.pad, g.d, taps);
                            continue;
                        }
                        for (kj, v) in taps.iter().enumerate() {
                            if let Some(iw) = (ow * g.s + kj * g.d)
                                .checked_sub(g.pad)
                                .filter(|&i| i < g.w)
                            {
                                xr[iw] += *v;
                            }
                        }
                    }
                }
            }
        });
    }
}

/// [`col2im`] for padded kernels with dilation 1, the reverse of [`im2row_padded`]: the `KW`
/// taps of every `(position, ki)` are added contiguously into a zero-padded plane, whose inside
/// is then added into the image plane once.
///
/// # Safety
/// As [`col2im`].
unsafe fn col2im_padded<T: Elem>(
    g: &Geom,
    cols: &[T],
    ldc: usize,
    (n0, nb): (usize, usize),
    (c0, cn): (usize, usize),
    (p0, pn): (usize, usize),
    x: SharedMut<T>,
) {
    let (hw, kk, s) = (g.h * g.w, g.kk(), g.s);
    let Some(pr) = PlaneRows::new(g, (p0, pn), (g.ow.max(1) - 1) * s + g.kw) else {
        return;
    };
    let mut plane_buf = pr.buffer();
    for b in 0..nb {
        // SAFETY: as in `col2im`.
        let img = unsafe { planes_mut(g, x, n0 + b, (c0, cn)) };
        for (cc, plane) in img.chunks_exact_mut(hw).enumerate() {
            plane_buf.fill(T::zero());
            for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                for (j, ow) in (b * pn + j0..).zip(ow0..ow1) {
                    let taps = &cols[j * ldc + cc * kk..][..kk];
                    for (ki, t) in taps.chunks_exact(g.kw).enumerate() {
                        let at = pr.at(g, oh, ki, ow * s);
                        add_run(&mut plane_buf[at..at + g.kw], t);
                    }
                }
            });
            pr.add_into(g, &plane_buf, plane, |prow, xr| {
                add_slice(xr, &prow[pr.lead..]);
            });
        }
    }
}

/// Like [`col2im`], from `cols[q][j]` (`q × ldc`, row-major: one row per tap): tap-major,
/// with long contiguous reads when output rows are wide; the `KW` taps of one `(c, ki)` are
/// added together into the same input row.
///
/// # Safety
/// As [`col2im`].
unsafe fn col2im_taps<T: Elem>(
    g: &Geom,
    cols: &[T],
    ldc: usize,
    (n0, nb): (usize, usize),
    (c0, cn): (usize, usize),
    (p0, pn): (usize, usize),
    x: SharedMut<T>,
) {
    let hw = g.h * g.w;
    let taps: Vec<(usize, usize, usize)> = (0..g.kw)
        .map(|kj| {
            let (lo, hi) = g.valid_cols(kj);
            (lo, hi, (lo * g.s + kj * g.d).saturating_sub(g.pad))
        })
        .collect();
    for b in 0..nb {
        // SAFETY: as in `col2im`.
        let img = unsafe { planes_mut(g, x, n0 + b, (c0, cn)) };
        for (cc, plane) in img.chunks_exact_mut(hw).enumerate() {
            for ki in 0..g.kh {
                let q0 = (cc * g.kh + ki) * g.kw;
                for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                    let Some(ih) = g.in_row(oh, ki) else { return };
                    let xr = &mut plane[ih * g.w..(ih + 1) * g.w];
                    for (kj, &(lo, hi, iw_lo)) in taps.iter().enumerate() {
                        let (a, e) = (lo.clamp(ow0, ow1), hi.clamp(ow0, ow1));
                        if a < e {
                            let row = &cols[(q0 + kj) * ldc + b * pn + j0..];
                            add_strided(xr, iw_lo + (a - lo) * g.s, g.s, &row[a - ow0..e - ow0]);
                        }
                    }
                });
            }
        }
    }
}

/// [`col2im_taps`] for a strided kernel (dilation 1): the reverse of [`im2col_phased`]. Each
/// tap row of an output-row segment is added contiguously into the column phases of a
/// zero-padded copy of the plane, which are then interleaved and added into the plane once.
///
/// # Safety
/// As [`col2im`].
unsafe fn col2im_phased<T: Elem>(
    g: &Geom,
    cols: &[T],
    ldc: usize,
    (n0, nb): (usize, usize),
    (c0, cn): (usize, usize),
    (p0, pn): (usize, usize),
    x: SharedMut<T>,
) {
    let (s, hw) = (g.s, g.h * g.w);
    let plen = g.ow + (g.kw - 1) / s;
    let Some(pr) = PlaneRows::new(g, (p0, pn), s * plen) else {
        return;
    };
    let mut padded = vec![T::zero(); pr.wp];
    let mut phases = pr.buffer(); // [padded row][φ][j], as in im2col_phased
    for b in 0..nb {
        // SAFETY: as in `col2im`.
        let img = unsafe { planes_mut(g, x, n0 + b, (c0, cn)) };
        for (cc, plane) in img.chunks_exact_mut(hw).enumerate() {
            phases.fill(T::zero());
            let q0 = cc * g.kk();
            for t in 0..g.kk() {
                let (ki, kj) = (t / g.kw, t % g.kw);
                let at = (kj % s) * plen + kj / s;
                let row = &cols[(q0 + t) * ldc + b * pn..][..pn];
                if p0 % g.ow == 0 && pn % g.ow == 0 {
                    // Whole output rows (the usual case), as in `im2col_phased`.
                    for (r, src) in row.chunks_exact(g.ow).enumerate() {
                        let at = pr.at(g, p0 / g.ow + r, ki, at);
                        add_run(&mut phases[at..at + g.ow], src);
                    }
                    continue;
                }
                for_segments(g, p0, pn, |oh, ow0, ow1, j0| {
                    let at = pr.at(g, oh, ki, at);
                    add_run(&mut phases[at + ow0..at + ow1], &row[j0..j0 + (ow1 - ow0)]);
                });
            }
            pr.add_into(g, &phases, plane, |prow, xr| {
                interleave(&mut padded, prow, s, plen);
                add_slice(xr, &padded[pr.lead..]);
            });
        }
    }
}

/// `dst[i] += src[i]` for the short runs of one output row, in 8- and 4-wide blocks.
#[inline(always)]
fn add_run<T: Elem>(dst: &mut [T], src: &[T]) {
    fn block<T: Elem, const W: usize>(dst: &mut [T], src: &[T]) {
        let s: &[T; W] = src[..W].try_into().expect("block in range");
        let d: &mut [T; W] = (&mut dst[..W]).try_into().expect("block in range");
        for (d, s) in d.iter_mut().zip(s) {
            *d += *s;
        }
    }
    let n = dst.len().min(src.len());
    let mut at = 0;
    while at + 8 <= n {
        block::<T, 8>(&mut dst[at..], &src[at..]);
        at += 8;
    }
    if at + 4 <= n {
        block::<T, 4>(&mut dst[at..], &src[at..]);
        at += 4;
    }
    for (d, s) in dst[at..n].iter_mut().zip(&src[at..n]) {
        *d += *s;
    }
}

/// `out[s·j + φ] = src[φ·len + j]` for `φ < s`, `j < len`: the inverse of [`deinterleave`].
#[inline(always)]
fn interleave<T: Copy>(out: &mut [T], src: &[T], s: usize, len: usize) {
    if s == 2 {
        let (even, odd) = src.split_at(len);
        let out = &mut out[..2 * len];
        // Blocks of 8 pairs as fixed-size arrays, as in `deinterleave`.
        let mut e8 = even.chunks_exact(8);
        let mut o8 = odd.chunks_exact(8);
        let mut d16 = out.chunks_exact_mut(16);
        for ((e, o), d) in (&mut e8).zip(&mut o8).zip(&mut d16) {
            let e: &[T; 8] = e.try_into().expect("8 values");
            let o: &[T; 8] = o.try_into().expect("8 values");
            let d: &mut [T; 16] = d.try_into().expect("16 values");
            for i in 0..8 {
                d[2 * i] = e[i];
                d[2 * i + 1] = o[i];
            }
        }
        let (e, o, d) = (e8.remainder(), o8.remainder(), d16.into_remainder());
        for ((e, o), pair) in e.iter().zip(o).zip(d.chunks_exact_mut(2)) {
            pair[0] = *e;
            pair[1] = *o;
        }
        return;
    }
    for (phi, ph) in src.chunks_exact(len).enumerate() {
        for (j, v) in ph.iter().enumerate() {
            out[s * j + phi] = *v;
        }
    }
}

/// `a` (`rows × cols`, row-major) transposed, in parallel for large matrices.
fn transpose<T: Elem>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    const B: usize = 32;
    let mut out = vec![T::zero(); rows * cols];
    let block = |(bi, dst): (usize, &mut [T])| {
        // dst holds output rows (= input columns) bi·B .. bi·B + B.
        let c0 = bi * B;
        let cn = dst.len() / rows.max(1);
        for r0 in (0..rows).step_by(B) {
            for c in 0..cn {
                for r in r0..(r0 + B).min(rows) {
                    dst[c * rows + r] = a[r * cols + c0 + c];
                }
            }
        }
    };
    if rows * cols >= 1 << 16 {
        out.par_chunks_mut(B * rows.max(1))
            .enumerate()
            .for_each(block);
    } else {
        out.chunks_mut(B * rows.max(1)).enumerate().for_each(block);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Kernels

mod direct;
mod fused;

/// The output-side operand `Ȳ` (`O × nb·pn`, entry `(o, j)`) of a block as a strided view of
/// `v`, when its columns are evenly spaced: one image with linear planes, or one position per
/// image. Returns (offset, o stride, column stride).
fn out_view<T: Copy>(
    g: &Geom,
    v: &View<T>,
    (n0, nb): (usize, usize),
    (p0, pn): (usize, usize),
) -> Option<(usize, usize, usize)> {
    // Broadcast (zero-stride) operands are gathered: the GEMM sees only positive strides.
    if v.st[1] == 0 && g.o > 1 {
        return None;
    }
    if nb == 1 && v.plane_linear(g.ow, g.oh) {
        Some((v.plane(n0, 0) + p0, v.st[1], 1))
    } else if g.p() == 1 && pn == 1 && (v.st[0] > 0 || nb == 1) {
        Some((v.plane(n0, 0), v.st[1], v.st[0]))
    } else {
        None
    }
}

/// `y = conv(x, w)`, contiguous `[N, O, OH, OW]`; `w` contiguous `[O, K]`.
fn forward<T: Elem>(g: &Geom, x: View<T>, w: &[T], bias: Option<&[T]>) -> Vec<T> {
    if direct::applies(g, &x) {
        return direct::forward(g, x, w, bias);
    }
    forward_gemm(g, x, w, bias)
}

/// [`forward`] through im2col + GEMM. A bias is added by each task to the block it has just
/// written (still in cache), not in a separate pass.
fn forward_gemm<T: Elem>(g: &Geom, x: View<T>, w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (p, k, o) = (g.p(), g.k(), g.o);
    let len = g.n * o * p;
    if len == 0 {
        return Vec::new();
    }
    // Not zeroed: every element is written below.
    let mut y: Vec<T> = Vec::with_capacity(len);
    let t = Tiles::new(g.n, p, k, rayon::current_num_threads());
    let yv = View {
        data: &[] as &[T],
        off: 0,
        st: [o * p, p, g.ow, 1],
    };
    let yp = SharedMut(y.spare_capacity_mut().as_mut_ptr().cast::<T>());
    (0..t.tasks()).into_par_iter().for_each(|task| {
        let (n0, nb, p0, pn) = t.task(task, g.n, p);
        let ncols = nb * pn;
        let taps = tap_view(g, x.off, x.st, (n0, nb), (p0, pn));
        let direct = out_view(g, &yv, (n0, nb), (p0, pn));
        let cols_len = if taps.is_some() { 0 } else { k * ncols };
        let out_len = if direct.is_some() { 0 } else { o * ncols };
        T::with_scratch(cols_len + out_len, |buf| {
            let (cols, ybuf) = buf.split_at_mut(cols_len);
            let (rhs, r_rs, r_cs) = match taps {
                Some((off, qs, js)) => (x.data.as_ptr().wrapping_add(off), qs, js),
                None => {
                    im2col(g, &x, (n0, nb), (p0, pn), cols);
                    (cols.as_ptr(), ncols, 1)
                }
            };
            let (dst, d_rs, d_cs) = match direct {
                Some((off, os, js)) => (yp.get().wrapping_add(off), os, js),
                None => (ybuf.as_mut_ptr(), ncols, 1),
            };
            // Y (O × ncols) = W (O × K) · X (K × ncols).
            // SAFETY: X is the task's column buffer or, by `tap_view`, in-bounds elements of x;
            // the destination is task-local scratch or, by `out_view`, the elements of y of
            // images n0..n0+nb, positions p0..p0+pn, which only this task writes.
            unsafe {
                gemm(
                    (o, ncols, k),
                    dst,
                    (d_rs, d_cs),
                    false,
                    w.as_ptr(),
                    (k, 1),
                    rhs,
                    (r_rs, r_cs),
                )
            }
            if direct.is_none() {
                for b in 0..nb {
                    for oc in 0..o {
                        let src = &ybuf[oc * ncols + b * pn..][..pn];
                        // SAFETY: y[n0 + b][oc][p0..p0+pn] is inside y and owned by this task.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr(),
                                yp.get().add(((n0 + b) * o + oc) * p + p0),
                                pn,
                            )
                        }
                    }
                }
            }
            if let Some(bias) = bias {
                for b in 0..nb {
                    for (oc, &bv) in bias.iter().enumerate() {
                        // SAFETY: as above: this task's positions of image n0 + b, channel oc,
                        // initialised just now.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(
                                yp.get().add(((n0 + b) * o + oc) * p + p0),
                                pn,
                            )
                        };
                        for v in row {
                            *v += bv;
                        }
                    }
                }
            }
        })
    });
    // SAFETY: the tasks cover every (image, position) exactly once (`Tiles`), and each writes
    // all O outputs of its columns (a GEMM that does not read its destination, or the copy from
    // its scratch tile), so all `len` elements are initialised.
    unsafe { y.set_len(len) };
    y
}

/// `x̄ = convᵀ(ȳ, w)`; `w` contiguous `[O, K]`, `gx` contiguous zeroed `[N, C, H, W]`.
fn data_grad<T: Elem>(g: &Geom, gy: View<T>, w: &[T]) -> Vec<T> {
    let len = g.n * g.c * g.h * g.w;
    let (p, k, kk, o) = (g.p(), g.k(), g.kk(), g.o);
    if g.n == 0 || p == 0 || g.c == 0 || o == 0 {
        return vec![T::zero(); len];
    }
    // Not zeroed here: each task zeroes the part it owns just before adding into it (in
    // parallel and while it is about to be in cache, instead of one serial memset up front).
    let mut gx: Vec<T> = Vec::with_capacity(len);
    let threads = rayon::current_num_threads();
    let t = Tiles::new(g.n, p, k, threads);
    // Channel groups: bounded by the budget, and enough groups for every thread.
    let ncols_blk = t.nb * p;
    let mut ct = (COLS_BUDGET / (ncols_blk * kk)).clamp(1, g.c);
    ct = ct.min(g.c.div_ceil(threads.div_ceil(t.nblk))).max(1);
    let nct = g.c.div_ceil(ct);
    // Sequential position tiles inside a task when even one channel's columns exceed the budget.
    let pt = if t.nb == 1 {
        p.min((COLS_BUDGET / (ct * kk)).max(MIN_TILE))
    } else {
        p
    };
    let hw = g.h * g.w;
    let gx_st = [g.c * hw, hw, g.w, 1];
    let gxp = SharedMut(gx.as_mut_ptr());
    // Tap-major column matrices (one row per tap) for wide outputs: the GEMM then reads W
    // transposed (copied once) and `col2im` adds long contiguous rows.
    let in_place = tap_view(g, 0, gx_st, (0, t.nb), (0, pt)).is_some();
    let tap_major = g.ow >= TAP_MAJOR_MIN_OW && !in_place;
    let wt = if tap_major {
        transpose(w, o, k)
    } else {
        Vec::new()
    };
    (0..t.nblk * nct).into_par_iter().for_each(|task| {
        let (blk, cg) = (task / nct, task % nct);
        let n0 = blk * t.nb;
        let nb = t.nb.min(g.n - n0);
        let c0 = cg * ct;
        let cn = ct.min(g.c - c0);
        let q = cn * kk;
        for b in n0..n0 + nb {
            // SAFETY: channels c0..c0+cn of image b are `cn·hw` consecutive elements inside the
            // allocation of `len` elements, and only this task touches them.
            unsafe { std::ptr::write_bytes(gxp.get().add((b * g.c + c0) * hw), 0, cn * hw) };
        }
        let mut p0 = 0;
        while p0 < p {
            let pn = pt.min(p - p0);
            let ncols = nb * pn;
            let taps = tap_view(g, 0, gx_st, (n0, nb), (p0, pn));
            let gyv = out_view(g, &gy, (n0, nb), (p0, pn));
            let cols_len = if taps.is_some() { 0 } else { ncols * q };
            let g_len = if gyv.is_some() { 0 } else { o * ncols };
            T::with_scratch(cols_len + g_len, |buf| {
                let (cols, gbuf) = buf.split_at_mut(cols_len);
                if tap_major && taps.is_none() {
                    let (rhs, r_rs, r_cs) = match gyv {
                        Some((off, os, js)) => (gy.data.as_ptr().wrapping_add(off), os, js),
                        None => {
                            gather_out(g, &gy, n0, nb, p0, pn, gbuf);
                            (gbuf.as_ptr(), ncols, 1)
                        }
                    };
                    // X (q × ncols) = Wᵀ[c0·kk ..] (q × O) · Ȳ (O × ncols).
                    // SAFETY: as below; Wᵀ is K×O.
                    unsafe {
                        gemm(
                            (q, ncols, o),
                            cols.as_mut_ptr(),
                            (ncols, 1),
                            false,
                            wt.as_ptr().add(c0 * kk * o),
                            (o, 1),
                            rhs,
                            (r_rs, r_cs),
                        );
                        if g.s > 1 && g.d == 1 {
                            col2im_phased(g, cols, ncols, (n0, nb), (c0, cn), (p0, pn), gxp);
                        } else {
                            col2im_taps(g, cols, ncols, (n0, nb), (c0, cn), (p0, pn), gxp);
                        }
                    }
                    return;
                }
                let (lhs, l_rs, l_cs) = match gyv {
                    Some((off, os, js)) => (gy.data.as_ptr().wrapping_add(off), js, os),
                    None => {
                        gather_out(g, &gy, n0, nb, p0, pn, gbuf);
                        (gbuf.as_ptr(), 1, ncols)
                    }
                };
                // When the tap matrix is a view of x̄, every pixel gets exactly one value:
                // write it in place.
                let (dst, d_rs, d_cs) = match taps {
                    Some((off, qs, js)) => (gxp.get().wrapping_add(off + c0 * kk * qs), js, qs),
                    None => (cols.as_mut_ptr(), q, 1),
                };
                // Xᵀ (ncols × q) = Ȳᵀ (ncols × O) · W[:, c0·kk ..] (O × q).
                // SAFETY: Ȳ is gbuf or, by `out_view`, in-bounds elements of gy; W is O×K; the
                // destination is task-local or, by `tap_view`, the pixels of images n0..n0+nb,
                // channels c0..c0+cn, which only this task writes.
                unsafe {
                    gemm(
                        (ncols, q, o),
                        dst,
                        (d_rs, d_cs),
                        false,
                        lhs,
                        (l_rs, l_cs),
                        w.as_ptr().add(c0 * kk),
                        (k, 1),
                    )
                }
                if taps.is_none() {
                    // SAFETY: this task alone owns images n0..n0+nb × channels c0..c0+cn of gx.
                    unsafe { col2im(g, cols, q, (n0, nb), (c0, cn), (p0, pn), gxp) };
                }
            });
            p0 += pn;
        }
    });
    // SAFETY: the tasks cover every (image, channel) pair once, each zeroing its `hw` elements
    // before adding into them, so all `len` elements are initialised.
    unsafe { gx.set_len(len) };
    gx
}

/// `w̄ = Σₙ ȳₙ ⋆ xₙ`, contiguous `[O, K]`.
fn weight_grad<T: Elem>(g: &Geom, x: View<T>, gy: View<T>) -> Vec<T> {
    let (p, k, o) = (g.p(), g.k(), g.o);
    if g.n == 0 || p == 0 || o == 0 || k == 0 {
        return vec![T::zero(); o * k];
    }
    let threads = rayon::current_num_threads();
    let t = Tiles::new(g.n, p, k, threads);
    // Tasks are dealt to `threads` fixed groups of consecutive tasks; each group sums its tasks in
    // order into its own partial, and the partials are added in group order. The result thus
    // depends on the thread count only, never on which worker ran what: the same seed gives
    // bit-identical training runs, and a resumed run equals an uninterrupted one.
    let tasks = t.tasks();
    let groups = threads.min(tasks).max(1);
    let per = tasks.div_ceil(groups);
    let partials: Vec<Vec<T>> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut acc: Vec<T> = Vec::new();
            for task in grp * per..((grp + 1) * per).min(tasks) {
                weight_grad_task(g, &t, task, &x, &gy, &mut acc);
            }
            acc
        })
        .collect();
    let partials = partials.into_iter().filter(|v| !v.is_empty()).collect();
    sum_partials(partials, o * k)
}

/// Adds task `task`'s share of `w̄` into `acc` (writes it when `acc` is still empty).
fn weight_grad_task<T: Elem>(
    g: &Geom,
    t: &Tiles,
    task: usize,
    x: &View<T>,
    gy: &View<T>,
    acc: &mut Vec<T>,
) {
    let (p, k, o) = (g.p(), g.k(), g.o);
    {
        let (n0, nb, p0, pn) = t.task(task, g.n, p);
        let ncols = nb * pn;
        // A thread's first block writes its partial (not zeroed); later ones add to it.
        let first = acc.is_empty();
        if first {
            acc.reserve_exact(o * k);
        }
        let acc_ptr = acc.spare_capacity_mut().as_mut_ptr().cast::<T>();
        let acc_ptr = if first { acc_ptr } else { acc.as_mut_ptr() };
        let taps = tap_view(g, x.off, x.st, (n0, nb), (p0, pn));
        let gyv = out_view(g, gy, (n0, nb), (p0, pn));
        let rows_len = if taps.is_some() { 0 } else { ncols * k };
        let g_len = if gyv.is_some() { 0 } else { o * ncols };
        T::with_scratch(rows_len + g_len, |buf| {
            let (rows, gbuf) = buf.split_at_mut(rows_len);
            let (rhs, r_rs, r_cs) = match taps {
                Some((off, qs, js)) => (x.data.as_ptr().wrapping_add(off), js, qs),
                None => {
                    im2row(g, x, (n0, nb), (p0, pn), rows);
                    (rows.as_ptr(), k, 1)
                }
            };
            let (lhs, l_rs, l_cs) = match gyv {
                Some((off, os, js)) => (gy.data.as_ptr().wrapping_add(off), os, js),
                None => {
                    gather_out(g, gy, n0, nb, p0, pn, gbuf);
                    (gbuf.as_ptr(), ncols, 1)
                }
            };
            // acc (O × K) (+)= Ȳ (O × ncols) · Xᵀ (ncols × K).
            // SAFETY: acc is this group's own partial, with capacity O×K; Ȳ and Xᵀ are
            // task-local buffers or, by `out_view` / `tap_view`, in-bounds elements of gy and x.
            unsafe {
                gemm(
                    (o, k, ncols),
                    acc_ptr,
                    (k, 1),
                    !first,
                    lhs,
                    (l_rs, l_cs),
                    rhs,
                    (r_rs, r_cs),
                )
            }
        });
        if first {
            // SAFETY: the GEMM above (not reading its destination) wrote all O×K elements.
            unsafe { acc.set_len(o * k) };
        }
    }
}

/// The sum of equally long partial sums (zeros if there are none): the first one becomes the
/// result, the others are added onto it in parallel.
fn sum_partials<T: Elem>(partials: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut it = partials.into_iter();
    let Some(mut sum) = it.next() else {
        return vec![T::zero(); len];
    };
    let rest: Vec<Vec<T>> = it.collect();
    if !rest.is_empty() {
        const CHUNK: usize = 1 << 14;
        sum.par_chunks_mut(CHUNK).enumerate().for_each(|(i, dst)| {
            for part in &rest {
                for (d, s) in dst.iter_mut().zip(&part[i * CHUNK..]) {
                    *d += *s;
                }
            }
        });
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Custom ops

fn storage_pair<'a, T: Elem>(
    op: &str,
    s1: &'a CpuStorage,
    s2: &'a CpuStorage,
) -> Result<(&'a [T], &'a [T])> {
    match (T::cpu_storage_as_slice(s1), T::cpu_storage_as_slice(s2)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => bail!(
            "{op}: expects two {:?} tensors, got {:?} and {:?}",
            T::DTYPE,
            s1.dtype(),
            s2.dtype()
        ),
    }
}

fn layout_dims4(op: &str, what: &str, l: &Layout) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        d => bail!("{op}: expects a 4-D {what} tensor, got shape {d:?}"),
    }
}

/// The weight as a contiguous `[O, K]` slice (copied only if its layout is not contiguous).
fn weight_matrix<'a, T: Elem>(data: &'a [T], l: &Layout) -> std::borrow::Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => std::borrow::Cow::Borrowed(&data[a..b]),
        None => {
            let v = View::new(data, l);
            let d = l.dims();
            let per_row = d[1] * d[2] * d[3];
            let mut out = vec![T::zero(); d[0] * per_row];
            if per_row > 0 {
                out.par_chunks_mut(per_row)
                    .enumerate()
                    .for_each(|(i, row)| {
                        let mut dst = row.iter_mut();
                        for j in 0..d[1] {
                            for a in 0..d[2] {
                                for b in 0..d[3] {
                                    if let Some(e) = dst.next() {
                                        *e = v.data[v.plane(i, j) + a * v.st[2] + b * v.st[3]];
                                    }
                                }
                            }
                        }
                    });
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

fn dispatch<F32, F64>(
    op: &str,
    s1: &CpuStorage,
    s2: &CpuStorage,
    f32: F32,
    f64: F64,
) -> Result<(CpuStorage, Shape)>
where
    F32: FnOnce(&[f32], &[f32]) -> Result<(CpuStorage, Shape)>,
    F64: FnOnce(&[f64], &[f64]) -> Result<(CpuStorage, Shape)>,
{
    match s1.dtype() {
        DType::F32 => {
            let (a, b) = storage_pair::<f32>(op, s1, s2)?;
            f32(a, b)
        }
        DType::F64 => {
            let (a, b) = storage_pair::<f64>(op, s1, s2)?;
            f64(a, b)
        }
        dt => bail!("{op}: supports f32 and f64, got {dt:?}"),
    }
}

/// `conv2d(x, w)` with an explicit output size (≤ the natural one, so that the input gradient
/// of a transposed convolution with output padding ≥ stride keeps its shape).
#[derive(Debug, Clone, Copy)]
struct Conv2dOp {
    s: Spec,
    out: (usize, usize),
}

impl Conv2dOp {
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        let (n, c, h, w) = layout_dims4(self.name(), "input", lx)?;
        let (o, cw, kh, kw) = layout_dims4(self.name(), "weight", lw)?;
        if c != cw {
            bail!(
                "{}: input {:?} has {c} channels but weight {:?} expects {cw}",
                self.name(),
                lx.dims(),
                lw.dims()
            )
        }
        Geom::new(self.name(), self.s, (n, c, h, w), (o, kh, kw), self.out)
    }
    fn run<T: Elem>(
        &self,
        x: &[T],
        lx: &Layout,
        w: &[T],
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lw)?;
        self.run_geom(&g, View::new(x, lx), (w, lw), None)
    }
    fn run_geom<T: Elem>(
        &self,
        g: &Geom,
        x: View<T>,
        (w, lw): (&[T], &Layout),
        bias: Option<&[T]>,
    ) -> Result<(CpuStorage, Shape)> {
        let w = weight_matrix(w, lw);
        let y = forward(g, x, &w, bias);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((g.n, g.o, g.oh, g.ow)),
        ))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "easel-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch(
            self.name(),
            s1,
            s2,
            |a, b| self.run(a, l1, b, l2),
            |a, b| self.run(a, l1, b, l2),
        )
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = if x.track_op() {
            Some(gy.apply_op2(
                w,
                ConvTransposeOp {
                    s: self.s,
                    out: (h, wd),
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2(
                gy,
                WeightGradOp {
                    s: self.s,
                    k: (kh, kw),
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `conv2d(x, w) + b` in one op: the bias is added inside the forward kernel (see
/// [`forward_gemm`]); its gradient is `Σ_{n,h,w} ȳ`.
#[derive(Debug, Clone, Copy)]
struct Conv2dBiasOp(Conv2dOp);

impl Conv2dBiasOp {
    fn run<T: Elem>(
        &self,
        (x, lx): (&[T], &Layout),
        (w, lw): (&[T], &Layout),
        (b, lb): (&[T], &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geom(lx, lw)?;
        let bias = match (lb.dims(), lb.contiguous_offsets()) {
            (&[o], Some((s, e))) if o == g.o => &b[s..e],
            (d, _) => bail!(
                "{}: the bias must be a contiguous [{}] tensor, got shape {d:?}",
                self.name(),
                g.o
            ),
        };
        self.0.run_geom(&g, View::new(x, lx), (w, lw), Some(bias))
    }
}

impl CustomOp3 for Conv2dBiasOp {
    fn name(&self) -> &'static str {
        "easel-conv2d-bias"
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
        match s1.dtype() {
            DType::F32 => {
                let (x, w) = storage_pair::<f32>(name, s1, s2)?;
                let (_, b) = storage_pair::<f32>(name, s1, s3)?;
                self.run((x, l1), (w, l2), (b, l3))
            }
            DType::F64 => {
                let (x, w) = storage_pair::<f64>(name, s1, s2)?;
                let (_, b) = storage_pair::<f64>(name, s1, s3)?;
                self.run((x, l1), (w, l2), (b, l3))
            }
            dt => bail!("{name}: supports f32 and f64, got {dt:?}"),
        }
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw) = self.0.bwd(x, w, y, gy)?;
        let gb = if b.track_op() {
            Some(gy.sum((0, 2, 3))?)
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// Transposed convolution `convᵀ(u, w)` (`u` `[N, O, OH, OW]`, `w` `[O, C, KH, KW]`) to an
/// output of spatial size `out`: the data-gradient kernel.
#[derive(Debug, Clone, Copy)]
struct ConvTransposeOp {
    s: Spec,
    out: (usize, usize),
}

impl ConvTransposeOp {
    fn geom(&self, lu: &Layout, lw: &Layout) -> Result<Geom> {
        let (n, o, oh, ow) = layout_dims4(self.name(), "input", lu)?;
        let (ow_, c, kh, kw) = layout_dims4(self.name(), "weight", lw)?;
        if o != ow_ {
            bail!(
                "{}: input {:?} has {o} channels but weight {:?} expects {ow_}",
                self.name(),
                lu.dims(),
                lw.dims()
            )
        }
        let (h, w) = self.out;
        Geom::new(self.name(), self.s, (n, c, h, w), (o, kh, kw), (oh, ow))
    }
    fn run<T: Elem>(
        &self,
        u: &[T],
        lu: &Layout,
        w: &[T],
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lu, lw)?;
        let w = weight_matrix(w, lw);
        let x = data_grad(&g, View::new(u, lu), &w);
        Ok((
            T::to_cpu_storage_owned(x),
            Shape::from((g.n, g.c, g.h, g.w)),
        ))
    }
}

impl CustomOp2 for ConvTransposeOp {
    fn name(&self) -> &'static str {
        "easel-conv-transpose2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch(
            self.name(),
            s1,
            s2,
            |a, b| self.run(a, l1, b, l2),
            |a, b| self.run(a, l1, b, l2),
        )
    }
    fn bwd(
        &self,
        u: &Tensor,
        w: &Tensor,
        _v: &Tensor,
        gv: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, oh, ow) = u.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gu = if u.track_op() {
            Some(gv.apply_op2(
                w,
                Conv2dOp {
                    s: self.s,
                    out: (oh, ow),
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(gv.apply_op2(
                u,
                WeightGradOp {
                    s: self.s,
                    k: (kh, kw),
                },
            )?)
        } else {
            None
        };
        Ok((gu, gw))
    }
}

/// Weight gradient `Σₙ ȳₙ ⋆ xₙ` of a `k`-sized kernel from `x` `[N, C, H, W]` and
/// `ȳ` `[N, O, OH, OW]`.
#[derive(Debug, Clone, Copy)]
struct WeightGradOp {
    s: Spec,
    k: (usize, usize),
}

impl WeightGradOp {
    fn geom(&self, lx: &Layout, lg: &Layout) -> Result<Geom> {
        let (n, c, h, w) = layout_dims4(self.name(), "input", lx)?;
        let (ng, o, oh, ow) = layout_dims4(self.name(), "output gradient", lg)?;
        if n != ng {
            bail!(
                "{}: input {:?} and output gradient {:?} have different batch sizes",
                self.name(),
                lx.dims(),
                lg.dims()
            )
        }
        Geom::new(
            self.name(),
            self.s,
            (n, c, h, w),
            (o, self.k.0, self.k.1),
            (oh, ow),
        )
    }
    fn run<T: Elem>(
        &self,
        x: &[T],
        lx: &Layout,
        gy: &[T],
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lg)?;
        let gw = weight_grad(&g, View::new(x, lx), View::new(gy, lg));
        Ok((
            T::to_cpu_storage_owned(gw),
            Shape::from((g.o, g.c, g.kh, g.kw)),
        ))
    }
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "easel-conv2d-weight-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch(
            self.name(),
            s1,
            s2,
            |a, b| self.run(a, l1, b, l2),
            |a, b| self.run(a, l1, b, l2),
        )
    }
    /// Linear in both arguments: for an upstream gradient `Ḡ` of the weight gradient,
    /// `∂/∂x = convᵀ(ȳ, Ḡ)` and `∂/∂ȳ = conv(x, Ḡ)`.
    fn bwd(
        &self,
        x: &Tensor,
        gy: &Tensor,
        _gw: &Tensor,
        ggw: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, w) = x.dims4()?;
        let (_, _, oh, ow) = gy.dims4()?;
        let gx = if x.track_op() {
            Some(gy.apply_op2(
                ggw,
                ConvTransposeOp {
                    s: self.s,
                    out: (h, w),
                },
            )?)
        } else {
            None
        };
        let ggy = if gy.track_op() {
            Some(x.apply_op2(
                ggw,
                Conv2dOp {
                    s: self.s,
                    out: (oh, ow),
                },
            )?)
        } else {
            None
        };
        Ok((gx, ggy))
    }
}

#[cfg(test)]
mod tests;
