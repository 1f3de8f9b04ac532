//! easel's networks.
//!
//! Each model is a plain struct built by `new(&Config, VarBuilder)`, with weights named exactly as
//! the PyTorch reference implementation's `state_dict` names them, so a converted checkpoint loads
//! unchanged. Models see nothing but a `VarBuilder` and their `Config`: no files, recipes or
//! devices.

pub mod classifier;
pub mod dcgan;
pub mod inception;
pub mod lapgan;
pub mod sr;
pub mod style;
pub mod vgg;

/// A network that maps latent vectors to images, as every easel GAN generator does.
pub trait ImageGenerator {
    /// Length of the latent vector `z`.
    fn latent_dim(&self) -> usize;
    /// `[C, H, W]` of the images produced.
    fn image_shape(&self) -> [usize; 3];
    /// Number of classes it is conditioned on (0 = unconditional).
    fn num_classes(&self) -> usize {
        0
    }
    /// Images in [-1, 1], `[B, C, H, W]`, from `z` `[B, latent_dim]` and, for a conditional
    /// generator, class labels `[B]` (u32).
    fn generate(
        &self,
        z: &candle_core::Tensor,
        labels: Option<&candle_core::Tensor>,
        mode: easel_nn::BnMode,
    ) -> candle_core::Result<candle_core::Tensor>;
    /// The images of every stage, coarsest first (one entry for single-scale generators; one per
    /// pyramid level for LAPGAN, so they can be shown side by side).
    fn generate_levels(
        &self,
        z: &candle_core::Tensor,
        labels: Option<&candle_core::Tensor>,
        mode: easel_nn::BnMode,
    ) -> candle_core::Result<Vec<candle_core::Tensor>> {
        Ok(vec![self.generate(z, labels, mode)?])
    }
}
