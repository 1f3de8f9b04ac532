//! # easel-data
//!
//! Datasets for easel: what torchvision's datasets and PyTorch's `DataLoader`
//! give a researcher, with clearer errors. It produces host buffers (`Vec<f32>`
//! in `[B, C, H, W]`, values in [-1, 1]); the training crate uploads them to
//! the device, so this crate does not depend on candle and builds fast.
//!
//! * [`open`] turns the recipe's `[data]` table ([`DataConfig`]) into an
//!   `Arc<dyn` [`Dataset`]`>`:
//!   - `shapes` (default): generated, labelled, anti-aliased coloured
//!     shapes ([`Shapes`]); offline, deterministic from the seed, O(1) per
//!     index. A first run works with no files and no network.
//!   - `mnist`, `fashion-mnist`: idx files (raw or `.gz`, also torchvision's
//!     `MNIST/raw/` layout) in `data.dir`, validated (magic, dimensions,
//!     lengths, label count).
//!   - `cifar10`: the binary batches (`data_batch_N.bin`, `test_batch.bin`).
//!   - `folder`: any PNG/JPEG folder, ImageFolder-style labels, headers
//!     checked at open, unreadable files skipped or rejected per
//!     `on_corrupt`.
//!   - without `data.dir`, mnist/fashion-mnist/cifar10 come from the Hugging
//!     Face hub's standard cache, downloading on a miss.
//! * [`Loader`] makes deterministic, resumable, prefetched batches.
//!
//! ## Choices and why
//!
//! * **Resize** is PIL's triangle (bilinear) filter — what torchvision's
//!   `Resize` runs on PIL images, anti-aliased when shrinking — computed on
//!   f32 planes; the shorter side goes to `image_size`, then a centre or
//!   random square is cropped. Normalisation is `x / 127.5 - 1` (0 → -1,
//!   255 → 1), the usual GAN convention.
//! * **Randomness** (shape attributes, epoch order, random crops) comes from
//!   ChaCha8 streams keyed by hashes of (seed, coordinates), with our own
//!   integer/float draws, so results depend only on the seed — not on thread
//!   timing, the number of workers, or a `rand` upgrade. This is what makes
//!   `start_batch` resume exact.
//! * **Hub downloads** use `hf-hub` 0.4.3 with only its blocking `ureq`
//!   client (~80 crates, ~1 min cold build) rather than 1.0 (~230 crates,
//!   ~8 min) or `candle-datasets` (~210 crates, and it would pull candle in).
//!   It writes the cache layout Python's `huggingface_hub` uses, so caches are
//!   shared. Cache hits are resolved by this crate from `refs/` and
//!   `snapshots/` without any network. hf-hub has no timeout, so a download
//!   runs on its own thread under a watchdog that gives up after
//!   `hub.timeout_secs` without data.
//! * **Parquet** (the hub stores MNIST, Fashion-MNIST and CIFAR-10 as parquet
//!   with PNG-encoded images) is read with the `parquet` crate without arrow,
//!   through its row API, with snappy only (what `datasets` writes): a few
//!   dozen small crates, no C. The alternatives were arrow (+~25 crates for
//!   columnar buffers we do not need), polars/duckdb (far heavier), or our own
//!   reader (thrift metadata, several encodings: too much to get right).
//!   `parquet` 59 is the newest line whose rust-version matches the
//!   workspace's 1.85.
//! * **Errors** ([`DataError`]) name the file, key or URL and the fix; no
//!   code path panics on bad files or config. Warnings (skipped files) go to
//!   stderr once per file.
//!
//! Dataset layouts are described in `data/README.md` at the workspace root.

#![warn(missing_docs)]

mod cifar;
mod config;
mod error;
mod folder;
mod hub;
mod loader;
mod memory;
mod mnist;
mod pad;
mod parquet_images;
mod rng;
pub mod shapes;
mod transform;

use std::sync::Arc;

pub use config::{CorruptPolicy, Crop, DataConfig, HubConfig, ShapesConfig, Source, Split};
pub use error::DataError;
pub use folder::Folder;
pub use hub::cache_dir as hub_cache_dir;
pub use hub::fetch_model_file as hub_fetch_model_file;
pub use loader::{HostBatch, Loader};
pub use shapes::{render, Colour, ShapeAttrs, ShapeKind, Shapes};
pub use transform::normalize;

use memory::{ImageArray, InMemory};

/// One sample: CHW pixels in [-1, 1] and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `C × H × W` values, row-major per channel, `x / 127.5 - 1`.
    pub pixels: Vec<f32>,
    /// Class index (0 for unlabelled data).
    pub label: u32,
}

/// A finite, indexable set of same-shaped labelled images.
///
/// Implementations are shared across loader threads, so `get` takes `&self`.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples (never true for datasets from [`open`]).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of every sample produced.
    fn shape(&self) -> [usize; 3];

    /// Number of classes, `None` when the data is unlabelled.
    fn num_classes(&self) -> Option<usize>;

    /// Class names in label order (empty when unlabelled).
    fn class_names(&self) -> Vec<String>;

    /// Sample `index`: CHW f32 in [-1, 1] (`x / 127.5 - 1`) and its label.
    /// `aug_seed` drives any per-sample randomness (random crop)
    /// deterministically.
    fn get(&self, index: usize, aug_seed: u64) -> Result<Sample, DataError>;

    /// One line for logs, e.g. `MNIST train, 60000 images 1×32×32 from ../shared/data/mnist`.
    fn describe(&self) -> String;
}

/// Opens the dataset a `[data]` table describes. `seed` is the run's seed;
/// it keys the shapes set (unless `shapes.seed` is set).
pub fn open(cfg: &DataConfig, seed: u64) -> Result<Arc<dyn Dataset>, DataError> {
    cfg.validate()?;
    if cfg.pad > 0 {
        let inner = DataConfig {
            image_size: cfg.image_size - 2 * cfg.pad,
            pad: 0,
            ..cfg.clone()
        };
        return Ok(Arc::new(pad::Padded::new(open(&inner, seed)?, cfg.pad)));
    }
    match cfg.source {
        Source::Shapes => {
            if let Some(dir) = &cfg.dir {
                eprintln!(
                    "warning: data.dir = {} is ignored: source = \"shapes\" generates its images",
                    dir.display()
                );
            }
            Ok(Arc::new(Shapes::new(
                &cfg.shapes,
                seed,
                cfg.split,
                cfg.image_size,
                cfg.channels,
            )?))
        }
        Source::Mnist | Source::FashionMnist | Source::Cifar10 => open_array(cfg),
        Source::Folder => {
            let dir = cfg.dir.as_deref().ok_or_else(|| {
                DataError::config(
                    "dir",
                    "is required for source = \"folder\"",
                    "set data.dir to a folder of PNG/JPEG images (see data/README.md)",
                )
            })?;
            Ok(Arc::new(Folder::open(
                dir,
                cfg.image_size,
                cfg.channels,
                cfg.crop,
                cfg.on_corrupt,
            )?))
        }
    }
}

fn source_fix(source: Source) -> String {
    match source {
        Source::Cifar10 => cifar::FIX.to_string(),
        _ => mnist::fix_for(source),
    }
}

/// The array-backed sources, from `dir` or from the hub.
fn open_array(cfg: &DataConfig) -> Result<Arc<dyn Dataset>, DataError> {
    let source = cfg.source;
    let fix = source_fix(source);
    let native_channels = if source == Source::Cifar10 { 3 } else { 1 };
    let default_names = || match source {
        Source::Cifar10 => cifar::CLASSES.iter().map(|s| s.to_string()).collect(),
        _ => mnist::class_names(source),
    };
    let (array, class_names, origin): (ImageArray, Vec<String>, String) = match &cfg.dir {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(DataError::NotFound {
                    what: "data.dir folder".to_string(),
                    path: dir.display().to_string(),
                    fix,
                });
            }
            let local = match source {
                Source::Cifar10 => cifar::load(dir, cfg.split).map(|c| {
                    let found = format!(
                        "{} ({} of {} {} batch files)",
                        c.files.join(", "),
                        c.files.len(),
                        if cfg.split == Split::Train { 5 } else { 1 },
                        cfg.split
                    );
                    if cfg.split == Split::Train && c.files.len() < 5 {
                        eprintln!(
                            "note: CIFAR-10 train uses only {found} found in {}",
                            c.folder.display()
                        );
                    }
                    (
                        c.array,
                        c.class_names,
                        format!("from {}: {found}", c.folder.display()),
                    )
                }),
                _ => mnist::load_idx(dir, source, cfg.split)
                    .map(|(a, _, _)| (a, default_names(), format!("from {}", dir.display()))),
            };
            match local {
                Ok(x) => x,
                // No idx / batch files: parquet files of the split will do.
                Err(e @ (DataError::NotFound { .. } | DataError::Empty { .. })) => {
                    let files = parquet_images::find_split_files(dir, &cfg.split.to_string());
                    if files.is_empty() {
                        return Err(e);
                    }
                    let (a, _) =
                        parquet_images::read(&files, native_channels, 10, cfg.on_corrupt, &fix)?;
                    (a, default_names(), from_files(&files))
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            let path = hub::fetch(source, cfg.split, &cfg.hub)?;
            let f = hub::hub_file(source, cfg.split, &cfg.hub);
            let (a, _) = parquet_images::read(
                std::slice::from_ref(&path),
                native_channels,
                10,
                cfg.on_corrupt,
                &fix,
            )?;
            (
                a,
                default_names(),
                format!("from the hub ({}, {})", f.repo, path.display()),
            )
        }
    };
    Ok(Arc::new(InMemory {
        array,
        class_names,
        image_size: cfg.image_size,
        channels: cfg.channels,
        title: format!("{source} {}", cfg.split),
        origin,
    }))
}

fn from_files(files: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    format!("from {}", names.join(", "))
}

#[cfg(test)]
mod tests;
