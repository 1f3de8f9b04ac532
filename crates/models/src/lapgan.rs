//! LAPGAN: Denton, Chintala, Szlam & Fergus, "Deep Generative Image Models using a Laplacian
//! Pyramid of Adversarial Networks", NeurIPS 2015 (arXiv:1506.05751).
//!
//! An image is generated coarse to fine. The coarsest level (8×8) is a plain GAN: either the
//! fully connected networks of the authors' code ([`MlpGenerator`], [`MlpDiscriminator`]) or the
//! DCGAN networks of [`crate::dcgan`] at 8×8 (see [`BaseGenerator`], [`BaseDiscriminator`]).
//! Every finer level `k` has its own pair: the generator takes a noise plane and the upsampled
//! coarser image `l = expand(I_{k+1})` and produces the band-pass residual `h_k`, so that
//! `I_k = l + h_k`. The discriminator tells real residuals (from the Laplacian pyramid of
//! training images) from generated ones, conditioned on `l`: as in the paper (section 3.1) and
//! eyescream (`nn.CAddTable()`), it is shown the full-resolution image `l + h_k`
//! ([`LevelDInput::Sum`], the default), or — easel's earlier variant, kept for runs trained with
//! it — `h_k` and `l` stacked as channels ([`LevelDInput::Concat`]), which lets it judge the
//! residual's statistics on their own. Levels train independently on precomputed pyramid pairs,
//! as in the authors' `eyescream` code.
//!
//! The finer-level networks follow eyescream's convolutional level models (3×3/5×5 convolutions,
//! ReLU, a linear output for the residual; the level discriminator with dropout before its output
//! layer, `LevelConfig::d_dropout`, drawn from a caller-supplied uniform stream like the MLP
//! base's), with batch norm (DCGAN's practice; eyescream's level D has none) and, for the
//! class-conditional LAPGAN of the paper, one-hot label planes stacked on each network's input.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::{ops, BatchNorm2d, BnMode, Conv2d, Conv2dConfig};
use serde::{Deserialize, Serialize};

/// What a finer level's discriminator is shown of a (residual `h`, upsampled coarse image `l`)
/// pair (recipe key `model.level_d_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelDInput {
    /// The paper's (section 3.1; eyescream's `nn.CAddTable()`): the full-resolution image
    /// `l + h` (C channels, plus the label planes of a conditional model), so D judges images of
    /// that level, not residuals in isolation.
    Sum,
    /// `h` and `l` stacked as 2C channels (plus label planes): easel's level D before the paper's
    /// sum was added; it lets D judge the residual's statistics apart from the image.
    Concat,
}

/// One finer level's networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Side of the images at this level (16, 32, …).
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Generator width.
    pub ngf: usize,
    /// Discriminator width.
    pub ndf: usize,
    /// Classes of a class-conditional LAPGAN (0 = unconditional).
    #[serde(default)]
    pub num_classes: usize,
    /// What the discriminator sees: the paper's `l + h` (`"sum"`, the default) or `[h, l]`
    /// stacked as channels (`"concat"`).
    #[serde(default = "level_defaults::d_input")]
    pub d_input: LevelDInput,
    /// Drop probability of the discriminator's inverted dropout before its output layer, in
    /// training only (eyescream's level D: `nn.Dropout(0.5)` before its final linear layer; the
    /// default 0.5). 0 disables it (and then no uniforms are drawn).
    #[serde(default = "level_defaults::d_dropout")]
    pub d_dropout: f64,
}

mod level_defaults {
    pub fn d_input() -> super::LevelDInput {
        super::LevelDInput::Sum
    }
    pub fn d_dropout() -> f64 {
        0.5
    }
}

impl LevelConfig {
    /// A level of side `image_size` with the paper's discriminator (sum input, dropout 0.5),
    /// unconditional.
    pub fn new(image_size: usize, channels: usize, ngf: usize, ndf: usize) -> Self {
        Self {
            image_size,
            channels,
            ngf,
            ndf,
            num_classes: 0,
            d_input: level_defaults::d_input(),
            d_dropout: level_defaults::d_dropout(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.image_size < 8 || !self.image_size.is_multiple_of(4) {
            candle_core::bail!(
                "LAPGAN level size must be a multiple of 4 and at least 8, got {}",
                self.image_size
            )
        }
        if self.channels == 0 || self.ngf == 0 || self.ndf == 0 || self.num_classes == 1 {
            candle_core::bail!(
                "LAPGAN level needs positive channels, ngf and ndf and num_classes 0 or ≥ 2, \
                 got {self:?}"
            )
        }
        if !(0.0..1.0).contains(&self.d_dropout) {
            candle_core::bail!(
                "LAPGAN level d_dropout must be in [0, 1), got {}",
                self.d_dropout
            )
        }
        Ok(())
    }
}

const W_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};
const BN_INIT: Init = Init::Randn {
    mean: 1.0,
    stdev: 0.02,
};

/// One-hot rows `[B, classes]` (dtype of `like`) for labels `[B]`, or `None` for an
/// unconditional network; a missing or unexpected label tensor is an error.
fn one_hot(
    labels: Option<&Tensor>,
    classes: usize,
    b: usize,
    like: &Tensor,
) -> Result<Option<Tensor>> {
    match (classes, labels) {
        (0, None) => Ok(None),
        (0, Some(_)) => candle_core::bail!("LAPGAN level is unconditional but was given labels"),
        (_, None) => {
            candle_core::bail!("LAPGAN level is conditional ({classes} classes) and needs labels")
        }
        (_, Some(l)) => {
            if l.dims() != [b] {
                candle_core::bail!(
                    "LAPGAN level expects labels of shape [{b}], got {:?}",
                    l.dims()
                )
            }
            let ids = l.to_dtype(DType::U32)?.reshape((b, 1))?;
            let ar = Tensor::arange(0u32, classes as u32, l.device())?.reshape((1, classes))?;
            Ok(Some(ids.broadcast_eq(&ar)?.to_dtype(like.dtype())?)) // [B, classes]
        }
    }
}

fn label_planes(labels: Option<&Tensor>, classes: usize, like: &Tensor) -> Result<Option<Tensor>> {
    let (b, _, h, w) = like.dims4()?;
    match one_hot(labels, classes, b, like)? {
        None => Ok(None),
        Some(oh) => Ok(Some(
            oh.reshape((b, classes, 1, 1))?
                .broadcast_as((b, classes, h, w))?
                .contiguous()?,
        )),
    }
}

fn check(x: &Tensor, cfg: &LevelConfig, what: &str) -> Result<()> {
    let s = cfg.image_size;
    let (_, c, h, w) = x.dims4()?;
    if c != cfg.channels || h != s || w != s {
        candle_core::bail!(
            "LAPGAN level {what} expects [B, {}, {s}, {s}], got {:?}",
            cfg.channels,
            x.dims()
        )
    }
    Ok(())
}

/// A finer level's generator: (noise plane, upsampled coarse image [, labels]) → residual.
#[derive(Debug, Clone)]
pub struct LevelGenerator {
    c1: Conv2d,
    b1: BatchNorm2d,
    c2: Conv2d,
    b2: BatchNorm2d,
    out: Conv2d,
    cfg: LevelConfig,
}

impl LevelGenerator {
    /// Builds the level under `vb` (`conv1`, `bn1`, `conv2`, `bn2`, `conv3`).
    pub fn new(cfg: &LevelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let c_in = 1 + cfg.channels + cfg.num_classes;
        let k5 = Conv2dConfig::new(5, 1, 2).no_bias();
        let c1 = Conv2d::new(c_in, cfg.ngf, k5, W_INIT, vb.pp("conv1"))?;
        let b1 = BatchNorm2d::new(cfg.ngf, BN_INIT, vb.pp("bn1"))?;
        let c2 = Conv2d::new(
            cfg.ngf,
            cfg.ngf,
            Conv2dConfig::new(3, 1, 1).no_bias(),
            W_INIT,
            vb.pp("conv2"),
        )?;
        let b2 = BatchNorm2d::new(cfg.ngf, BN_INIT, vb.pp("bn2"))?;
        let out = Conv2d::new(
            cfg.ngf,
            cfg.channels,
            Conv2dConfig::new(3, 1, 1),
            W_INIT,
            vb.pp("conv3"),
        )?;
        Ok(Self {
            c1,
            b1,
            c2,
            b2,
            out,
            cfg: cfg.clone(),
        })
    }

    /// The residual `[B, C, S, S]` for noise `[B, 1, S, S]` and the upsampled coarse image `[B, C, S, S]`.
    pub fn forward(
        &self,
        noise: &Tensor,
        coarse_up: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
    ) -> Result<Tensor> {
        check(coarse_up, &self.cfg, "generator")?;
        let mut parts = vec![noise.clone(), coarse_up.clone()];
        if let Some(p) = label_planes(labels, self.cfg.num_classes, coarse_up)? {
            parts.push(p);
        }
        let x = Tensor::cat(&parts, 1)?; // [B, 1 + C (+ classes), S, S]
        let x = self
            .b1
            .forward_act(&self.c1.forward(&x)?, mode, Some(ops::Activation::Relu))?; // [B, ngf, S, S]
        let x = self
            .b2
            .forward_act(&self.c2.forward(&x)?, mode, Some(ops::Activation::Relu))?; // [B, ngf, S, S]
        self.out.forward(&x) // [B, C, S, S], linear: residuals are signed and small
    }
}

/// A finer level's discriminator: (residual `h`, upsampled coarse image `l` [, labels]) → logit
/// `[B]`.
///
/// Its input is the paper's full-resolution image `l + h` ([`LevelDInput::Sum`]) or `[h, l]`
/// stacked ([`LevelDInput::Concat`]), with one-hot label planes appended when conditional; then
/// `conv1` (4×4, stride 2, LeakyReLU 0.2), `conv2` (4×4, stride 2, batch norm, LeakyReLU 0.2),
/// inverted dropout (`d_dropout`, training only, as eyescream's level D before its last layer) and
/// `conv3`, an `S/4 × S/4` convolution over the whole feature map: the linear output layer.
#[derive(Debug, Clone)]
pub struct LevelDiscriminator {
    c1: Conv2d,
    c2: Conv2d,
    b2: BatchNorm2d,
    out: Conv2d,
    cfg: LevelConfig,
}

impl LevelDiscriminator {
    /// Builds the level under `vb` (`conv1`, `conv2`, `bn2`, `conv3`).
    pub fn new(cfg: &LevelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let c_in = match cfg.d_input {
            LevelDInput::Sum => cfg.channels,
            LevelDInput::Concat => 2 * cfg.channels,
        } + cfg.num_classes;
        let down = Conv2dConfig::new(4, 2, 1).no_bias();
        let c1 = Conv2d::new(c_in, cfg.ndf, down, W_INIT, vb.pp("conv1"))?;
        let c2 = Conv2d::new(cfg.ndf, cfg.ndf * 2, down, W_INIT, vb.pp("conv2"))?;
        let b2 = BatchNorm2d::new(cfg.ndf * 2, BN_INIT, vb.pp("bn2"))?;
        let k = cfg.image_size / 4;
        let out = Conv2d::new(
            cfg.ndf * 2,
            1,
            Conv2dConfig::new(k, 1, 0),
            W_INIT,
            vb.pp("conv3"),
        )?;
        Ok(Self {
            c1,
            c2,
            b2,
            out,
            cfg: cfg.clone(),
        })
    }

    /// The features before dropout and the output layer, `[B, 2ndf, S/4, S/4]`.
    fn features(
        &self,
        residual: &Tensor,
        coarse_up: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
    ) -> Result<Tensor> {
        check(residual, &self.cfg, "discriminator")?;
        check(coarse_up, &self.cfg, "discriminator")?;
        let mut parts = match self.cfg.d_input {
            LevelDInput::Sum => vec![(residual + coarse_up)?], // the image l + h
            LevelDInput::Concat => vec![residual.clone(), coarse_up.clone()],
        };
        if let Some(p) = label_planes(labels, self.cfg.num_classes, coarse_up)? {
            parts.push(p);
        }
        let x = Tensor::cat(&parts, 1)?; // [B, C or 2C (+ classes), S, S]
        let x = ops::leaky_relu(&self.c1.forward(&x)?, 0.2)?; // [B, ndf, S/2, S/2]
        self.b2.forward_act(
            &self.c2.forward(&x)?,
            mode,
            Some(ops::Activation::LeakyRelu(0.2)),
        ) // [B, 2ndf, S/4, S/4]
    }

    /// Logits `[B]`. `mode` is the batch norm's; dropout runs when `uniforms` is given (training:
    /// one uniform per feature, row-major `[B, 2ndf, S/4, S/4]`, fresh for every call), never
    /// otherwise (evaluation).
    pub fn forward(
        &self,
        residual: &Tensor,
        coarse_up: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
        uniforms: Option<Uniforms<'_>>,
    ) -> Result<Tensor> {
        let b = residual.dim(0)?;
        let x = self.features(residual, coarse_up, labels, mode)?; // [B, 2ndf, S/4, S/4]
        let mut uniforms = uniforms;
        let x = inverted_dropout(&x, self.cfg.d_dropout, uniforms.as_mut())?;
        self.out.forward(&x)?.reshape(b) // [B]
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &LevelConfig {
        &self.cfg
    }
}

/// Which network the 8×8 base level uses (recipe key `model.base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseKind {
    /// The authors' fully connected networks ([`MlpGenerator`], [`MlpDiscriminator`]).
    Mlp,
    /// DCGAN's convolutional networks at 8×8 ([`crate::dcgan`]).
    Dcgan,
}

/// The fully connected 8×8 base GAN of the authors' eyescream code (its CIFAR-10 coarse model):
/// `G: z [⊕ one-hot] → g_hidden → g_hidden → C·S·S`, `D: flattened image [⊕ one-hot] → d_hidden →
/// d_hidden → 1 logit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Side of the base images (8 in LAPGAN).
    #[serde(default = "mlp_defaults::image_size")]
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Latent size of the generator.
    pub nz: usize,
    /// Width of the generator's two hidden layers (eyescream: 1200).
    #[serde(default = "mlp_defaults::g_hidden")]
    pub g_hidden: usize,
    /// Width of the discriminator's two hidden layers (eyescream: 600).
    #[serde(default = "mlp_defaults::d_hidden")]
    pub d_hidden: usize,
    /// Classes of a class-conditional model (0 = unconditional): a one-hot label is appended to
    /// z (G) and to the flattened image (D).
    #[serde(default)]
    pub num_classes: usize,
    /// Drop probability of the dropout after each hidden layer of D, in training only
    /// (eyescream's `nn.Dropout()`: 0.5). 0 disables it.
    #[serde(default = "mlp_defaults::dropout")]
    pub dropout: f64,
    /// Negative slope of D's hidden LeakyReLUs (0.2; 0 is eyescream's plain ReLU).
    #[serde(default = "mlp_defaults::leaky_slope")]
    pub leaky_slope: f64,
}

mod mlp_defaults {
    pub fn image_size() -> usize {
        8
    }
    pub fn g_hidden() -> usize {
        1200
    }
    pub fn d_hidden() -> usize {
        600
    }
    pub fn dropout() -> f64 {
        0.5
    }
    pub fn leaky_slope() -> f64 {
        0.2
    }
}

impl MlpConfig {
    /// The eyescream widths (1200 / 600, dropout 0.5, slope 0.2) at 8×8, unconditional.
    pub fn new(channels: usize, nz: usize) -> Self {
        Self {
            image_size: mlp_defaults::image_size(),
            channels,
            nz,
            g_hidden: mlp_defaults::g_hidden(),
            d_hidden: mlp_defaults::d_hidden(),
            num_classes: 0,
            dropout: mlp_defaults::dropout(),
            leaky_slope: mlp_defaults::leaky_slope(),
        }
    }

    /// Pixels of one image, `C·S·S`.
    pub fn image_len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    fn validate(&self) -> Result<()> {
        if self.image_size == 0
            || self.channels == 0
            || self.nz == 0
            || self.g_hidden == 0
            || self.d_hidden == 0
            || self.num_classes == 1
        {
            candle_core::bail!(
                "LAPGAN MLP base needs positive image_size, channels, nz, g_hidden and d_hidden \
                 and num_classes 0 or ≥ 2, got {self:?}"
            )
        }
        if !(0.0..1.0).contains(&self.dropout) {
            candle_core::bail!(
                "LAPGAN MLP base dropout must be in [0, 1), got {}",
                self.dropout
            )
        }
        if !(0.0..=1.0).contains(&self.leaky_slope) {
            candle_core::bail!(
                "LAPGAN MLP base leaky_slope must be in [0, 1], got {}",
                self.leaky_slope
            )
        }
        Ok(())
    }
}

/// A fully connected layer with PyTorch's `nn.Linear` semantics and names (`weight [out, in]`,
/// `bias [out]`) and its default initialisation U(−1/√in, 1/√in) (Torch7's, as eyescream used).
/// Parameters pass through [`ops::param`], so [`ops::with_frozen_params`] applies.
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn new(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Self> {
        let b = 1.0 / (d_in as f64).sqrt();
        let init = Init::Uniform { lo: -b, up: b };
        Ok(Self {
            weight: vb.get_with_hints((d_out, d_in), "weight", init)?,
            bias: vb.get_with_hints(d_out, "bias", init)?,
        })
    }

    /// `x W^T + b`: `[B, in]` → `[B, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&ops::param(&self.weight).t()?)?
            .broadcast_add(&ops::param(&self.bias))
    }
}

/// The MLP base generator: z `[B, nz]` (⊕ one-hot label) → image `[B, C, S, S]` in [−1, 1].
///
/// Parameters are named as the PyTorch module
/// `main = nn.Sequential(nn.Linear(nz + K, g_hidden), nn.BatchNorm1d(g_hidden), nn.ReLU(),
/// nn.Linear(g_hidden, g_hidden), nn.BatchNorm1d(g_hidden), nn.ReLU(), nn.Linear(g_hidden, C·S·S),
/// nn.Tanh())`, i.e. `main.0.*`, `main.1.*` (γ, β, running statistics), `main.3.*`, `main.4.*`,
/// `main.6.*`. eyescream's coarse generator has no batch norm; without it this MLP collapsed to
/// one 8×8 image for every z within a few hundred Adam steps on MNIST (`runs/bench-lapgan-mlp`,
/// BENCHMARKS.md), the failure Radford et al. cite batch norm in the generator against.
/// eyescream's output layer is linear; easel's images live in [−1, 1] like every other easel
/// generator's tanh output, so a tanh closes the stack.
#[derive(Debug, Clone)]
pub struct MlpGenerator {
    l0: Dense,
    bn1: BatchNorm2d,
    l3: Dense,
    bn4: BatchNorm2d,
    l6: Dense,
    cfg: MlpConfig,
}

impl MlpGenerator {
    /// Builds the network under `vb` (`main.0`, `main.1`, `main.3`, `main.4`, `main.6`).
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vb = vb.pp("main");
        // nn.BatchNorm1d's defaults: γ = 1, β = 0.
        let bn = |i: usize| BatchNorm2d::new(cfg.g_hidden, Init::Const(1.0), vb.pp(i));
        Ok(Self {
            l0: Dense::new(cfg.nz + cfg.num_classes, cfg.g_hidden, vb.pp(0))?,
            bn1: bn(1)?,
            l3: Dense::new(cfg.g_hidden, cfg.g_hidden, vb.pp(3))?,
            bn4: bn(4)?,
            l6: Dense::new(cfg.g_hidden, cfg.image_len(), vb.pp(6))?,
            cfg: cfg.clone(),
        })
    }

    /// Images `[B, C, S, S]` for z `[B, nz]` (and labels `[B]` when conditional); `mode` is the
    /// batch norms' (batch statistics in training, running statistics for sampling).
    pub fn forward(&self, z: &Tensor, labels: Option<&Tensor>, mode: BnMode) -> Result<Tensor> {
        let c = &self.cfg;
        let b = z.dim(0)?;
        if z.dims() != [b, c.nz] {
            candle_core::bail!(
                "LAPGAN MLP generator expects z of shape [B, {}], got {:?}",
                c.nz,
                z.dims()
            )
        }
        let x = match one_hot(labels, c.num_classes, b, z)? {
            Some(oh) => Tensor::cat(&[z, &oh], 1)?, // [B, nz + K]
            None => z.clone(),                      // [B, nz]
        };
        let h = c.g_hidden;
        // BatchNorm1d on [B, H] is BatchNorm2d on [B, H, 1, 1].
        let bn_relu = |x: &Tensor, bn: &BatchNorm2d| -> Result<Tensor> {
            bn.forward_act(&x.reshape((b, h, 1, 1))?, mode, Some(ops::Activation::Relu))?
                .reshape((b, h))
        };
        let x = bn_relu(&self.l0.forward(&x)?, &self.bn1)?; // [B, g_hidden]
        let x = bn_relu(&self.l3.forward(&x)?, &self.bn4)?; // [B, g_hidden]
        let x = ops::tanh(&self.l6.forward(&x)?)?; // [B, C·S·S]
        x.reshape((b, c.channels, c.image_size, c.image_size)) // [B, C, S, S], PyTorch's view order
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }
}

/// A source of uniform [0, 1) numbers for dropout masks (`n` ↦ `n` values), e.g. the training
/// step's seeded stream, so dropout is deterministic and resumes exactly.
pub type Uniforms<'a> = &'a mut dyn FnMut(usize) -> Vec<f32>;

/// Inverted dropout of `x` (any shape): each element is kept, scaled by 1/(1−p), where its
/// uniform (one per element, in row-major order) is ≥ p, and zeroed otherwise. Without a uniform
/// source (evaluation) or at p = 0 it is the identity and draws nothing.
fn inverted_dropout(x: &Tensor, p: f64, uniforms: Option<&mut Uniforms<'_>>) -> Result<Tensor> {
    let Some(draw) = uniforms else {
        return Ok(x.clone());
    };
    if p == 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let keep = (1.0 / (1.0 - p)) as f32;
    let u = draw(n);
    if u.len() != n {
        candle_core::bail!("dropout needs {n} uniforms, got {}", u.len())
    }
    let mask: Vec<f32> = u
        .into_iter()
        .map(|u| if (u as f64) < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// The MLP base discriminator: image `[B, C, S, S]` (⊕ one-hot label) → logit `[B]`.
///
/// Parameters are named as the PyTorch module
/// `main = nn.Sequential(nn.Linear(C·S·S + K, d_hidden), nn.LeakyReLU(slope), nn.Dropout(p),
/// nn.Linear(d_hidden, d_hidden), nn.LeakyReLU(slope), nn.Dropout(p), nn.Linear(d_hidden, 1))`,
/// i.e. `main.0.*`, `main.3.*`, `main.6.*`. Dropout is inverted dropout (kept units scaled by
/// 1/(1−p)), active only when the caller passes a uniform source (training).
#[derive(Debug, Clone)]
pub struct MlpDiscriminator {
    l0: Dense,
    l3: Dense,
    l6: Dense,
    cfg: MlpConfig,
}

impl MlpDiscriminator {
    /// Builds the network under `vb` (`main.0`, `main.3`, `main.6`).
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vb = vb.pp("main");
        Ok(Self {
            l0: Dense::new(cfg.image_len() + cfg.num_classes, cfg.d_hidden, vb.pp(0))?,
            l3: Dense::new(cfg.d_hidden, cfg.d_hidden, vb.pp(3))?,
            l6: Dense::new(cfg.d_hidden, 1, vb.pp(6))?,
            cfg: cfg.clone(),
        })
    }

    /// Logits `[B]` of images `x` `[B, C, S, S]` (and labels `[B]` when conditional). Dropout
    /// runs when `uniforms` is given (training), never otherwise (evaluation).
    pub fn forward(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        mut uniforms: Option<Uniforms<'_>>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, ch, h, w) = x.dims4()?;
        if ch != c.channels || h != c.image_size || w != c.image_size {
            candle_core::bail!(
                "LAPGAN MLP discriminator expects [B, {}, {s}, {s}], got {:?}",
                c.channels,
                x.dims(),
                s = c.image_size
            )
        }
        let flat = x.reshape((b, c.image_len()))?; // [B, C·S·S], PyTorch's flatten order
        let x = match one_hot(labels, c.num_classes, b, x)? {
            Some(oh) => Tensor::cat(&[&flat, &oh], 1)?, // [B, C·S·S + K]
            None => flat,                               // [B, C·S·S]
        };
        let x = ops::leaky_relu(&self.l0.forward(&x)?, c.leaky_slope)?; // [B, d_hidden]
        let x = inverted_dropout(&x, c.dropout, uniforms.as_mut())?; // [B, d_hidden]
        let x = ops::leaky_relu(&self.l3.forward(&x)?, c.leaky_slope)?; // [B, d_hidden]
        let x = inverted_dropout(&x, c.dropout, uniforms.as_mut())?; // [B, d_hidden]
        self.l6.forward(&x)?.reshape(b) // [B]
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }
}

/// The 8×8 base generator of a [`LapganGenerator`].
#[derive(Debug, Clone)]
pub enum BaseGenerator {
    /// DCGAN's convolutional generator.
    Dcgan(crate::dcgan::Generator),
    /// The fully connected generator of the authors' code.
    Mlp(MlpGenerator),
}

impl From<crate::dcgan::Generator> for BaseGenerator {
    fn from(g: crate::dcgan::Generator) -> Self {
        Self::Dcgan(g)
    }
}

impl From<MlpGenerator> for BaseGenerator {
    fn from(g: MlpGenerator) -> Self {
        Self::Mlp(g)
    }
}

impl BaseGenerator {
    /// Latent size.
    pub fn nz(&self) -> usize {
        match self {
            Self::Dcgan(g) => g.config().nz,
            Self::Mlp(g) => g.config().nz,
        }
    }
    /// Image side.
    pub fn image_size(&self) -> usize {
        match self {
            Self::Dcgan(g) => g.config().image_size,
            Self::Mlp(g) => g.config().image_size,
        }
    }
    /// Image channels.
    pub fn channels(&self) -> usize {
        match self {
            Self::Dcgan(g) => g.config().channels,
            Self::Mlp(g) => g.config().channels,
        }
    }
    /// Classes (0 = unconditional).
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Dcgan(g) => g.config().num_classes,
            Self::Mlp(g) => g.config().num_classes,
        }
    }
    /// Images `[B, C, S, S]` for z `[B, nz]`; `mode` is the batch norms'.
    pub fn forward(&self, z: &Tensor, labels: Option<&Tensor>, mode: BnMode) -> Result<Tensor> {
        match self {
            Self::Dcgan(g) => g.forward_labels(z, labels, mode),
            Self::Mlp(g) => g.forward(z, labels, mode),
        }
    }
}

/// The 8×8 base discriminator matching a [`BaseGenerator`].
#[derive(Debug, Clone)]
pub enum BaseDiscriminator {
    /// DCGAN's convolutional discriminator.
    Dcgan(crate::dcgan::Discriminator),
    /// The fully connected discriminator of the authors' code.
    Mlp(MlpDiscriminator),
}

impl BaseDiscriminator {
    /// Logits `[B]`. `uniforms` drives the MLP's dropout in training (ignored by the DCGAN);
    /// `mode` matters only to the DCGAN's batch norm.
    pub fn forward(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
        uniforms: Option<Uniforms<'_>>,
    ) -> Result<Tensor> {
        match self {
            Self::Dcgan(d) => d.forward_labels(x, labels, mode),
            Self::Mlp(d) => d.forward(x, labels, uniforms),
        }
    }
}

/// The full coarse-to-fine generator: the 8×8 base GAN and the finer levels.
///
/// Its latent vector is `[z_base (nz) | noise plane of level 1 (S₁²) | … | level L (S_L²)]`, so
/// one vector determines an image and the latent tools (interpolation, saved z) work unchanged.
#[derive(Debug, Clone)]
pub struct LapganGenerator {
    base: BaseGenerator,
    levels: Vec<LevelGenerator>,
}

impl LapganGenerator {
    /// Assembles the chain from its trained parts (each built from its own parameter store); the
    /// base is a [`crate::dcgan::Generator`], an [`MlpGenerator`] or a [`BaseGenerator`].
    pub fn from_parts(base: impl Into<BaseGenerator>, levels: Vec<LevelGenerator>) -> Result<Self> {
        let base = base.into();
        let mut size = base.image_size();
        for l in &levels {
            if l.cfg.image_size != 2 * size || l.cfg.channels != base.channels() {
                candle_core::bail!(
                    "LAPGAN level of size {} (channels {}) cannot follow size {size} (channels {})",
                    l.cfg.image_size,
                    l.cfg.channels,
                    base.channels()
                )
            }
            size *= 2;
        }
        Ok(Self { base, levels })
    }

    fn plane_sizes(&self) -> Vec<usize> {
        self.levels.iter().map(|l| l.cfg.image_size).collect()
    }

    /// Every level's image, coarsest first: `[B, C, 8, 8]`, `[B, C, 16, 16]`, …
    pub fn generate_levels(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
    ) -> Result<Vec<Tensor>> {
        let b = z.dim(0)?;
        let nz = self.base.nz();
        let want = nz + self.plane_sizes().iter().map(|s| s * s).sum::<usize>();
        if z.dims() != [b, want] {
            candle_core::bail!("LAPGAN generator expects z of shape [B, {want}] (nz {nz} + noise planes), got {:?}", z.dims())
        }
        let mut img = self.base.forward(&z.narrow(1, 0, nz)?, labels, mode)?; // [B, C, 8, 8]
        let mut out = vec![img.clone()];
        let mut offset = nz;
        for level in &self.levels {
            let s = level.cfg.image_size;
            let noise = z.narrow(1, offset, s * s)?.reshape((b, 1, s, s))?; // [B, 1, S, S]
            offset += s * s;
            let up = easel_nn::pyramid::expand(&img, s, s)?; // [B, C, S, S]
            img = (&up + level.forward(&noise, &up, labels, mode)?)?; // I_k = expand(I_{k+1}) + h_k
            out.push(img.clone());
        }
        Ok(out)
    }
}

impl crate::ImageGenerator for LapganGenerator {
    fn latent_dim(&self) -> usize {
        self.base.nz() + self.plane_sizes().iter().map(|s| s * s).sum::<usize>()
    }
    fn image_shape(&self) -> [usize; 3] {
        let s = self
            .levels
            .last()
            .map(|l| l.cfg.image_size)
            .unwrap_or(self.base.image_size());
        [self.base.channels(), s, s]
    }
    fn num_classes(&self) -> usize {
        self.base.num_classes()
    }
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>, mode: BnMode) -> Result<Tensor> {
        let mut levels = self.generate_levels(z, labels, mode)?;
        // Residual sums can leave [-1, 1] slightly; images are clamped like a tanh output.
        levels
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("LAPGAN has no levels".into()))?
            .clamp(-1f32, 1f32)
    }
    fn generate_levels(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
    ) -> Result<Vec<Tensor>> {
        LapganGenerator::generate_levels(self, z, labels, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use easel_nn::ParamStore;

    fn mlp_cfg(classes: usize) -> MlpConfig {
        MlpConfig {
            num_classes: classes,
            g_hidden: 12,
            d_hidden: 6,
            ..MlpConfig::new(3, 5)
        }
    }

    fn sorted_names(store: &ParamStore) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<_> = store
            .tensors()
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn mlp_names_shapes_and_conditional_inputs() {
        let dev = Device::Cpu;
        // Defaults are eyescream's.
        let d = MlpConfig::new(1, 100);
        assert_eq!(
            (
                d.image_size,
                d.g_hidden,
                d.d_hidden,
                d.dropout,
                d.leaky_slope
            ),
            (8, 1200, 600, 0.5, 0.2)
        );
        let parsed: MlpConfig = serde_json::from_str(r#"{"channels": 1, "nz": 100}"#).unwrap();
        assert_eq!(parsed, d);
        for classes in [0, 4] {
            let cfg = mlp_cfg(classes);
            let gs = ParamStore::new(&dev, 0);
            let g = MlpGenerator::new(&cfg, gs.var_builder()).unwrap();
            let ds = ParamStore::new(&dev, 1);
            let d = MlpDiscriminator::new(&cfg, ds.var_builder()).unwrap();
            // nn.Sequential indices: Linear 0, BatchNorm1d 1, ReLU 2, Linear 3, BatchNorm1d 4,
            // ReLU 5, Linear 6, Tanh 7.
            let s = |n: &str, d: &[usize]| (n.to_string(), d.to_vec());
            assert_eq!(
                sorted_names(&gs),
                [
                    s("main.0.bias", &[12]),
                    s("main.0.weight", &[12, 5 + classes]),
                    s("main.1.bias", &[12]),
                    s("main.1.running_mean", &[12]),
                    s("main.1.running_var", &[12]),
                    s("main.1.weight", &[12]),
                    s("main.3.bias", &[12]),
                    s("main.3.weight", &[12, 12]),
                    s("main.4.bias", &[12]),
                    s("main.4.running_mean", &[12]),
                    s("main.4.running_var", &[12]),
                    s("main.4.weight", &[12]),
                    s("main.6.bias", &[3 * 64]),
                    s("main.6.weight", &[3 * 64, 12]),
                ]
            );
            // Linear 0, LeakyReLU 1, Dropout 2, Linear 3, LeakyReLU 4, Dropout 5, Linear 6.
            assert_eq!(
                sorted_names(&ds),
                [
                    s("main.0.bias", &[6]),
                    s("main.0.weight", &[6, 3 * 64 + classes]),
                    s("main.3.bias", &[6]),
                    s("main.3.weight", &[6, 6]),
                    s("main.6.bias", &[1]),
                    s("main.6.weight", &[1, 6]),
                ]
            );
            let z = Tensor::randn(0f32, 1., (2, 5), &dev).unwrap();
            let l = Tensor::new(&[3u32, 0], &dev).unwrap();
            let labels = (classes > 0).then_some(&l);
            let x = g.forward(&z, labels, BnMode::Train).unwrap();
            assert_eq!(x.dims(), [2, 3, 8, 8]);
            let m = x.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert!(m.to_scalar::<f32>().unwrap() <= 1.0, "tanh output");
            assert_eq!(d.forward(&x, labels, None).unwrap().dims(), [2]);
            // Wrong label use is refused with the reason.
            let wrong = if classes > 0 { None } else { Some(&l) };
            let e = g.forward(&z, wrong, BnMode::Train).unwrap_err().to_string();
            assert!(
                e.contains("needs labels") || e.contains("unconditional"),
                "{e}"
            );
            let e = d.forward(&x, wrong, None).unwrap_err().to_string();
            assert!(
                e.contains("needs labels") || e.contains("unconditional"),
                "{e}"
            );
        }
        let cfg = mlp_cfg(0);
        let g = MlpGenerator::new(&cfg, ParamStore::new(&dev, 0).var_builder()).unwrap();
        let d = MlpDiscriminator::new(&cfg, ParamStore::new(&dev, 1).var_builder()).unwrap();
        let e = g
            .forward(
                &Tensor::zeros((2, 6), DType::F32, &dev).unwrap(),
                None,
                BnMode::Train,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("[B, 5]") && e.contains("[2, 6]"), "{e}");
        let bad = Tensor::zeros((2, 3, 16, 16), DType::F32, &dev).unwrap();
        let e = d.forward(&bad, None, None).unwrap_err().to_string();
        assert!(
            e.contains("[B, 3, 8, 8]") && e.contains("[2, 3, 16, 16]"),
            "{e}"
        );
        let l = Tensor::new(&[0u32, 1, 1], &dev).unwrap();
        let e = MlpGenerator::new(&mlp_cfg(2), ParamStore::new(&dev, 0).var_builder())
            .unwrap()
            .forward(
                &Tensor::zeros((2, 5), DType::F32, &dev).unwrap(),
                Some(&l),
                BnMode::Train,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels of shape [2]"), "{e}");
        for bad in [
            MlpConfig {
                g_hidden: 0,
                ..mlp_cfg(0)
            },
            MlpConfig {
                dropout: 1.0,
                ..mlp_cfg(0)
            },
            MlpConfig {
                num_classes: 1,
                ..mlp_cfg(0)
            },
        ] {
            let e = MlpDiscriminator::new(&bad, ParamStore::new(&dev, 0).var_builder())
                .unwrap_err()
                .to_string();
            assert!(e.contains("LAPGAN MLP base"), "{e}");
        }
    }

    /// Deterministic weights `[out, in]` with mixed signs.
    fn w(out: usize, inp: usize, k: f64) -> Vec<Vec<f64>> {
        (0..out)
            .map(|i| {
                (0..inp)
                    .map(|j| ((i * 7 + j * 3) % 11) as f64 * k - 0.25)
                    .collect()
            })
            .collect()
    }

    fn t2(v: &[Vec<f64>]) -> Tensor {
        let (r, c) = (v.len(), v[0].len());
        let flat: Vec<f32> = v.iter().flatten().map(|x| *x as f32).collect();
        Tensor::from_vec(flat, (r, c), &Device::Cpu).unwrap()
    }

    fn t1(v: &[f64]) -> Tensor {
        Tensor::from_vec(
            v.iter().map(|x| *x as f32).collect::<Vec<_>>(),
            v.len(),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// `W x + b` by hand.
    fn affine(w: &[Vec<f64>], b: &[f64], x: &[f64]) -> Vec<f64> {
        w.iter()
            .zip(b)
            .map(|(row, b)| row.iter().zip(x).map(|(a, x)| a * x).sum::<f64>() + b)
            .collect()
    }

    #[test]
    fn mlp_forward_matches_a_hand_computed_case() {
        use std::collections::HashMap;
        let dev = Device::Cpu;
        // 1 channel, 2×2 images, nz 2, 2 classes, G hidden 3, D hidden 3.
        let cfg = MlpConfig {
            image_size: 2,
            channels: 1,
            nz: 2,
            g_hidden: 3,
            d_hidden: 3,
            num_classes: 2,
            dropout: 0.5,
            leaky_slope: 0.2,
        };
        let (gw0, gw2, gw4) = (w(3, 4, 0.1), w(3, 3, 0.07), w(4, 3, 0.09));
        let (gb0, gb2, gb4) = (vec![0.1, -0.2, 0.05], vec![0.0, 0.3, -0.1], vec![0.2; 4]);
        // Batch norms (sampling mode): γ, β, running mean and variance per hidden unit.
        let bn1 = [
            vec![1.2, 0.8, 1.0],
            vec![0.1, 0.0, -0.1],
            vec![0.05, -0.02, 0.0],
            vec![0.5, 2.0, 1.0],
        ];
        let bn4 = [
            vec![0.9, 1.1, 1.3],
            vec![0.0, 0.2, 0.1],
            vec![0.01, 0.03, -0.04],
            vec![1.5, 0.7, 0.9],
        ];
        let bn = |v: Vec<f64>, p: &[Vec<f64>; 4]| -> Vec<f64> {
            // PyTorch BatchNorm1d.eval(): γ·(x − running_mean)/√(running_var + 1e-5) + β.
            v.iter()
                .enumerate()
                .map(|(i, x)| p[0][i] * (x - p[2][i]) / (p[3][i] + 1e-5).sqrt() + p[1][i])
                .collect()
        };
        let (dw0, dw3, dw6) = (w(3, 6, 0.08), w(3, 3, 0.06), w(1, 3, 0.1));
        let (db0, db3, db6) = (vec![-0.1, 0.2, 0.0], vec![0.05, -0.3, 0.1], vec![0.02]);
        let mut gt = HashMap::new();
        for (n, wt, b) in [("0", &gw0, &gb0), ("3", &gw2, &gb2), ("6", &gw4, &gb4)] {
            gt.insert(format!("main.{n}.weight"), t2(wt));
            gt.insert(format!("main.{n}.bias"), t1(b));
        }
        for (n, p) in [("1", &bn1), ("4", &bn4)] {
            for (k, v) in ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .zip(p)
            {
                gt.insert(format!("main.{n}.{k}"), t1(v));
            }
        }
        let g = MlpGenerator::new(&cfg, VarBuilder::from_tensors(gt, DType::F32, &dev)).unwrap();
        let mut dt = HashMap::new();
        for (n, wt, b) in [("0", &dw0, &db0), ("3", &dw3, &db3), ("6", &dw6, &db6)] {
            dt.insert(format!("main.{n}.weight"), t2(wt));
            dt.insert(format!("main.{n}.bias"), t1(b));
        }
        let d =
            MlpDiscriminator::new(&cfg, VarBuilder::from_tensors(dt, DType::F32, &dev)).unwrap();

        let zs = [[0.5, -1.0], [2.0, 0.25]];
        let labels = [1u32, 0];
        let z = t2(&zs.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
        let l = Tensor::new(&labels, &dev).unwrap();
        let x = g.forward(&z, Some(&l), BnMode::Eval).unwrap();
        let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let relu = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0)).collect::<Vec<_>>();
        let lrelu = |v: Vec<f64>| {
            v.into_iter()
                .map(|x| if x > 0.0 { x } else { 0.2 * x })
                .collect::<Vec<_>>()
        };
        let mut images = Vec::new();
        for (zi, &li) in zs.iter().zip(&labels) {
            let mut inp = zi.to_vec();
            inp.extend((0..2).map(|c| if c == li as usize { 1.0 } else { 0.0 }));
            let h = relu(bn(affine(&gw0, &gb0, &inp), &bn1));
            let h = relu(bn(affine(&gw2, &gb2, &h), &bn4));
            let y: Vec<f64> = affine(&gw4, &gb4, &h).into_iter().map(f64::tanh).collect();
            images.push(y);
        }
        let want: Vec<f64> = images.iter().flatten().copied().collect();
        for (a, b) in got.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "G {got:?} vs {want:?}");
        }

        // D on those images, with dropout masks from a known uniform sequence (p = 0.5: a unit
        // is kept, ×2, when its uniform is ≥ 0.5), and without dropout.
        let seq = [0.1f32, 0.7, 0.6, 0.4, 0.9, 0.2];
        let mut calls = Vec::new();
        let mut uniforms = |n: usize| {
            calls.push(n);
            (0..n).map(|i| seq[(i + calls.len()) % seq.len()]).collect()
        };
        let train: Vec<f32> = d
            .forward(&x, Some(&l), Some(&mut uniforms))
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(calls, [6, 6], "one [B, d_hidden] mask per hidden layer");
        let eval: Vec<f32> = d.forward(&x, Some(&l), None).unwrap().to_vec1().unwrap();
        let mask = |call: usize, b: usize, j: usize| {
            if seq[(b * 3 + j + call) % seq.len()] < 0.5 {
                0.0
            } else {
                2.0
            }
        };
        for (bi, (img, &li)) in images.iter().zip(&labels).enumerate() {
            let mut inp = img.clone();
            inp.extend((0..2).map(|c| if c == li as usize { 1.0 } else { 0.0 }));
            for (dropout, got) in [(true, train[bi]), (false, eval[bi])] {
                let mut h = lrelu(affine(&dw0, &db0, &inp));
                if dropout {
                    h.iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v *= mask(1, bi, j));
                }
                let mut h = lrelu(affine(&dw3, &db3, &h));
                if dropout {
                    h.iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v *= mask(2, bi, j));
                }
                let want = affine(&dw6, &db6, &h)[0];
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "D (dropout {dropout}) sample {bi}: {got} vs {want}"
                );
            }
        }
        assert_ne!(train, eval, "the masks changed the logits");
    }

    #[test]
    fn mlp_discriminator_params_freeze_and_chain_uses_the_mlp_base() {
        use crate::ImageGenerator;
        let dev = Device::Cpu;
        let cfg = MlpConfig {
            channels: 1,
            ..mlp_cfg(0)
        };
        let ds = ParamStore::new(&dev, 1);
        let d = MlpDiscriminator::new(&cfg, ds.var_builder()).unwrap();
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 1., (2, 1, 8, 8), &dev).unwrap())
                .unwrap();
        let g = ops::with_frozen_params(|| d.forward(&x, None, None))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(x.as_tensor()).is_some(), "gradient reaches the input");
        for (name, t) in ds.tensors() {
            assert!(g.get(&t).is_none(), "{name} is frozen");
        }
        let g = d.forward(&x, None, None).unwrap().sum_all().unwrap();
        let g = g.backward().unwrap();
        assert!(ds.tensors().values().all(|t| g.get(t).is_some()));

        let base = MlpGenerator::new(&cfg, ParamStore::new(&dev, 0).var_builder()).unwrap();
        let lv = LevelConfig::new(16, 1, 4, 4);
        let l1 = LevelGenerator::new(&lv, ParamStore::new(&dev, 2).var_builder()).unwrap();
        let chain = LapganGenerator::from_parts(base.clone(), vec![l1]).unwrap();
        assert_eq!(chain.latent_dim(), 5 + 256);
        assert_eq!(chain.image_shape(), [1, 16, 16]);
        let z = Tensor::randn(0f32, 1., (3, 5 + 256), &dev).unwrap();
        let levels = chain.generate_levels(&z, None, BnMode::Eval).unwrap();
        let want = base
            .forward(&z.narrow(1, 0, 5).unwrap(), None, BnMode::Eval)
            .unwrap();
        assert_eq!(max_abs_diff(&levels[0], &want), 0.0);
        assert_eq!(levels[1].dims(), [3, 1, 16, 16]);
    }

    #[test]
    fn shapes_names_and_conditioning() {
        let cfg = LevelConfig {
            num_classes: 2,
            ..LevelConfig::new(16, 3, 8, 4)
        };
        let gs = ParamStore::new(&Device::Cpu, 0);
        let g = LevelGenerator::new(&cfg, gs.var_builder()).unwrap();
        let ds = ParamStore::new(&Device::Cpu, 0);
        let d = LevelDiscriminator::new(&cfg, ds.var_builder()).unwrap();
        assert_eq!(gs.tensors()["conv1.weight"].dims(), [8, 1 + 3 + 2, 5, 5]);
        // The paper's input: the image l + h (C channels) and the label planes.
        assert_eq!(ds.tensors()["conv1.weight"].dims(), [4, 3 + 2, 4, 4]);
        let concat = LevelConfig {
            d_input: LevelDInput::Concat,
            ..cfg.clone()
        };
        let cs = ParamStore::new(&Device::Cpu, 0);
        LevelDiscriminator::new(&concat, cs.var_builder()).unwrap();
        assert_eq!(cs.tensors()["conv1.weight"].dims(), [4, 3 + 3 + 2, 4, 4]);
        let noise = Tensor::randn(0f32, 1., (2, 1, 16, 16), &Device::Cpu).unwrap();
        let up = Tensor::randn(0f32, 1., (2, 3, 16, 16), &Device::Cpu).unwrap();
        let l = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let h = g.forward(&noise, &up, Some(&l), BnMode::Train).unwrap();
        assert_eq!(h.dims(), [2, 3, 16, 16]);
        assert_eq!(
            d.forward(&h, &up, Some(&l), BnMode::Train, None)
                .unwrap()
                .dims(),
            [2]
        );
        assert!(g
            .forward(&noise, &up, None, BnMode::Train)
            .unwrap_err()
            .to_string()
            .contains("needs labels"));
        let bad = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(d
            .forward(&bad, &up, Some(&l), BnMode::Eval, None)
            .unwrap_err()
            .to_string()
            .contains("[B, 3, 16, 16]"));
    }

    #[test]
    fn chain_splits_z_and_each_level_refines_the_last() {
        use crate::ImageGenerator;
        let base_cfg = crate::dcgan::Config {
            image_size: 8,
            channels: 1,
            nz: 5,
            ngf: 4,
            ndf: 4,
            ..Default::default()
        };
        let base =
            crate::dcgan::Generator::new(&base_cfg, ParamStore::new(&Device::Cpu, 0).var_builder())
                .unwrap();
        let lv = |s| LevelConfig::new(s, 1, 4, 4);
        let l1 =
            LevelGenerator::new(&lv(16), ParamStore::new(&Device::Cpu, 1).var_builder()).unwrap();
        let l2 =
            LevelGenerator::new(&lv(32), ParamStore::new(&Device::Cpu, 2).var_builder()).unwrap();
        let g = LapganGenerator::from_parts(base, vec![l1.clone(), l2]).unwrap();
        assert_eq!(g.latent_dim(), 5 + 256 + 1024);
        assert_eq!(g.image_shape(), [1, 32, 32]);
        let z = Tensor::randn(0f32, 1., (3, g.latent_dim()), &Device::Cpu).unwrap();
        let levels = g.generate_levels(&z, None, BnMode::Eval).unwrap();
        let dims: Vec<_> = levels.iter().map(|t| t.dims().to_vec()).collect();
        assert_eq!(
            dims,
            [vec![3, 1, 8, 8], vec![3, 1, 16, 16], vec![3, 1, 32, 32]]
        );
        // Level 1 = expand(level 0) + its residual generator's output on the right noise plane.
        let noise = z
            .narrow(1, 5, 256)
            .unwrap()
            .reshape((3, 1, 16, 16))
            .unwrap();
        let up = easel_nn::pyramid::expand(&levels[0], 16, 16).unwrap();
        let want = (&up + l1.forward(&noise, &up, None, BnMode::Eval).unwrap()).unwrap();
        let d = max_abs_diff(&want, &levels[1]);
        assert!(d < 1e-6, "{d}");
        // A mismatched chain is refused.
        let base2 =
            crate::dcgan::Generator::new(&base_cfg, ParamStore::new(&Device::Cpu, 0).var_builder())
                .unwrap();
        let l3 =
            LevelGenerator::new(&lv(32), ParamStore::new(&Device::Cpu, 2).var_builder()).unwrap();
        assert!(LapganGenerator::from_parts(base2, vec![l3])
            .unwrap_err()
            .to_string()
            .contains("cannot follow size 8"));
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A conditional level discriminator with O(1) weights (×25 the 0.02 initialisation) and
    /// batch norm running statistics from one training pass.
    fn trained_level_d(cfg: &LevelConfig, seed: u64) -> LevelDiscriminator {
        let dev = Device::Cpu;
        let store = ParamStore::new(&dev, seed);
        let d = LevelDiscriminator::new(cfg, store.var_builder()).unwrap();
        let scaled = store
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let v = if k.starts_with("conv") {
                    (v * 25.0).unwrap()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        store.load_tensors(&scaled).unwrap();
        let s = cfg.image_size;
        let h = Tensor::randn(0f32, 0.3, (4, cfg.channels, s, s), &dev).unwrap();
        let l = Tensor::randn(0f32, 1., (4, cfg.channels, s, s), &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 1], &dev).unwrap();
        d.forward(&h, &l, Some(&y), BnMode::Train, None).unwrap();
        d
    }

    #[test]
    fn sum_input_discriminator_sees_only_the_image_l_plus_h() {
        let dev = Device::Cpu;
        let cfg = LevelConfig {
            num_classes: 3,
            ..LevelConfig::new(16, 2, 4, 4)
        };
        assert_eq!(
            cfg.d_input,
            LevelDInput::Sum,
            "the paper's input is the default"
        );
        let h = Tensor::randn(0f32, 0.3, (3, 2, 16, 16), &dev).unwrap();
        let l = Tensor::randn(0f32, 1., (3, 2, 16, 16), &dev).unwrap();
        let delta = Tensor::randn(0f32, 0.5, (3, 2, 16, 16), &dev).unwrap();
        let (h2, l2) = ((&h + &delta).unwrap(), (&l - &delta).unwrap());
        let y = Tensor::new(&[2u32, 0, 1], &dev).unwrap();
        for (d_input, invariant) in [(LevelDInput::Sum, true), (LevelDInput::Concat, false)] {
            let d = trained_level_d(
                &LevelConfig {
                    d_input,
                    ..cfg.clone()
                },
                3,
            );
            let a = d.forward(&h, &l, Some(&y), BnMode::Eval, None).unwrap();
            let b = d.forward(&h2, &l2, Some(&y), BnMode::Eval, None).unwrap();
            let diff = max_abs_diff(&a, &b);
            let scale = a.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(
                scale > 1e-3,
                "{d_input:?}: logits are not trivially zero ({a})"
            );
            if invariant {
                assert!(
                    diff < 1e-5,
                    "{d_input:?}: (h + δ, l − δ) changed the logits by {diff}"
                );
            } else {
                assert!(
                    diff > 1e-3,
                    "{d_input:?}: logits should see h and l apart ({diff})"
                );
            }
            // Either way the labels still matter.
            let y2 = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
            let c = d.forward(&h, &l, Some(&y2), BnMode::Eval, None).unwrap();
            assert!(
                max_abs_diff(&a, &c) > 1e-2 * scale,
                "{d_input:?}: labels ignored"
            );
        }
    }

    #[test]
    fn level_discriminator_dropout_matches_a_hand_computation() {
        let dev = Device::Cpu;
        // p = 0.25: kept units ×4/3, so a wrong scale (or none) shows.
        let cfg = LevelConfig {
            num_classes: 2,
            d_dropout: 0.25,
            ..LevelConfig::new(16, 1, 3, 2)
        };
        let store = ParamStore::new(&dev, 11);
        let d = LevelDiscriminator::new(&cfg, store.var_builder()).unwrap();
        let h = Tensor::randn(0f32, 0.3, (2, 1, 16, 16), &dev).unwrap();
        let l = Tensor::randn(0f32, 1., (2, 1, 16, 16), &dev).unwrap();
        let y = Tensor::new(&[1u32, 0], &dev).unwrap();
        // Features [B, 2ndf, S/4, S/4] = [2, 4, 4, 4]; the output layer is linear in them.
        let f: Vec<f32> = d
            .features(&h, &l, Some(&y), BnMode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let per = 4 * 4 * 4;
        assert_eq!(f.len(), 2 * per);
        let w: Vec<f32> = store.tensors()["conv3.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(); // [1, 4, 4, 4]
        let bias = store.tensors()["conv3.bias"].to_vec1::<f32>().unwrap()[0] as f64;
        let logit = |mask: &dyn Fn(usize) -> f64, b: usize| -> f64 {
            bias + (0..per)
                .map(|j| w[j] as f64 * f[b * per + j] as f64 * mask(b * per + j))
                .sum::<f64>()
        };
        // A known uniform sequence: unit i of call c gets seq[(i + c) % 7].
        let seq = [0.1f32, 0.7, 0.24, 0.25, 0.9, 0.2, 0.5];
        let source = |calls: &mut Vec<usize>, n: usize| -> Vec<f32> {
            calls.push(n);
            let c = calls.len();
            (0..n).map(|i| seq[(i + c) % seq.len()]).collect()
        };
        let mut calls = Vec::new();
        let mut u = |n: usize| source(&mut calls, n);
        let train1: Vec<f32> = d
            .forward(&h, &l, Some(&y), BnMode::Eval, Some(&mut u))
            .unwrap()
            .to_vec1()
            .unwrap();
        let train2: Vec<f32> = d
            .forward(&h, &l, Some(&y), BnMode::Eval, Some(&mut u))
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            calls,
            [2 * per, 2 * per],
            "one uniform per feature, per call"
        );
        let eval: Vec<f32> = d
            .forward(&h, &l, Some(&y), BnMode::Eval, None)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mask = |call: usize| {
            move |i: usize| {
                if seq[(i + call) % seq.len()] < 0.25 {
                    0.0
                } else {
                    4.0 / 3.0
                }
            }
        };
        for b in 0..2 {
            for (got, want, what) in [
                (eval[b], logit(&|_| 1.0, b), "eval: no dropout"),
                (train1[b], logit(&mask(1), b), "first training call"),
                (train2[b], logit(&mask(2), b), "second training call"),
            ] {
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "{what}, sample {b}: {got} vs {want}"
                );
            }
        }
        assert_ne!(train1, eval, "dropout changed the logits");
        assert_ne!(train1, train2, "fresh masks on every call");
        // The same uniforms give the same logits.
        let mut calls2 = Vec::new();
        let mut u2 = |n: usize| source(&mut calls2, n);
        let again: Vec<f32> = d
            .forward(&h, &l, Some(&y), BnMode::Eval, Some(&mut u2))
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(again, train1);
        // p = 0 draws nothing (runs trained without level dropout resume on the same stream).
        let none = LevelDiscriminator::new(
            &LevelConfig {
                d_dropout: 0.0,
                ..cfg.clone()
            },
            store.var_builder(),
        )
        .unwrap();
        let mut calls0 = Vec::new();
        let mut u0 = |n: usize| source(&mut calls0, n);
        let z: Vec<f32> = none
            .forward(&h, &l, Some(&y), BnMode::Eval, Some(&mut u0))
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(calls0.is_empty());
        assert_eq!(z, eval);
    }

    #[test]
    fn level_config_is_validated_and_defaults_to_the_paper() {
        let dev = Device::Cpu;
        let cfg: LevelConfig =
            serde_json::from_str(r#"{"image_size": 16, "channels": 1, "ngf": 4, "ndf": 4}"#)
                .unwrap();
        assert_eq!(cfg, LevelConfig::new(16, 1, 4, 4));
        assert_eq!((cfg.d_input, cfg.d_dropout), (LevelDInput::Sum, 0.5));
        for (bad, want) in [
            (
                LevelConfig {
                    d_dropout: 1.0,
                    ..cfg.clone()
                },
                "d_dropout must be in [0, 1), got 1",
            ),
            (
                LevelConfig {
                    d_dropout: -0.1,
                    ..cfg.clone()
                },
                "got -0.1",
            ),
            (
                LevelConfig {
                    d_dropout: f64::NAN,
                    ..cfg.clone()
                },
                "got NaN",
            ),
            (LevelConfig::new(10, 1, 4, 4), "got 10"),
        ] {
            let e = LevelDiscriminator::new(&bad, ParamStore::new(&dev, 0).var_builder())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            let e = LevelGenerator::new(&bad, ParamStore::new(&dev, 0).var_builder())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = serde_json::from_str::<LevelConfig>(
            r#"{"image_size": 16, "channels": 1, "ngf": 4, "ndf": 4, "d_input": "add"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("add") && e.contains("sum") && e.contains("concat"),
            "{e}"
        );
    }
}
