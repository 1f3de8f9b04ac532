//! Recipes: TOML files deserialised into structs with `deny_unknown_fields` on every level.
//!
//! Loading happens in two stages: the file text is deserialised directly (so errors carry the
//! line, column and key path), then `--set key.path=value` overrides are applied to the parsed
//! table and the result is deserialised again (so overrides are type-checked against the same
//! schema). The resolved recipe, every default filled in, is what a run directory stores.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::OptimSpec;

pub mod metric;
pub mod sr;
pub mod style;
pub use easel_models::dcgan::{Conditioning, DNorm};

/// A whole recipe file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// One line shown by `easel recipes` and `easel inspect`.
    #[serde(default)]
    pub description: String,
    /// Drives initialisation, data order, noise and augmentation: the same seed gives the same run.
    pub seed: u64,
    /// Where the images come from.
    pub data: easel_data::DataConfig,
    /// The networks and how they are trained against each other.
    pub model: ModelRecipe,
    /// One optimiser per network, by network name (`generator`, `discriminator` for GANs).
    /// Networks not listed get the model's defaults (for DCGAN: Adam, lr 2e-4, β1 0.5).
    #[serde(default)]
    pub optim: BTreeMap<String, OptimSpec>,
    /// Length of the run and how often it logs, previews and saves.
    pub train: TrainConfig,
    /// Metrics measured while training (optional): which, how often, and which keeps `best/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
}

/// The model family and its hyper-parameters: `kind` selects the training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelRecipe {
    /// DCGAN (Radford et al. 2016) with the non-saturating BCE loss.
    Dcgan(DcganRecipe),
    /// Conditional GAN (Mirza & Osindero 2014) on the DCGAN networks.
    Cgan(CganRecipe),
    /// Wasserstein GAN (Arjovsky et al. 2017; gradient penalty: Gulrajani et al. 2017).
    Wgan(WganRecipe),
    /// LAPGAN (Denton et al. 2015): a Laplacian pyramid of GANs, coarse to fine.
    Lapgan(LapganRecipe),
    /// easel's domain classifier (cross-entropy): the feature extractor of offline metrics.
    Classifier(ClassifierRecipe),
    /// Feed-forward style network (Johnson et al. 2016; pytorch/examples `fast_neural_style`).
    Style(style::StyleRecipe),
    /// Super-resolution (Johnson et al. 2016; SRResNet/SRGAN, Ledig et al. 2017).
    Sr(sr::SrRecipe),
}

impl ModelRecipe {
    /// The `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelRecipe::Dcgan(_) => "dcgan",
            ModelRecipe::Cgan(_) => "cgan",
            ModelRecipe::Wgan(_) => "wgan",
            ModelRecipe::Lapgan(_) => "lapgan",
            ModelRecipe::Classifier(_) => "classifier",
            ModelRecipe::Style(_) => "style",
            ModelRecipe::Sr(_) => "sr",
        }
    }
}

/// The DCGAN networks' sizes, shared by every GAN recipe (`[model]` keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcganRecipe {
    /// Latent size (100 in the paper).
    #[serde(default = "defaults::nz")]
    pub nz: usize,
    /// Generator width (`ngf`).
    #[serde(default = "defaults::width")]
    pub ngf: usize,
    /// Discriminator width (`ndf`).
    #[serde(default = "defaults::width")]
    pub ndf: usize,
    /// Slope of the discriminator's LeakyReLU.
    #[serde(default = "defaults::leaky")]
    pub leaky_slope: f64,
    /// One-sided label smoothing: real images get target `1 − label_smoothing` (0 = off; 0.1 is common).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Batch norm when sampling (previews, `easel sample`): `eval` uses the running statistics
    /// (samples do not depend on the rest of the batch); `batch` uses the batch's own statistics,
    /// as pytorch/examples' previews do.
    #[serde(default)]
    pub sample_bn: SampleBn,
    /// Spectral normalisation of every discriminator convolution (Miyato et al. 2018; SNGAN).
    #[serde(default)]
    pub spectral_norm: bool,
    /// Discriminator normalisation: `batch` (DCGAN) or `none` (usual with spectral norm).
    #[serde(default)]
    pub d_norm: DNorm,
    /// Decay of an exponential moving average of the generator's weights (Polyak averaging;
    /// Yazici et al. 2019, Karras et al. 2018), kept beside the trained generator as
    /// `generator_ema` and used by previews, `easel sample`, `easel eval` and the latent tools
    /// (`--raw` for the trained weights). Update after every generator step `t` (from 0):
    /// `ema = β·ema + (1 − β)·g` with `β = min(ema_decay, (1 + t) / (10 + t))` (the warm-up
    /// of TensorFlow's `ExponentialMovingAverage(num_updates)`). 0 = off (default).
    #[serde(default)]
    pub ema_decay: f64,
}

impl Default for DcganRecipe {
    fn default() -> Self {
        Self {
            nz: defaults::nz(),
            ngf: defaults::width(),
            ndf: defaults::width(),
            leaky_slope: defaults::leaky(),
            label_smoothing: 0.0,
            sample_bn: SampleBn::Eval,
            spectral_norm: false,
            d_norm: DNorm::Batch,
            ema_decay: 0.0,
        }
    }
}

/// `[model] kind = "cgan"`: the DCGAN networks conditioned on the class label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CganRecipe {
    /// Latent size.
    #[serde(default = "defaults::nz")]
    pub nz: usize,
    /// Generator width.
    #[serde(default = "defaults::width")]
    pub ngf: usize,
    /// Discriminator width.
    #[serde(default = "defaults::width")]
    pub ndf: usize,
    /// Slope of the discriminator's LeakyReLU.
    #[serde(default = "defaults::leaky")]
    pub leaky_slope: f64,
    /// One-sided label smoothing of the real target.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Batch norm when sampling (`eval` or `batch`).
    #[serde(default)]
    pub sample_bn: SampleBn,
    /// Spectral normalisation of the discriminator.
    #[serde(default)]
    pub spectral_norm: bool,
    /// Discriminator normalisation (`batch` or `none`).
    #[serde(default)]
    pub d_norm: DNorm,
    /// How the discriminator sees the label: `concat` (one-hot maps on the input, Mirza &
    /// Osindero) or `projection` (Miyato & Koyama 2018, as StudioGAN's strongest models).
    #[serde(default)]
    pub discriminator: Conditioning,
    /// Number of classes; filled in from the dataset when unset (the resolved recipe records it).
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Generator weight averaging, as `[model] ema_decay` of `kind = "dcgan"`.
    #[serde(default)]
    pub ema_decay: f64,
}

/// `[model] kind = "lapgan"`: an 8×8 base GAN and `image_size / 8 = 2^levels` finer levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LapganRecipe {
    /// The 8×8 base level's networks: `"mlp"` (the paper's: eyescream's fully connected GAN,
    /// widths `base_g_hidden` / `base_d_hidden`) or `"dcgan"` (DCGAN at 8×8, widths `ngf` /
    /// `ndf`). A missing key means `"dcgan"`, so resolved recipes written before this key existed
    /// (runs trained with the DCGAN base) still rebuild the networks they saved; the shipped
    /// recipes set `base = "mlp"` explicitly.
    #[serde(default = "defaults::lapgan_base")]
    pub base: easel_models::lapgan::BaseKind,
    /// Latent size of the 8×8 base generator.
    #[serde(default = "defaults::nz")]
    pub nz: usize,
    /// Base generator width (`base = "dcgan"` only).
    #[serde(default = "defaults::width")]
    pub ngf: usize,
    /// Base discriminator width (`base = "dcgan"` only).
    #[serde(default = "defaults::width")]
    pub ndf: usize,
    /// Hidden width of the MLP base generator's two layers (`base = "mlp"`; eyescream: 1200).
    #[serde(default = "defaults::lapgan_g_hidden")]
    pub base_g_hidden: usize,
    /// Hidden width of the MLP base discriminator's two layers (`base = "mlp"`; eyescream: 600).
    #[serde(default = "defaults::lapgan_d_hidden")]
    pub base_d_hidden: usize,
    /// Dropout probability after each hidden layer of the MLP base discriminator, in training
    /// only, with masks from the run's seeded stream (`base = "mlp"`; eyescream: 0.5).
    #[serde(default = "defaults::lapgan_dropout")]
    pub base_dropout: f64,
    /// Width of every finer level's generator.
    #[serde(default = "defaults::width")]
    pub level_ngf: usize,
    /// Width of every finer level's discriminator.
    #[serde(default = "defaults::level_ndf")]
    pub level_ndf: usize,
    /// What every finer level's discriminator sees: `"sum"` (the paper's, section 3.1, and
    /// eyescream's `nn.CAddTable()`: the full-resolution image `l + h`, plus label planes when
    /// conditional) or `"concat"` (`h` and `l` stacked as channels, easel's earlier level D). A
    /// missing key means `"sum"` for a recipe being trained; a run's `recipe.toml` written before
    /// the key existed means `"concat"` (see [`Recipe::load_run`]), so old runs rebuild, resume
    /// and evaluate with the networks they trained.
    #[serde(default = "defaults::level_d_input")]
    pub level_d_input: easel_models::lapgan::LevelDInput,
    /// Dropout probability before the output layer of every finer level's discriminator, in
    /// training only, with masks from the run's seeded stream (eyescream's level D: 0.5, the
    /// default; 0 disables it). A run's `recipe.toml` written before the key existed means 0.
    #[serde(default = "defaults::level_d_dropout")]
    pub level_d_dropout: f64,
    /// Class-conditional LAPGAN (the paper's multi-class model): labels feed every level.
    #[serde(default)]
    pub conditional: bool,
    /// Number of classes when conditional; filled in from the data when unset.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// One-sided label smoothing of the real target.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Batch norm when sampling (`eval` or `batch`).
    #[serde(default)]
    pub sample_bn: SampleBn,
}

/// Architecture presets of `[model] kind = "classifier"` ([`easel_models::classifier::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierPreset {
    /// Width 32, 128-d features (MNIST, Fashion-MNIST: grey 28×28).
    Mnist,
    /// Width 64, 256-d features (CIFAR-10: RGB 32×32).
    Cifar10,
}

/// `[model] kind = "classifier"`: a small CNN trained with cross-entropy, whose penultimate
/// features give "FID-MNIST" and whose softmax gives the domain score and mode coverage.
///
/// The image size and channels come from `[data]`; the widths from `preset` (chosen by
/// `data.channels` when unset: grey → `mnist`, RGB → `cifar10`) unless `width` / `feature_dim`
/// are set. The resolved recipe records every value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRecipe {
    /// `mnist` or `cifar10`; unset: by `data.channels`.
    #[serde(default)]
    pub preset: Option<ClassifierPreset>,
    /// Channels of the first block (the second has twice as many); unset: the preset's.
    #[serde(default)]
    pub width: Option<usize>,
    /// Size of the penultimate (feature) layer; unset: the preset's.
    #[serde(default)]
    pub feature_dim: Option<usize>,
    /// Number of classes; filled in from the dataset when unset.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Steps after which the learning rate is multiplied by `lr_drop_factor` (a step schedule,
    /// e.g. `[1404]` for 3 epochs of MNIST at batch 128).
    #[serde(default)]
    pub lr_drop_at: Vec<u64>,
    /// Factor applied at each of `lr_drop_at` (0.1: 1e-3 → 1e-4).
    #[serde(default = "defaults::lr_drop_factor")]
    pub lr_drop_factor: f64,
}

/// `[eval]`: metrics measured during training (see [`crate::eval`]).
///
/// `every` steps (and at the last step) `n` images are generated from a fixed batch of noise,
/// compared with the reference data through `extractor`, logged to TensorBoard (`eval/<metric>`)
/// and `metrics.jsonl`, and the model with the best `best` metric so far is kept in `best/`.
/// Evaluation draws no training randomness and no training batches, so resume stays exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps and at the last step (0 = never).
    #[serde(default)]
    pub every: u64,
    /// Metrics: `fid`, `kid`, `is`, `pr`, `swd`, `nn`, `div`, `modes`.
    #[serde(default = "defaults::eval_metrics")]
    pub metrics: Vec<metric::Metric>,
    /// Images generated per evaluation.
    #[serde(default = "defaults::eval_n")]
    pub n: usize,
    /// Reference images (statistics computed once and cached in `<run>/eval/cache/`); default:
    /// the whole reference set, at most 50 000.
    #[serde(default)]
    pub n_ref: Option<usize>,
    /// `inception` (pytorch-fid weights, see [`metric::INCEPTION_FILE`]),
    /// `inception:PATH`, `classifier:RUN_OR_MODEL_DIR` (an easel classifier run),
    /// `vgg:WEIGHTS.safetensors` (VGG16/19 convolutions) or `pixels`.
    #[serde(default = "defaults::eval_extractor")]
    pub extractor: String,
    /// The reference data: a recipe or dataset TOML (its `[data]` table) or an image folder;
    /// default: the run's own `[data]`.
    #[serde(default)]
    pub against: Option<std::path::PathBuf>,
    /// Which split of the reference data (`train` or `test`); default: the reference's own.
    #[serde(default)]
    pub split: Option<easel_data::Split>,
    /// The metric that decides `best/` (`fid`, `kid`, `swd`: lower is better; `is`: higher);
    /// default: the first of `metrics` that has a direction.
    #[serde(default)]
    pub best: Option<metric::Metric>,
}

/// How the critic is kept 1-Lipschitz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Penalty {
    /// Clip every critic parameter to ±`clip` after each update (Arjovsky et al.).
    Clip,
    /// Gradient penalty λ·(‖∇D(x̂)‖ − 1)² on random interpolates (Gulrajani et al.).
    Gp,
    /// Nothing besides what the network does (e.g. spectral norm).
    None,
}

/// Critic updates per generator update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CriticSchedule {
    /// Arjovsky et al.'s: 100 critic updates for the first 25 generator steps and every 500th,
    /// `n_critic` otherwise.
    #[default]
    Arjovsky,
    /// Always `n_critic`.
    Constant,
}

/// `[model] kind = "wgan"`: a Wasserstein critic (no sigmoid) on the DCGAN networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WganRecipe {
    /// Latent size.
    #[serde(default = "defaults::nz")]
    pub nz: usize,
    /// Generator width.
    #[serde(default = "defaults::width")]
    pub ngf: usize,
    /// Critic width.
    #[serde(default = "defaults::width")]
    pub ndf: usize,
    /// Slope of the critic's LeakyReLU.
    #[serde(default = "defaults::leaky")]
    pub leaky_slope: f64,
    /// Batch norm when sampling (`eval` or `batch`).
    #[serde(default)]
    pub sample_bn: SampleBn,
    /// `clip` (WGAN), `gp` (WGAN-GP) or `none`.
    pub penalty: Penalty,
    /// Clipping bound c (WGAN: 0.01).
    #[serde(default = "defaults::clip")]
    pub clip: f64,
    /// Gradient-penalty weight λ (WGAN-GP: 10).
    #[serde(default = "defaults::gp_weight")]
    pub gp_weight: f64,
    /// Critic updates per generator update (5 in both papers).
    #[serde(default = "defaults::n_critic")]
    pub n_critic: usize,
    /// `arjovsky` (100 critic updates early on and every 500th step) or `constant`.
    #[serde(default)]
    pub schedule: CriticSchedule,
    /// Spectral normalisation of the critic.
    #[serde(default)]
    pub spectral_norm: bool,
    /// Critic normalisation; default `batch` with clipping (as the WGAN code) and `none` with
    /// the gradient penalty (which is per sample, so batch norm is invalid there).
    #[serde(default)]
    pub d_norm: Option<DNorm>,
    /// Generator weight averaging, as `[model] ema_decay` of `kind = "dcgan"`.
    #[serde(default)]
    pub ema_decay: f64,
}

/// Batch-norm statistics used when sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleBn {
    /// Running statistics (PyTorch `eval()`).
    #[default]
    Eval,
    /// The sampled batch's statistics, without updating the running ones.
    Batch,
}

/// `[train]`: the common keys every recipe shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Total training steps (one generator update per step for GANs).
    pub steps: u64,
    /// Images per batch.
    pub batch_size: usize,
    /// Save a checkpoint every this many steps (and always at the end and on Ctrl-C).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Write a preview grid every this many steps (0 = only at the end).
    #[serde(default = "defaults::sample_every")]
    pub sample_every: u64,
    /// Print a log line and append to metrics.jsonl every this many steps.
    #[serde(default = "defaults::log_every")]
    pub log_every: u64,
    /// Weight histograms to TensorBoard every this many steps (0 = never).
    #[serde(default = "defaults::checkpoint_every")]
    pub histogram_every: u64,
    /// How many step checkpoints to keep (the newest; `final/` is kept besides).
    #[serde(default = "defaults::keep_last")]
    pub keep_last: usize,
    /// Images in the preview grid (drawn once from a fixed noise batch).
    #[serde(default = "defaults::preview_count")]
    pub preview_count: usize,
    /// Linear learning-rate decay, as CycleGAN/pix2pix's `n_epochs_decay` does it: every
    /// optimiser keeps its recipe learning rate up to this step, then the rate falls linearly to
    /// zero at `steps` (step `s` uses `lr · (steps − s) / (steps − lr_decay_from)`). It settles a
    /// GAN's late oscillation, so the last previews and `final/` come out cleaner. Unset:
    /// constant rates. A function of the step alone, so resume stays exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay_from: Option<u64>,
}

impl TrainConfig {
    /// The factor on every learning rate for the step that follows `done` completed steps.
    pub fn lr_factor(&self, done: u64) -> f64 {
        match self.lr_decay_from {
            Some(from) if done >= from && self.steps > from => {
                (self.steps.saturating_sub(done)) as f64 / (self.steps - from) as f64
            }
            _ => 1.0,
        }
    }
}

mod defaults {
    pub fn nz() -> usize {
        100
    }
    pub fn width() -> usize {
        64
    }
    pub fn leaky() -> f64 {
        0.2
    }
    pub fn checkpoint_every() -> u64 {
        500
    }
    pub fn sample_every() -> u64 {
        100
    }
    pub fn log_every() -> u64 {
        10
    }
    pub fn keep_last() -> usize {
        3
    }
    pub fn preview_count() -> usize {
        64
    }
    pub fn clip() -> f64 {
        0.01
    }
    pub fn gp_weight() -> f64 {
        10.0
    }
    pub fn n_critic() -> usize {
        5
    }
    pub fn level_ndf() -> usize {
        32
    }
    /// A missing `model.base` is the DCGAN base that lapgan runs used before the key existed.
    pub fn lapgan_base() -> easel_models::lapgan::BaseKind {
        easel_models::lapgan::BaseKind::Dcgan
    }
    pub fn lapgan_g_hidden() -> usize {
        1200
    }
    pub fn lapgan_d_hidden() -> usize {
        600
    }
    pub fn lapgan_dropout() -> f64 {
        0.5
    }
    /// The paper's level discriminator input, `l + h`.
    pub fn level_d_input() -> easel_models::lapgan::LevelDInput {
        easel_models::lapgan::LevelDInput::Sum
    }
    /// eyescream's level discriminator dropout.
    pub fn level_d_dropout() -> f64 {
        0.5
    }
    pub fn lr_drop_factor() -> f64 {
        0.1
    }
    pub fn eval_metrics() -> Vec<super::metric::Metric> {
        vec![super::metric::Metric::Fid]
    }
    pub fn eval_n() -> usize {
        1000
    }
    pub fn eval_extractor() -> String {
        "inception".to_string()
    }
}

impl Recipe {
    /// Reads `path` and applies `overrides` (`key.path=value`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Recipe {
            path: path.display().to_string(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "recipe file not found (`easel recipes` lists the recipes in recipes/)".to_string()
            } else {
                format!("cannot read the recipe: {e}")
            },
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Loads a run's resolved `recipe.toml` (a run directory, `final/` or a checkpoint). Resolved
    /// recipes write every key out, so a key missing there predates it: where a key's default
    /// changed since, the run gets the value it was trained with ([`LEGACY_KEYS`]) instead of the
    /// new default. `overrides` apply on top, as in [`Recipe::load`].
    pub fn load_run(path: &Path, overrides: &[String]) -> Result<Recipe> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::load(path, overrides); // its errors for a missing or unreadable file
        };
        let origin = path.display().to_string();
        match with_legacy_keys(&text) {
            Some(filled) => Self::parse(&filled, &origin, overrides),
            None => Self::parse(&text, &origin, overrides),
        }
    }

    /// Parses recipe `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Recipe> {
        let recipe: Recipe = deserialize_text(text, origin)?;
        if overrides.is_empty() {
            recipe.validate(origin)?;
            return Ok(recipe);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| TrainError::Recipe {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        for kv in overrides {
            apply_override(&mut table, kv)?;
        }
        let joined = overrides
            .iter()
            .map(|o| format!("--set {o}"))
            .collect::<Vec<_>>()
            .join(" ");
        let recipe: Recipe =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                TrainError::Recipe {
                    path: format!("{origin} with {joined}"),
                    message: describe_path_error(e.path().to_string(), e.inner().message()),
                }
            })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    /// The resolved recipe as TOML (every default written out).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| TrainError::Run(format!("cannot serialise the recipe: {e}")))
    }

    /// Checks relations between fields that serde cannot.
    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |message: String| {
            Err(TrainError::Recipe {
                path: origin.to_string(),
                message,
            })
        };
        if self.train.steps == 0 {
            return bad("train.steps must be at least 1".into());
        }
        if self.train.batch_size == 0 {
            return bad("train.batch_size must be at least 1".into());
        }
        if self.train.checkpoint_every == 0 {
            return bad("train.checkpoint_every must be at least 1".into());
        }
        if self.train.log_every == 0 {
            return bad("train.log_every must be at least 1".into());
        }
        if self.train.keep_last == 0 {
            return bad("train.keep_last must be at least 1 (resume needs a checkpoint)".into());
        }
        if let Err(e) = self.data.validate() {
            return bad(e.to_string());
        }
        let smoothing = match &self.model {
            ModelRecipe::Dcgan(m) => m.label_smoothing,
            ModelRecipe::Cgan(m) => m.label_smoothing,
            ModelRecipe::Wgan(_) => 0.0,
            ModelRecipe::Lapgan(m) => m.label_smoothing,
            ModelRecipe::Classifier(_) | ModelRecipe::Style(_) | ModelRecipe::Sr(_) => 0.0,
        };
        if !(0.0..1.0).contains(&smoothing) {
            return bad(format!(
                "model.label_smoothing must be in [0, 1), got {smoothing}"
            ));
        }
        if let ModelRecipe::Lapgan(m) = &self.model {
            let s = self.data.image_size;
            if s < 16 || !s.is_multiple_of(8) || !(s / 8).is_power_of_two() {
                return bad(format!("a lapgan recipe needs data.image_size = 8·2^k with k ≥ 1 (16, 32, 64, …), got {s}"));
            }
            for (key, p) in [
                ("base_dropout", m.base_dropout),
                ("level_d_dropout", m.level_d_dropout),
            ] {
                if !(0.0..1.0).contains(&p) {
                    return bad(format!("model.{key} must be in [0, 1), got {p}"));
                }
            }
        }
        if let ModelRecipe::Classifier(c) = &self.model {
            let s = self.data.image_size;
            if !s.is_multiple_of(4) {
                return bad(format!(
                    "a classifier recipe needs data.image_size to be a multiple of 4 (two 2×2 poolings), got {s}"
                ));
            }
            if !(c.lr_drop_factor > 0.0 && c.lr_drop_factor.is_finite()) {
                return bad(format!(
                    "model.lr_drop_factor must be positive, got {}",
                    c.lr_drop_factor
                ));
            }
            if c.width == Some(0) || c.feature_dim == Some(0) {
                return bad("model.width and model.feature_dim must be at least 1".into());
            }
        }
        if let Some(e) = &self.eval {
            if let Err(message) = validate_config(e, &self.model) {
                return bad(message);
            }
        }
        if let ModelRecipe::Wgan(w) = &self.model {
            if w.n_critic == 0 {
                return bad("model.n_critic must be at least 1".into());
            }
            if w.penalty == Penalty::Clip
                && w.clip.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            {
                return bad(format!("model.clip must be positive, got {}", w.clip));
            }
            if w.penalty == Penalty::Gp && w.d_norm == Some(DNorm::Batch) {
                return bad("model.d_norm = \"batch\" cannot be used with the gradient penalty (it is per sample); use \"none\"".into());
            }
        }
        Ok(())
    }
}

/// Keys whose default changed after runs were recorded without them, per model kind: `(kind,
/// key, the value those runs were trained with)`. LAPGAN's level discriminators saw `[h, l]`
/// stacked and had no dropout before `level_d_input` / `level_d_dropout` existed.
pub const LEGACY_KEYS: &[(&str, &str, &str)] = &[
    ("lapgan", "level_d_input", "\"concat\""),
    ("lapgan", "level_d_dropout", "0.0"),
];

/// `text` with the [`LEGACY_KEYS`] its `[model]` table lacks filled in, or `None` when it lacks
/// none (or does not parse: the caller's parse then reports the error).
fn with_legacy_keys(text: &str) -> Option<String> {
    let mut table: toml::Table = toml::from_str(text).ok()?;
    let model = table.get_mut("model")?.as_table_mut()?;
    let kind = model.get("kind")?.as_str()?.to_string();
    let mut changed = false;
    for (k, key, value) in LEGACY_KEYS {
        if *k == kind && !model.contains_key(*key) {
            let v: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
            model.insert(key.to_string(), v["v"].clone());
            changed = true;
        }
    }
    if changed {
        toml::to_string(&table).ok()
    } else {
        None
    }
}

/// Deserialises `text`, reporting `origin:line:column: key.path: message` on error.
fn deserialize_text<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    let err = |message: String| TrainError::Recipe {
        path: origin.to_string(),
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| err(e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let at = inner.span().map(|s| line_col(text, s.start));
        let msg = describe_path_error(path, inner.message());
        match at {
            Some((l, c)) => err(format!("line {l}, column {c}: {msg}")),
            None => err(msg),
        }
    })
}

fn describe_path_error(path: String, message: &str) -> String {
    if path.is_empty() || path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Applies `key.path=value` to a parsed recipe table. The value is read as a TOML value
/// (`3`, `2e-4`, `true`, `"text"`, `[1, 2]`); anything that is not valid TOML is taken as a string.
pub fn apply_override(table: &mut toml::Table, kv: &str) -> Result<()> {
    let err = |message: String| TrainError::Recipe {
        path: format!("--set {kv}"),
        message,
    };
    let (key, value) = kv
        .split_once('=')
        .ok_or_else(|| err("expected key.path=value, e.g. --set train.steps=2000".into()))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|k| k.is_empty()) {
        return Err(err(format!("bad key path `{key}`")));
    }
    let value = value.trim();
    let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert(part.to_string(), parsed);
            return Ok(());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(err(format!(
                    "`{}` is a {} in the recipe, not a table",
                    parts[..=i].join("."),
                    other.type_str()
                )))
            }
        };
    }
    Ok(())
}

/// Checks an `[eval]` table against the model it would measure (called by recipe validation).
pub fn validate_config(e: &EvalConfig, model: &ModelRecipe) -> std::result::Result<(), String> {
    if let ModelRecipe::Classifier(_) = model {
        return Err("[eval] measures a generator; a classifier recipe reports its test accuracy at the end instead (and `easel eval RUN` measures it again)".into());
    }
    let spec: metric::ExtractorSpec = e
        .extractor
        .parse()
        .map_err(|m: String| format!("eval.extractor: {m}"))?;
    if e.metrics.is_empty() {
        return Err("eval.metrics is empty (e.g. metrics = [\"fid\"])".into());
    }
    if e.n < 10 {
        return Err(format!("eval.n must be at least 10 images, got {}", e.n));
    }
    if e.n_ref.is_some_and(|n| n < 10) {
        return Err("eval.n_ref must be at least 10 images".into());
    }
    if !spec.has_logits() {
        if let Some(m) = e.metrics.iter().find(|m| m.needs_logits()) {
            return Err(format!(
                "eval.metrics: `{m}` needs class logits, which the `pixels` extractor has not (use inception or classifier:RUN)"
            ));
        }
    }
    if let Some(b) = e.best {
        if b.best().is_none() {
            return Err(format!(
                "eval.best = \"{b}\" has no better direction (use fid, kid, swd or is)"
            ));
        }
        if !e.metrics.contains(&b) {
            return Err(format!(
                "eval.best = \"{b}\" is not among eval.metrics ({})",
                e.metrics
                    .iter()
                    .map(|m| m.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn linear_lr_decay_factor() {
        let mut t: TrainConfig =
            toml::from_str("steps = 10\nbatch_size = 2\nlr_decay_from = 6").unwrap();
        // CycleGAN's linear policy: 1 up to the start, then (steps − done) / (steps − start).
        let f: Vec<f64> = (0..10).map(|s| t.lr_factor(s)).collect();
        assert_eq!(f, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]);
        t.lr_decay_from = None;
        assert!((0..10).all(|s| t.lr_factor(s) == 1.0));
        // A start at or past the end never decays (and never divides by zero).
        t.lr_decay_from = Some(10);
        assert!((0..12).all(|s| t.lr_factor(s) == 1.0));
    }

    use super::*;

    const MINIMAL: &str = r#"
description = "test"
seed = 3
[data]
source = "shapes"
image_size = 16
[model]
kind = "dcgan"
ngf = 8
[train]
steps = 10
batch_size = 4
"#;

    fn err_of(text: &str, overrides: &[&str]) -> String {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Recipe::parse(text, "r.toml", &o).unwrap_err().to_string()
    }

    #[test]
    fn minimal_recipe_fills_defaults_and_round_trips() {
        let r = Recipe::parse(MINIMAL, "r.toml", &[]).unwrap();
        let ModelRecipe::Dcgan(m) = &r.model else {
            panic!("dcgan")
        };
        assert_eq!((m.nz, m.ngf, m.ndf), (100, 8, 64));
        assert_eq!(r.train.checkpoint_every, 500);
        let again = Recipe::parse(&r.to_toml().unwrap(), "resolved", &[]).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("ngf = 8", "ngff = 8");
        let e = err_of(&text, &[]);
        assert!(e.starts_with("r.toml: "), "{e}");
        assert!(
            e.contains("unknown field `ngff`") && e.contains("model"),
            "{e}"
        );
        let text = MINIMAL.replace("steps = 10", "steps = 10\nstesp = 3");
        let e = err_of(&text, &[]);
        assert!(
            e.contains("train") && e.contains("unknown field `stesp`") && e.contains("line 12"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_named_with_what_was_expected() {
        let e = err_of(&MINIMAL.replace("steps = 10", "steps = \"ten\""), &[]);
        assert!(
            e.contains("train.steps") && e.contains("invalid type: string \"ten\""),
            "{e}"
        );
        assert!(e.contains("line 11"), "{e}");
    }

    #[test]
    fn overrides_are_type_checked() {
        let r = Recipe::parse(
            MINIMAL,
            "r.toml",
            &["train.steps=25".into(), "model.nz=7".into()],
        )
        .unwrap();
        assert_eq!(r.train.steps, 25);
        let ModelRecipe::Dcgan(m) = &r.model else {
            panic!("dcgan")
        };
        assert_eq!(m.nz, 7);
        let e = err_of(MINIMAL, &["train.steps=abc"]);
        assert!(
            e.contains("--set train.steps=abc")
                && e.contains("train.steps")
                && e.contains("expected u64"),
            "{e}"
        );
        let e = err_of(MINIMAL, &["train.stepz=3"]);
        assert!(e.contains("unknown field `stepz`"), "{e}");
        let e = err_of(MINIMAL, &["seed.x=3"]);
        assert!(e.contains("`seed` is a integer"), "{e}");
        let e = err_of(MINIMAL, &["train.steps"]);
        assert!(e.contains("expected key.path=value"), "{e}");
    }

    #[test]
    fn missing_file_and_bad_values() {
        let e = Recipe::load(Path::new("no/such.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no/such.toml") && e.contains("not found"), "{e}");
        let e = err_of(MINIMAL, &["train.steps=0"]);
        assert!(e.contains("train.steps must be at least 1"), "{e}");
        let e = err_of(
            &MINIMAL.replace("kind = \"dcgan\"", "kind = \"dcgann\""),
            &[],
        );
        assert!(e.contains("dcgann") && e.contains("dcgan"), "{e}");
    }
}
