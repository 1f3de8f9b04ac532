//! LAPGAN: Denton, Chintala, Szlam & Fergus, "Deep Generative Image Models using a Laplacian
//! Pyramid of Adversarial Networks", NeurIPS 2015 (arXiv:1506.05751).
//!
//! An image is generated coarse to fine. The coarsest level (8×8) is a plain GAN — here the
//! DCGAN networks of [`crate::dcgan`] at 8×8. Every finer level `k` has its own pair: the
//! generator takes a noise plane and the upsampled coarser image `l = expand(I_{k+1})` and
//! produces the band-pass residual `h_k`, so that `I_k = l + h_k`; the discriminator sees a
//! residual together with `l` and tells real residuals (from the Laplacian pyramid of training
//! images) from generated ones. Levels train independently on precomputed pyramid pairs, as in
//! the authors' `eyescream` code.
//!
//! The finer-level networks follow eyescream's convolutional level models (3×3/5×5 convolutions,
//! ReLU, a linear output for the residual), with batch norm (DCGAN's practice) and, for the
//! class-conditional LAPGAN of the paper, one-hot label planes stacked on each network's input.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use easel_nn::{ops, BatchNorm2d, BnMode, Conv2d, Conv2dConfig};
use serde::{Deserialize, Serialize};

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
}

const W_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};
const BN_INIT: Init = Init::Randn {
    mean: 1.0,
    stdev: 0.02,
};

fn label_planes(labels: Option<&Tensor>, classes: usize, like: &Tensor) -> Result<Option<Tensor>> {
    let (b, _, h, w) = like.dims4()?;
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
            let oh = ids.broadcast_eq(&ar)?.to_dtype(like.dtype())?; // [B, classes]
            Ok(Some(
                oh.reshape((b, classes, 1, 1))?
                    .broadcast_as((b, classes, h, w))?
                    .contiguous()?,
            ))
        }
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

/// A finer level's discriminator: (residual, upsampled coarse image [, labels]) → logit `[B]`.
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
        if cfg.image_size < 8 || !cfg.image_size.is_multiple_of(4) {
            candle_core::bail!(
                "LAPGAN level size must be a multiple of 4 and at least 8, got {}",
                cfg.image_size
            )
        }
        let c_in = 2 * cfg.channels + cfg.num_classes;
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

    /// Logits `[B]`.
    pub fn forward(
        &self,
        residual: &Tensor,
        coarse_up: &Tensor,
        labels: Option<&Tensor>,
        mode: BnMode,
    ) -> Result<Tensor> {
        check(residual, &self.cfg, "discriminator")?;
        check(coarse_up, &self.cfg, "discriminator")?;
        let b = residual.dim(0)?;
        let mut parts = vec![residual.clone(), coarse_up.clone()];
        if let Some(p) = label_planes(labels, self.cfg.num_classes, coarse_up)? {
            parts.push(p);
        }
        let x = Tensor::cat(&parts, 1)?; // [B, 2C (+ classes), S, S]
        let x = ops::leaky_relu(&self.c1.forward(&x)?, 0.2)?; // [B, ndf, S/2, S/2]
        let x = self.b2.forward_act(
            &self.c2.forward(&x)?,
            mode,
            Some(ops::Activation::LeakyRelu(0.2)),
        )?; // [B, 2ndf, S/4, S/4]
        self.out.forward(&x)?.reshape(b) // [B]
    }
}

/// The full coarse-to-fine generator: the 8×8 base GAN and the finer levels.
///
/// Its latent vector is `[z_base (nz) | noise plane of level 1 (S₁²) | … | level L (S_L²)]`, so
/// one vector determines an image and the latent tools (interpolation, saved z) work unchanged.
#[derive(Debug, Clone)]
pub struct LapganGenerator {
    base: crate::dcgan::Generator,
    levels: Vec<LevelGenerator>,
}

impl LapganGenerator {
    /// Assembles the chain from its trained parts (each built from its own parameter store).
    pub fn from_parts(base: crate::dcgan::Generator, levels: Vec<LevelGenerator>) -> Result<Self> {
        let mut size = base.config().image_size;
        for l in &levels {
            if l.cfg.image_size != 2 * size || l.cfg.channels != base.config().channels {
                candle_core::bail!(
                    "LAPGAN level of size {} (channels {}) cannot follow size {size} (channels {})",
                    l.cfg.image_size,
                    l.cfg.channels,
                    base.config().channels
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
        let nz = self.base.config().nz;
        let want = nz + self.plane_sizes().iter().map(|s| s * s).sum::<usize>();
        if z.dims() != [b, want] {
            candle_core::bail!("LAPGAN generator expects z of shape [B, {want}] (nz {nz} + noise planes), got {:?}", z.dims())
        }
        let mut img = self
            .base
            .forward_labels(&z.narrow(1, 0, nz)?, labels, mode)?; // [B, C, 8, 8]
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
        self.base.config().nz + self.plane_sizes().iter().map(|s| s * s).sum::<usize>()
    }
    fn image_shape(&self) -> [usize; 3] {
        let s = self
            .levels
            .last()
            .map(|l| l.cfg.image_size)
            .unwrap_or(self.base.config().image_size);
        [self.base.config().channels, s, s]
    }
    fn num_classes(&self) -> usize {
        self.base.config().num_classes
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

    #[test]
    fn shapes_names_and_conditioning() {
        let cfg = LevelConfig {
            image_size: 16,
            channels: 3,
            ngf: 8,
            ndf: 4,
            num_classes: 2,
        };
        let gs = ParamStore::new(&Device::Cpu, 0);
        let g = LevelGenerator::new(&cfg, gs.var_builder()).unwrap();
        let ds = ParamStore::new(&Device::Cpu, 0);
        let d = LevelDiscriminator::new(&cfg, ds.var_builder()).unwrap();
        assert_eq!(gs.tensors()["conv1.weight"].dims(), [8, 1 + 3 + 2, 5, 5]);
        assert_eq!(ds.tensors()["conv1.weight"].dims(), [4, 3 + 3 + 2, 4, 4]);
        let noise = Tensor::randn(0f32, 1., (2, 1, 16, 16), &Device::Cpu).unwrap();
        let up = Tensor::randn(0f32, 1., (2, 3, 16, 16), &Device::Cpu).unwrap();
        let l = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let h = g.forward(&noise, &up, Some(&l), BnMode::Train).unwrap();
        assert_eq!(h.dims(), [2, 3, 16, 16]);
        assert_eq!(
            d.forward(&h, &up, Some(&l), BnMode::Train).unwrap().dims(),
            [2]
        );
        assert!(g
            .forward(&noise, &up, None, BnMode::Train)
            .unwrap_err()
            .to_string()
            .contains("needs labels"));
        let bad = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(d
            .forward(&bad, &up, Some(&l), BnMode::Eval)
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
        let lv = |s| LevelConfig {
            image_size: s,
            channels: 1,
            ngf: 4,
            ndf: 4,
            num_classes: 0,
        };
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
        let d = (want - &levels[1])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
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
}
