//! Inception-v3 as used for the Fréchet Inception Distance: the network of pytorch-fid
//! (`pt_inception-2015-12-05`, the TensorFlow graph `inception-2015-12-05` that Heusel et al.'s
//! original FID code and Salimans et al.'s Inception Score use).
//!
//! Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer
//! Vision", CVPR 2016 (arXiv:1512.00567); FID: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter,
//! "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017.
//!
//! The structure is torchvision's `Inception3(num_classes=1008, aux_logits=False)` with the blocks
//! pytorch-fid patches to reproduce the TensorFlow graph:
//! - `FIDInceptionA` (`Mixed_5b..d`), `FIDInceptionC` (`Mixed_6b..e`) and `FIDInceptionE_1`
//!   (`Mixed_7b`) average-pool their `branch_pool` input with `count_include_pad=False`
//!   (TensorFlow ignores the padded zeros);
//! - `FIDInceptionE_2` (`Mixed_7c`) max-pools there instead (3×3, stride 1, padding 1);
//! - every `BasicConv2d` is a bias-free convolution, batch norm with ε = 0.001, ReLU.
//!
//! Preprocessing is pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)`: the
//! image is resized to 299×299 with bilinear interpolation, `align_corners=False`
//! ([`resize_bilinear`]), and expected in [−1, 1] (pytorch-fid takes [0, 1] and maps `2x − 1`
//! after the resize; bilinear interpolation commutes with that affine map, so the two agree).
//! [`InceptionV3::forward`] returns the 2048-d `pool3` features (the global average pool of
//! `Mixed_7c`) that FID and KID use; [`InceptionV3::logits`] applies `fc` without its bias, which is
//! what torch-fidelity calls `logits_unbiased` and what the original Inception Score code used
//! (1008 classes).
//!
//! Weight names are exactly those of pytorch-fid's `state_dict` (`Conv2d_1a_3x3.conv.weight`,
//! `Conv2d_1a_3x3.bn.running_mean`, `Mixed_5b.branch1x1.conv.weight`, …, `fc.weight`, `fc.bias`),
//! so the converted release file loads unchanged; `num_batches_tracked` entries are ignored by
//! `ParamStore::load`. Getting that file:
//!
//! ```text
//! # pt_inception-2015-12-05-6726825d.pth from pytorch-fid's GitHub release "fid_weights"
//! # (the URL is FID_WEIGHTS_URL in pytorch_fid/inception.py), then:
//! python -c "import torch; from safetensors.torch import save_file; \
//!   sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); \
//!   save_file({k: v.contiguous() for k, v in sd.items()}, 'pt_inception-2015-12-05.safetensors')"
//! ```
//!
//! Batch norm runs in inference mode only (running statistics): this network is a fixed feature
//! extractor, never trained here.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

/// Inception-v3 (FID) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Side the input is resized to before the network (299 in pytorch-fid); `None` feeds the
    /// input at its own size, which must be at least 75×75.
    pub resize_to: Option<usize>,
    /// Rows of `fc.weight`: 1008 for `pt_inception-2015-12-05` (the TensorFlow graph's classes),
    /// 1000 for torchvision's ImageNet weights.
    pub num_classes: usize,
}

impl Config {
    /// pytorch-fid's `InceptionV3([3])` with the FID weights: resize to 299, 1008 classes.
    pub fn pytorch_fid() -> Self {
        Self {
            resize_to: Some(299),
            num_classes: 1008,
        }
    }
}

/// Channels of the `pool3` features.
pub const POOL3_DIM: usize = 2048;

/// Smallest input side the network accepts (three stride-2 reductions and valid convolutions).
pub const MIN_INPUT: usize = 75;

const BN_EPS: f64 = 1e-3;

/// torchvision's `BasicConv2d`: convolution without bias, batch norm (ε = 0.001), ReLU.
#[derive(Debug, Clone)]
struct BasicConv2d {
    weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: usize,
    /// (rows, columns) of zero padding.
    padding: (usize, usize),
}

impl BasicConv2d {
    fn new(
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let fan_in = (c_in * kernel.0 * kernel.1) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = vb.pp("conv").get_with_hints(
            (c_out, c_in, kernel.0, kernel.1),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bn = vb.pp("bn");
        Ok(Self {
            weight,
            bn_weight: bn.get_with_hints(c_out, "weight", Init::Const(1.))?,
            bn_bias: bn.get_with_hints(c_out, "bias", Init::Const(0.))?,
            running_mean: bn.get_with_hints(c_out, "running_mean", Init::Const(0.))?,
            running_var: bn.get_with_hints(c_out, "running_var", Init::Const(1.))?,
            stride,
            padding,
        })
    }

    /// A square kernel with the same padding on every side.
    fn square(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::new(c_in, c_out, (k, k), stride, (pad, pad), vb)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Batch norm (inference) folded into the convolution: scale = γ/√(var + ε) per output
        // channel multiplies the weight, shift = β − mean·scale is added after. Folded on every
        // call so that weights loaded after construction are used.
        let dt = x.dtype();
        let c_out = self.weight.dim(0)?;
        let scale = (self.bn_weight.to_dtype(DType::F32)?
            / (self.running_var.to_dtype(DType::F32)? + BN_EPS)?.sqrt()?)?; // [C_out]
        let shift = (self.bn_bias.to_dtype(DType::F32)?
            - (self.running_mean.to_dtype(DType::F32)? * &scale)?)?; // [C_out]
        let w = self
            .weight
            .to_dtype(DType::F32)?
            .broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?
            .to_dtype(dt)?;
        let (ph, pw) = self.padding;
        let y = if ph == pw {
            x.conv2d(&w, ph, self.stride, 1, 1)?
        } else {
            // Asymmetric padding of the 1×n / n×1 kernels: pad explicitly, convolve without.
            x.pad_with_zeros(2, ph, ph)?
                .pad_with_zeros(3, pw, pw)?
                .conv2d(&w, 0, self.stride, 1, 1)?
        };
        y.broadcast_add(&shift.to_dtype(dt)?.reshape((1, c_out, 1, 1))?)?
            .relu()
    }
}

/// 3×3 max-pooling with stride 2 and no padding (`F.max_pool2d(x, 3, 2)`).
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d_with_stride(3, 2)
}

/// `F.max_pool2d(x, 3, stride=1, padding=1)`: replicating the border row/column is equivalent to
/// −∞ padding here, since with padding 1 the replicated value is already inside every window.
fn max_pool_3x3_s1_p1(x: &Tensor) -> Result<Tensor> {
    x.pad_with_same(2, 1, 1)?
        .pad_with_same(3, 1, 1)?
        .max_pool2d_with_stride(3, 1)
}

/// `F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`: the window sum over zero
/// padding, divided by the number of in-image pixels of each window (4 at corners, 6 on edges, 9
/// inside).
fn avg_pool_3x3_s1_p1_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mean9 = x
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .avg_pool2d_with_stride(3, 1)?; // window sum / 9
    let count =
        |i: usize, n: usize| -> f32 { 3.0 - (i == 0) as u8 as f32 - (i + 1 == n) as u8 as f32 };
    let mut factor = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            factor.push(9.0 / (count(i, h) * count(j, w)));
        }
    }
    let factor = Tensor::from_vec(factor, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    mean9.broadcast_mul(&factor)
}

/// Interpolation matrix `[out, in]` of PyTorch's 1-D linear resampling with
/// `align_corners=False` (`area_pixel_compute_source_index`, computed in f32 as PyTorch does for
/// f32 tensors): source `(dst + ½)·in/out − ½`, clamped at 0, and the two neighbours weighted by
/// the fractional part. No antialiasing (PyTorch's default `antialias=False`).
fn linear_weights(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    let scale = n_in as f32 / n_out as f32;
    for o in 0..n_out {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let lambda = (src - i0 as f32).clamp(0.0, 1.0);
        let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
        m[o * n_in + i0] += 1.0 - lambda;
        m[o * n_in + i1] += lambda;
    }
    m
}

/// Bilinear resize of `x` `[B, C, H, W]` to `[B, C, out_h, out_w]`, as PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)` (no
/// antialiasing, for up- and down-sampling alike).
///
/// Written as two matrix products with the separable interpolation matrices (along W, then H), so
/// it runs on any device; each output is the same two-tap weighted sum PyTorch computes.
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!(
            "resize_bilinear: cannot resize {:?} to {out_h}×{out_w}",
            x.dims()
        )
    }
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let dt = x.dtype();
    let rw = Tensor::from_vec(linear_weights(w, out_w), (out_w, w), dev)?.to_dtype(dt)?;
    let rh = Tensor::from_vec(linear_weights(h, out_h), (out_h, h), dev)?.to_dtype(dt)?;
    let y = x.contiguous()?.reshape((b * c * h, w))?.matmul(&rw.t()?)?; // [B·C·H, W']
    let y = y
        .reshape((b * c, h, out_w))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * c * out_w, h))?
        .matmul(&rh.t()?)?; // [B·C·W', H']
    y.reshape((b, c, out_w, out_h))?
        .transpose(2, 3)?
        .contiguous()
}

/// `FIDInceptionA` (`Mixed_5b`, `Mixed_5c`, `Mixed_5d`).
#[derive(Debug, Clone)]
struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(c_in: usize, pool_features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch1x1: BasicConv2d::square(c_in, 64, 1, 1, 0, vb.pp("branch1x1"))?,
            branch5x5_1: BasicConv2d::square(c_in, 48, 1, 1, 0, vb.pp("branch5x5_1"))?,
            branch5x5_2: BasicConv2d::square(48, 64, 5, 1, 2, vb.pp("branch5x5_2"))?,
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 1, 1, vb.pp("branch3x3dbl_3"))?,
            branch_pool: BasicConv2d::square(c_in, pool_features, 1, 1, 0, vb.pp("branch_pool"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?; // [B, 64, H, W]
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x)?)?; // [B, 64, H, W]
        let b3 = self.branch3x3dbl_3.forward(
            &self
                .branch3x3dbl_2
                .forward(&self.branch3x3dbl_1.forward(x)?)?,
        )?; // [B, 96, H, W]
        let bp = self
            .branch_pool
            .forward(&avg_pool_3x3_s1_p1_exclude_pad(x)?)?; // [B, pool_features, H, W]
        Tensor::cat(&[b1, b5, b3, bp], 1) // [B, 224 + pool_features, H, W]
    }
}

/// torchvision's `InceptionB` (`Mixed_6a`): 35×35 → 17×17.
#[derive(Debug, Clone)]
struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(c_in: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch3x3: BasicConv2d::square(c_in, 384, 3, 2, 0, vb.pp("branch3x3"))?,
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 2, 0, vb.pp("branch3x3dbl_3"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?; // [B, 384, H', W']
        let bd = self.branch3x3dbl_3.forward(
            &self
                .branch3x3dbl_2
                .forward(&self.branch3x3dbl_1.forward(x)?)?,
        )?; // [B, 96, H', W']
        let bp = max_pool_3x3_s2(x)?; // [B, C_in, H', W']
        Tensor::cat(&[b3, bd, bp], 1) // [B, 480 + C_in, H', W']
    }
}

/// `FIDInceptionC` (`Mixed_6b` … `Mixed_6e`), factorised 7×7 convolutions.
#[derive(Debug, Clone)]
struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(c_in: usize, c7: usize, vb: VarBuilder) -> Result<Self> {
        let row = |ci, co, name: &str| BasicConv2d::new(ci, co, (1, 7), 1, (0, 3), vb.pp(name));
        let col = |ci, co, name: &str| BasicConv2d::new(ci, co, (7, 1), 1, (3, 0), vb.pp(name));
        Ok(Self {
            branch1x1: BasicConv2d::square(c_in, 192, 1, 1, 0, vb.pp("branch1x1"))?,
            branch7x7: [
                BasicConv2d::square(c_in, c7, 1, 1, 0, vb.pp("branch7x7_1"))?,
                row(c7, c7, "branch7x7_2")?,
                col(c7, 192, "branch7x7_3")?,
            ],
            branch7x7dbl: [
                BasicConv2d::square(c_in, c7, 1, 1, 0, vb.pp("branch7x7dbl_1"))?,
                col(c7, c7, "branch7x7dbl_2")?,
                row(c7, c7, "branch7x7dbl_3")?,
                col(c7, c7, "branch7x7dbl_4")?,
                row(c7, 192, "branch7x7dbl_5")?,
            ],
            branch_pool: BasicConv2d::square(c_in, 192, 1, 1, 0, vb.pp("branch_pool"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let chain = |convs: &[BasicConv2d]| -> Result<Tensor> {
            let mut y = x.clone();
            for c in convs {
                y = c.forward(&y)?;
            }
            Ok(y)
        };
        let b1 = self.branch1x1.forward(x)?; // [B, 192, 17, 17]
        let b7 = chain(&self.branch7x7)?; // [B, 192, 17, 17]
        let bd = chain(&self.branch7x7dbl)?; // [B, 192, 17, 17]
        let bp = self
            .branch_pool
            .forward(&avg_pool_3x3_s1_p1_exclude_pad(x)?)?; // [B, 192, 17, 17]
        Tensor::cat(&[b1, b7, bd, bp], 1) // [B, 768, 17, 17]
    }
}

/// torchvision's `InceptionD` (`Mixed_7a`): 17×17 → 8×8.
#[derive(Debug, Clone)]
struct InceptionD {
    branch3x3: [BasicConv2d; 2],
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    fn new(c_in: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch3x3: [
                BasicConv2d::square(c_in, 192, 1, 1, 0, vb.pp("branch3x3_1"))?,
                BasicConv2d::square(192, 320, 3, 2, 0, vb.pp("branch3x3_2"))?,
            ],
            branch7x7x3: [
                BasicConv2d::square(c_in, 192, 1, 1, 0, vb.pp("branch7x7x3_1"))?,
                BasicConv2d::new(192, 192, (1, 7), 1, (0, 3), vb.pp("branch7x7x3_2"))?,
                BasicConv2d::new(192, 192, (7, 1), 1, (3, 0), vb.pp("branch7x7x3_3"))?,
                BasicConv2d::square(192, 192, 3, 2, 0, vb.pp("branch7x7x3_4"))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3[1].forward(&self.branch3x3[0].forward(x)?)?; // [B, 320, 8, 8]
        let mut b7 = x.clone();
        for c in &self.branch7x7x3 {
            b7 = c.forward(&b7)?;
        } // [B, 192, 8, 8]
        let bp = max_pool_3x3_s2(x)?; // [B, 768, 8, 8]
        Tensor::cat(&[b3, b7, bp], 1) // [B, 1280, 8, 8]
    }
}

/// `FIDInceptionE_1` (`Mixed_7b`, average pool without padding) or `FIDInceptionE_2`
/// (`Mixed_7c`, max pool).
#[derive(Debug, Clone)]
struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    max_pool: bool,
}

impl InceptionE {
    fn new(c_in: usize, max_pool: bool, vb: VarBuilder) -> Result<Self> {
        let row = |ci, co, name: &str| BasicConv2d::new(ci, co, (1, 3), 1, (0, 1), vb.pp(name));
        let col = |ci, co, name: &str| BasicConv2d::new(ci, co, (3, 1), 1, (1, 0), vb.pp(name));
        Ok(Self {
            branch1x1: BasicConv2d::square(c_in, 320, 1, 1, 0, vb.pp("branch1x1"))?,
            branch3x3_1: BasicConv2d::square(c_in, 384, 1, 1, 0, vb.pp("branch3x3_1"))?,
            branch3x3_2a: row(384, 384, "branch3x3_2a")?,
            branch3x3_2b: col(384, 384, "branch3x3_2b")?,
            branch3x3dbl_1: BasicConv2d::square(c_in, 448, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3a: row(384, 384, "branch3x3dbl_3a")?,
            branch3x3dbl_3b: col(384, 384, "branch3x3dbl_3b")?,
            branch_pool: BasicConv2d::square(c_in, 192, 1, 1, 0, vb.pp("branch_pool"))?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?; // [B, 320, 8, 8]
        let t = self.branch3x3_1.forward(x)?;
        let b3 = Tensor::cat(
            &[
                self.branch3x3_2a.forward(&t)?,
                self.branch3x3_2b.forward(&t)?,
            ],
            1,
        )?; // [B, 768, 8, 8]
        let t = self
            .branch3x3dbl_2
            .forward(&self.branch3x3dbl_1.forward(x)?)?;
        let bd = Tensor::cat(
            &[
                self.branch3x3dbl_3a.forward(&t)?,
                self.branch3x3dbl_3b.forward(&t)?,
            ],
            1,
        )?; // [B, 768, 8, 8]
        let pooled = if self.max_pool {
            max_pool_3x3_s1_p1(x)?
        } else {
            avg_pool_3x3_s1_p1_exclude_pad(x)?
        };
        let bp = self.branch_pool.forward(&pooled)?; // [B, 192, 8, 8]
        Tensor::cat(&[b1, b3, bd, bp], 1) // [B, 2048, 8, 8]
    }
}

/// The FID Inception-v3 network: images `[B, 3, H, W]` in [−1, 1] → `pool3` `[B, 2048]`.
#[derive(Debug, Clone)]
pub struct InceptionV3 {
    stem: [BasicConv2d; 5],
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7b: InceptionE,
    mixed_7c: InceptionE,
    fc_weight: Tensor,
    fc_bias: Tensor,
    cfg: Config,
}

impl InceptionV3 {
    /// Builds the network under `vb` with pytorch-fid's `state_dict` names.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if cfg.num_classes == 0 {
            candle_core::bail!("Inception-v3 num_classes must be positive, got 0")
        }
        if let Some(s) = cfg.resize_to {
            if s < MIN_INPUT {
                candle_core::bail!("Inception-v3 resize_to must be at least {MIN_INPUT}, got {s}")
            }
        }
        let sq = |ci, co, k, s, p, name: &str| BasicConv2d::square(ci, co, k, s, p, vb.pp(name));
        let stem = [
            sq(3, 32, 3, 2, 0, "Conv2d_1a_3x3")?,
            sq(32, 32, 3, 1, 0, "Conv2d_2a_3x3")?,
            sq(32, 64, 3, 1, 1, "Conv2d_2b_3x3")?,
            sq(64, 80, 1, 1, 0, "Conv2d_3b_1x1")?,
            sq(80, 192, 3, 1, 0, "Conv2d_4a_3x3")?,
        ];
        let mixed_5 = [
            InceptionA::new(192, 32, vb.pp("Mixed_5b"))?,
            InceptionA::new(256, 64, vb.pp("Mixed_5c"))?,
            InceptionA::new(288, 64, vb.pp("Mixed_5d"))?,
        ];
        let mixed_6a = InceptionB::new(288, vb.pp("Mixed_6a"))?;
        let mixed_6 = [
            InceptionC::new(768, 128, vb.pp("Mixed_6b"))?,
            InceptionC::new(768, 160, vb.pp("Mixed_6c"))?,
            InceptionC::new(768, 160, vb.pp("Mixed_6d"))?,
            InceptionC::new(768, 192, vb.pp("Mixed_6e"))?,
        ];
        let mixed_7a = InceptionD::new(768, vb.pp("Mixed_7a"))?;
        let mixed_7b = InceptionE::new(1280, false, vb.pp("Mixed_7b"))?;
        let mixed_7c = InceptionE::new(2048, true, vb.pp("Mixed_7c"))?;
        let fc = vb.pp("fc");
        let bound = 1.0 / (POOL3_DIM as f64).sqrt();
        let fc_weight = fc.get_with_hints(
            (cfg.num_classes, POOL3_DIM),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let fc_bias = fc.get_with_hints(cfg.num_classes, "bias", Init::Const(0.))?;
        Ok(Self {
            stem,
            mixed_5,
            mixed_6a,
            mixed_6,
            mixed_7a,
            mixed_7b,
            mixed_7c,
            fc_weight,
            fc_bias,
            cfg: cfg.clone(),
        })
    }

    /// `pool3` features `[B, 2048]` of images `x` `[B, 3, H, W]` in [−1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != 3 {
            candle_core::bail!(
                "Inception-v3 expects RGB images [B, 3, H, W] in [-1, 1], got {:?} (repeat grey images over 3 channels first)",
                x.dims()
            )
        }
        let x = match self.cfg.resize_to {
            Some(s) => resize_bilinear(x, s, s)?, // [B, 3, 299, 299]
            None => {
                if h < MIN_INPUT || w < MIN_INPUT {
                    candle_core::bail!(
                        "Inception-v3 without resizing needs inputs of at least {MIN_INPUT}×{MIN_INPUT}, got {:?}",
                        x.dims()
                    )
                }
                x.clone()
            }
        };
        let s = &self.stem;
        let x = s[0].forward(&x)?; // [B, 32, 149, 149]
        let x = s[1].forward(&x)?; // [B, 32, 147, 147]
        let x = s[2].forward(&x)?; // [B, 64, 147, 147]
        let x = max_pool_3x3_s2(&x)?; // [B, 64, 73, 73]
        let x = s[3].forward(&x)?; // [B, 80, 73, 73]
        let x = s[4].forward(&x)?; // [B, 192, 71, 71]
        let mut x = max_pool_3x3_s2(&x)?; // [B, 192, 35, 35]
        for m in &self.mixed_5 {
            x = m.forward(&x)?; // [B, 256 | 288 | 288, 35, 35]
        }
        let mut x = self.mixed_6a.forward(&x)?; // [B, 768, 17, 17]
        for m in &self.mixed_6 {
            x = m.forward(&x)?; // [B, 768, 17, 17]
        }
        let x = self.mixed_7a.forward(&x)?; // [B, 1280, 8, 8]
        let x = self.mixed_7b.forward(&x)?; // [B, 2048, 8, 8]
        let x = self.mixed_7c.forward(&x)?; // [B, 2048, 8, 8]
        x.mean(D::Minus1)?.mean(D::Minus1)?.reshape((b, POOL3_DIM)) // [B, 2048]
    }

    /// Class logits without the `fc` bias, `pool3 · fc.weightᵀ` `[B, num_classes]`
    /// (torch-fidelity's `logits_unbiased`, used by the Inception Score).
    pub fn logits(&self, pool3: &Tensor) -> Result<Tensor> {
        pool3.matmul(&self.fc_weight.to_dtype(pool3.dtype())?.t()?)
    }

    /// Class logits with the `fc` bias (torchvision's `fc(pool3)`).
    pub fn logits_with_bias(&self, pool3: &Tensor) -> Result<Tensor> {
        self.logits(pool3)?
            .broadcast_add(&self.fc_bias.to_dtype(pool3.dtype())?.unsqueeze(0)?)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use easel_nn::ParamStore;

    #[test]
    fn resize_matches_pytorch_small_case() {
        // torch: F.interpolate(torch.arange(6.).reshape(1,1,2,3), size=(3,5), mode="bilinear",
        // align_corners=False)
        let x = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 3))
            .unwrap();
        let y = resize_bilinear(&x, 3, 5).unwrap();
        let want = [
            [0.0f32, 0.4, 1.0, 1.6, 2.0],
            [1.5, 1.9, 2.5, 3.1, 3.5],
            [3.0, 3.4, 4.0, 4.6, 5.0],
        ];
        let got = y
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn pooling_helpers_match_definitions() {
        let x = Tensor::new(
            &[[[[1f32, 2., 3.], [4., 5., 6.], [7., 8., 9.]]]],
            &Device::Cpu,
        )
        .unwrap();
        // count_include_pad=False: corner (0,0) averages 1, 2, 4, 5; centre averages all nine.
        let a = avg_pool_3x3_s1_p1_exclude_pad(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            (a[0] - 3.0).abs() < 1e-6 && (a[4] - 5.0).abs() < 1e-6 && (a[1] - 3.5).abs() < 1e-6,
            "{a:?}"
        );
        let m = max_pool_3x3_s1_p1(&(x.neg().unwrap()))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(m, [-1., -1., -2., -1., -1., -2., -4., -4., -5.]);
    }

    #[test]
    fn shapes_and_errors() {
        let store = ParamStore::new(&Device::Cpu, 0);
        let net = InceptionV3::new(&Config::pytorch_fid(), store.var_builder()).unwrap();
        let t = store.tensors();
        assert_eq!(t["Conv2d_1a_3x3.conv.weight"].dims(), [32, 3, 3, 3]);
        assert_eq!(
            t["Mixed_6b.branch7x7_2.conv.weight"].dims(),
            [128, 128, 1, 7]
        );
        assert_eq!(
            t["Mixed_7c.branch3x3dbl_3b.conv.weight"].dims(),
            [384, 384, 3, 1]
        );
        assert_eq!(t["fc.weight"].dims(), [1008, 2048]);
        // 94 BasicConv2d (5 per stem, 7·3 A, 4 B, 10·4 C, 6 D, 9·2 E) × 5 tensors + fc weight, bias.
        assert_eq!(t.len(), 94 * 5 + 2);
        let err = net
            .forward(&Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[1, 1, 32, 32]"), "{err}");
    }
}
