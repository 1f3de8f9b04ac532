//! DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
//! Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06434).
//!
//! The paper's guidelines: strided (transposed) convolutions instead of pooling, batch norm in
//! both networks (not on the generator output nor the discriminator input), no fully connected
//! hidden layers, ReLU in the generator with Tanh on its output, LeakyReLU(0.2) in the
//! discriminator, weights drawn from N(0, 0.02) and batch-norm γ from N(1, 0.02).
//!
//! Layer names follow pytorch/examples `dcgan/main.py` (`main.0.weight`, `main.1.running_mean`, …):
//! for 64×64 images the `state_dict` of that script loads unchanged. Other sizes use the same
//! scheme with fewer (or more) stride-2 stages: the spatial size grows from a `base` of 4 (sizes
//! 4·2^k: 16, 32, 64, 128) or 7 (sizes 7·2^k: 14, 28, 56) by a factor of 2 per stage.
//!
//! The discriminator returns logits; the loss applies the sigmoid (BCE with logits), which is
//! numerically safer than PyTorch's `Sigmoid` + `BCELoss` and has the same value.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::{
    ops, BatchNorm2d, BnMode, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig,
};
use serde::{Deserialize, Serialize};

/// DCGAN hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Side of the square images (16, 32, 64, 128 or 14, 28, 56).
    pub image_size: usize,
    /// Image channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Latent size (`nz`, 100 in the paper).
    pub nz: usize,
    /// Generator width: channels of its last hidden layer (`ngf`).
    pub ngf: usize,
    /// Discriminator width: channels of its first layer (`ndf`).
    pub ndf: usize,
    /// Slope of the discriminator's LeakyReLU (0.2 in the paper).
    pub leaky_slope: f64,
}

impl Config {
    /// pytorch/examples `dcgan`: 64×64 RGB, nz 100, ngf = ndf = 64.
    pub fn pytorch_examples_64() -> Self {
        Self {
            image_size: 64,
            channels: 3,
            nz: 100,
            ngf: 64,
            ndf: 64,
            leaky_slope: 0.2,
        }
    }
    /// 32×32 RGB (CIFAR-sized), nz 100, ngf = ndf = 64.
    pub fn rgb_32() -> Self {
        Self {
            image_size: 32,
            ..Self::pytorch_examples_64()
        }
    }
    /// 28×28 grey (MNIST at its native size), nz 100, ngf = ndf = 64.
    pub fn mnist_28() -> Self {
        Self {
            image_size: 28,
            channels: 1,
            ..Self::pytorch_examples_64()
        }
    }

    /// `(base, stages)` with `image_size = base · 2^stages`.
    pub fn geometry(&self) -> Result<(usize, usize)> {
        for base in [4usize, 7] {
            let mut size = base;
            let mut stages = 0;
            while size < self.image_size {
                size *= 2;
                stages += 1;
            }
            if size == self.image_size && stages >= 1 {
                return Ok((base, stages));
            }
        }
        candle_core::bail!(
            "DCGAN image_size must be 4·2^k or 7·2^k with k ≥ 1 (8, 16, 32, 64, 128, … or 14, 28, 56, …), got {}",
            self.image_size
        )
    }

    fn validate(&self) -> Result<()> {
        self.geometry()?;
        if self.channels == 0 || self.nz == 0 || self.ngf == 0 || self.ndf == 0 {
            candle_core::bail!("DCGAN channels, nz, ngf and ndf must be positive, got {self:?}")
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

/// The generator: z `[B, nz]` → image `[B, C, S, S]` in [-1, 1].
#[derive(Debug, Clone)]
pub struct Generator {
    /// (transposed conv, batch norm) per hidden stage.
    hidden: Vec<(ConvTranspose2d, BatchNorm2d)>,
    out: ConvTranspose2d,
    cfg: Config,
}

impl Generator {
    /// Builds the generator under `vb` (`main.0`, `main.1`, … as pytorch/examples).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (base, stages) = cfg.geometry()?;
        let vb = vb.pp("main");
        let mut hidden = Vec::with_capacity(stages);
        // Widths: ngf·2^(stages-1) at the base resolution, halving at every stage down to ngf.
        let mut c_out = cfg.ngf << (stages - 1);
        // Stage 0: nz×1×1 → c_out×base×base (kernel = base, stride 1, no padding).
        let first = ConvTranspose2dConfig::new(base, 1, 0).no_bias();
        let mut idx = 0;
        let conv = ConvTranspose2d::new(cfg.nz, c_out, first, W_INIT, vb.pp(idx))?;
        let bn = BatchNorm2d::new(c_out, BN_INIT, vb.pp(idx + 1))?;
        hidden.push((conv, bn));
        idx += 3; // conv, bn, relu
        for _ in 1..stages {
            let c_in = c_out;
            c_out /= 2;
            let conv = ConvTranspose2d::new(
                c_in,
                c_out,
                ConvTranspose2dConfig::new(4, 2, 1).no_bias(),
                W_INIT,
                vb.pp(idx),
            )?;
            let bn = BatchNorm2d::new(c_out, BN_INIT, vb.pp(idx + 1))?;
            hidden.push((conv, bn));
            idx += 3;
        }
        let out = ConvTranspose2d::new(
            c_out,
            cfg.channels,
            ConvTranspose2dConfig::new(4, 2, 1).no_bias(),
            W_INIT,
            vb.pp(idx),
        )?;
        Ok(Self {
            hidden,
            out,
            cfg: cfg.clone(),
        })
    }

    /// Images from latent vectors; `z` may be `[B, nz]` or `[B, nz, 1, 1]`.
    pub fn forward_t(&self, z: &Tensor, mode: BnMode) -> Result<Tensor> {
        let b = z.dim(0)?;
        if z.elem_count() != b * self.cfg.nz {
            candle_core::bail!(
                "DCGAN generator expects z of shape [B, {}], got {:?}",
                self.cfg.nz,
                z.dims()
            )
        }
        let mut x = z.reshape((b, self.cfg.nz, 1, 1))?; // [B, nz, 1, 1]
        for (conv, bn) in &self.hidden {
            // [B, ngf·2^(stages-1), base, base] on the first stage, then channels halve and size doubles
            x = ops::relu(&bn.forward_t(&conv.forward(&x)?, mode)?)?;
        }
        ops::tanh(&self.out.forward(&x)?) // [B, C, S, S]
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl crate::ImageGenerator for Generator {
    fn latent_dim(&self) -> usize {
        self.cfg.nz
    }
    fn image_shape(&self) -> [usize; 3] {
        [self.cfg.channels, self.cfg.image_size, self.cfg.image_size]
    }
    fn generate(&self, z: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_t(z, mode)
    }
}

/// The discriminator: image `[B, C, S, S]` → one logit per image `[B]`.
#[derive(Debug, Clone)]
pub struct Discriminator {
    first: Conv2d,
    hidden: Vec<(Conv2d, BatchNorm2d)>,
    out: Conv2d,
    cfg: Config,
}

impl Discriminator {
    /// Builds the discriminator under `vb` (`main.0`, `main.2`, `main.3`, … as pytorch/examples).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (base, stages) = cfg.geometry()?;
        let vb = vb.pp("main");
        let down = Conv2dConfig::new(4, 2, 1).no_bias();
        // main.0: C → ndf at half resolution, no batch norm on the input layer; main.1 is LeakyReLU.
        let first = Conv2d::new(cfg.channels, cfg.ndf, down, W_INIT, vb.pp(0))?;
        let mut idx = 2;
        let mut c = cfg.ndf;
        let mut hidden = Vec::new();
        for _ in 1..stages {
            let conv = Conv2d::new(c, c * 2, down, W_INIT, vb.pp(idx))?;
            let bn = BatchNorm2d::new(c * 2, BN_INIT, vb.pp(idx + 1))?;
            hidden.push((conv, bn));
            c *= 2;
            idx += 3; // conv, bn, leaky relu
        }
        // base×base → 1×1 with a kernel the size of the map (no padding).
        let out = Conv2d::new(
            c,
            1,
            Conv2dConfig::new(base, 1, 0).no_bias(),
            W_INIT,
            vb.pp(idx),
        )?;
        Ok(Self {
            first,
            hidden,
            out,
            cfg: cfg.clone(),
        })
    }

    /// Logits `[B]` for images `x` `[B, C, S, S]`.
    pub fn forward_t(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.channels || h != s || w != s {
            candle_core::bail!(
                "DCGAN discriminator expects images [B, {}, {s}, {s}], got {:?}",
                self.cfg.channels,
                x.dims()
            )
        }
        let slope = self.cfg.leaky_slope;
        let mut x = ops::leaky_relu(&self.first.forward(x)?, slope)?; // [B, ndf, S/2, S/2]
        for (conv, bn) in &self.hidden {
            x = ops::leaky_relu(&bn.forward_t(&conv.forward(&x)?, mode)?, slope)?;
            // channels double, size halves
        }
        self.out.forward(&x)?.reshape(b) // [B, 1, 1, 1] → [B]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use easel_nn::ParamStore;

    #[test]
    fn pytorch_examples_names_and_shapes() {
        let cfg = Config::pytorch_examples_64();
        let gs = ParamStore::new(&Device::Cpu, 0);
        let g = Generator::new(&cfg, gs.var_builder()).unwrap();
        let ds = ParamStore::new(&Device::Cpu, 0);
        let d = Discriminator::new(&cfg, ds.var_builder()).unwrap();
        // Shapes of netG.state_dict() / netD.state_dict() in pytorch/examples dcgan/main.py
        // (num_batches_tracked aside).
        let expect_g = [
            ("main.0.weight", vec![100, 512, 4, 4]),
            ("main.1.weight", vec![512]),
            ("main.1.running_var", vec![512]),
            ("main.3.weight", vec![512, 256, 4, 4]),
            ("main.4.bias", vec![256]),
            ("main.6.weight", vec![256, 128, 4, 4]),
            ("main.9.weight", vec![128, 64, 4, 4]),
            ("main.10.running_mean", vec![64]),
            ("main.12.weight", vec![64, 3, 4, 4]),
        ];
        let tg = gs.tensors();
        assert_eq!(tg.len(), 5 + 4 * 4);
        for (n, s) in expect_g {
            assert_eq!(tg[n].dims(), s.as_slice(), "{n}");
        }
        let expect_d = [
            ("main.0.weight", vec![64, 3, 4, 4]),
            ("main.2.weight", vec![128, 64, 4, 4]),
            ("main.3.weight", vec![128]),
            ("main.5.weight", vec![256, 128, 4, 4]),
            ("main.8.weight", vec![512, 256, 4, 4]),
            ("main.9.running_var", vec![512]),
            ("main.11.weight", vec![1, 512, 4, 4]),
        ];
        let td = ds.tensors();
        assert_eq!(td.len(), 5 + 3 * 4);
        for (n, s) in expect_d {
            assert_eq!(td[n].dims(), s.as_slice(), "{n}");
        }
        let z = Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap();
        let x = g.forward_t(&z, BnMode::Train).unwrap();
        assert_eq!(x.dims(), [2, 3, 64, 64]);
        assert_eq!(d.forward_t(&x, BnMode::Train).unwrap().dims(), [2]);
    }

    #[test]
    fn other_sizes() {
        for (size, ch) in [(28, 1), (32, 3), (16, 1), (56, 3)] {
            let cfg = Config {
                image_size: size,
                channels: ch,
                nz: 8,
                ngf: 4,
                ndf: 4,
                leaky_slope: 0.2,
            };
            let g = Generator::new(&cfg, ParamStore::new(&Device::Cpu, 0).var_builder()).unwrap();
            let d =
                Discriminator::new(&cfg, ParamStore::new(&Device::Cpu, 0).var_builder()).unwrap();
            let z = Tensor::ones((3, 8), DType::F32, &Device::Cpu).unwrap();
            let x = g.forward_t(&z, BnMode::Train).unwrap();
            assert_eq!(x.dims(), [3, ch, size, size]);
            assert_eq!(d.forward_t(&x, BnMode::Train).unwrap().dims(), [3]);
            // tanh output range
            let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|p| p.abs() <= 1.0));
        }
    }

    #[test]
    fn bad_sizes_are_clear_errors() {
        let cfg = Config {
            image_size: 30,
            ..Config::rgb_32()
        };
        let err = Generator::new(&cfg, ParamStore::new(&Device::Cpu, 0).var_builder()).unwrap_err();
        assert!(err.to_string().contains("got 30"), "{err}");
        let d = Discriminator::new(
            &Config::rgb_32(),
            ParamStore::new(&Device::Cpu, 0).var_builder(),
        )
        .unwrap();
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let err = d.forward_t(&x, BnMode::Eval).unwrap_err().to_string();
        assert!(
            err.contains("[B, 3, 32, 32]") && err.contains("[1, 3, 64, 64]"),
            "{err}"
        );
    }
}
