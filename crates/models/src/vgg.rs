//! VGG16 and VGG19 feature extractors for perceptual losses: Simonyan & Zisserman, "Very Deep
//! Convolutional Networks for Large-Scale Image Recognition", ICLR 2015 (arXiv:1409.1556), used as
//! Gatys, Ecker & Bethge use it ("Image Style Transfer Using Convolutional Neural Networks", CVPR
//! 2016) and Johnson, Alahi & Fei-Fei ("Perceptual Losses for Real-Time Style Transfer and
//! Super-Resolution", ECCV 2016).
//!
//! Only the convolutional part (`features`) exists: 3×3 convolutions with padding 1, each followed
//! by a ReLU, and a 2×2 stride-2 pooling after every block. Blocks hold 2, 2, 3, 3, 3 (VGG16) or
//! 2, 2, 4, 4, 4 (VGG19) convolutions of 64, 128, 256, 512, 512 channels.
//! [`Vgg::features`] returns the activations asked for ([`Tap`]: `conv4_2`, `relu4_2`, `pool4`, …)
//! from one forward pass that stops after the deepest one, for a batch of images of any size
//! (at least `2^(b−1)` pixels a side for a tap in block `b`). Gatys et al. replace max-pooling by
//! average pooling ([`Pooling::Avg`]); pooling goes through [`easel_nn::ops`], whose gradients
//! are right (candle 0.11.1's own `max_pool2d` backward is scaled by 1/k²).
//!
//! # Weight layouts ([`Layout`])
//!
//! The layout names the tensors *and* fixes the preprocessing the weights were trained with, so it
//! is part of the weights' description ([`Config::detect`] reads it from the tensor names):
//!
//! | layout | tensor names | network input |
//! |---|---|---|
//! | [`Layout::Torchvision`] (torchvision, timm `vgg19.tv_in1k`) | `features.{i}.weight` `[O, I, 3, 3]`, `.bias` | RGB in [0, 1], minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225) |
//! | [`Layout::Caffe`] (Keras, the original Caffe release) | `block{b}_conv{c}.weight` `[O, I, 3, 3]`, `.bias` | BGR in [0, 255] minus (103.939, 116.779, 123.68) |
//!
//! torchvision's `features` indices count every module of its `nn.Sequential`: a convolution and
//! its ReLU take two, a pooling one (VGG19: convolutions 0, 2 | 5, 7 | 10, 12, 14, 16 |
//! 19, 21, 23, 25 | 28, 30, 32, 34; pools 4, 9, 18, 27, 36).
//!
//! Input is always easel's convention, RGB in [−1, 1], `[B, 3, H, W]`; the conversion happens
//! inside. For the Caffe layout the BGR order is folded into the first convolution (its input
//! channels are reversed once at construction), which is exact, and the per-channel scale and
//! shift are applied to the image.
//!
//! The network is a frozen feature extractor: the weights are whatever tensors the `VarBuilder`
//! hands out (memory-mapped from a file in practice), never trainable variables, and no gradient
//! is computed for them.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::ops;
use serde::{Deserialize, Serialize};

/// VGG16 or VGG19 (configurations D and E of the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Depth {
    /// 13 convolutions: 2, 2, 3, 3, 3 per block.
    Vgg16,
    /// 16 convolutions: 2, 2, 4, 4, 4 per block.
    Vgg19,
}

impl Depth {
    /// Convolutions in each of the five blocks.
    pub fn convs_per_block(self) -> [usize; 5] {
        match self {
            Depth::Vgg16 => [2, 2, 3, 3, 3],
            Depth::Vgg19 => [2, 2, 4, 4, 4],
        }
    }

    /// Total number of convolutions.
    pub fn num_convs(self) -> usize {
        self.convs_per_block().iter().sum()
    }
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Depth::Vgg16 => "VGG16",
            Depth::Vgg19 => "VGG19",
        })
    }
}

/// How the weights are named and what input they expect (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// torchvision / timm: `features.{i}.weight`, RGB [0, 1] normalised by ImageNet mean and std.
    Torchvision,
    /// Keras / Caffe: `block{b}_conv{c}.weight`, BGR [0, 255] minus the ImageNet mean.
    Caffe,
}

/// torchvision's ImageNet normalisation (RGB).
const TV_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const TV_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// Caffe's ImageNet mean in RGB order (Keras lists it as BGR: 103.939, 116.779, 123.68).
const CAFFE_MEAN_RGB: [f64; 3] = [123.68, 116.779, 103.939];

impl Layout {
    /// The name of convolution `conv` (1-based) of block `block` (1-based) without the
    /// `.weight` / `.bias` suffix.
    pub fn conv_name(self, depth: Depth, block: usize, conv: usize) -> String {
        match self {
            Layout::Caffe => format!("block{block}_conv{conv}"),
            Layout::Torchvision => {
                // Each earlier convolution takes two indices (conv, ReLU), each earlier block's
                // pooling one more.
                let per = depth.convs_per_block();
                let before: usize = per[..block - 1].iter().sum::<usize>() + (conv - 1);
                format!("features.{}", 2 * before + (block - 1))
            }
        }
    }

    /// The per-channel affine map `(scale, shift)` (RGB order) from easel's [−1, 1] to what the
    /// network was trained on: `y = scale·x + shift`.
    pub fn input_affine(self) -> ([f64; 3], [f64; 3]) {
        let mut scale = [0.0; 3];
        let mut shift = [0.0; 3];
        for c in 0..3 {
            match self {
                // ((x + 1)/2 − mean)/std
                Layout::Torchvision => {
                    scale[c] = 0.5 / TV_STD[c];
                    shift[c] = (0.5 - TV_MEAN[c]) / TV_STD[c];
                }
                // 255·(x + 1)/2 − mean
                Layout::Caffe => {
                    scale[c] = 127.5;
                    shift[c] = 127.5 - CAFFE_MEAN_RGB[c];
                }
            }
        }
        (scale, shift)
    }

    /// How many times larger this layout's network inputs are than the Caffe layout's for the
    /// same image (Caffe 1; torchvision `1 / (255 · mean std)` ≈ 0.0174). Activations scale
    /// roughly in proportion, so loss weights tuned for one layout can be carried to the other
    /// by this factor (squared for feature losses, to the fourth power for Gram losses).
    pub fn input_scale_vs_caffe(self) -> f64 {
        match self {
            Layout::Caffe => 1.0,
            Layout::Torchvision => 1.0 / (255.0 * (TV_STD.iter().sum::<f64>() / 3.0)),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Torchvision => "torchvision (features.N, RGB, ImageNet mean/std)",
            Layout::Caffe => "caffe (blockB_convC, BGR 0..255 minus mean)",
        })
    }
}

/// The pooling between blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// 2×2 max-pooling, as the network was trained.
    #[default]
    Max,
    /// 2×2 average pooling (Gatys et al.: "slightly more appealing results").
    Avg,
}

/// Standard channel widths of the five blocks.
pub const WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// A VGG feature extractor's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// VGG16 or VGG19.
    pub depth: Depth,
    /// Weight names and input preprocessing.
    pub layout: Layout,
    /// Pooling between blocks.
    #[serde(default)]
    pub pooling: Pooling,
    /// Channels of each block ([`WIDTHS`] for the real networks; tests use narrow ones).
    pub widths: [usize; 5],
}

impl Config {
    /// The standard network of `depth` in `layout`, max-pooling.
    pub fn new(depth: Depth, layout: Layout) -> Self {
        Self {
            depth,
            layout,
            pooling: Pooling::Max,
            widths: WIDTHS,
        }
    }

    /// The same with `pooling`.
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = pooling;
        self
    }

    /// Reads depth, layout and widths from the `(name, shape)` list of a weights file: the names
    /// give the layout (`features.N.weight` or `blockB_convC.weight`) and the depth, the weight
    /// shapes the widths. Other tensors (classifier heads) are ignored. Errors say what was found.
    pub fn detect(tensors: &[(String, Vec<usize>)]) -> Result<Self> {
        let shape_of = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        let has_tv = tensors.iter().any(|(n, _)| n.starts_with("features."));
        let has_caffe = tensors
            .iter()
            .any(|(n, _)| n.starts_with("block") && n.contains("_conv"));
        let layout = match (has_tv, has_caffe) {
            (true, false) => Layout::Torchvision,
            (false, true) => Layout::Caffe,
            (true, true) => candle_core::bail!(
                "VGG weights: found both torchvision (`features.N.weight`) and Keras/caffe \
                 (`blockB_convC.weight`) tensor names; a file must use one layout"
            ),
            (false, false) => {
                let mut some: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
                some.sort_unstable();
                some.truncate(6);
                candle_core::bail!(
                    "VGG weights: no VGG convolution found ({} tensors, e.g. {some:?}); expected \
                     torchvision/timm names `features.N.weight` or Keras/caffe names \
                     `blockB_convC.weight`",
                    tensors.len()
                )
            }
        };
        let conv_weights = tensors
            .iter()
            .filter(|(n, s)| {
                n.ends_with(".weight")
                    && s.len() == 4
                    && match layout {
                        Layout::Torchvision => n.starts_with("features."),
                        Layout::Caffe => n.starts_with("block"),
                    }
            })
            .count();
        let depth = match conv_weights {
            13 => Depth::Vgg16,
            16 => Depth::Vgg19,
            n => candle_core::bail!(
                "VGG weights ({layout} layout): found {n} convolution weights, but VGG16 has 13 \
                 and VGG19 16"
            ),
        };
        let mut widths = [0; 5];
        let mut c_in = 3;
        for (b, &n) in depth.convs_per_block().iter().enumerate() {
            for c in 1..=n {
                let name = format!("{}.weight", layout.conv_name(depth, b + 1, c));
                let s = shape_of(&name).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "VGG weights ({layout} layout, {depth}): missing tensor {name}"
                    ))
                })?;
                if s.len() != 4 || s[1] != c_in || s[2] != 3 || s[3] != 3 {
                    candle_core::bail!(
                        "VGG weights: {name} has shape {s:?}, expected [out, {c_in}, 3, 3]"
                    )
                }
                if c > 1 && s[0] != widths[b] {
                    candle_core::bail!(
                        "VGG weights: {name} has {} output channels, the block's first \
                         convolution {}",
                        s[0],
                        widths[b]
                    )
                }
                widths[b] = s[0];
                c_in = s[0];
            }
        }
        Ok(Self {
            depth,
            layout,
            pooling: Pooling::Max,
            widths,
        })
    }
}

/// What a [`Tap`] reads at its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TapKind {
    /// The convolution's output before its ReLU (`conv4_2`).
    Conv,
    /// After the ReLU (`relu4_2`).
    Relu,
    /// The block's pooling output (`pool4`).
    Pool,
}

/// A named activation: `conv{b}_{c}`, `relu{b}_{c}` or `pool{b}` (blocks and convolutions
/// 1-based). Keras' names are accepted too: `block{b}_conv{c}` is the ReLU output (Keras fuses the
/// activation into the convolution) and `block{b}_pool` the pooling output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tap {
    /// Block, 1..=5.
    pub block: usize,
    /// Convolution within the block, 1-based (unused for [`TapKind::Pool`]).
    pub conv: usize,
    /// Where in the convolution's step.
    pub kind: TapKind,
}

impl Tap {
    /// `relu{block}_{conv}`.
    pub fn relu(block: usize, conv: usize) -> Self {
        Self {
            block,
            conv,
            kind: TapKind::Relu,
        }
    }

    /// Position in the forward order (convolution, ReLU, …, pooling), to find the deepest tap.
    fn order(&self) -> (usize, usize, TapKind) {
        match self.kind {
            TapKind::Pool => (self.block, usize::MAX, TapKind::Pool),
            k => (self.block, self.conv, k),
        }
    }

    /// Whether `depth` has this activation; the error lists the names it does have.
    pub fn check(&self, depth: Depth) -> Result<()> {
        let per = depth.convs_per_block();
        let ok = (1..=5).contains(&self.block)
            && (self.kind == TapKind::Pool || (1..=per[self.block - 1]).contains(&self.conv));
        if !ok {
            candle_core::bail!("{depth} has no layer `{self}`: {}", layer_list(depth))
        }
        Ok(())
    }

    /// Side length in pixels of this activation for an input side of `side`, if it is not empty.
    pub fn side(&self, side: usize) -> usize {
        let pools = match self.kind {
            TapKind::Pool => self.block,
            _ => self.block - 1,
        };
        side >> pools
    }

    /// The smallest input side for which this activation is not empty.
    pub fn min_input_side(&self) -> usize {
        let pools = match self.kind {
            TapKind::Pool => self.block,
            _ => self.block - 1,
        };
        1 << pools
    }
}

impl fmt::Display for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TapKind::Conv => write!(f, "conv{}_{}", self.block, self.conv),
            TapKind::Relu => write!(f, "relu{}_{}", self.block, self.conv),
            TapKind::Pool => write!(f, "pool{}", self.block),
        }
    }
}

impl FromStr for Tap {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "`{s}` is not a VGG layer name: use relu{{B}}_{{N}} (e.g. relu4_2), conv{{B}}_{{N}}, \
                 pool{{B}}, or Keras' block{{B}}_conv{{N}} / block{{B}}_pool"
            )
        };
        let num = |x: &str| x.parse::<usize>().ok().filter(|&v| v >= 1);
        let pair = |x: &str| -> Option<(usize, usize)> {
            let (b, c) = x.split_once('_')?;
            Some((num(b)?, num(c)?))
        };
        let tap = if let Some(rest) = t.strip_prefix("relu") {
            let (block, conv) = pair(rest).ok_or_else(bad)?;
            Tap {
                block,
                conv,
                kind: TapKind::Relu,
            }
        } else if let Some(rest) = t.strip_prefix("conv") {
            let (block, conv) = pair(rest).ok_or_else(bad)?;
            Tap {
                block,
                conv,
                kind: TapKind::Conv,
            }
        } else if let Some(rest) = t.strip_prefix("pool") {
            Tap {
                block: num(rest).ok_or_else(bad)?,
                conv: 0,
                kind: TapKind::Pool,
            }
        } else if let Some(rest) = t.strip_prefix("block") {
            let (b, what) = rest.split_once('_').ok_or_else(bad)?;
            let block = num(b).ok_or_else(bad)?;
            if what == "pool" {
                Tap {
                    block,
                    conv: 0,
                    kind: TapKind::Pool,
                }
            } else {
                let conv = what.strip_prefix("conv").and_then(num).ok_or_else(bad)?;
                Tap {
                    block,
                    conv,
                    kind: TapKind::Relu,
                }
            }
        } else {
            return Err(bad());
        };
        if tap.block > 5 {
            return Err(format!("`{s}`: VGG has blocks 1 to 5"));
        }
        Ok(tap)
    }
}

impl TryFrom<String> for Tap {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Tap> for String {
    fn from(t: Tap) -> String {
        t.to_string()
    }
}

/// What `depth`'s layers are called, for error messages.
fn layer_list(depth: Depth) -> String {
    let per = depth.convs_per_block();
    let relus: Vec<String> = (1..=5)
        .flat_map(|b| (1..=per[b - 1]).map(move |c| format!("relu{b}_{c}")))
        .collect();
    format!(
        "its activations are conv/relu{{block}}_{{n}} and pool1..pool5, i.e. {}",
        relus.join(", ")
    )
}

/// Parses a list of layer names and checks them against `depth`; errors list the valid names.
pub fn parse_taps<S: AsRef<str>>(names: &[S], depth: Depth) -> Result<Vec<Tap>> {
    names
        .iter()
        .map(|n| {
            let t: Tap = n.as_ref().parse().map_err(|e| {
                candle_core::Error::Msg(format!("{e}; {depth}: {}", layer_list(depth)))
            })?;
            t.check(depth)?;
            Ok(t)
        })
        .collect()
}

/// The Gatys et al. style layers: `relu1_1, relu2_1, relu3_1, relu4_1, relu5_1`.
pub fn gatys_style_taps() -> Vec<Tap> {
    (1..=5).map(|b| Tap::relu(b, 1)).collect()
}

/// One 3×3 convolution (padding 1) with bias.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = ops::Conv2dParams {
            stride: 1,
            padding: 1,
            dilation: 1,
        };
        let y = ops::conv2d(x, &self.weight, p)?; // [B, O, H, W]
        y.broadcast_add(&self.bias)
    }
}

/// The VGG feature extractor (see the module docs).
#[derive(Debug, Clone)]
pub struct Vgg {
    cfg: Config,
    /// `blocks[b][c]`: convolution `c` of block `b` (0-based).
    blocks: Vec<Vec<Conv>>,
    /// Preprocessing `[1, 3, 1, 1]`: network input = `x · scale + shift`.
    scale: Tensor,
    shift: Tensor,
}

impl Vgg {
    /// Builds the network from `vb` (names as [`Layout::conv_name`] gives them, `.weight`
    /// `[O, I, 3, 3]` and `.bias` `[O]`). The tensors are used as they come, in `vb`'s dtype;
    /// they are never trainable.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let mut blocks = Vec::with_capacity(5);
        let mut c_in = 3;
        for (b, &n) in cfg.depth.convs_per_block().iter().enumerate() {
            let c_out = cfg.widths[b];
            let mut convs = Vec::with_capacity(n);
            for c in 1..=n {
                let vb = vb.pp(cfg.layout.conv_name(cfg.depth, b + 1, c));
                let mut weight = vb
                    .get_with_hints((c_out, c_in, 3, 3), "weight", Init::Const(0.))?
                    .detach();
                if cfg.layout == Layout::Caffe && b == 0 && c == 1 {
                    // BGR → RGB: reverse the first convolution's input channels.
                    let idx = Tensor::new(&[2u32, 1, 0], weight.device())?;
                    weight = weight.index_select(&idx, 1)?.contiguous()?;
                }
                let bias = vb
                    .get_with_hints(c_out, "bias", Init::Const(0.))?
                    .detach()
                    .reshape((1, c_out, 1, 1))?;
                convs.push(Conv { weight, bias });
                c_in = c_out;
            }
            blocks.push(convs);
        }
        let (scale, shift) = cfg.layout.input_affine();
        let dev = vb.device();
        let dt = vb.dtype();
        let col = |v: [f64; 3]| Tensor::new(&v, dev)?.to_dtype(dt)?.reshape((1, 3, 1, 1));
        Ok(Self {
            cfg: cfg.clone(),
            blocks,
            scale: col(scale)?,
            shift: col(shift)?,
        })
    }

    /// The description it was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The same network with another pooling (weights shared).
    pub fn with_pooling(&self, pooling: Pooling) -> Self {
        let mut v = self.clone();
        v.cfg.pooling = pooling;
        v
    }

    /// Parses and checks layer names for this network.
    pub fn taps<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<Tap>> {
        parse_taps(names, self.cfg.depth)
    }

    /// easel's [−1, 1] RGB images `[B, 3, H, W]` as the network's input (before the first
    /// convolution, whose input channels are already in RGB order).
    pub fn preprocess(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != 3 {
            candle_core::bail!(
                "VGG expects RGB images [B, 3, H, W] in [-1, 1], got shape {:?}",
                x.dims()
            )
        }
        let scale = self.scale.to_dtype(x.dtype())?;
        let shift = self.shift.to_dtype(x.dtype())?;
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
    }

    /// The activations `taps` of `images` (`[B, 3, H, W]`, RGB in [−1, 1]), in the order asked
    /// (repeats allowed), from one forward pass that stops after the deepest of them. Each is
    /// `[B, C, H / 2^k, W / 2^k]` (floors) with `k` the number of poolings before it.
    pub fn features(&self, images: &Tensor, taps: &[Tap]) -> Result<Vec<Tensor>> {
        let (_, _, h, w) = images.dims4()?;
        let Some(deepest) = taps.iter().max_by_key(|t| t.order()) else {
            return Ok(Vec::new());
        };
        for t in taps {
            t.check(self.cfg.depth)?;
            let need = t.min_input_side();
            if h < need || w < need {
                candle_core::bail!(
                    "images of {h}×{w} pixels are too small for {t} of {}: it needs at least \
                     {need}×{need}",
                    self.cfg.depth
                )
            }
        }
        let mut out: Vec<Option<Tensor>> = vec![None; taps.len()];
        let mut record = |tap: Tap, t: &Tensor| {
            for (i, want) in taps.iter().enumerate() {
                if *want == tap {
                    out[i] = Some(t.clone());
                }
            }
        };
        let mut x = self.preprocess(images)?; // [B, 3, H, W]
        'blocks: for (b, convs) in self.blocks.iter().enumerate() {
            for (c, conv) in convs.iter().enumerate() {
                let tap = |kind| Tap {
                    block: b + 1,
                    conv: c + 1,
                    kind,
                };
                x = conv.forward(&x)?; // [B, widths[b], H_b, W_b]
                record(tap(TapKind::Conv), &x);
                if tap(TapKind::Conv) == *deepest {
                    break 'blocks;
                }
                x = ops::relu(&x)?;
                record(tap(TapKind::Relu), &x);
                if tap(TapKind::Relu) == *deepest {
                    break 'blocks;
                }
            }
            x = match self.cfg.pooling {
                Pooling::Max => ops::max_pool2d(&x, 2, 2, 0)?,
                Pooling::Avg => ops::avg_pool2d(&x, 2, 2, 0)?,
            }; // [B, widths[b], H_b / 2, W_b / 2]
            let tap = Tap {
                block: b + 1,
                conv: 0,
                kind: TapKind::Pool,
            };
            record(tap, &x);
            if tap == *deepest {
                break;
            }
        }
        out.into_iter()
            .zip(taps)
            .map(|(t, tap)| {
                t.ok_or_else(|| candle_core::Error::Msg(format!("VGG: {tap} was not computed")))
            })
            .collect()
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.scale.dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use std::collections::HashMap;

    #[test]
    fn torchvision_indices_match_torchvision() {
        // torchvision vgg16 / vgg19 `features` conv indices (dependency-facts.md).
        let idx = |d: Depth| -> Vec<String> {
            let mut v = vec![];
            for (b, &n) in d.convs_per_block().iter().enumerate() {
                for c in 1..=n {
                    v.push(Layout::Torchvision.conv_name(d, b + 1, c));
                }
            }
            v
        };
        let want16 = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
        let want19 = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34];
        let f =
            |w: &[usize]| -> Vec<String> { w.iter().map(|i| format!("features.{i}")).collect() };
        assert_eq!(idx(Depth::Vgg16), f(&want16));
        assert_eq!(idx(Depth::Vgg19), f(&want19));
        assert_eq!(
            Layout::Caffe.conv_name(Depth::Vgg19, 3, 4),
            "block3_conv4".to_string()
        );
    }

    #[test]
    fn tap_names_parse_and_check() {
        assert_eq!("relu4_2".parse::<Tap>().unwrap(), Tap::relu(4, 2));
        assert_eq!("block4_conv2".parse::<Tap>().unwrap(), Tap::relu(4, 2));
        assert_eq!("conv1_1".parse::<Tap>().unwrap().kind, TapKind::Conv);
        assert_eq!("pool3".parse::<Tap>().unwrap().to_string(), "pool3");
        assert_eq!("block2_pool".parse::<Tap>().unwrap().to_string(), "pool2");
        for bad in ["relu", "relu4", "relu0_1", "fc7", "relu6_1", "pool", ""] {
            assert!(bad.parse::<Tap>().is_err(), "{bad}");
        }
        // relu3_4 exists in VGG19 only; the error lists the layers.
        assert!(Tap::relu(3, 4).check(Depth::Vgg19).is_ok());
        let e = Tap::relu(3, 4).check(Depth::Vgg16).unwrap_err().to_string();
        assert!(
            e.contains("VGG16 has no layer `relu3_4`") && e.contains("relu3_3"),
            "{e}"
        );
        assert_eq!(Tap::relu(5, 1).min_input_side(), 16);
        assert_eq!("pool5".parse::<Tap>().unwrap().min_input_side(), 32);
    }

    fn random_tensors(cfg: &Config, dt: DType, seed: u64) -> HashMap<String, Tensor> {
        // A deterministic pseudo-random generator (no candle RNG: it cannot be seeded on CPU).
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let mut m = HashMap::new();
        let mut c_in = 3;
        for (b, &n) in cfg.depth.convs_per_block().iter().enumerate() {
            for c in 1..=n {
                let o = cfg.widths[b];
                let fan = (c_in * 9) as f64;
                let w: Vec<f64> = (0..o * c_in * 9)
                    .map(|_| next() * (6.0 / fan).sqrt())
                    .collect();
                let bias: Vec<f64> = (0..o).map(|_| next() * 0.1).collect();
                let name = cfg.layout.conv_name(cfg.depth, b + 1, c);
                m.insert(
                    format!("{name}.weight"),
                    Tensor::from_vec(w, (o, c_in, 3, 3), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dt)
                        .unwrap(),
                );
                m.insert(
                    format!("{name}.bias"),
                    Tensor::from_vec(bias, o, &Device::Cpu)
                        .unwrap()
                        .to_dtype(dt)
                        .unwrap(),
                );
                c_in = o;
            }
        }
        m
    }

    fn shapes(m: &HashMap<String, Tensor>) -> Vec<(String, Vec<usize>)> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect()
    }

    #[test]
    fn detect_reads_layout_depth_and_widths() {
        for depth in [Depth::Vgg16, Depth::Vgg19] {
            for layout in [Layout::Torchvision, Layout::Caffe] {
                let cfg = Config {
                    depth,
                    layout,
                    pooling: Pooling::Max,
                    widths: [2, 3, 4, 5, 6],
                };
                let mut m = random_tensors(&cfg, DType::F32, 1);
                // A classifier head is ignored.
                m.insert(
                    "classifier.0.weight".into(),
                    Tensor::zeros((4, 6), DType::F32, &Device::Cpu).unwrap(),
                );
                assert_eq!(Config::detect(&shapes(&m)).unwrap(), cfg);
                // A missing tensor is named.
                let name = format!("{}.weight", layout.conv_name(depth, 3, 2));
                m.remove(&name);
                let e = Config::detect(&shapes(&m)).unwrap_err().to_string();
                assert!(e.contains("13 and VGG19 16"), "{e}");
            }
        }
        let e = Config::detect(&[("fc.weight".into(), vec![3, 3])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("features.N.weight") && e.contains("fc.weight"),
            "{e}"
        );
    }

    /// Both layouts of the same weights give the same activations for their own preprocessing:
    /// checked against the formulas written out by hand on the first convolution.
    #[test]
    fn preprocessing_and_shapes() {
        let dev = Device::Cpu;
        for layout in [Layout::Torchvision, Layout::Caffe] {
            let cfg = Config {
                depth: Depth::Vgg19,
                layout,
                pooling: Pooling::Max,
                widths: [4, 4, 4, 4, 4],
            };
            let m = random_tensors(&cfg, DType::F64, 2);
            let vgg =
                Vgg::new(&cfg, VarBuilder::from_tensors(m.clone(), DType::F64, &dev)).unwrap();
            let x = easel_nn::testing::uniform(&[2, 3, 37, 41], 5).unwrap();
            let taps = vgg
                .taps(&["relu5_4", "conv1_1", "pool2", "relu1_1", "relu3_2"])
                .unwrap();
            let f = vgg.features(&x, &taps).unwrap();
            let dims: Vec<Vec<usize>> = f.iter().map(|t| t.dims().to_vec()).collect();
            assert_eq!(
                dims,
                [
                    vec![2, 4, 2, 2],
                    vec![2, 4, 37, 41],
                    vec![2, 4, 9, 10],
                    vec![2, 4, 37, 41],
                    vec![2, 4, 9, 10]
                ]
            );
            // conv1_1 by hand: raw input per the layout's documented preprocessing.
            let xs = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let px = |n: usize, c: usize, i: usize, j: usize| xs[((n * 3 + c) * 37 + i) * 41 + j];
            let raw = |n: usize, c: usize, i: usize, j: usize| -> f64 {
                // c: the channel the *file's* first conv expects.
                match layout {
                    Layout::Torchvision => ((px(n, c, i, j) + 1.0) / 2.0 - TV_MEAN[c]) / TV_STD[c],
                    Layout::Caffe => {
                        let bgr_mean = [103.939, 116.779, 123.68];
                        (px(n, 2 - c, i, j) + 1.0) * 127.5 - bgr_mean[c]
                    }
                }
            };
            let name = layout.conv_name(Depth::Vgg19, 1, 1);
            let w = m[&format!("{name}.weight")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let bias = m[&format!("{name}.bias")].to_vec1::<f64>().unwrap();
            let got = f[1].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for &(n, o, i, j) in &[
                (0usize, 0usize, 0usize, 0usize),
                (1, 3, 10, 20),
                (1, 2, 36, 40),
            ] {
                let mut want = bias[o];
                for c in 0..3 {
                    for di in 0..3 {
                        for dj in 0..3 {
                            let (ii, jj) = (i as i64 + di as i64 - 1, j as i64 + dj as i64 - 1);
                            if ii < 0 || jj < 0 || ii >= 37 || jj >= 41 {
                                continue;
                            }
                            want += w[((o * 3 + c) * 3 + di) * 3 + dj]
                                * raw(n, c, ii as usize, jj as usize);
                        }
                    }
                }
                let g = got[((n * 4 + o) * 37 + i) * 41 + j];
                assert!(
                    (g - want).abs() < 1e-9 * want.abs().max(1.0),
                    "{layout:?}: {g} vs {want}"
                );
            }
            // relu1_1 = max(conv1_1, 0).
            let r = f[3].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(r.iter().zip(&got).all(|(a, b)| *a == b.max(0.0)));
            // Too small an input is an error naming the layer and the size needed.
            let small = Tensor::zeros((1, 3, 12, 40), DType::F64, &dev).unwrap();
            let e = vgg
                .features(&small, &[Tap::relu(5, 1)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("relu5_1") && e.contains("16×16"), "{e}");
        }
    }

    /// Finite differences through a whole (narrow, random-weight) VGG19 in f64, with max and
    /// average pooling, on easel's CPU kernels and on the generic (candle-op) path that other
    /// devices run: the gradient of a loss that reads taps in every block, including relu5_4.
    #[test]
    fn gradients_through_the_whole_stack_match_finite_differences() {
        let dev = Device::Cpu;
        let base = Config {
            depth: Depth::Vgg19,
            layout: Layout::Caffe,
            pooling: Pooling::Max,
            widths: [3, 4, 4, 5, 5],
        };
        let m = random_tensors(&base, DType::F64, 3);
        let x0 = easel_nn::testing::uniform(&[2, 3, 20, 22], 7).unwrap();
        // Fixed random projections so every element of every tap matters.
        let names = [
            "relu1_2", "conv2_1", "pool2", "relu3_4", "relu4_1", "relu5_4",
        ];
        for pooling in [Pooling::Max, Pooling::Avg] {
            let cfg = base.clone().with_pooling(pooling);
            let vgg =
                Vgg::new(&cfg, VarBuilder::from_tensors(m.clone(), DType::F64, &dev)).unwrap();
            let taps = vgg.taps(&names).unwrap();
            let probe = vgg.features(&x0, &taps).unwrap();
            let proj: Vec<Tensor> = probe
                .iter()
                .enumerate()
                .map(|(i, t)| easel_nn::testing::uniform(t.dims(), 100 + i as u64).unwrap())
                .collect();
            let loss = |x: &Tensor| -> Tensor {
                let f = vgg.features(x, &taps).unwrap();
                let mut total = Tensor::new(0f64, &dev).unwrap();
                for (t, p) in f.iter().zip(&proj) {
                    // Σ p·t + ½ Σ t² (the square makes the gradient depend on the values).
                    let term = ((t * p).unwrap().sum_all().unwrap()
                        + (t.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap())
                    .unwrap();
                    total = (total + term).unwrap();
                }
                total
            };
            for generic in [false, true] {
                let run = |x: &Tensor| {
                    if generic {
                        ops::with_generic_ops(|| loss(x))
                    } else {
                        loss(x)
                    }
                };
                let v = Var::from_tensor(&x0).unwrap();
                let grads = run(v.as_tensor()).backward().unwrap();
                let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
                let g = g.to_vec1::<f64>().unwrap();
                let xs = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let h = 1e-6;
                let n = xs.len();
                let (mut kinks, mut checked) = (0usize, 0usize);
                let l0 = run(&x0).to_scalar::<f64>().unwrap();
                for k in (0..n).step_by(97).chain([0, n - 1]) {
                    let at = |d: f64| {
                        let mut v = xs.clone();
                        v[k] += d;
                        let t = Tensor::from_vec(v, x0.dims(), &dev).unwrap();
                        run(&t).to_scalar::<f64>().unwrap()
                    };
                    let fd = (at(h) - at(-h)) / (2.0 * h);
                    // Relative 1e-4, plus what rounding of the (large) loss allows a difference
                    // quotient: a few hundred ulps of |loss| over 2h.
                    let tol = 1e-4 * fd.abs().max(1.0) + 1e-13 * l0.abs() / h;
                    // A ReLU or max-pool switch inside ±h makes the central difference average two
                    // slopes; a quarter step then disagrees. Such points are not differentiable
                    // there, so they are skipped (and counted: they must stay rare).
                    let fd_quarter = (at(h / 4.0) - at(-h / 4.0)) / (h / 2.0);
                    if (fd - fd_quarter).abs() > tol {
                        kinks += 1;
                        continue;
                    }
                    checked += 1;
                    assert!(
                        (fd - g[k]).abs() < tol,
                        "{pooling:?} generic={generic} element {k}: analytic {} vs finite difference {fd}",
                        g[k]
                    );
                }
                assert!(
                    kinks * 10 <= checked,
                    "{kinks} kinks vs {checked} checked points"
                );
            }
        }
    }
}
