//! `[model] kind = "sr"`: the super-resolution recipe (Johnson et al. 2016, SRResNet/SRGAN —
//! trained by [`crate::steps::sr`]; see its module docs).

use std::path::PathBuf;

use easel_models::sr::{Arch, Config};
use serde::{Deserialize, Serialize};

/// `[model] kind = "sr"` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrRecipe {
    /// `johnson` or `srresnet`.
    #[serde(default = "defaults::arch")]
    pub arch: Arch,
    /// Upscaling factor: 2, 4 or 8.
    #[serde(default = "defaults::scale")]
    pub scale: usize,
    /// Feature channels (64).
    #[serde(default = "defaults::width")]
    pub width: usize,
    /// Residual blocks (Johnson 4; SRResNet 16).
    #[serde(default = "defaults::residual_blocks")]
    pub residual_blocks: usize,
    /// Weight of the pixel MSE.
    #[serde(default = "defaults::one")]
    pub pixel_weight: f64,
    /// Weight of the feature MSE at `content_layer` in torchvision units (0 = off; needs `vgg`).
    #[serde(default)]
    pub perceptual_weight: f64,
    /// Weight of the adversarial loss (0 = off; SRGAN: 1e-3).
    #[serde(default)]
    pub adversarial_weight: f64,
    /// Base width of the SRGAN discriminator (64 in the paper).
    #[serde(default = "defaults::width")]
    pub discriminator_width: usize,
    /// VGG weights for the perceptual loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgg: Option<PathBuf>,
    /// The perceptual layer (`relu2_2`).
    #[serde(default = "defaults::content_layer")]
    pub content_layer: String,
    /// Global residual learning (VDSR): the network predicts the difference from the bicubic
    /// upsampling of its input and starts at exactly bicubic (see
    /// [`easel_models::sr::Config::residual`]). Default `false`.
    #[serde(default)]
    pub residual: bool,
    /// Start from the `generator.safetensors` of this model directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Name prefixes of generator parameters kept fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

mod defaults {
    use super::Arch;
    pub fn arch() -> Arch {
        Arch::Johnson
    }
    pub fn scale() -> usize {
        4
    }
    pub fn width() -> usize {
        64
    }
    pub fn residual_blocks() -> usize {
        4
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn content_layer() -> String {
        "relu2_2".into()
    }
}

impl SrRecipe {
    /// The network configuration.
    pub fn config(&self) -> Config {
        Config {
            arch: self.arch,
            scale: self.scale,
            width: self.width,
            residual_blocks: self.residual_blocks,
            residual: self.residual,
        }
    }

    /// Checks the values serde cannot, with the data's image size.
    pub fn validate(&self, image_size: usize) -> std::result::Result<(), String> {
        self.config()
            .validate()
            .map_err(|e| format!("model: {e}"))?;
        if !image_size.is_multiple_of(self.scale) {
            return Err(format!(
                "data.image_size ({image_size}) must be a multiple of model.scale ({})",
                self.scale
            ));
        }
        let min = if self.arch == Arch::Johnson { 5 } else { 1 };
        if image_size / self.scale < min {
            return Err(format!(
                "data.image_size / model.scale = {} is too small: the low-resolution inputs need at least {min} pixels a side",
                image_size / self.scale
            ));
        }
        for (k, v) in [
            ("pixel_weight", self.pixel_weight),
            ("perceptual_weight", self.perceptual_weight),
            ("adversarial_weight", self.adversarial_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("model.{k} must be a finite number ≥ 0, got {v}"));
            }
        }
        if self.pixel_weight + self.perceptual_weight + self.adversarial_weight == 0.0 {
            return Err("every loss weight is 0: nothing to train".into());
        }
        if self.perceptual_weight > 0.0 && self.vgg.is_none() {
            return Err("model.perceptual_weight > 0 needs model.vgg (VGG weights)".into());
        }
        if self.adversarial_weight > 0.0 && self.discriminator_width == 0 {
            return Err("model.discriminator_width must be positive".into());
        }
        Ok(())
    }
}
