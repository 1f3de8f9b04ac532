//! Losses as pure functions on tensors: no state, no files, any device.
//!
//! - [`adversarial`]: binary cross-entropy with logits for GANs.
//! - [`perceptual`]: content (feature reconstruction), Gram matrices and style losses with the
//!   published normalisations named, total variation, weighted sums over layers.

pub mod adversarial;
pub mod perceptual;

pub use adversarial::bce_with_logits;
pub use perceptual::{
    content_loss, gram_matrix, style_layer_loss, style_loss, total_variation, weighted_sum,
    ContentNorm, GramNorm, StyleNorm, TvNorm,
};
