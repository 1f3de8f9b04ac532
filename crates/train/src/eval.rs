//! Evaluation of generators (and of classifiers): what `easel eval` does, and the
//! [`fit::Evaluator`] that measures a generator during training.
//!
//! The metrics are [`easel_metrics`]'s; this module decides where images come from, which
//! network extracts their features, and where reference statistics are cached.
//!
//! - **Generated images**: `n` samples of a run's generator (fixed latent vectors drawn from a
//!   seed, conditional models cycling through the classes), or the images of a folder.
//! - **Reference images**: a `[data]` table (the run's own by default, or a recipe / dataset TOML
//!   given with `--against`, with `--set data.*` overrides) or an image folder.
//! - **Extractor** ([`ExtractorSpec`]): pytorch-fid's Inception-v3 (`inception`, the standard
//!   FID; weights in [`INCEPTION_FILE`]), an easel classifier run (`classifier:RUN`, the offline
//!   "FID-MNIST"), VGG16/19 convolutions (`vgg:WEIGHTS`, the perceptual-loss network's 512-d
//!   `relu5_x` features at 224×224), or raw `pixels`.
//! - **Reference statistics** (mean, covariance and the features themselves) are computed once
//!   and cached as safetensors ([`easel_metrics::FeatureStats::to_tensors`] plus `features`),
//!   under a key hashing the dataset's identity, its description, the extractor's weight hash and
//!   the number of images: any change to one of them is a cache miss.
//!
//! | metric | reported as | needs |
//! |---|---|---|
//! | `fid` | `fid` | features |
//! | `kid` | `kid`, `kid_std` (subsets of min(1000, n)) | features |
//! | `is` | `is`, `is_std` (10 splits) | class logits |
//! | `pr` | `precision`, `recall` (k = 3, equal-sized sets) | features |
//! | `swd` | `swd` (×10³, mean over pyramid levels) | images ≥ 16 px |
//! | `nn` | `nn_median_ratio`, `nn_below_test_p01` and a PNG of samples beside their nearest training images | a dataset with train and test splits |
//! | `div` | `div` (mean pairwise feature distance of the samples), `div_ref` (of as many reference images) | features |
//! | `modes` | `modes` (classes hit), `modes_kl` (KL to uniform, nats) | class logits |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use easel_data::{DataConfig, Dataset, Source, Split};
use easel_metrics::extractor::Fnv64;
use easel_metrics::swd::Descriptors;
use easel_metrics::{
    ClassifierExtractor, FeatureExtractor, FeatureStats, FidAccumulator, InceptionExtractor,
    KidConfig, PixelExtractor, SwdAccumulator, SwdConfig, VggExtractor,
};
use easel_models::ImageGenerator;
use easel_nn::BnMode;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::recipe::metric::{
    ExtractorSpec, Metric, INCEPTION_DIR, INCEPTION_ENV, INCEPTION_FILE,
};
pub use crate::recipe::validate_config;

use crate::checkpoint;
use crate::error::{IoContext, Result, TrainError};
use crate::fit::{self, layout, BestMetric, TrainStep};
use crate::grid;
use crate::recipe::metric::VGG_HOW;
use crate::recipe::{EvalConfig, ModelRecipe, Recipe};
use crate::rng::{derive_seed, StepRng};

/// Default cache of reference statistics for image folders and `--against` data, relative to the
/// working directory (run directories cache under `<run>/eval/cache/`).
pub const DEFAULT_CACHE_DIR: &str = "data/.cache/metrics";
/// Reference images used by default: the whole set up to this many.
pub const DEFAULT_N_REF: usize = 50_000;
/// Seed of the reference subset (fixed, so cached statistics stay valid across evaluations).
const REFERENCE_SEED: u64 = 0x5245_4653;

/// The metric that keeps `best/` under an `[eval]` table: `best`, else the first metric with a
/// direction.
pub fn best_metric(e: &EvalConfig) -> Option<BestMetric> {
    match e.best {
        Some(m) => m.best(),
        None => e.metrics.iter().find_map(|m| m.best()),
    }
}

/// Path of the Inception weights: `explicit`, else `$EASEL_INCEPTION_WEIGHTS`, else
/// `data/weights/pt_inception-2015-12-05.safetensors`; an error saying where to put the file and
/// naming the offline alternative when none exists.
pub fn inception_weights(explicit: Option<&Path>) -> Result<PathBuf> {
    let how = format!(
        "Get pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth, GitHub release `fid_weights` of mseitzer/pytorch-fid), \
         convert them with safetensors.torch.save_file (see `easel_models::inception`), and put the file at {INCEPTION_DIR}/{INCEPTION_FILE} \
         or pass --extractor inception:PATH (or set {INCEPTION_ENV}). \
         Offline alternative: --extractor classifier:RUN with a classifier trained by `easel train recipes/classifier-mnist.toml` (FID-MNIST), or --extractor pixels"
    );
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(TrainError::Run(format!(
            "Inception weights not found at {}. {how}",
            p.display()
        )));
    }
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os(INCEPTION_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("{} (from {INCEPTION_ENV})", p.display()));
    }
    let p = Path::new(INCEPTION_DIR).join(INCEPTION_FILE);
    if p.is_file() {
        return Ok(p);
    }
    tried.push(p.display().to_string());
    Err(TrainError::Run(format!(
        "the Inception-v3 FID weights are not here (looked at {}). {how}",
        tried.join(", ")
    )))
}

/// A classifier model directory: its network configuration and weights file.
fn classifier_files(path: &Path) -> Result<(PathBuf, Recipe)> {
    let dir = crate::run_dir::model_dir(path).map_err(|e| {
        TrainError::Run(format!(
            "classifier extractor: {e} (train one with `easel train recipes/classifier-mnist.toml`)"
        ))
    })?;
    let recipe = Recipe::load(&dir.join(checkpoint::RECIPE_FILE), &[])?;
    if !matches!(recipe.model, ModelRecipe::Classifier(_)) {
        return Err(TrainError::Run(format!(
            "{} holds a `{}` model, not a classifier (train one with `easel train recipes/classifier-mnist.toml`)",
            dir.display(),
            recipe.model.kind()
        )));
    }
    Ok((dir, recipe))
}

/// Loads the feature extractor for images of `shape` `[C, H, W]`.
pub fn load_extractor(
    spec: &ExtractorSpec,
    shape: [usize; 3],
    device: &Device,
) -> Result<Box<dyn FeatureExtractor>> {
    match spec {
        ExtractorSpec::Inception(explicit) => {
            let path = inception_weights(explicit.as_deref())?;
            let ex = InceptionExtractor::load(&path, device).map_err(|e| {
                TrainError::Run(format!(
                    "loading the Inception weights {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Box::new(ex))
        }
        ExtractorSpec::Classifier(path) => {
            let (dir, recipe) = classifier_files(path)?;
            let cfg = crate::steps::classifier::config(&recipe)?;
            if [cfg.channels, cfg.image_size, cfg.image_size] != shape {
                return Err(TrainError::Run(format!(
                    "the classifier in {} takes {}×{}×{} images, but the images to compare are {}×{}×{} (use a classifier trained on data of that size, or --set data.image_size=… data.channels=…)",
                    dir.display(),
                    cfg.channels,
                    cfg.image_size,
                    cfg.image_size,
                    shape[0],
                    shape[1],
                    shape[2]
                )));
            }
            let weights = dir.join(format!("{}.safetensors", crate::steps::classifier::NETWORK));
            let ex = ClassifierExtractor::load(&cfg, &weights, device).map_err(|e| {
                TrainError::Run(format!("loading the classifier {}: {e}", weights.display()))
            })?;
            Ok(Box::new(ex))
        }
        ExtractorSpec::Vgg(path) => {
            if !path.is_file() {
                return Err(TrainError::Run(format!(
                    "VGG weights not found at {}: {VGG_HOW}",
                    path.display()
                )));
            }
            let ex = VggExtractor::load(path, device)
                .map_err(|e| TrainError::Run(format!("{e} ({VGG_HOW})")))?;
            Ok(Box::new(ex))
        }
        ExtractorSpec::Pixels => Ok(Box::new(PixelExtractor::new(shape))),
    }
}

/// Real images to compare against.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // built once per evaluation; boxing buys nothing
pub enum RealData {
    /// A `[data]` table, with the seed that keys generated shapes.
    Dataset {
        /// The table.
        data: DataConfig,
        /// The recipe seed (only `shapes` uses it).
        seed: u64,
    },
    /// A folder of images (labels from subfolders, if any).
    Folder(PathBuf),
}

impl RealData {
    /// The same data with another split (folders have none).
    pub fn with_split(&self, split: Split) -> Option<RealData> {
        match self {
            RealData::Dataset { data, seed } => Some(RealData::Dataset {
                data: DataConfig {
                    split,
                    ..data.clone()
                },
                seed: *seed,
            }),
            RealData::Folder(_) => None,
        }
    }

    /// Opens it; folders are read at `shape` (`[C, H, W]`, H = W).
    pub fn open(&self, shape: Option<[usize; 3]>) -> Result<Arc<dyn Dataset>> {
        match self {
            RealData::Dataset { data, seed } => Ok(easel_data::open(data, *seed)?),
            RealData::Folder(dir) => {
                let [c, s, _] = match shape {
                    Some(s) => s,
                    None => folder_native_shape(dir)?,
                };
                Ok(Arc::new(easel_data::Folder::open(
                    dir,
                    s,
                    c,
                    easel_data::Crop::Center,
                    easel_data::CorruptPolicy::Skip,
                )?))
            }
        }
    }

    /// What identifies the data for the cache (resolved paths, sizes, split, seed of shapes).
    fn identity(&self, ds: &dyn Dataset) -> String {
        let canon = |p: &Path| {
            p.canonicalize()
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        match self {
            RealData::Dataset { data, seed } => {
                let mut d = data.clone();
                d.dir = d.dir.as_deref().map(|p| PathBuf::from(canon(p)));
                d.workers = 0;
                let seed = if d.source == Source::Shapes { *seed } else { 0 };
                format!(
                    "dataset {} seed {seed} [{}]",
                    serde_json::to_string(&d).unwrap_or_default(),
                    ds.describe()
                )
            }
            RealData::Folder(dir) => {
                let [c, h, w] = ds.shape();
                format!("folder {} {c}×{h}×{w} [{}]", canon(dir), ds.describe())
            }
        }
    }
}

/// `[C, H, W]` to read a folder at when nothing else decides: its first image's shorter side,
/// in RGB.
fn folder_native_shape(dir: &Path) -> Result<[usize; 3]> {
    let probe = easel_data::Folder::open(
        dir,
        8,
        3,
        easel_data::Crop::Center,
        easel_data::CorruptPolicy::Skip,
    )?;
    let first = probe
        .files()
        .first()
        .map(|(p, _)| p.clone())
        .ok_or_else(|| TrainError::Run(format!("{}: no images", dir.display())))?;
    let (w, h) = image::image_dimensions(&first)
        .map_err(|e| TrainError::Run(format!("reading {}: {e}", first.display())))?;
    let s = w.min(h) as usize;
    Ok([3, s, s])
}

/// Reads `--against`: an image folder, or a TOML file whose `[data]` table (and `seed`) describe
/// a dataset (any recipe will do). `overrides` are `data.KEY=VALUE` changes to that table.
pub fn load_against(path: &Path, overrides: &[String]) -> Result<RealData> {
    if path.is_dir() {
        if !overrides.is_empty() {
            return Err(TrainError::Run(format!(
                "--set changes a [data] table, but --against {} is an image folder",
                path.display()
            )));
        }
        return Ok(RealData::Folder(path.to_path_buf()));
    }
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Recipe {
        path: origin.clone(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "not found: --against takes an image folder or a recipe/dataset TOML with a [data] table".into()
        } else {
            format!("cannot read it: {e}")
        },
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| TrainError::Recipe {
        path: origin.clone(),
        message: e.to_string(),
    })?;
    data_from_table(table, &origin, overrides)
}

fn data_from_table(table: toml::Table, origin: &str, overrides: &[String]) -> Result<RealData> {
    let seed = match table.get("seed") {
        None => 0,
        Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
        Some(other) => {
            return Err(TrainError::Recipe {
                path: origin.to_string(),
                message: format!("seed: expected a non-negative integer, got {other}"),
            })
        }
    };
    let Some(toml::Value::Table(data)) = table.get("data") else {
        return Err(TrainError::Recipe {
            path: origin.to_string(),
            message: "no [data] table: --against takes a recipe or dataset TOML with a [data] table (e.g. recipes/dcgan-mnist.toml), or an image folder".into(),
        });
    };
    let mut wrapper = toml::Table::new();
    wrapper.insert("data".into(), toml::Value::Table(data.clone()));
    for o in overrides {
        if !o.trim_start().starts_with("data.") {
            return Err(TrainError::Recipe {
                path: format!("--set {o}"),
                message: "eval's --set changes the reference data: keys start with `data.` (e.g. --set data.split=test)".into(),
            });
        }
        crate::recipe::apply_override(&mut wrapper, o)?;
    }
    let value = wrapper
        .remove("data")
        .unwrap_or(toml::Value::Table(toml::Table::new()));
    let data: DataConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut where_ = origin.to_string();
        if !overrides.is_empty() {
            where_.push_str(&format!(" with --set {}", overrides.join(" --set ")));
        }
        TrainError::Recipe {
            path: where_,
            message: format!("data.{}: {}", e.path(), e.inner()),
        }
    })?;
    data.validate().map_err(|e| TrainError::Recipe {
        path: origin.to_string(),
        message: e.to_string(),
    })?;
    Ok(RealData::Dataset { data, seed })
}

/// Whether a cached reference was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    /// Read from this file.
    Hit(PathBuf),
    /// Computed and written to this file.
    Miss(PathBuf),
    /// Computed, not cached.
    Off,
}

impl std::fmt::Display for CacheUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheUse::Hit(p) => write!(f, "hit {}", p.display()),
            CacheUse::Miss(p) => write!(f, "miss, written to {}", p.display()),
            CacheUse::Off => f.write_str("off"),
        }
    }
}

/// Features and statistics of a reference dataset.
pub struct Reference {
    /// The dataset's description.
    pub description: String,
    /// Mean and covariance of all `features`.
    pub stats: FeatureStats,
    /// `[M, D]` f32 on the CPU, one row per entry of `indices`.
    pub features: Tensor,
    /// Dataset indices of the rows.
    pub indices: Vec<usize>,
    /// Where the statistics came from.
    pub cache: CacheUse,
    /// The dataset (for showing nearest neighbours and drawing SWD images).
    pub dataset: Arc<dyn Dataset>,
}

/// Indices of the reference subset: all of `len` if `m ≥ len`, else `m` of them drawn with a
/// fixed seed, sorted.
pub fn reference_indices(len: usize, m: usize) -> Vec<usize> {
    if m >= len {
        return (0..len).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(REFERENCE_SEED);
    let mut v = rand::seq::index::sample(&mut rng, len, m).into_vec();
    v.sort_unstable();
    v
}

/// The cache file of a reference: `ref-<hash>.safetensors` in `dir`.
pub fn cache_path(dir: &Path, identity: &str, extractor_hash: &str, m: usize) -> PathBuf {
    let mut h = Fnv64::default();
    for part in [identity, extractor_hash, &m.to_string()] {
        h.write(part.as_bytes());
        h.write(b"\n");
    }
    dir.join(format!("ref-{:016x}.safetensors", h.finish()))
}

fn bar(n: u64, quiet: bool, what: &str) -> ProgressBar {
    let b = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(n)
    };
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bar:30} {pos}/{len} images ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// Batch size for feature extraction.
fn extract_batch(ex: &dyn FeatureExtractor) -> usize {
    if ex.name().starts_with("inception") || ex.name().starts_with("vgg") {
        32
    } else {
        250
    }
}

/// Images `indices` of `ds` as a `[B, C, H, W]` f32 tensor on the CPU.
fn load_images(ds: &dyn Dataset, indices: &[usize]) -> Result<Tensor> {
    let [c, h, w] = ds.shape();
    let mut pixels = Vec::with_capacity(indices.len() * c * h * w);
    for &i in indices {
        pixels.extend(ds.get(i, 0)?.pixels);
    }
    Ok(Tensor::from_vec(
        pixels,
        (indices.len(), c, h, w),
        &Device::Cpu,
    )?)
}

/// Computes (or reads from `cache_dir`) the features and statistics of up to `n_ref` images of
/// `real`.
pub fn reference(
    real: &RealData,
    ds: Arc<dyn Dataset>,
    extractor: &dyn FeatureExtractor,
    n_ref: usize,
    cache_dir: Option<&Path>,
    device: &Device,
    quiet: bool,
) -> Result<Reference> {
    let description = ds.describe();
    let identity = real.identity(ds.as_ref());
    let indices = reference_indices(ds.len(), n_ref);
    let m = indices.len();
    let path = cache_dir.map(|d| cache_path(d, &identity, &extractor.hash(), m));
    if let Some(p) = path.as_deref().filter(|p| p.exists()) {
        match read_cached(p, &extractor.hash(), &description, m) {
            Ok((stats, features)) => {
                return Ok(Reference {
                    description,
                    stats,
                    features,
                    indices,
                    cache: CacheUse::Hit(p.to_path_buf()),
                    dataset: ds,
                })
            }
            Err(e) => {
                if !quiet {
                    eprintln!(
                        "warning: ignoring the cached reference {}: {e}; computing it again",
                        p.display()
                    );
                }
            }
        }
    }
    if !quiet {
        println!(
            "reference statistics: {description}, {m} images through {} …",
            extractor.name()
        );
    }
    let pb = bar(m as u64, quiet, "reference");
    let mut col = Collector::new(extractor, false, device);
    for chunk in indices.chunks(extract_batch(extractor)) {
        col.push(&load_images(ds.as_ref(), chunk)?)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let got = col.finish(&description)?;
    let cache = match path {
        Some(p) => {
            write_cached(&p, &got.stats, &got.features)?;
            CacheUse::Miss(p)
        }
        None => CacheUse::Off,
    };
    Ok(Reference {
        description,
        stats: got.stats,
        features: got.features,
        indices,
        cache,
        dataset: ds,
    })
}

fn write_cached(path: &Path, stats: &FeatureStats, features: &Tensor) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx("creating", parent)?;
    }
    let mut t = stats.to_tensors()?;
    t.insert("features".into(), features.clone());
    let tmp = checkpoint::temp_sibling(path);
    candle_core::safetensors::save(&t, &tmp).map_err(|e| {
        TrainError::Run(format!(
            "writing the reference cache {}: {e} (choose another place with --cache-dir)",
            tmp.display()
        ))
    })?;
    std::fs::rename(&tmp, path).ctx("renaming into", path)
}

fn read_cached(
    path: &Path,
    extractor: &str,
    description: &str,
    m: usize,
) -> std::result::Result<(FeatureStats, Tensor), String> {
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| e.to_string())?;
    let stats = FeatureStats::from_tensors(&t).map_err(|e| e.to_string())?;
    if stats.extractor != extractor || stats.dataset != description || stats.n != m {
        return Err(format!(
            "it holds {} images of {:?} through {:?}",
            stats.n, stats.dataset, stats.extractor
        ));
    }
    let f = t
        .get("features")
        .ok_or("no features tensor")?
        .to_dtype(DType::F32)
        .map_err(|e| e.to_string())?;
    if f.dims() != [m, stats.dim] {
        return Err(format!("features of shape {:?}", f.dims()));
    }
    Ok((stats, f))
}

/// Features (and logits, SWD descriptors, a few images) of a stream of image batches.
struct Collector<'a> {
    ex: &'a dyn FeatureExtractor,
    logits: bool,
    device: Device,
    acc: FidAccumulator,
    feats: Vec<Tensor>,
    logs: Vec<Tensor>,
    /// SWD descriptors of the first `.1` images.
    swd: Option<(SwdAccumulator, usize)>,
    seen: usize,
    keep: usize,
    kept: Vec<Tensor>,
}

/// What a [`Collector`] gathered.
struct Collected {
    stats: FeatureStats,
    features: Tensor,
    logits: Option<Tensor>,
    swd: Option<Vec<Descriptors>>,
    kept: Option<Tensor>,
}

impl<'a> Collector<'a> {
    fn new(ex: &'a dyn FeatureExtractor, logits: bool, device: &Device) -> Self {
        Self {
            ex,
            logits,
            device: device.clone(),
            acc: FidAccumulator::new(ex.dim()),
            feats: Vec::new(),
            logs: Vec::new(),
            swd: None,
            seen: 0,
            keep: 0,
            kept: Vec::new(),
        }
    }

    fn push(&mut self, images: &Tensor) -> Result<()> {
        let b = images.dim(0)?;
        let x = images.to_device(&self.device)?.to_dtype(DType::F32)?;
        let (f, l) = if self.logits {
            let (f, l) = self.ex.extract(&x)?;
            let l = l.ok_or_else(|| {
                TrainError::Run(format!(
                    "the {} extractor gives no class logits (needed by is and modes)",
                    self.ex.name()
                ))
            })?;
            (f, Some(l))
        } else {
            (self.ex.features(&x)?, None)
        };
        // Detached: features and images of a network with variables would otherwise keep the
        // whole forward graph of every batch alive.
        let f = f.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        self.acc.update(&f)?;
        self.feats.push(f);
        if let Some(l) = l {
            self.logs
                .push(l.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        }
        let cpu = images
            .detach()
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?;
        if let Some((acc, limit)) = &mut self.swd {
            let take = b.min(limit.saturating_sub(self.seen));
            if take > 0 {
                acc.update(&cpu.narrow(0, 0, take)?)?;
            }
        }
        let take = b.min(self.keep.saturating_sub(self.seen));
        if take > 0 {
            self.kept.push(cpu.narrow(0, 0, take)?);
        }
        self.seen += b;
        Ok(())
    }

    fn finish(self, description: &str) -> Result<Collected> {
        if self.seen < 2 {
            return Err(TrainError::Run(format!(
                "{description}: need at least 2 images, got {}",
                self.seen
            )));
        }
        let stats = self.acc.finish(&self.ex.hash(), description)?;
        let features = Tensor::cat(&self.feats, 0)?;
        let logits = if self.logits {
            Some(Tensor::cat(&self.logs, 0)?)
        } else {
            None
        };
        let swd = match self.swd {
            Some((acc, _)) => Some(acc.finish()?),
            None => None,
        };
        let kept = if self.kept.is_empty() {
            None
        } else {
            Some(Tensor::cat(&self.kept, 0)?)
        };
        Ok(Collected {
            stats,
            features,
            logits,
            swd,
            kept,
        })
    }
}

/// Draws `n` images from `g` in batches of `batch` and hands each batch to `f`. The latent
/// vectors come from `seed` (image `i` gets the same z whatever the batch size); conditional
/// generators get class `i mod K`.
pub fn generate(
    g: &dyn ImageGenerator,
    mode: BnMode,
    n: usize,
    seed: u64,
    batch: usize,
    device: &Device,
    mut f: impl FnMut(&Tensor) -> Result<()>,
) -> Result<()> {
    let nz = g.latent_dim();
    let k = g.num_classes();
    let mut rng = StepRng::new(seed, "eval-z");
    let batch = batch.max(1);
    let mut start = 0;
    while start < n {
        let b = batch.min(n - start);
        let z = Tensor::from_vec(rng.normal_vec(b * nz), (b, nz), device)?;
        let labels = if k > 0 {
            let l: Vec<u32> = (start..start + b).map(|i| (i % k) as u32).collect();
            Some(Tensor::from_vec(l, b, device)?)
        } else {
            None
        };
        let images = g.generate(&z, labels.as_ref(), mode)?; // [b, C, H, W]
        f(&images)?;
        start += b;
    }
    Ok(())
}

/// Everything the metrics need besides the two image sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Metrics to compute.
    pub metrics: Vec<Metric>,
    /// Seed of the random choices inside the metrics (KID subsets, IS shuffle, SWD patches).
    pub seed: u64,
}

/// Metrics of the generated set against the reference, plus details for the JSON report.
struct Computed {
    values: Vec<(String, f64)>,
    details: serde_json::Map<String, serde_json::Value>,
    nn: Option<easel_metrics::OverfitReport>,
}

/// Seeded subset of `k` of `m` rows (first `k` of a permutation; all rows if `k ≥ m`), sorted.
fn subset_rows(m: usize, k: usize, seed: u64) -> Vec<u32> {
    if k >= m {
        return (0..m as u32).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5355_4253);
    let mut v: Vec<u32> = rand::seq::index::sample(&mut rng, m, k)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    v.sort_unstable();
    v
}

fn rows(t: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let i = Tensor::from_slice(idx, idx.len(), &Device::Cpu)?;
    Ok(t.index_select(&i, 0)?)
}

/// SWD configuration of an evaluation.
fn swd_config(seed: u64) -> SwdConfig {
    SwdConfig {
        seed,
        ..SwdConfig::default()
    }
}

/// Descriptors of `count` reference images (the same seeded subset PR uses).
fn reference_swd(reference: &Reference, count: usize, seed: u64) -> Result<Vec<Descriptors>> {
    let sub = subset_rows(reference.indices.len(), count, seed);
    let idx: Vec<usize> = sub.iter().map(|&r| reference.indices[r as usize]).collect();
    let mut acc = SwdAccumulator::new(&swd_config(seed));
    for chunk in idx.chunks(500) {
        acc.update(&load_images(reference.dataset.as_ref(), chunk)?)?;
    }
    Ok(acc.finish()?)
}

fn compute(
    s: &Settings,
    reference: &Reference,
    fake: &Collected,
    ref_swd: Option<&[Descriptors]>,
    nn: Option<(&Reference, &Reference)>,
) -> Result<Computed> {
    use serde_json::json;
    let n = fake.features.dim(0)?;
    let m = reference.features.dim(0)?;
    let mut values: Vec<(String, f64)> = Vec::new();
    let mut details = serde_json::Map::new();
    let mut nn_report = None;
    let sub = subset_rows(m, n, s.seed);
    for metric in &s.metrics {
        match metric {
            Metric::Fid => {
                values.push(("fid".into(), reference.stats.frechet_distance(&fake.stats)?));
            }
            Metric::Kid => {
                let size = 1000.min(n).min(m);
                let cfg = KidConfig {
                    subset_size: size,
                    seed: s.seed,
                    ..KidConfig::default()
                };
                let r = easel_metrics::kid(&reference.features, &fake.features, &cfg)?;
                values.push(("kid".into(), r.mean));
                values.push(("kid_std".into(), r.std));
                details.insert(
                    "kid".into(),
                    json!({"subsets": cfg.subsets, "subset_size": size}),
                );
            }
            Metric::Is => {
                let logits = fake.logits.as_ref().ok_or_else(|| {
                    TrainError::Run("is needs class logits from the extractor".into())
                })?;
                let splits = 10.min(n);
                let r = easel_metrics::inception_score(logits, splits, Some(s.seed))?;
                values.push(("is".into(), r.mean));
                values.push(("is_std".into(), r.std));
                details.insert("is".into(), json!({"splits": splits}));
            }
            Metric::Pr => {
                let real = rows(&reference.features, &sub)?;
                let r = easel_metrics::precision_recall(&real, &fake.features, 3)?;
                values.push(("precision".into(), r.precision));
                values.push(("recall".into(), r.recall));
                details.insert(
                    "pr".into(),
                    json!({"k": 3, "real": sub.len(), "generated": n}),
                );
            }
            Metric::Swd => {
                let (Some(a), Some(b)) = (ref_swd, fake.swd.as_deref()) else {
                    return Err(TrainError::Run(
                        "swd: descriptors were not collected".into(),
                    ));
                };
                let r = easel_metrics::swd(a, b, &swd_config(s.seed))?;
                values.push(("swd".into(), r.mean));
                details.insert("swd_per_level".into(), json!(r.per_level));
            }
            Metric::Nn => {
                let (train, test) = nn.ok_or_else(|| {
                    TrainError::Run("nn: the training and test references are missing".into())
                })?;
                let r = easel_metrics::overfitting_check(
                    &fake.features,
                    &train.features,
                    &test.features,
                )?;
                values.push(("nn_median_ratio".into(), r.median_ratio));
                values.push(("nn_below_test_p01".into(), r.fraction_below_test_p01));
                details.insert(
                    "nn".into(),
                    json!({
                        "quantile_levels": easel_metrics::neighbours::OVERFIT_QUANTILES,
                        "sample_quantiles": r.sample_quantiles,
                        "test_quantiles": r.test_quantiles,
                        "train": train.description,
                        "test": test.description,
                    }),
                );
                nn_report = Some(r);
            }
            Metric::Div => {
                values.push((
                    "div".into(),
                    easel_metrics::mean_pairwise_distance(&fake.features)?,
                ));
                let real = rows(&reference.features, &sub)?;
                values.push((
                    "div_ref".into(),
                    easel_metrics::mean_pairwise_distance(&real)?,
                ));
            }
            Metric::Modes => {
                let logits = fake.logits.as_ref().ok_or_else(|| {
                    TrainError::Run("modes needs class logits from the extractor".into())
                })?;
                let r = easel_metrics::mode_coverage(logits)?;
                values.push(("modes".into(), r.classes_hit as f64));
                values.push(("modes_kl".into(), r.kl_to_uniform));
                details.insert(
                    "modes".into(),
                    json!({"histogram": r.histogram, "num_classes": r.num_classes}),
                );
            }
        }
    }
    Ok(Computed {
        values,
        details,
        nn: nn_report,
    })
}

/// The nearest-neighbour picture: each of the first samples beside its nearest training image.
fn nn_picture(
    samples: &Tensor,
    report: &easel_metrics::OverfitReport,
    train: &Reference,
    path: &Path,
) -> Result<()> {
    let k = samples.dim(0)?.min(report.samples.len());
    let idx: Vec<usize> = report.samples[..k]
        .iter()
        .map(|n| train.indices[n.index])
        .collect();
    let nearest = load_images(train.dataset.as_ref(), &idx)?;
    let mut tiles = Vec::with_capacity(2 * k);
    for i in 0..k {
        tiles.push(samples.narrow(0, i, 1)?);
        tiles.push(nearest.narrow(0, i, 1)?);
    }
    let all = Tensor::cat(&tiles, 0)?;
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).ctx("creating", parent)?;
        }
    }
    grid::make_grid(&all, 16, 2, 128)?.save_png(path)
}

/// Samples shown in the nearest-neighbour picture.
const NN_SHOWN: usize = 32;

/// Options of [`evaluate`] (`easel eval`).
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// A run directory (or its `final/`, `best/`, a checkpoint) or a folder of images.
    pub target: PathBuf,
    /// Reference images: a recipe/dataset TOML or an image folder; default: the run's `[data]`.
    pub against: Option<PathBuf>,
    /// `data.KEY=VALUE` changes to the reference `[data]` table (e.g. `data.split=test`).
    pub overrides: Vec<String>,
    /// Metrics; default `fid,kid,pr,div` and, when the extractor has class logits, `is,modes`.
    pub metrics: Option<Vec<Metric>>,
    /// Images to generate (or at most this many of an image folder).
    pub n: usize,
    /// Reference images; default all, at most [`DEFAULT_N_REF`].
    pub n_ref: Option<usize>,
    /// The feature extractor.
    pub extractor: ExtractorSpec,
    /// JSON report path; default `<run>/eval/eval-step-N.json`, or `<folder>.eval.json`.
    pub out: Option<PathBuf>,
    /// Seed of the latent vectors and of the metrics' random choices; default from the recipe seed.
    pub seed: Option<u64>,
    /// Where reference statistics are cached; default `<run>/eval/cache/` or [`DEFAULT_CACHE_DIR`].
    pub cache_dir: Option<PathBuf>,
    /// Device for the generator and the extractor.
    pub device: Device,
    /// Print no progress.
    pub quiet: bool,
    /// A GAN run's weights to measure (its weight average by default when it keeps one).
    pub weights: crate::run_dir::GeneratorWeights,
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// What was evaluated (the command-line target).
    pub target: String,
    /// The model folder used, for a run.
    pub model_dir: Option<PathBuf>,
    /// Its training step, for a run.
    pub step: Option<u64>,
    /// Description of the generated (or folder) images.
    pub generated: String,
    /// Description of the reference images.
    pub against: String,
    /// The extractor (`name:hash`).
    pub extractor: String,
    /// Generated / folder images used.
    pub n: usize,
    /// Reference images used.
    pub n_ref: usize,
    /// Seed of the latent vectors and the metrics' random choices.
    pub seed: u64,
    /// Metric values by name, in order.
    pub values: Vec<(String, f64)>,
    /// Per-metric details (KID subset size, SWD levels, mode histogram, NN quantiles, …).
    pub details: serde_json::Value,
    /// Reference-cache use.
    pub cache: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The JSON report written.
    pub json: PathBuf,
    /// Other files written (the nearest-neighbour picture).
    pub files: Vec<PathBuf>,
}

impl EvalReport {
    /// The report as JSON (values as an object).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            let values: serde_json::Map<String, serde_json::Value> = self
                .values
                .iter()
                .map(|(k, x)| (k.clone(), json_number(*x)))
                .collect();
            obj.insert("values".into(), serde_json::Value::Object(values));
        }
        v
    }

    /// A plain-text table of the values.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "generated  {}", self.generated);
        let _ = writeln!(s, "against    {}", self.against);
        let _ = writeln!(s, "extractor  {}", self.extractor);
        let w = self
            .values
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(s, "{:w$}  value", "metric");
        let _ = writeln!(s, "{:-<w$}  {:-<12}", "", "");
        for (k, v) in &self.values {
            let _ = writeln!(s, "{k:w$}  {}", fmt_value(*v));
        }
        s
    }
}

fn json_number(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(x.to_string()))
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// What `easel eval` measures.
#[allow(clippy::large_enum_variant)] // one per command
enum Target {
    Run { dir: PathBuf, recipe: Recipe },
    Folder(PathBuf),
}

fn resolve_target(path: &Path) -> Result<Target> {
    if !path.exists() {
        return Err(TrainError::Run(format!(
            "{}: no such run directory or image folder (check the path; `easel inspect RUN` describes a run)",
            path.display()
        )));
    }
    match crate::run_dir::model_dir(path) {
        Ok(dir) => {
            let recipe = Recipe::load_run(&dir.join(checkpoint::RECIPE_FILE), &[])?;
            Ok(Target::Run { dir, recipe })
        }
        Err(_) if path.is_dir() => Ok(Target::Folder(path.to_path_buf())),
        Err(_) => Err(TrainError::Run(format!(
            "{}: neither a run directory (with final/ or checkpoints/) nor a folder of images",
            path.display()
        ))),
    }
}

/// `easel eval`: measures a run's generator (or a folder of images, or a classifier's accuracy)
/// against reference data, writes the JSON report and returns it.
pub fn evaluate(req: &EvalRequest) -> Result<EvalReport> {
    let started = Instant::now();
    let target = resolve_target(&req.target)?;
    if let Target::Run { dir, recipe } = &target {
        if matches!(recipe.model, ModelRecipe::Classifier(_)) {
            return evaluate_classifier(req, dir, recipe, started);
        }
    }
    if req.n < 10 {
        return Err(TrainError::Run(format!(
            "--n must be at least 10, got {}",
            req.n
        )));
    }
    // The reference data.
    let real = match (&req.against, &target) {
        (Some(p), _) => load_against(p, &req.overrides)?,
        (None, Target::Run { recipe, .. }) => {
            let mut t = toml::Table::new();
            let data = toml::Value::try_from(&recipe.data)
                .map_err(|e| TrainError::Run(format!("the run's [data]: {e}")))?;
            t.insert("data".into(), data);
            t.insert("seed".into(), toml::Value::Integer(recipe.seed as i64));
            data_from_table(t, "the run's recipe", &req.overrides)?
        }
        (None, Target::Folder(dir)) => {
            return Err(TrainError::Run(format!(
                "{} is a folder of images: say what to compare it with, --against RECIPE.toml (its [data] table, e.g. recipes/dcgan-mnist.toml --set data.dir=…) or --against IMAGE_DIR",
                dir.display()
            )))
        }
    };
    // Shapes: a run decides the image shape; a folder target takes the reference's.
    let run_shape = match &target {
        Target::Run { recipe, .. } => Some([
            recipe.data.channels,
            recipe.data.image_size,
            recipe.data.image_size,
        ]),
        Target::Folder(_) => None,
    };
    let classifier_shape = match &req.extractor {
        ExtractorSpec::Classifier(p) => {
            let (_, r) = classifier_files(p)?;
            Some([r.data.channels, r.data.image_size, r.data.image_size])
        }
        _ => None,
    };
    let ref_ds = real.open(run_shape.or(classifier_shape))?;
    let shape = ref_ds.shape();
    if let Some(rs) = run_shape {
        if rs != shape {
            return Err(TrainError::Run(format!(
                "the generator makes {}×{}×{} images but the reference data gives {}×{}×{} ({}): pass --set data.image_size={} --set data.channels={}",
                rs[0], rs[1], rs[2], shape[0], shape[1], shape[2], ref_ds.describe(), rs[1], rs[0]
            )));
        }
    }
    let extractor = load_extractor(&req.extractor, shape, &req.device)?;
    let metrics = match &req.metrics {
        Some(m) => m.clone(),
        None => {
            let mut m = vec![Metric::Fid, Metric::Kid, Metric::Pr, Metric::Div];
            if extractor.num_classes().is_some() {
                m.extend([Metric::Is, Metric::Modes]);
            }
            m
        }
    };
    if extractor.num_classes().is_none() {
        if let Some(m) = metrics.iter().find(|m| m.needs_logits()) {
            return Err(TrainError::Run(format!(
                "--metrics {m} needs class logits, which the {} extractor has not (use --extractor inception or classifier:RUN)",
                extractor.name()
            )));
        }
    }
    let seed = req.seed.unwrap_or(match &target {
        Target::Run { recipe, .. } => derive_seed(recipe.seed, "eval") % 1_000_000,
        Target::Folder(_) => 0,
    });
    let root = match &target {
        Target::Run { dir, .. } => Some(crate::fit::layout::run_of(dir)),
        Target::Folder(_) => None,
    };
    let cache_dir = req.cache_dir.clone().unwrap_or_else(|| match &root {
        Some(r) => layout::eval_dir(r).join("cache"),
        None => PathBuf::from(DEFAULT_CACHE_DIR),
    });
    let n_ref = req.n_ref.unwrap_or(DEFAULT_N_REF);
    let reference = reference(
        &real,
        ref_ds,
        extractor.as_ref(),
        n_ref,
        Some(&cache_dir),
        &req.device,
        req.quiet,
    )?;
    let nn_refs = if metrics.contains(&Metric::Nn) {
        Some(nn_references(
            &real,
            extractor.as_ref(),
            n_ref,
            &cache_dir,
            &req.device,
            req.quiet,
        )?)
    } else {
        None
    };

    // The generated (or folder) images.
    let want_logits = metrics.iter().any(|m| m.needs_logits());
    let mut col = Collector::new(extractor.as_ref(), want_logits, &req.device);
    let (generated, model_dir, step, n) = match &target {
        Target::Run { dir, .. } => {
            let (recipe, g, mode) =
                crate::load::load_generator_with(dir, &req.device, req.weights)?;
            let state = checkpoint::read_state(dir)?;
            let n = req.n;
            if metrics.contains(&Metric::Swd) {
                col.swd = Some((
                    SwdAccumulator::new(&swd_config(seed)),
                    n.min(reference.indices.len()),
                ));
            }
            col.keep = NN_SHOWN;
            let batch = if mode == BnMode::Eval {
                extract_batch(extractor.as_ref())
            } else {
                recipe.train.batch_size
            };
            let pb = bar(n as u64, req.quiet, "generating");
            generate(g.as_ref(), mode, n, seed, batch, &req.device, |x| {
                col.push(x)?;
                pb.inc(x.dim(0)? as u64);
                Ok(())
            })?;
            pb.finish_and_clear();
            (
                format!(
                    "{} samples of the `{}` generator in {} (step {}, seed {seed})",
                    n,
                    recipe.model.kind(),
                    dir.display(),
                    state.step
                ),
                Some(dir.clone()),
                Some(state.step),
                n,
            )
        }
        Target::Folder(dir) => {
            let ds = RealData::Folder(dir.clone()).open(Some(shape))?;
            let n = req.n.min(ds.len());
            let idx: Vec<usize> = (0..n).collect();
            if metrics.contains(&Metric::Swd) {
                col.swd = Some((
                    SwdAccumulator::new(&swd_config(seed)),
                    n.min(reference.indices.len()),
                ));
            }
            col.keep = NN_SHOWN;
            let pb = bar(n as u64, req.quiet, "reading");
            for chunk in idx.chunks(extract_batch(extractor.as_ref())) {
                col.push(&load_images(ds.as_ref(), chunk)?)?;
                pb.inc(chunk.len() as u64);
            }
            pb.finish_and_clear();
            (ds.describe(), None, None, n)
        }
    };
    let fake = col.finish(&generated)?;
    let ref_swd = if metrics.contains(&Metric::Swd) {
        Some(reference_swd(
            &reference,
            n.min(reference.indices.len()),
            seed,
        )?)
    } else {
        None
    };
    let settings = Settings {
        metrics: metrics.clone(),
        seed,
    };
    let computed = compute(
        &settings,
        &reference,
        &fake,
        ref_swd.as_deref(),
        nn_refs
            .as_ref()
            .map(|(a, b)| (a.as_ref().unwrap_or(&reference), b)),
    )?;

    // Output files.
    let json_path = match (&req.out, &root, &target) {
        (Some(p), _, _) => p.clone(),
        (None, Some(r), _) => layout::eval_dir(r).join(format!(
            "eval-step-{:08}-{}.json",
            step.unwrap_or(0),
            extractor.name()
        )),
        (None, None, Target::Folder(dir)) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "images".into());
            dir.with_file_name(format!("{name}.eval.json"))
        }
        (None, None, Target::Run { dir, .. }) => dir.join("eval.json"),
    };
    let mut files = Vec::new();
    if let (Some(r), Some(samples)) = (&computed.nn, &fake.kept) {
        let train = nn_refs
            .as_ref()
            .map(|(a, _)| a.as_ref().unwrap_or(&reference))
            .unwrap_or(&reference);
        let png = json_path.with_extension("nn.png");
        nn_picture(samples, r, train, &png)?;
        files.push(png);
    }
    let cache = match (&nn_refs, &reference.cache) {
        (Some((Some(t), test)), c) => format!("{c}; nn train {}; nn test {}", t.cache, test.cache),
        (Some((None, test)), c) => format!("{c}; nn test {}", test.cache),
        (None, c) => c.to_string(),
    };
    let report = EvalReport {
        target: req.target.display().to_string(),
        model_dir,
        step,
        generated,
        against: reference.description.clone(),
        extractor: extractor.hash(),
        n,
        n_ref: reference.indices.len(),
        seed,
        values: computed.values,
        details: serde_json::Value::Object(computed.details),
        cache,
        seconds: started.elapsed().as_secs_f64(),
        json: json_path.clone(),
        files,
    };
    write_json(&json_path, &report.to_json())?;
    Ok(report)
}

/// The nearest-neighbour check's training and test references: `(None, test)` when the main
/// reference already is the training split.
fn nn_references(
    real: &RealData,
    extractor: &dyn FeatureExtractor,
    n_ref: usize,
    cache_dir: &Path,
    device: &Device,
    quiet: bool,
) -> Result<(Option<Reference>, Reference)> {
    let fail = || {
        TrainError::Run(
            "nn compares samples with the training set and the test set: it needs reference data with splits (mnist, fashion-mnist, cifar10, shapes), not an image folder".into(),
        )
    };
    let train = real.with_split(Split::Train).ok_or_else(fail)?;
    let test = real.with_split(Split::Test).ok_or_else(fail)?;
    let train_ref = if &train == real {
        None
    } else {
        let ds = train.open(None)?;
        Some(reference(
            &train,
            ds,
            extractor,
            n_ref,
            Some(cache_dir),
            device,
            quiet,
        )?)
    };
    let ds = test.open(None)?;
    let test_ref = reference(&test, ds, extractor, n_ref, Some(cache_dir), device, quiet)?;
    Ok((train_ref, test_ref))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).ctx("creating", parent)?;
        }
    }
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| TrainError::Run(format!("serialising the report: {e}")))?;
    checkpoint::write_file_atomically(path, text.as_bytes())
}

/// Accuracy of the classifier in `model_dir` on `data`: (fraction correct, images, description).
pub fn classifier_accuracy(
    model_dir: &Path,
    real: &RealData,
    device: &Device,
    quiet: bool,
) -> Result<(f64, usize, String)> {
    let (dir, recipe) = classifier_files(model_dir)?;
    let cfg = crate::steps::classifier::config(&recipe)?;
    let ds = real.open(Some([cfg.channels, cfg.image_size, cfg.image_size]))?;
    if ds.shape() != [cfg.channels, cfg.image_size, cfg.image_size] {
        return Err(TrainError::Run(format!(
            "the classifier takes {}×{}×{} images, the data gives {:?} ({})",
            cfg.channels,
            cfg.image_size,
            cfg.image_size,
            ds.shape(),
            ds.describe()
        )));
    }
    if ds.num_classes().is_none() {
        return Err(TrainError::Run(format!(
            "{} has no labels: accuracy needs labelled data",
            ds.describe()
        )));
    }
    let store = easel_nn::ParamStore::new(device, 0);
    let net = easel_models::classifier::Classifier::new(&cfg, store.var_builder())?;
    checkpoint::load_network(&dir, crate::steps::classifier::NETWORK, &store, device)?;
    let n = ds.len();
    let pb = bar(n as u64, quiet, "accuracy");
    let mut hits = 0.0;
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(500) {
        let images = load_images(ds.as_ref(), chunk)?.to_device(device)?;
        let labels: Vec<u32> = chunk
            .iter()
            .map(|&i| ds.get(i, 0).map(|s| s.label))
            .collect::<std::result::Result<_, _>>()?;
        let labels = Tensor::from_vec(labels, chunk.len(), device)?;
        let (_, logits) = net.forward_t(&images, BnMode::Eval)?;
        hits += crate::steps::classifier::accuracy(&logits, &labels)? * chunk.len() as f64;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok((hits / n as f64, n, ds.describe()))
}

fn evaluate_classifier(
    req: &EvalRequest,
    dir: &Path,
    recipe: &Recipe,
    started: Instant,
) -> Result<EvalReport> {
    let real = match &req.against {
        Some(p) => load_against(p, &req.overrides)?,
        None => {
            // Default: the test split of the data it was trained on.
            let mut t = toml::Table::new();
            let mut data = recipe.data.clone();
            if data.source != Source::Folder {
                data.split = Split::Test;
            }
            let data = toml::Value::try_from(&data)
                .map_err(|e| TrainError::Run(format!("the run's [data]: {e}")))?;
            t.insert("data".into(), data);
            t.insert("seed".into(), toml::Value::Integer(recipe.seed as i64));
            data_from_table(t, "the run's recipe", &req.overrides)?
        }
    };
    let (acc, n, description) = classifier_accuracy(dir, &real, &req.device, req.quiet)?;
    let state = checkpoint::read_state(dir)?;
    let root = crate::fit::layout::run_of(dir);
    let json_path = req.out.clone().unwrap_or_else(|| {
        layout::eval_dir(&root).join(format!("accuracy-step-{:08}.json", state.step))
    });
    let report = EvalReport {
        target: req.target.display().to_string(),
        model_dir: Some(dir.to_path_buf()),
        step: Some(state.step),
        generated: format!("classifier in {} (step {})", dir.display(), state.step),
        against: description,
        extractor: "-".into(),
        n,
        n_ref: n,
        seed: 0,
        values: vec![("accuracy".into(), acc), ("error_rate".into(), 1.0 - acc)],
        details: serde_json::json!({}),
        cache: "off".into(),
        seconds: started.elapsed().as_secs_f64(),
        json: json_path.clone(),
        files: vec![],
    };
    write_json(&json_path, &report.to_json())?;
    Ok(report)
}

/// The reference data of an `[eval]` table.
fn training_reference_data(recipe: &Recipe, e: &EvalConfig) -> Result<RealData> {
    let mut real = match &e.against {
        Some(p) => load_against(p, &[])?,
        None => RealData::Dataset {
            data: recipe.data.clone(),
            seed: recipe.seed,
        },
    };
    if let Some(split) = e.split {
        real = real.with_split(split).ok_or_else(|| TrainError::Recipe {
            path: "recipe".into(),
            message: "eval.split: the reference is an image folder, which has no splits".into(),
        })?;
    }
    Ok(real)
}

/// Checks that an `[eval]` table can run (extractor weights present, reference data readable)
/// without computing anything; `train` calls it before creating the run directory.
pub fn check_training_eval(recipe: &Recipe, device: &Device) -> Result<()> {
    let Some(e) = recipe.eval.as_ref().filter(|e| e.every > 0) else {
        return Ok(());
    };
    let real = training_reference_data(recipe, e)?;
    let shape = [
        recipe.data.channels,
        recipe.data.image_size,
        recipe.data.image_size,
    ];
    let ds = real.open(Some(shape))?;
    if ds.shape() != shape {
        return Err(TrainError::Recipe {
            path: "recipe".into(),
            message: format!(
                "[eval] compares {}×{}×{} samples with {} ({:?}): give the reference the run's data.image_size and data.channels",
                shape[0],
                shape[1],
                shape[2],
                ds.describe(),
                ds.shape()
            ),
        });
    }
    let spec: ExtractorSpec = e
        .extractor
        .parse()
        .map_err(|m: String| TrainError::Recipe {
            path: "recipe".into(),
            message: format!("eval.extractor: {m}"),
        })?;
    load_extractor(&spec, shape, device)?;
    Ok(())
}

/// Measures the generator of a training step every `[eval] every` steps.
pub struct TrainingEvaluator {
    every: u64,
    settings: Settings,
    n: usize,
    seed: u64,
    batch_stats_batch: usize,
    extractor: Box<dyn FeatureExtractor>,
    reference: Reference,
    ref_swd: Option<Vec<Descriptors>>,
    nn: Option<(Option<Reference>, Reference)>,
    best: Option<BestMetric>,
    device: Device,
}

impl TrainingEvaluator {
    /// Builds the evaluator of `recipe`'s `[eval]` table (None without one, or with `every = 0`):
    /// loads the extractor and computes (or reads from `<run>/eval/cache/`) the reference
    /// statistics.
    pub fn new(
        recipe: &Recipe,
        run_dir: &Path,
        device: &Device,
        quiet: bool,
    ) -> Result<Option<Self>> {
        let Some(e) = recipe.eval.as_ref().filter(|e| e.every > 0) else {
            return Ok(None);
        };
        let real = training_reference_data(recipe, e)?;
        let shape = [
            recipe.data.channels,
            recipe.data.image_size,
            recipe.data.image_size,
        ];
        let spec: ExtractorSpec = e
            .extractor
            .parse()
            .map_err(|m: String| TrainError::Recipe {
                path: "recipe".into(),
                message: format!("eval.extractor: {m}"),
            })?;
        let extractor = load_extractor(&spec, shape, device)?;
        let cache_dir = layout::eval_dir(run_dir).join("cache");
        let ds = real.open(Some(shape))?;
        let n_ref = e.n_ref.unwrap_or(DEFAULT_N_REF);
        let reference = reference(
            &real,
            ds,
            extractor.as_ref(),
            n_ref,
            Some(&cache_dir),
            device,
            quiet,
        )?;
        let seed = derive_seed(recipe.seed, "eval");
        let ref_swd = if e.metrics.contains(&Metric::Swd) {
            Some(reference_swd(
                &reference,
                e.n.min(reference.indices.len()),
                seed,
            )?)
        } else {
            None
        };
        let nn = if e.metrics.contains(&Metric::Nn) {
            Some(nn_references(
                &real,
                extractor.as_ref(),
                n_ref,
                &cache_dir,
                device,
                quiet,
            )?)
        } else {
            None
        };
        if !quiet {
            println!(
                "eval every {} steps: {} on {} samples against {} ({} images, {}), reference cache {}",
                e.every,
                e.metrics
                    .iter()
                    .map(|m| m.key())
                    .collect::<Vec<_>>()
                    .join(", "),
                e.n,
                reference.description,
                reference.indices.len(),
                extractor.name(),
                reference.cache
            );
        }
        Ok(Some(Self {
            every: e.every,
            settings: Settings {
                metrics: e.metrics.clone(),
                seed,
            },
            n: e.n,
            seed,
            batch_stats_batch: recipe.train.batch_size,
            extractor,
            reference,
            ref_swd,
            nn,
            best: best_metric(e),
            device: device.clone(),
        }))
    }

    /// The reference statistics' cache use (for tests and logs).
    pub fn cache(&self) -> &CacheUse {
        &self.reference.cache
    }

    /// Metrics of `g`'s samples (what [`fit::Evaluator::evaluate`] runs).
    pub fn evaluate_generator(
        &self,
        g: &dyn ImageGenerator,
        mode: BnMode,
    ) -> Result<Vec<(String, f64)>> {
        let want_logits = self.settings.metrics.iter().any(|m| m.needs_logits());
        let mut col = Collector::new(self.extractor.as_ref(), want_logits, &self.device);
        if self.ref_swd.is_some() {
            col.swd = Some((
                SwdAccumulator::new(&swd_config(self.seed)),
                self.n.min(self.reference.indices.len()),
            ));
        }
        let batch = if mode == BnMode::Eval {
            extract_batch(self.extractor.as_ref())
        } else {
            self.batch_stats_batch
        };
        generate(g, mode, self.n, self.seed, batch, &self.device, |x| {
            col.push(x)
        })?;
        let fake = col.finish("generated")?;
        let computed = compute(
            &self.settings,
            &self.reference,
            &fake,
            self.ref_swd.as_deref(),
            self.nn
                .as_ref()
                .map(|(a, b)| (a.as_ref().unwrap_or(&self.reference), b)),
        )?;
        Ok(computed.values)
    }
}

impl fit::Evaluator for TrainingEvaluator {
    fn every(&self) -> u64 {
        self.every
    }
    fn best(&self) -> Option<BestMetric> {
        self.best.clone()
    }
    fn evaluate(&self, step: &dyn TrainStep, _at: u64) -> Result<Vec<(String, f64)>> {
        let (g, mode) = step.generator().ok_or_else(|| {
            TrainError::Run(format!(
                "[eval]: a `{}` step has no generator to evaluate",
                step.kind()
            ))
        })?;
        self.evaluate_generator(g, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_and_extractor_names_parse() {
        assert_eq!(
            Metric::parse_list("fid, KID,fid,pr").unwrap(),
            [Metric::Fid, Metric::Kid, Metric::Pr]
        );
        let e = Metric::parse_list("fid,fdi").unwrap_err();
        assert!(e.contains("fdi") && e.contains("swd"), "{e}");
        assert!(Metric::parse_list(",").is_err());
        assert_eq!(
            "classifier:runs/c".parse::<ExtractorSpec>().unwrap(),
            ExtractorSpec::Classifier("runs/c".into())
        );
        assert_eq!(
            "inception".parse::<ExtractorSpec>().unwrap(),
            ExtractorSpec::Inception(None)
        );
        assert_eq!(
            "inception:w.safetensors".parse::<ExtractorSpec>().unwrap(),
            ExtractorSpec::Inception(Some("w.safetensors".into()))
        );
        assert_eq!(
            "pixels".parse::<ExtractorSpec>().unwrap(),
            ExtractorSpec::Pixels
        );
        let e = "classifier".parse::<ExtractorSpec>().unwrap_err();
        assert!(e.contains("classifier:RUN_DIR"), "{e}");
        let e = "vgg".parse::<ExtractorSpec>().unwrap_err();
        assert!(
            e.contains("vgg:WEIGHTS.safetensors") && e.contains("torchvision"),
            "{e}"
        );
        let spec = "vgg:w/vgg19.safetensors".parse::<ExtractorSpec>().unwrap();
        assert_eq!(spec, ExtractorSpec::Vgg("w/vgg19.safetensors".into()));
        assert_eq!(spec.to_string(), "vgg:w/vgg19.safetensors");
        assert!(!spec.has_logits());
        assert!("vggg:x".parse::<ExtractorSpec>().is_err());
        assert!(Metric::Fid.best().unwrap().lower_is_better);
        assert!(!Metric::Is.best().unwrap().lower_is_better);
        assert!(Metric::Pr.best().is_none());
    }

    #[test]
    fn missing_inception_weights_say_where_to_put_them() {
        let e = inception_weights(Some(Path::new("/no/such/w.safetensors")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such/w.safetensors")
                && e.contains(INCEPTION_FILE)
                && e.contains(INCEPTION_DIR)
                && e.contains("classifier:RUN"),
            "{e}"
        );
    }

    #[test]
    fn reference_subsets_are_fixed_and_sorted() {
        assert_eq!(reference_indices(5, 10), [0, 1, 2, 3, 4]);
        let a = reference_indices(1000, 10);
        assert_eq!(a, reference_indices(1000, 10));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let p1 = cache_path(Path::new("c"), "mnist", "classifier:1", 10);
        assert_eq!(p1, cache_path(Path::new("c"), "mnist", "classifier:1", 10));
        assert_ne!(p1, cache_path(Path::new("c"), "mnist", "classifier:2", 10));
        assert_ne!(p1, cache_path(Path::new("c"), "mnist", "classifier:1", 11));
        assert_ne!(
            p1,
            cache_path(Path::new("c"), "mnist-test", "classifier:1", 10)
        );
    }

    #[test]
    fn against_reads_a_data_table_with_overrides() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ds.toml");
        std::fs::write(
            &p,
            "seed = 4\n[data]\nsource = \"shapes\"\nimage_size = 16\n",
        )
        .unwrap();
        let r = load_against(&p, &["data.split=test".into()]).unwrap();
        let RealData::Dataset { data, seed } = &r else {
            panic!("{r:?}")
        };
        assert_eq!((data.split, data.image_size, *seed), (Split::Test, 16, 4));
        let e = load_against(&p, &["train.steps=3".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data.split=test") || e.contains("start with `data.`"),
            "{e}"
        );
        let e = load_against(&p, &["data.sourc=mnist".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sourc"), "{e}");
        std::fs::write(&p, "seed = 4\n").unwrap();
        let e = load_against(&p, &[]).unwrap_err().to_string();
        assert!(
            e.contains("no [data] table") && e.contains("ds.toml"),
            "{e}"
        );
        let e = load_against(&d.path().join("nope.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml") && e.contains("not found"), "{e}");
        assert_eq!(
            load_against(d.path(), &[]).unwrap(),
            RealData::Folder(d.path().to_path_buf())
        );
    }

    #[test]
    fn cache_hit_and_miss() {
        let d = tempfile::tempdir().unwrap();
        let real = RealData::Dataset {
            data: DataConfig {
                image_size: 16,
                channels: 1,
                shapes: easel_data::ShapesConfig {
                    count: 40,
                    ..Default::default()
                },
                ..Default::default()
            },
            seed: 3,
        };
        let px = PixelExtractor::new([1, 16, 16]);
        let cache = d.path().join("cache");
        let run = |n_ref: usize, ex: &dyn FeatureExtractor| {
            reference(
                &real,
                real.open(None).unwrap(),
                ex,
                n_ref,
                Some(&cache),
                &Device::Cpu,
                true,
            )
            .unwrap()
        };
        let a = run(30, &px);
        assert!(matches!(a.cache, CacheUse::Miss(_)), "{:?}", a.cache);
        let b = run(30, &px);
        assert!(matches!(b.cache, CacheUse::Hit(_)), "{:?}", b.cache);
        assert_eq!(a.stats, b.stats);
        assert_eq!(a.indices, b.indices);
        assert_eq!(
            a.features.to_vec2::<f32>().unwrap(),
            b.features.to_vec2::<f32>().unwrap()
        );
        // Another count or another extractor is another entry.
        assert!(matches!(run(20, &px).cache, CacheUse::Miss(_)));
        let store = easel_nn::ParamStore::new(&Device::Cpu, 1);
        let cfg = easel_models::classifier::Config {
            image_size: 16,
            channels: 1,
            num_classes: 6,
            width: 2,
            feature_dim: 4,
        };
        let net = easel_models::classifier::Classifier::new(&cfg, store.var_builder()).unwrap();
        let clf = ClassifierExtractor::from_store(net, &store).unwrap();
        assert!(matches!(run(30, &clf).cache, CacheUse::Miss(_)));
        assert!(matches!(run(30, &clf).cache, CacheUse::Hit(_)));
        // A damaged cache file is recomputed, not trusted.
        let CacheUse::Hit(p) = run(30, &px).cache else {
            panic!()
        };
        std::fs::write(&p, b"garbage").unwrap();
        assert!(matches!(run(30, &px).cache, CacheUse::Miss(_)));
        assert!(matches!(run(30, &px).cache, CacheUse::Hit(_)));
    }
}
