//! Latent tools for easel's generators: the z bank, interpolation, concept arithmetic, attribute
//! directions, class sweeps for conditional models and numbered contact sheets.
//!
//! Radford et al. (DCGAN, ICLR 2016, §6) showed that arithmetic on *averaged* latent vectors edits
//! concepts ("smiling woman − neutral woman + neutral man"), that interpolating between two z
//! gives smooth transitions, and that the difference of two group means is a usable attribute
//! direction (their "turn" vector). This crate makes each of those a few lines of Rust for any
//! [`easel_models::ImageGenerator`] — DCGAN, cGAN, WGAN and LAPGAN alike:
//!
//! ```no_run
//! # fn demo(g: &dyn easel_models::ImageGenerator) -> easel_latent::Result<()> {
//! use easel_latent::{bank::ZBank, maths, render::Renderer};
//! let bank = ZBank::open(std::path::Path::new("runs/my-run"))?; // written by `easel sample`
//! let [a, b] = <[_; 2]>::try_from(bank.get(&[3, 17])?).unwrap();
//! let path = maths::interpolate(&a.z, &b.z, 9, maths::Interp::Slerp)?;
//! let r = Renderer::new(g, easel_nn::BnMode::Eval, &candle_core::Device::Cpu);
//! let tiles = r.tiles(&path, None)?; // nine images, A to B
//! # Ok(()) }
//! ```
//!
//! - [`maths`]: lerp/slerp, means, signed sums, jitter, directions and walks on host vectors
//!   (f64 accumulation, seeded ChaCha8 noise).
//! - [`bank`]: z vectors saved with ids (safetensors + a small JSON index), each draw tied to the
//!   run and checkpoint it was drawn for.
//! - [`canvas`]: 8-bit images, a 3×5 bitmap font for ids and signs, contact sheets; tiles are
//!   converted exactly as `easel sample` converts them, so a tile re-rendered from its saved z is
//!   byte-identical.
//! - [`render`]: the generator behind the common trait, and the figures (interpolation,
//!   arithmetic with jitter, direction walks, class sweeps).
//! - [`check`]: confirming concept arithmetic with a classifier (exemplars picked by the
//!   classifier from a pool of samples, random triples, rate against chance).
//!
//! The crate knows its own files (the bank, PNGs it is asked to write) but not recipes, run
//! layouts beyond the `zbank/` folder, or how a generator is loaded: callers pass a generator.

pub mod bank;
pub mod canvas;
pub mod check;
pub mod maths;
pub mod render;

use std::path::PathBuf;

pub use easel_models::ImageGenerator;
pub use easel_nn::BnMode;

/// What can go wrong in the latent tools.
#[derive(Debug, thiserror::Error)]
pub enum LatentError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read, written or understood.
    #[error("{}: {message}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong and, where possible, the fix.
        message: String,
    },
    /// Bad arguments (unknown id, wrong z size, too few steps, …), with the fix.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`LatentError`].
pub type Result<T> = std::result::Result<T, LatentError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(LatentError::Invalid(msg.into()))
}

pub(crate) fn file_err(path: impl Into<PathBuf>, message: impl Into<String>) -> LatentError {
    LatentError::File {
        path: path.into(),
        message: message.into(),
    }
}
