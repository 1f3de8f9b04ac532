//! The schema of evaluation: which metrics (`[eval] metrics`, `--metrics`), which feature
//! extractor (`eval.extractor`, `--extractor`), and the checks of an `[eval]` table. Measuring
//! them is [`crate::eval`]'s job.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File name of pytorch-fid's Inception weights converted to safetensors.
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05.safetensors";
/// Where `inception` looks for [`INCEPTION_FILE`] (relative to the working directory).
pub const INCEPTION_DIR: &str = "data/weights";
/// Environment variable naming the Inception weights file (overrides [`INCEPTION_DIR`]).
pub const INCEPTION_ENV: &str = "EASEL_INCEPTION_WEIGHTS";
/// How to get VGG weights for `--extractor vgg:PATH`.
pub(crate) const VGG_HOW: &str = "convert torchvision's VGG19 with `safetensors.torch.save_file(torchvision.models.vgg19(weights=\"IMAGENET1K_V1\").state_dict(), \"vgg19.safetensors\")` (timm's vgg19.tv_in1k and Keras' VGG19 names work too)";
/// A metric `easel eval` and `[eval]` can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Fréchet distance of feature Gaussians (FID with Inception).
    Fid,
    /// Kernel Inception Distance (unbiased polynomial MMD²).
    Kid,
    /// Inception-style score of the class logits.
    Is,
    /// Improved precision and recall (k = 3).
    Pr,
    /// Sliced Wasserstein distance of Laplacian-pyramid patches.
    Swd,
    /// Nearest-neighbour overfitting check against the training set, calibrated by the test set.
    Nn,
    /// Diversity: mean pairwise feature distance.
    Div,
    /// Mode coverage of the classifier's argmax.
    Modes,
}

impl Metric {
    /// Every metric, in display order.
    pub const ALL: [Metric; 8] = [
        Metric::Fid,
        Metric::Kid,
        Metric::Is,
        Metric::Pr,
        Metric::Swd,
        Metric::Nn,
        Metric::Div,
        Metric::Modes,
    ];

    /// The name used on the command line and in recipes.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::Is => "is",
            Metric::Pr => "pr",
            Metric::Swd => "swd",
            Metric::Nn => "nn",
            Metric::Div => "div",
            Metric::Modes => "modes",
        }
    }

    /// Parses one name.
    pub fn parse(s: &str) -> std::result::Result<Metric, String> {
        let t = s.trim().to_ascii_lowercase();
        Metric::ALL
            .into_iter()
            .find(|m| m.key() == t)
            .ok_or_else(|| {
                format!(
                    "unknown metric `{s}` (available: {})",
                    Metric::ALL.map(Metric::key).join(", ")
                )
            })
    }

    /// Parses a comma-separated list (`fid,kid,pr`), dropping repeats.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<Metric>, String> {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let m = Metric::parse(part)?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        if out.is_empty() {
            return Err("no metrics given (e.g. --metrics fid,kid,pr)".into());
        }
        Ok(out)
    }

    /// Whether the metric needs class logits (an extractor that is a classifier).
    pub fn needs_logits(self) -> bool {
        matches!(self, Metric::Is | Metric::Modes)
    }

    /// The metric as a `best/` criterion: FID, KID and SWD lower is better, IS higher; the
    /// others have no single direction.
    pub fn best(self) -> Option<BestMetric> {
        let lower = match self {
            Metric::Fid | Metric::Kid | Metric::Swd => true,
            Metric::Is => false,
            _ => return None,
        };
        Some(BestMetric {
            name: self.key().to_string(),
            lower_is_better: lower,
        })
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// Which network maps images to features.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractorSpec {
    /// pytorch-fid's Inception-v3; the weights file, or `None` to look in the usual places.
    Inception(Option<PathBuf>),
    /// An easel classifier: a run directory, its `final/` or a checkpoint folder.
    Classifier(PathBuf),
    /// VGG16/VGG19 convolutions from a safetensors file (torchvision or Keras names): 512-d
    /// `relu5_x` features averaged over positions at 224×224 ([`easel_metrics::VggExtractor`]).
    Vgg(PathBuf),
    /// The flattened pixels.
    Pixels,
}

impl std::str::FromStr for ExtractorSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let (head, rest) = match s.split_once(':') {
            Some((h, r)) => (h, Some(r)),
            None => (s, None),
        };
        match (head, rest) {
            ("inception", None) => Ok(ExtractorSpec::Inception(None)),
            ("inception", Some(p)) if !p.is_empty() => {
                Ok(ExtractorSpec::Inception(Some(PathBuf::from(p))))
            }
            ("classifier", Some(p)) if !p.is_empty() => {
                Ok(ExtractorSpec::Classifier(PathBuf::from(p)))
            }
            ("classifier", _) => Err(
                "`classifier` needs the classifier's run: classifier:RUN_DIR (train one with `easel train recipes/classifier-mnist.toml`)"
                    .into(),
            ),
            ("vgg", Some(p)) if !p.is_empty() => Ok(ExtractorSpec::Vgg(PathBuf::from(p))),
            ("vgg", _) => Err(format!("`vgg` needs its weights file: vgg:WEIGHTS.safetensors ({VGG_HOW})")),
            ("pixels", None) => Ok(ExtractorSpec::Pixels),
            _ => Err(format!(
                "unknown extractor `{s}` (expected inception, inception:WEIGHTS.safetensors, classifier:RUN_DIR, vgg:WEIGHTS.safetensors or pixels)"
            )),
        }
    }
}

impl std::fmt::Display for ExtractorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtractorSpec::Inception(None) => f.write_str("inception"),
            ExtractorSpec::Inception(Some(p)) => write!(f, "inception:{}", p.display()),
            ExtractorSpec::Classifier(p) => write!(f, "classifier:{}", p.display()),
            ExtractorSpec::Vgg(p) => write!(f, "vgg:{}", p.display()),
            ExtractorSpec::Pixels => f.write_str("pixels"),
        }
    }
}

impl ExtractorSpec {
    /// Whether the extractor gives class logits (for `is` and `modes`).
    pub fn has_logits(&self) -> bool {
        !matches!(self, ExtractorSpec::Pixels | ExtractorSpec::Vgg(_))
    }
}

/// The metric that decides `best/` and its direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestMetric {
    /// Name of the metric as [`crate::fit::Evaluator::evaluate`] reports it (`fid`, …).
    pub name: String,
    /// Lower values are better (FID, KID, SWD); otherwise higher (IS).
    pub lower_is_better: bool,
}
