//! easel's networks.
//!
//! Each model is a plain struct built by `new(&Config, VarBuilder)`, with weights named exactly as
//! the PyTorch reference implementation's `state_dict` names them, so a converted checkpoint loads
//! unchanged. Models see nothing but a `VarBuilder` and their `Config`: no files, recipes or
//! devices.

pub mod dcgan;

/// A network that maps latent vectors to images, as every easel GAN generator does.
pub trait ImageGenerator {
    /// Length of the latent vector `z`.
    fn latent_dim(&self) -> usize;
    /// `[C, H, W]` of the images produced.
    fn image_shape(&self) -> [usize; 3];
    /// Images in [-1, 1], `[B, C, H, W]`, from `z` `[B, latent_dim]`.
    fn generate(
        &self,
        z: &candle_core::Tensor,
        mode: easel_nn::BnMode,
    ) -> candle_core::Result<candle_core::Tensor>;
}
