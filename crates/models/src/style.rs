//! The feed-forward style network of Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time
//! Style Transfer and Super-Resolution", ECCV 2016 (arXiv:1603.08155), in the form of
//! pytorch/examples `fast_neural_style/neural_style/transformer_net.py`: reflection padding
//! instead of zero padding, instance normalisation (Ulyanov et al. 2016) instead of batch
//! normalisation, and nearest-neighbour upsampling followed by a convolution instead of
//! fractionally-strided convolutions.
//!
//! ```text
//! conv1  9×9, 3 → w0,  stride 1 · in1 · ReLU
//! conv2  3×3, w0 → w1, stride 2 · in2 · ReLU
//! conv3  3×3, w1 → w2, stride 2 · in3 · ReLU
//! res1 … resN: x + in2(conv2(ReLU(in1(conv1(x)))))      (3×3, w2 → w2)
//! deconv1  nearest ×2, 3×3, w2 → w1 · in4 · ReLU
//! deconv2  nearest ×2, 3×3, w1 → w0 · in5 · ReLU
//! deconv3  9×9, w0 → 3
//! ```
//!
//! Every convolution is preceded by a reflection pad of `k / 2` (`ConvLayer`). Weight names are
//! the `state_dict` names of `TransformerNet` (`conv1.conv2d.weight`, `in1.weight`,
//! `res1.conv1.conv2d.weight`, `deconv1.conv2d.weight`, …), so a `.pth` converted with
//! `safetensors.torch.save_file(net.state_dict(), path)` loads unchanged;
//! `tests/fixtures/make_style_sr_fixture.py` and the parity test prove it.
//!
//! Like pytorch/examples, [`TransformerNet::forward`] maps pixel values in 0..255 to pixel values
//! in (about) 0..255; [`TransformerNet::stylize`] wraps it for easel's [−1, 1] images of any size
//! (reflection-padded to a multiple of 4 and cropped back, since two stride-2 convolutions and two
//! ×2 upsamplings otherwise change odd sizes).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::{layers2::reflection_pad2d, ops, Conv2d, Conv2dConfig, InstanceNorm2d};

/// The ReLU fused into the instance norms before it.
const RELU: Option<ops::Activation> = Some(ops::Activation::Relu);
use serde::{Deserialize, Serialize};

/// `TransformerNet` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channels after conv1, conv2 and conv3 (pytorch/examples: 32, 64, 128); the decoder
    /// mirrors them.
    pub widths: [usize; 3],
    /// Residual blocks at the lowest resolution (5).
    pub residual_blocks: usize,
}

impl Config {
    /// pytorch/examples' `TransformerNet` (1.68 M parameters).
    pub fn johnson() -> Self {
        Self {
            widths: [32, 64, 128],
            residual_blocks: 5,
        }
    }
    /// A narrow network for tests and tiny recipes.
    pub fn tiny() -> Self {
        Self {
            widths: [4, 8, 8],
            residual_blocks: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::johnson()
    }
}

/// PyTorch's default convolution initialisation bound (`kaiming_uniform_(a=√5)` = U(±1/√fan_in)).
pub(crate) fn torch_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// pytorch/examples' `ConvLayer`: reflection pad `k / 2`, then a `k×k` convolution (`conv2d`).
#[derive(Debug, Clone)]
pub(crate) struct ConvLayer {
    conv: Conv2d,
    pad: usize,
}

impl ConvLayer {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_init(c_in, c_out, k, stride, torch_uniform(c_in * k * k), vb)
    }

    /// [`ConvLayer::new`] with another weight initialisation.
    pub(crate) fn with_init(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        init: Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = Conv2d::new(
            c_in,
            c_out,
            Conv2dConfig::new(k, stride, 0),
            init,
            vb.pp("conv2d"),
        )?;
        Ok(Self { conv, pad: k / 2 })
    }
}

impl Module for ConvLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.pad;
        let x = reflection_pad2d(x, (p, p, p, p))?; // [B, C, H + 2p, W + 2p]
        self.conv.forward(&x) // [B, O, ⌊(H + 2p − k)/s⌋ + 1, …]
    }
}

/// `UpsampleConvLayer`: nearest ×`up`, then a [`ConvLayer`] (names `conv2d.*`).
#[derive(Debug, Clone)]
struct UpsampleConvLayer {
    conv: ConvLayer,
    up: usize,
}

impl Module for UpsampleConvLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let x = ops::upsample_nearest2d(x, h * self.up, w * self.up)?; // [B, C, up·H, up·W]
        self.conv.forward(&x)
    }
}

/// `ResidualBlock`: `x + in2(conv2(relu(in1(conv1(x)))))`.
#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: ConvLayer,
    in1: InstanceNorm2d,
    conv2: ConvLayer,
    in2: InstanceNorm2d,
}

impl ResidualBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: ConvLayer::new(c, c, 3, 1, vb.pp("conv1"))?,
            in1: InstanceNorm2d::new(c, vb.pp("in1"))?,
            conv2: ConvLayer::new(c, c, 3, 1, vb.pp("conv2"))?,
            in2: InstanceNorm2d::new(c, vb.pp("in2"))?,
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.in1.forward_act(&self.conv1.forward(x)?, RELU)?; // [B, C, H, W]
        x + self.in2.forward(&self.conv2.forward(&y)?)?
    }
}

/// pytorch/examples' `TransformerNet` (see the module docs).
#[derive(Debug, Clone)]
pub struct TransformerNet {
    cfg: Config,
    conv1: ConvLayer,
    in1: InstanceNorm2d,
    conv2: ConvLayer,
    in2: InstanceNorm2d,
    conv3: ConvLayer,
    in3: InstanceNorm2d,
    res: Vec<ResidualBlock>,
    deconv1: UpsampleConvLayer,
    in4: InstanceNorm2d,
    deconv2: UpsampleConvLayer,
    in5: InstanceNorm2d,
    deconv3: ConvLayer,
}

impl TransformerNet {
    /// Builds the network; weights named as `TransformerNet.state_dict()`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let [w0, w1, w2] = cfg.widths;
        if cfg.widths.contains(&0) {
            candle_core::bail!(
                "style network: widths must be positive, got {:?}",
                cfg.widths
            )
        }
        let up = |c_in, c_out, name: &str| -> Result<UpsampleConvLayer> {
            Ok(UpsampleConvLayer {
                conv: ConvLayer::new(c_in, c_out, 3, 1, vb.pp(name))?,
                up: 2,
            })
        };
        Ok(Self {
            cfg: cfg.clone(),
            conv1: ConvLayer::new(3, w0, 9, 1, vb.pp("conv1"))?,
            in1: InstanceNorm2d::new(w0, vb.pp("in1"))?,
            conv2: ConvLayer::new(w0, w1, 3, 2, vb.pp("conv2"))?,
            in2: InstanceNorm2d::new(w1, vb.pp("in2"))?,
            conv3: ConvLayer::new(w1, w2, 3, 2, vb.pp("conv3"))?,
            in3: InstanceNorm2d::new(w2, vb.pp("in3"))?,
            res: (1..=cfg.residual_blocks)
                .map(|i| ResidualBlock::new(w2, vb.pp(format!("res{i}"))))
                .collect::<Result<_>>()?,
            deconv1: up(w2, w1, "deconv1")?,
            in4: InstanceNorm2d::new(w1, vb.pp("in4"))?,
            deconv2: up(w1, w0, "deconv2")?,
            in5: InstanceNorm2d::new(w0, vb.pp("in5"))?,
            deconv3: ConvLayer::new(w0, 3, 9, 1, vb.pp("deconv3"))?,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The PyTorch forward pass: pixels in 0..255 `[B, 3, H, W]` → `[B, 3, H', W']` with
    /// `H' = 4·⌈⌈H/2⌉/2⌉` (equal to `H` when `H` is a multiple of 4), unclamped. Needs sides of at
    /// least 5 (reflection pads must be smaller than what they pad).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h < 5 || w < 5 {
            candle_core::bail!(
                "style network: expected RGB images [B, 3, H, W] with H, W ≥ 5, got shape {:?}",
                x.dims()
            )
        }
        let y = self.in1.forward_act(&self.conv1.forward(x)?, RELU)?; // [B, w0, H, W]
        let y = self.in2.forward_act(&self.conv2.forward(&y)?, RELU)?; // [B, w1, ⌈H/2⌉, ⌈W/2⌉]
        let mut y = self.in3.forward_act(&self.conv3.forward(&y)?, RELU)?; // [B, w2, H/4, W/4] (ceil)
        for r in &self.res {
            y = r.forward(&y)?; // [B, w2, H/4, W/4]
        }
        let y = self.in4.forward_act(&self.deconv1.forward(&y)?, RELU)?; // [B, w1, 2·(H/4), …]
        let y = self.in5.forward_act(&self.deconv2.forward(&y)?, RELU)?; // [B, w0, 4·(H/4), …]
        self.deconv3.forward(&y) // [B, 3, 4·⌈⌈H/2⌉/2⌉, …]
    }

    /// easel's convention: images in [−1, 1] `[B, 3, H, W]` of any size ≥ 5 → stylised images
    /// of the same size in [−1, 1], unclamped (training differentiates through this). Sides that
    /// are not multiples of 4 are reflection-padded on the bottom/right and cropped back.
    pub fn stylize(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (ph, pw) = ((4 - h % 4) % 4, (4 - w % 4) % 4);
        let xp = if ph + pw > 0 && h > ph && w > pw {
            reflection_pad2d(x, (0, pw, 0, ph))? // [B, 3, H + ph, W + pw]
        } else {
            x.clone()
        };
        let y = self.forward(&xp.affine(127.5, 127.5)?)?; // 0..255
        y.narrow(2, 0, h)?
            .narrow(3, 0, w)?
            .affine(1.0 / 127.5, -1.0) // [B, 3, H, W]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use easel_nn::ParamStore;

    #[test]
    fn names_match_pytorch_examples() {
        let store = ParamStore::new(&Device::Cpu, 0);
        TransformerNet::new(&Config::johnson(), store.var_builder()).unwrap();
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        for want in [
            "conv1.conv2d.weight",
            "conv1.conv2d.bias",
            "in1.weight",
            "in3.bias",
            "res1.conv1.conv2d.weight",
            "res5.in2.bias",
            "deconv1.conv2d.weight",
            "in5.weight",
            "deconv3.conv2d.bias",
        ] {
            assert!(
                names.contains(&want.to_string()),
                "{want} missing: {names:?}"
            );
        }
        // 6 convolutions and 5 norms outside the blocks, 2 of each in the 5 blocks, two tensors
        // apiece: (6 + 5 + 5·4)·2 = 62.
        assert_eq!(names.len(), 62);
        assert_eq!(store.num_parameters(), 1_679_235);
        assert_eq!(store.tensors()["conv1.conv2d.weight"].dims(), [32, 3, 9, 9]);
    }

    #[test]
    fn shapes_at_odd_sizes_follow_pytorch_and_stylize_keeps_the_size() {
        let store = ParamStore::new(&Device::Cpu, 1);
        let net = TransformerNet::new(&Config::tiny(), store.var_builder()).unwrap();
        for (h, w) in [(5, 5), (13, 17), (16, 16), (21, 8), (33, 30)] {
            let x = Tensor::zeros((2, 3, h, w), DType::F32, &Device::Cpu).unwrap();
            let up4 = |s: usize| 4 * s.div_ceil(2).div_ceil(2);
            assert_eq!(
                net.forward(&x).unwrap().dims(),
                [2, 3, up4(h), up4(w)],
                "{h}×{w}"
            );
            assert_eq!(net.stylize(&x).unwrap().dims(), [2, 3, h, w], "{h}×{w}");
        }
        for bad in [(1, 3, 4, 9), (1, 3, 9, 3)] {
            let x = Tensor::zeros(bad, DType::F32, &Device::Cpu).unwrap();
            let e = net.stylize(&x).unwrap_err().to_string();
            assert!(e.contains("H, W ≥ 5") || e.contains("RGB"), "{e}");
        }
        let x = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(net.stylize(&x).unwrap_err().to_string().contains("RGB"));
    }

    #[test]
    fn every_weight_gets_the_finite_difference_gradient() {
        let dev = Device::Cpu;
        let store = ParamStore::with_dtype(&dev, DType::F64, 2);
        let cfg = Config {
            widths: [2, 3, 3],
            residual_blocks: 1,
        };
        let net = TransformerNet::new(&cfg, store.var_builder()).unwrap();
        // Deterministic inputs (the parameters come from the store's seed), so a ReLU kink
        // landing within the finite-difference step is either always there or never.
        let wave = |phase: f64| {
            let v: Vec<f64> = (0..2 * 3 * 9 * 10)
                .map(|i| (i as f64 * 0.37 + phase).sin())
                .collect();
            Tensor::from_vec(v, (2, 3, 9, 10), &dev).unwrap()
        };
        let x = wave(0.1);
        let w = wave(1.3);
        let loss = || -> f64 {
            (net.stylize(&x).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let y = (net.stylize(&x).unwrap() * &w).unwrap().sum_all().unwrap();
        let grads = y.backward().unwrap();
        let mut checked = 0;
        let mut total = 0;
        for (name, var) in store.trainable() {
            total += 3;
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in [0, base.len() / 2, base.len() - 1] {
                let at = |d: f64| {
                    let mut p = base.clone();
                    p[i] += d;
                    var.set(&Tensor::from_vec(p, var.dims(), &dev).unwrap())
                        .unwrap();
                    loss()
                };
                let h = 1e-5;
                let num = (at(h) - at(-h)) / (2.0 * h);
                // A ReLU kink within ±h makes the central difference a blend of two slopes;
                // the half step then disagrees with the full step, and the point is skipped.
                let half = (at(h / 2.0) - at(-h / 2.0)) / h;
                at(0.0);
                if (half - num).abs() > 1e-6 * (1.0 + num.abs()) {
                    continue;
                }
                checked += 1;
                assert!(
                    (num - g[i]).abs() <= 1e-4 * (1.0 + num.abs()),
                    "{name}[{i}]: analytic {} vs numeric {num}",
                    g[i]
                );
            }
        }
        assert!(
            checked * 3 >= total * 2,
            "only {checked} of {total} points were away from a kink"
        );
    }
}
