//! easel's training machinery.
//!
//! - [`recipe`]: the schema — TOML recipes with `deny_unknown_fields` everywhere and type-checked
//!   overrides, the metric and extractor specs, each kind's `[model]` table; no machinery.
//! - [`run_dir`]: where things live in a run directory; resolving a model folder.
//! - [`optim`]: Adam and RMSProp with PyTorch's update rules and saveable state.
//! - [`lbfgs`]: L-BFGS with strong-Wolfe or backtracking line search (image optimisation).
//! - [`fit`]: the [`fit::TrainStep`] trait and the one loop that drives every trainer.
//! - [`checkpoint`]: atomic checkpoint directories.
//! - [`steps`]: one training step per model family (GANs, LAPGAN, the domain classifier).
//! - [`eval`]: `easel eval` and the metrics measured during training (`[eval]`).
//! - [`export`]: a recipe's training images as a folder of PNGs (`easel export-data`).
//! - [`load`]: rebuilding a trained generator from a model folder alone.
//! - [`session`]: what the CLI's commands do with run directories.
//!
//! Only this crate and the CLI know about files, recipes and run directories; models see a
//! `VarBuilder`, data readers see a `DataConfig`.

pub mod bench;
pub mod checkpoint;
pub mod device;
pub mod double_backward;
pub mod ema;
pub mod error;
pub mod eval;
pub mod export;
pub mod fit;
pub mod grid;
pub mod lbfgs;
pub mod load;
pub mod optim;
pub mod recipe;
pub mod rng;
pub mod run_dir;
pub mod session;
pub mod steps;
pub mod transfer;

pub use error::{Result, TrainError};
