//! easel's evaluation metrics for generative image models.
//!
//! Everything here works on tensors the caller provides — images `[B, C, H, W]` in [−1, 1] or
//! features `[N, D]` — and returns plain numbers; the crate reads no files except network weights
//! from a path the caller gives. Each metric follows a named reference implementation, and
//! `scripts/metrics_reference.py` checks it against that reference on fixed inputs (the fixtures
//! in `tests/fixtures/metrics/`, matched by `tests/reference.rs`).
//!
//! | metric | module | reference | needs |
//! |---|---|---|---|
//! | FID: `‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr((Σ₁^½Σ₂Σ₁^½)^½)` | [`fid`] | Heusel et al. 2017; pytorch-fid | features |
//! | KID: unbiased MMD², kernel `(xᵀy/D + 1)³`, 100 subsets × 1000 | [`mod@kid`] | Bińkowski et al. 2018; torch-fidelity | features |
//! | Inception-style score `exp E KL(p(y\|x) ‖ p(y))`, 10 splits | [`classes`] | Salimans et al. 2016; torch-fidelity | logits |
//! | mode coverage: classes hit, KL to uniform | [`classes`] | Metz et al. 2017 | logits |
//! | precision / recall, k = 3 | [`neighbours`] | Kynkäänniemi et al. 2019 | features |
//! | nearest-neighbour overfitting check, diversity | [`neighbours`] | — | features or pixels |
//! | sliced Wasserstein distance on Laplacian-pyramid 7×7 patches | [`mod@swd`] | Karras et al. 2018 | images |
//! | PSNR, SSIM (RGB or BT.601 Y, border crop) | [`quality`] | Wang et al. 2004; scikit-image; BasicSR | image pairs |
//!
//! **Feature extractors** implement [`FeatureExtractor`]: [`InceptionExtractor`] (pytorch-fid's
//! Inception-v3, 2048-d pool3 and 1008 logits, for the standard FID/KID/IS), [`ClassifierExtractor`]
//! (easel's MNIST-style classifier: "FID-MNIST", domain score and mode coverage, no download),
//! [`VggExtractor`] (VGG16/19 from the perceptual-loss work, 512-d `relu5_x` averaged over
//! positions at 224×224) and [`PixelExtractor`] (flattened pixels, for pixel-space nearest
//! neighbours). The real Inception
//! weights cannot be bundled: download `pt_inception-2015-12-05-6726825d.pth` from pytorch-fid's
//! GitHub release `fid_weights` and convert it to safetensors as shown in
//! [`easel_models::inception`]; names and shapes are checked on load.
//!
//! **Reference statistics**: [`FeatureStats`] (mean, covariance, count, extractor hash, dataset
//! description) is serialisable and converts to tensors for a safetensors file, so the caller can
//! compute a dataset's statistics once and cache them under (dataset, [`FeatureExtractor::hash`]);
//! [`FeatureStats::frechet_distance`] refuses statistics of different extractors.
//!
//! **Numerics**: feature statistics and kernel sums are accumulated in f64; the FID square root
//! goes through symmetric eigendecompositions (own Householder + implicit QL solver in
//! [`linalg`], no new dependency) rather than an f32 Newton–Schulz iteration, and stays exact for
//! singular covariances. Random choices (KID subsets, IS shuffling, SWD patches and directions)
//! come from ChaCha8 streams seeded by the caller, so results are reproducible.

pub mod classes;
pub mod extractor;
pub mod fid;
pub mod kid;
pub mod linalg;
pub mod neighbours;
pub mod quality;
pub mod swd;

pub use classes::{inception_score, mode_coverage, InceptionScore, ModeCoverage};
pub use extractor::{
    weights_hash, ClassifierExtractor, FeatureExtractor, InceptionExtractor, PixelExtractor,
    VggExtractor,
};
pub use fid::{frechet_distance, FeatureStats, FidAccumulator};
pub use kid::{kid, KidConfig, KidResult};
pub use neighbours::{
    mean_pairwise_distance, nearest_neighbours, overfitting_check, precision_recall, Neighbour,
    OverfitReport, PrecisionRecall,
};
pub use quality::{psnr, ssim, QualityConfig};
pub use swd::{swd, SwdAccumulator, SwdConfig, SwdResult};
