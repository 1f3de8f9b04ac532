//! Building blocks shared by every easel network.
//!
//! - [`ParamStore`]: one parameter store per network. It hands models a candle
//!   [`VarBuilder`](candle_nn::VarBuilder) and creates each variable from the store's own seeded
//!   RNG, so the same seed gives the same initial weights on every device (candle's CPU RNG cannot
//!   be seeded). Buffers that PyTorch keeps in a `state_dict` but never trains (batch-norm running
//!   statistics) are stored beside the weights under PyTorch's names and kept out of optimisers.
//! - [`layers`]: convolution, transposed convolution and batch normalisation with PyTorch's
//!   semantics and `state_dict` names.
//! - [`ops`]: the activations, batch norm, pooling and upsampling the layers and models use, in
//!   one place: CPU tensors run easel's fused [`kernels`], other devices candle's own ops.
//!
//! Models see only a `VarBuilder`; they never touch files, recipes or devices directly.

pub mod kernels;
pub mod layers;
pub mod layers2;
pub mod ops;
pub mod pyramid;
pub mod spectral;
mod store;
pub mod testing;

pub use layers::{
    recompute_batch_norm_stats, BatchNorm2d, BnMode, Conv2d, Conv2dConfig, ConvTranspose2d,
    ConvTranspose2dConfig,
};
pub use layers2::{InstanceNorm2d, PReLU, ReflectionPad2d};
pub use store::{is_buffer_name, ParamStore};
