//! The `[data]` table of a recipe.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

use crate::DataError;

/// The `[data]` table of a recipe: where images come from and how they are
/// shaped. Every field has a default, so `source = "shapes"` alone is a
/// complete table (and so is an empty one: shapes is the default source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Where the images come from: `"shapes"` (generated, offline, the
    /// default), `"mnist"`, `"fashion-mnist"`, `"cifar10"` or `"folder"`.
    pub source: Source,
    /// Local folder holding the files. Unset: shapes are generated; mnist,
    /// fashion-mnist and cifar10 are downloaded through the Hugging Face hub
    /// into its cache; folder requires it. See `data/README.md` for layouts.
    pub dir: Option<PathBuf>,
    /// Which split to read: `"train"` (default) or `"test"`. Ignored by
    /// `folder` (point `dir` at the split you want).
    pub split: Split,
    /// Output height = width in pixels. Images are resized with a bilinear
    /// (triangle) filter like torchvision's `Resize`, e.g. MNIST 28 → 32 or 64
    /// as pytorch/examples' DCGAN does. Default 32; shapes need at least 16.
    pub image_size: usize,
    /// Zero padding in pixels on every side, added after the resize: the source is resized to
    /// `image_size − 2·pad` and framed with black (0 → −1 in [-1, 1]) up to `image_size`. MNIST
    /// with `image_size = 32, pad = 2` keeps its native 28×28 digits (no resampling blur) on
    /// the 32×32 canvas DCGAN's 4×4 base needs, like torchvision's `Pad(2)`. Default 0.
    pub pad: usize,
    /// Output channels: 3 (RGB, default) or 1 (grey). Grey sources are
    /// repeated to RGB; RGB is turned grey with ITU-R 601 luma like PIL's
    /// `convert("L")`.
    pub channels: usize,
    /// For `folder`: after the shorter side is resized to `image_size`, take
    /// the `"center"` (default) or a `"random"` square (a new one each time a
    /// sample is drawn, reproducible from the run's seed).
    pub crop: Crop,
    /// What to do with an unreadable image (folder, or a row of a hub parquet
    /// file): `"skip"` (default: warn naming the file and use the next good
    /// one) or `"error"` (stop with an error naming the file).
    pub on_corrupt: CorruptPolicy,
    /// Settings of the generated shapes set (used only with `source = "shapes"`).
    pub shapes: ShapesConfig,
    /// Hugging Face hub settings (used only when `dir` is unset for mnist,
    /// fashion-mnist and cifar10).
    pub hub: HubConfig,
    /// Background threads that decode and batch samples ahead of the
    /// training loop. Default 2; 0 decodes on the calling thread.
    pub workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: Source::Shapes,
            dir: None,
            split: Split::Train,
            image_size: 32,
            pad: 0,
            channels: 3,
            crop: Crop::Center,
            on_corrupt: CorruptPolicy::Skip,
            shapes: ShapesConfig::default(),
            hub: HubConfig::default(),
            workers: 2,
        }
    }
}

impl DataConfig {
    /// Checks the values that do not depend on any file, naming the key and
    /// the allowed values on error. [`crate::open`] calls this first.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::config(
                "channels",
                format!("{} is not supported", self.channels),
                "use 1 (grey) or 3 (RGB)",
            ));
        }
        let min = if self.source == Source::Shapes { 16 } else { 8 };
        if self.image_size < min || self.image_size > 4096 {
            return Err(DataError::config(
                "image_size",
                format!(
                    "{} is out of range for source = \"{}\"",
                    self.image_size,
                    self.source.key()
                ),
                format!("use a size from {min} to 4096, e.g. 32 or 64"),
            ));
        }
        if self.pad > 0 && self.image_size < min + 2 * self.pad {
            return Err(DataError::config(
                "pad",
                format!(
                    "{} leaves {} pixels of the {}-pixel image for the {} images",
                    self.pad,
                    self.image_size as i64 - 2 * self.pad as i64,
                    self.image_size,
                    self.source.key()
                ),
                format!(
                    "use a pad of at most {} at image_size = {} (or a larger image_size)",
                    self.image_size.saturating_sub(min) / 2,
                    self.image_size
                ),
            ));
        }
        if self.source == Source::Shapes && self.shapes.count == 0 {
            return Err(DataError::config(
                "shapes.count",
                "0 images is an empty dataset",
                "use a positive count, e.g. 20000",
            ));
        }
        if self.source == Source::Shapes && self.split == Split::Test && self.shapes.test_count == 0
        {
            return Err(DataError::config(
                "shapes.test_count",
                "0 images is an empty dataset",
                "use a positive count, e.g. 2000",
            ));
        }
        if !(1..=86_400).contains(&self.hub.timeout_secs) {
            return Err(DataError::config(
                "hub.timeout_secs",
                format!("{} is out of range", self.hub.timeout_secs),
                "use a number of seconds from 1 to 86400 (default 60)",
            ));
        }
        if self.source == Source::Folder && self.dir.is_none() {
            return Err(DataError::config(
                "dir",
                "is required for source = \"folder\"",
                "set data.dir to a folder of PNG/JPEG images, e.g. --set data.dir=data/faces (see data/README.md)",
            ));
        }
        Ok(())
    }
}

/// Where images come from. Serialized in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Procedurally generated coloured shapes; needs no files or network.
    #[default]
    Shapes,
    /// MNIST handwritten digits (idx files, or parquet from the hub).
    Mnist,
    /// Zalando's Fashion-MNIST (idx files, or parquet from the hub).
    FashionMnist,
    /// CIFAR-10 (binary version batch files, or parquet from the hub).
    Cifar10,
    /// Any folder of PNG/JPEG images, optionally labelled by subfolder.
    Folder,
}

impl Source {
    /// The value as written in a recipe, e.g. `fashion-mnist`.
    pub fn key(self) -> &'static str {
        match self {
            Source::Shapes => "shapes",
            Source::Mnist => "mnist",
            Source::FashionMnist => "fashion-mnist",
            Source::Cifar10 => "cifar10",
            Source::Folder => "folder",
        }
    }
}

impl fmt::Display for Source {
    /// The usual human name, e.g. `Fashion-MNIST`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Shapes => "shapes",
            Source::Mnist => "MNIST",
            Source::FashionMnist => "Fashion-MNIST",
            Source::Cifar10 => "CIFAR-10",
            Source::Folder => "folder",
        })
    }
}

/// Which split of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// The training split (default).
    #[default]
    Train,
    /// The held-out test split.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Which square to keep after the shorter side was resized to `image_size` (or, for
/// `random-native`, from the image at its own scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Crop {
    /// The middle square (rounded towards the top-left), like torchvision's `CenterCrop`.
    #[default]
    Center,
    /// A uniformly random square, drawn from the sample's augmentation seed.
    Random,
    /// A uniformly random `image_size` square at the image's own scale (no resize), as
    /// super-resolution training crops its patches (SRResNet's 96² crops of ImageNet); an image
    /// whose shorter side is below `image_size` is resized up to it first.
    RandomNative,
}

/// What to do with a file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptPolicy {
    /// Warn on stderr (once per file, naming it) and use the next good image.
    #[default]
    Skip,
    /// Stop with an error naming the file.
    Error,
}

/// `[data.shapes]`: the generated shapes set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesConfig {
    /// Number of images in the train split. Default 20000.
    pub count: usize,
    /// Number of images in the test split (drawn from a separate stream, so
    /// no test image is a train image). Default 2000.
    pub test_count: usize,
    /// Seed of the image set. Unset (default): the run's seed, so the same
    /// seed gives byte-identical images. Set it to keep the same images
    /// across runs with different seeds.
    pub seed: Option<u64>,
    /// Supersampling factor per axis for anti-aliasing (1 = aliased,
    /// default 4, i.e. 16 samples per pixel).
    pub supersample: usize,
    /// What the label of an image is: `"kind"` (default: 6 shape kinds), `"color"` (8 fill
    /// colours) or `"kind_color"` (48 classes such as `blue-circle`, for an attribute
    /// classifier that checks latent arithmetic).
    pub label: ShapesLabel,
    /// Smallest and largest nominal radius, as fractions of the image side. Default
    /// `[0.18, 0.30]` (shapes 12–19 px across at 32×32, anywhere in the frame); larger shapes,
    /// e.g. `[0.26, 0.34]`, leave less room to move and show their outlines at more pixels,
    /// which a small GAN learns sooner. At most 0.344, so the largest kind stays in the frame.
    pub size: [f32; 2],
}

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig {
            count: 20_000,
            test_count: 2_000,
            seed: None,
            supersample: 4,
            label: ShapesLabel::Kind,
            size: [SIZE_RANGE.0, SIZE_RANGE.1],
        }
    }
}

/// `[data.hub]`: downloading mnist / fashion-mnist / cifar10 through the
/// Hugging Face hub when `data.dir` is unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Dataset repository, `ORG/NAME`. Unset: `ylecun/mnist`,
    /// `zalando-datasets/fashion_mnist` or `uoft-cs/cifar10`.
    pub repo: Option<String>,
    /// Branch, tag or commit of the repository. Default `main`.
    pub revision: String,
    /// Parquet file of the train split inside the repository. Unset:
    /// `mnist/train-00000-of-00001.parquet`,
    /// `fashion_mnist/train-00000-of-00001.parquet` or
    /// `plain_text/train-00000-of-00001.parquet`.
    pub train_file: Option<String>,
    /// Parquet file of the test split (same defaults with `test-`).
    pub test_file: Option<String>,
    /// The hub cache folder (the one holding `datasets--ORG--NAME`). Unset:
    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`,
    /// as the Python `huggingface_hub` does, so both share one cache.
    pub cache_dir: Option<PathBuf>,
    /// Hub address. Unset: `$HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Give up when the server sends nothing for this many seconds (while
    /// connecting or in the middle of a download). Default 60.
    pub timeout_secs: u64,
    /// Never touch the network: only the cache is used. Also on when the
    /// environment has `HF_HUB_OFFLINE=1`.
    pub offline: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            repo: None,
            revision: "main".to_string(),
            train_file: None,
            test_file: None,
            cache_dir: None,
            endpoint: None,
            timeout_secs: 60,
            offline: false,
        }
    }
}

/// What the label of a shapes sample is (`data.shapes.label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapesLabel {
    /// The shape kind: index in [`ShapeKind::ALL`](crate::shapes::ShapeKind::ALL) (6 classes).
    /// The default.
    #[default]
    Kind,
    /// The fill colour: index in [`Colour::ALL`](crate::shapes::Colour::ALL) (8 classes).
    Color,
    /// Kind and colour: `kind · 8 + colour` (48 classes, named `blue-circle`, …), so a
    /// classifier can tell "blue circle" from "red circle" and "blue square".
    KindColor,
}

/// Smallest and largest sampled size of a shape (`ShapeAttrs::size`, a fraction of the side):
/// the default of `data.shapes.size`.
pub const SIZE_RANGE: (f32, f32) = (0.18, 0.30);
