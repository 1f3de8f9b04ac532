//! `[model] kind = "style"`: the feed-forward style network's recipe (trained by
//! [`crate::steps::style`]; see its module docs for the loss).

use std::path::PathBuf;

use easel_models::style::Config;
use serde::{Deserialize, Serialize};

/// `[model] kind = "style"` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleRecipe {
    /// Channels of the three encoder convolutions (pytorch/examples: `[32, 64, 128]`).
    #[serde(default = "defaults::widths")]
    pub widths: [usize; 3],
    /// Residual blocks (5).
    #[serde(default = "defaults::residual_blocks")]
    pub residual_blocks: usize,
    /// VGG16/VGG19 weights (safetensors, torchvision or Keras/Caffe layout) for the losses.
    pub vgg: PathBuf,
    /// The style image (PNG or JPEG).
    pub style_image: PathBuf,
    /// Longest side the style image is resized to before its Gram matrices are taken (unset:
    /// its own size).
    #[serde(default)]
    pub style_size: Option<usize>,
    /// The content layer (`relu2_2`).
    #[serde(default = "defaults::content_layer")]
    pub content_layer: String,
    /// The style layers; unset: the ends of blocks 1–4 (`relu1_2, relu2_2, relu3_3, relu4_3` on
    /// VGG16, `relu1_2, relu2_2, relu3_4, relu4_4` on VGG19).
    #[serde(default)]
    pub style_layers: Option<Vec<String>>,
    /// Content weight in torchvision units (pytorch/examples: 1e5).
    #[serde(default = "defaults::content_weight")]
    pub content_weight: f64,
    /// Style weight in torchvision units (pytorch/examples: 1e10).
    #[serde(default = "defaults::style_weight")]
    pub style_weight: f64,
    /// Total-variation weight (squared differences on the [−1, 1] output; 0 = off).
    #[serde(default)]
    pub tv_weight: f64,
    /// Start from the `transformer.safetensors` of this model directory (a run's `final/` or a
    /// checkpoint) instead of random weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Name prefixes of parameters kept fixed (`["conv1", "in1", "conv2", "in2"]` freezes the
    /// first two encoder layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

mod defaults {
    pub fn widths() -> [usize; 3] {
        [32, 64, 128]
    }
    pub fn residual_blocks() -> usize {
        5
    }
    pub fn content_layer() -> String {
        "relu2_2".into()
    }
    pub fn content_weight() -> f64 {
        1e5
    }
    pub fn style_weight() -> f64 {
        1e10
    }
}

impl StyleRecipe {
    /// The network configuration.
    pub fn config(&self) -> Config {
        Config {
            widths: self.widths,
            residual_blocks: self.residual_blocks,
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.widths.contains(&0) {
            return Err(format!(
                "model.widths must be positive, got {:?}",
                self.widths
            ));
        }
        if self.style_size == Some(0) {
            return Err("model.style_size must be at least 1".into());
        }
        for (k, v) in [
            ("content_weight", self.content_weight),
            ("style_weight", self.style_weight),
            ("tv_weight", self.tv_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("model.{k} must be a finite number ≥ 0, got {v}"));
            }
        }
        Ok(())
    }
}
