//! Single-image super-resolution networks:
//!
//! - [`Arch::Johnson`]: the ×4 / ×8 network of Johnson, Alahi & Fei-Fei, "Perceptual Losses for
//!   Real-Time Style Transfer and Super-Resolution", ECCV 2016 (arXiv:1603.08155, supplementary
//!   table 2): a 9×9 convolution, four residual blocks, log₂(scale) fractionally-strided 3×3
//!   convolutions (stride ½), each with batch norm and ReLU, and a 9×9 convolution to RGB with a
//!   tanh. No PyTorch reference exists; names follow pytorch/examples' `TransformerNet`
//!   (`conv1.conv2d.weight`, `res1.conv1.conv2d.weight`, …), with batch norms `bn1`,
//!   `res{i}.bn1`, `up{i}.weight` for the transposed convolutions and `upbn{i}` after them, and
//!   `conv_out.conv2d`. Convolutions are reflection-padded as in `TransformerNet`.
//! - [`Arch::Srresnet`]: SRResNet of Ledig et al., "Photo-Realistic Single Image Super-Resolution
//!   Using a Generative Adversarial Network", CVPR 2017 (arXiv:1609.04802): 9×9 convolution and
//!   PReLU, `B` residual blocks (conv–BN–PReLU–conv–BN), a convolution–BN with a skip from the
//!   first layer, log₂(scale) × (convolution to 4× channels, pixel shuffle ×2, PReLU), and a 9×9
//!   convolution. Names are those of the common PyTorch implementation `leftthomas/SRGAN`
//!   (`model.py`, `Generator`): `block1.0.weight`, `block1.1.weight` (PReLU), `block2.conv1.weight`,
//!   `block2.bn1.running_mean`, …, `block7.0.weight`, `block7.1.weight`,
//!   `block8.0.conv.weight`, `block8.0.prelu.weight`, `block8.2.weight` (residual blocks are
//!   `block2 … block{B+1}`, so `B = 5` reproduces leftthomas exactly; the paper has `B = 16`).
//! - [`Discriminator`]: SRGAN's discriminator, as leftthomas' `Discriminator` (`net.0.weight`,
//!   `net.3.running_var`, …, `net.26.bias`), returning logits instead of their sigmoid.
//!
//! Networks see images in [0, 1] as the PyTorch code does ([`SrNet::forward`]);
//! [`SrNet::upscale`] takes and returns easel's [−1, 1]. Batch norm follows [`BnMode`]:
//! `Train` while training, `Eval` (running statistics) for inference, which makes every image
//! and every tile independent of the others.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::{
    layers2::pixel_shuffle, ops, BatchNorm2d, BnMode, Conv2d, Conv2dConfig, ConvTranspose2d,
    ConvTranspose2dConfig, PReLU,
};
use serde::{Deserialize, Serialize};

use crate::style::{torch_uniform, ConvLayer};

/// Which super-resolution network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Johnson et al.'s network (batch norm, ReLU, fractionally-strided convolutions).
    Johnson,
    /// Ledig et al.'s SRResNet (PReLU, pixel shuffle, long skip).
    Srresnet,
}

/// Super-resolution network hyper-parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `johnson` or `srresnet`.
    pub arch: Arch,
    /// Upscaling factor: 2, 4 or 8 (a power of two; each ×2 is one upsampling layer).
    pub scale: usize,
    /// Feature channels (64 in both papers).
    pub width: usize,
    /// Residual blocks (Johnson: 4; SRResNet: 16 in the paper, 5 in leftthomas/SRGAN).
    pub residual_blocks: usize,
    /// Global residual learning (Kim et al., VDSR, CVPR 2016): the network predicts the
    /// difference from a bicubic upsampling of its input, which the caller adds
    /// ([`SrNet::upscale`] returns the difference then). The last convolution starts at zero, so
    /// an untrained network gives exactly bicubic and training only has to improve on it.
    /// Default `false` (the papers' networks).
    #[serde(default)]
    pub residual: bool,
}

impl Config {
    /// Johnson et al.'s ×4 network.
    pub fn johnson_x4() -> Self {
        Self {
            arch: Arch::Johnson,
            scale: 4,
            width: 64,
            residual_blocks: 4,
            residual: false,
        }
    }
    /// Johnson et al.'s ×8 network.
    pub fn johnson_x8() -> Self {
        Self {
            scale: 8,
            ..Self::johnson_x4()
        }
    }
    /// SRResNet ×4 as in the paper (16 residual blocks).
    pub fn srresnet_x4() -> Self {
        Self {
            arch: Arch::Srresnet,
            scale: 4,
            width: 64,
            residual_blocks: 16,
            residual: false,
        }
    }
    /// Checks the values, naming the key on error.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.scale, 2 | 4 | 8) {
            candle_core::bail!(
                "super-resolution scale must be 2, 4 or 8, got {}",
                self.scale
            )
        }
        if self.width == 0 {
            candle_core::bail!("super-resolution width must be positive")
        }
        Ok(())
    }
    /// Number of ×2 upsampling layers.
    pub fn upsamplings(&self) -> usize {
        self.scale.trailing_zeros() as usize
    }
}

/// The last convolution's weight init: PyTorch's default, or zero for a residual network (its
/// bias starts at zero in either case).
fn last_init(cfg: &Config, fan_in: usize) -> Init {
    if cfg.residual {
        Init::Const(0.)
    } else {
        torch_uniform(fan_in)
    }
}

fn bn(c: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    BatchNorm2d::new(c, Init::Const(1.), vb)
}

fn conv(c_in: usize, c_out: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    Conv2d::new(
        c_in,
        c_out,
        Conv2dConfig::new(k, 1, k / 2),
        torch_uniform(c_in * k * k),
        vb,
    )
}

// ---------------------------------------------------------------------------------------------
// Johnson et al.

#[derive(Debug, Clone)]
struct JohnsonBlock {
    conv1: ConvLayer,
    bn1: BatchNorm2d,
    conv2: ConvLayer,
    bn2: BatchNorm2d,
}

#[derive(Debug, Clone)]
struct Johnson {
    conv1: ConvLayer,
    bn1: BatchNorm2d,
    res: Vec<JohnsonBlock>,
    up: Vec<(ConvTranspose2d, BatchNorm2d)>,
    conv_out: ConvLayer,
}

impl Johnson {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.width;
        let res = (1..=cfg.residual_blocks)
            .map(|i| {
                let vb = vb.pp(format!("res{i}"));
                Ok(JohnsonBlock {
                    conv1: ConvLayer::new(c, c, 3, 1, vb.pp("conv1"))?,
                    bn1: bn(c, vb.pp("bn1"))?,
                    conv2: ConvLayer::new(c, c, 3, 1, vb.pp("conv2"))?,
                    bn2: bn(c, vb.pp("bn2"))?,
                })
            })
            .collect::<Result<_>>()?;
        let mut tcfg = ConvTranspose2dConfig::new(3, 2, 1);
        tcfg.output_padding = 1;
        let up = (1..=cfg.upsamplings())
            .map(|i| {
                Ok((
                    ConvTranspose2d::new(
                        c,
                        c,
                        tcfg,
                        torch_uniform(c * 9),
                        vb.pp(format!("up{i}")),
                    )?,
                    bn(c, vb.pp(format!("upbn{i}")))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv1: ConvLayer::new(3, c, 9, 1, vb.pp("conv1"))?,
            bn1: bn(c, vb.pp("bn1"))?,
            res,
            up,
            conv_out: ConvLayer::with_init(c, 3, 9, 1, last_init(cfg, c * 81), vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let relu = Some(ops::Activation::Relu);
        let mut y = self.bn1.forward_act(&self.conv1.forward(x)?, mode, relu)?; // [B, C, H, W]
        for r in &self.res {
            let t = r.bn1.forward_act(&r.conv1.forward(&y)?, mode, relu)?;
            y = (&y + r.bn2.forward_t(&r.conv2.forward(&t)?, mode)?)?; // [B, C, H, W]
        }
        for (t, b) in &self.up {
            y = b.forward_act(&t.forward(&y)?, mode, relu)?; // [B, C, 2H, 2W]
        }
        let y = ops::tanh(&self.conv_out.forward(&y)?)?; // [B, 3, s·H, s·W] in (−1, 1)
        y.affine(0.5, 0.5) // [0, 1]
    }
}

// ---------------------------------------------------------------------------------------------
// SRResNet (leftthomas/SRGAN names)

#[derive(Debug, Clone)]
struct SrBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    prelu: PReLU,
    conv2: Conv2d,
    bn2: BatchNorm2d,
}

#[derive(Debug, Clone)]
struct Srresnet {
    head: (Conv2d, PReLU),
    res: Vec<SrBlock>,
    mid: (Conv2d, BatchNorm2d),
    up: Vec<(Conv2d, PReLU)>,
    tail: Conv2d,
}

impl Srresnet {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.width;
        let n = cfg.residual_blocks;
        let res = (0..n)
            .map(|i| {
                let vb = vb.pp(format!("block{}", i + 2));
                Ok(SrBlock {
                    conv1: conv(c, c, 3, vb.pp("conv1"))?,
                    bn1: bn(c, vb.pp("bn1"))?,
                    prelu: PReLU::new(1, vb.pp("prelu"))?,
                    conv2: conv(c, c, 3, vb.pp("conv2"))?,
                    bn2: bn(c, vb.pp("bn2"))?,
                })
            })
            .collect::<Result<_>>()?;
        let mid = vb.pp(format!("block{}", n + 2));
        let last = vb.pp(format!("block{}", n + 3));
        let ups = cfg.upsamplings();
        let up = (0..ups)
            .map(|i| {
                let vb = last.pp(i.to_string());
                Ok((
                    conv(c, 4 * c, 3, vb.pp("conv"))?,
                    PReLU::new(1, vb.pp("prelu"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let b1 = vb.pp("block1");
        Ok(Self {
            head: (conv(3, c, 9, b1.pp("0"))?, PReLU::new(1, b1.pp("1"))?),
            res,
            mid: (conv(c, c, 3, mid.pp("0"))?, bn(c, mid.pp("1"))?),
            up,
            tail: Conv2d::new(
                c,
                3,
                Conv2dConfig::new(9, 1, 4),
                last_init(cfg, c * 81),
                last.pp(ups.to_string()),
            )?,
        })
    }

    fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let b1 = self.head.1.forward(&self.head.0.forward(x)?)?; // [B, C, H, W]
        let mut y = b1.clone();
        for r in &self.res {
            let t = r
                .prelu
                .forward(&r.bn1.forward_t(&r.conv1.forward(&y)?, mode)?)?;
            y = (&y + r.bn2.forward_t(&r.conv2.forward(&t)?, mode)?)?; // [B, C, H, W]
        }
        let mut y = (&b1 + self.mid.1.forward_t(&self.mid.0.forward(&y)?, mode)?)?;
        for (c, p) in &self.up {
            y = p.forward(&pixel_shuffle(&c.forward(&y)?, 2)?)?; // [B, C, 2H, 2W]
        }
        let y = ops::tanh(&self.tail.forward(&y)?)?; // [B, 3, s·H, s·W]
        y.affine(0.5, 0.5) // leftthomas: (tanh + 1) / 2
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Net {
    Johnson(Johnson),
    Srresnet(Srresnet),
}

/// A super-resolution network of either architecture.
#[derive(Debug, Clone)]
pub struct SrNet {
    cfg: Config,
    net: Net,
}

impl SrNet {
    /// Builds the network `cfg` describes (names: see the module docs).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let net = match cfg.arch {
            Arch::Johnson => Net::Johnson(Johnson::new(cfg, vb)?),
            Arch::Srresnet => Net::Srresnet(Srresnet::new(cfg, vb)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            net,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The PyTorch forward pass: low-resolution images in [0, 1] `[B, 3, h, w]` →
    /// `[B, 3, s·h, s·w]` in [0, 1]. Johnson's reflection pads need `h, w ≥ 5`.
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let min = if self.cfg.arch == Arch::Johnson { 5 } else { 1 };
        if c != 3 || h < min || w < min {
            candle_core::bail!(
                "super-resolution network: expected RGB images [B, 3, h, w] with h, w ≥ {min}, \
                 got shape {:?}",
                x.dims()
            )
        }
        match &self.net {
            Net::Johnson(n) => n.forward(x, mode),
            Net::Srresnet(n) => n.forward(x, mode),
        }
    }

    /// easel's convention: [−1, 1] in, [−1, 1] out, `scale` times larger. A residual network
    /// ([`Config::residual`]) returns the difference from the bicubic upsampling instead (0 when
    /// untrained), on the same scale.
    pub fn upscale(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward(&x.affine(0.5, 0.5)?, mode)?.affine(2.0, -1.0)
    }
}

/// SRGAN's discriminator (leftthomas/SRGAN `Discriminator` with base width `w`, 64 there):
/// eight 3×3 convolutions `w, w, 2w, 2w, 4w, 4w, 8w, 8w` (every second one stride 2; batch norm
/// after all but the first; LeakyReLU 0.2), global average pooling, 1×1 convolutions to `16w`
/// and to 1. Input `[B, 3, H, W]` in [0, 1], any size ≥ 1; output logits `[B]`.
#[derive(Debug, Clone)]
pub struct Discriminator {
    convs: Vec<(Conv2d, Option<BatchNorm2d>)>,
    fc1: Conv2d,
    fc2: Conv2d,
}

impl Discriminator {
    /// Builds it with base width `w` (`net.{i}.*` as in leftthomas' `nn.Sequential`).
    pub fn new(w: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("net");
        let widths = [w, w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w];
        let mut convs = Vec::new();
        let mut c_in = 3;
        let mut idx = 0;
        for (i, &c) in widths.iter().enumerate() {
            let stride = if i % 2 == 1 { 2 } else { 1 };
            let conv = Conv2d::new(
                c_in,
                c,
                Conv2dConfig::new(3, stride, 1),
                torch_uniform(c_in * 9),
                vb.pp(idx.to_string()),
            )?;
            let norm = if i == 0 {
                idx += 2; // conv, LeakyReLU
                None
            } else {
                let b = bn(c, vb.pp((idx + 1).to_string()))?;
                idx += 3; // conv, BN, LeakyReLU
                Some(b)
            };
            convs.push((conv, norm));
            c_in = c;
        }
        idx += 1; // AdaptiveAvgPool2d
        let fc1 = Conv2d::new(
            c_in,
            16 * w,
            Conv2dConfig::new(1, 1, 0),
            torch_uniform(c_in),
            vb.pp(idx.to_string()),
        )?;
        let fc2 = Conv2d::new(
            16 * w,
            1,
            Conv2dConfig::new(1, 1, 0),
            torch_uniform(16 * w),
            vb.pp((idx + 2).to_string()),
        )?;
        Ok(Self { convs, fc1, fc2 })
    }

    /// Logits `[B]` of images `[B, 3, H, W]` in [0, 1].
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let lrelu = ops::Activation::LeakyRelu(0.2);
        let mut y = x.clone();
        for (c, n) in &self.convs {
            y = c.forward(&y)?; // [B, c, H / 2^k, W / 2^k]
            y = match n {
                None => ops::activation(&y, lrelu)?,
                Some(b) => b.forward_act(&y, mode, Some(lrelu))?,
            };
        }
        let y = y.mean_keepdim(3)?.mean_keepdim(2)?; // [B, 8w, 1, 1]
        let y = ops::activation(&self.fc1.forward(&y)?, lrelu)?; // [B, 16w, 1, 1]
        self.fc2.forward(&y)?.flatten_all() // [B]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use easel_nn::ParamStore;

    fn names(store: &ParamStore) -> Vec<String> {
        store.all().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn shapes_at_odd_sizes() {
        let dev = Device::Cpu;
        for (arch, scale) in [
            (Arch::Johnson, 4),
            (Arch::Johnson, 8),
            (Arch::Srresnet, 4),
            (Arch::Srresnet, 2),
        ] {
            let cfg = Config {
                arch,
                scale,
                width: 4,
                residual_blocks: 2,
                residual: false,
            };
            let store = ParamStore::new(&dev, 0);
            let net = SrNet::new(&cfg, store.var_builder()).unwrap();
            for (h, w) in [(5, 7), (9, 6), (11, 13)] {
                let x = Tensor::zeros((2, 3, h, w), DType::F32, &dev).unwrap();
                for mode in [BnMode::Train, BnMode::Eval] {
                    let y = net.upscale(&x, mode).unwrap();
                    assert_eq!(y.dims(), [2, 3, scale * h, scale * w], "{arch:?} ×{scale}");
                }
            }
            let e = net
                .upscale(
                    &Tensor::zeros((1, 1, 8, 8), DType::F32, &dev).unwrap(),
                    BnMode::Eval,
                )
                .unwrap_err();
            assert!(e.to_string().contains("RGB"), "{e}");
        }
        let bad = Config {
            scale: 3,
            ..Config::johnson_x4()
        };
        let e = SrNet::new(&bad, ParamStore::new(&dev, 0).var_builder()).unwrap_err();
        assert!(e.to_string().contains("2, 4 or 8"), "{e}");
        let store = ParamStore::new(&dev, 0);
        let d = Discriminator::new(2, store.var_builder()).unwrap();
        let x = Tensor::zeros((3, 3, 24, 17), DType::F32, &dev).unwrap();
        assert_eq!(d.forward(&x, BnMode::Train).unwrap().dims(), [3]);
    }

    #[test]
    fn names_follow_the_pytorch_implementations() {
        let dev = Device::Cpu;
        let store = ParamStore::new(&dev, 0);
        let cfg = Config {
            residual_blocks: 5,
            ..Config::srresnet_x4()
        };
        SrNet::new(&cfg, store.var_builder()).unwrap();
        let n = names(&store);
        for want in [
            "block1.0.weight",
            "block1.1.weight",
            "block2.conv1.weight",
            "block2.bn1.running_mean",
            "block2.prelu.weight",
            "block6.bn2.bias",
            "block7.0.weight",
            "block7.1.running_var",
            "block8.0.conv.weight",
            "block8.1.prelu.weight",
            "block8.2.weight",
        ] {
            assert!(n.contains(&want.to_string()), "{want} missing: {n:?}");
        }
        // leftthomas/SRGAN Generator(scale_factor=4): 734 219 parameters (PReLUs included).
        assert_eq!(store.num_parameters(), 734_219);
        let store = ParamStore::new(&dev, 0);
        Discriminator::new(64, store.var_builder()).unwrap();
        let n = names(&store);
        for want in [
            "net.0.weight",
            "net.3.running_var",
            "net.20.weight",
            "net.24.weight",
            "net.26.bias",
        ] {
            assert!(n.contains(&want.to_string()), "{want} missing: {n:?}");
        }
        // leftthomas/SRGAN Discriminator: 5 215 425 parameters.
        assert_eq!(store.num_parameters(), 5_215_425);
        let store = ParamStore::new(&dev, 0);
        SrNet::new(&Config::johnson_x8(), store.var_builder()).unwrap();
        let n = names(&store);
        for want in [
            "conv1.conv2d.weight",
            "bn1.running_mean",
            "res4.bn2.weight",
            "up3.weight",
            "upbn3.bias",
            "conv_out.conv2d.bias",
        ] {
            assert!(n.contains(&want.to_string()), "{want} missing: {n:?}");
        }
    }
}
