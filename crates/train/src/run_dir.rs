//! Where things live in a run directory (`RUN/checkpoints/step-N/`, `RUN/final/`, `RUN/best/`,
//! `RUN/samples/`, `RUN/eval/`, `RUN/metrics.jsonl`, `RUN/recipe.toml`) and how a path given on
//! the command line resolves to a model folder. Modules that need a run path ask here.
//! (Issue 16 grows this into the one owner of every run-folder name.)

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Result, TrainError};

/// Step checkpoints.
pub fn checkpoints(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The finished model: resolved recipe beside the weights.
pub fn final_dir(run: &Path) -> PathBuf {
    run.join("final")
}

/// The model with the best evaluation metric so far (like `final/`, plus `best.json`).
pub fn best_dir(run: &Path) -> PathBuf {
    run.join("best")
}

/// Evaluation outputs and the reference-statistics cache.
pub fn eval_dir(run: &Path) -> PathBuf {
    run.join("eval")
}

/// Preview grids.
pub fn samples(run: &Path) -> PathBuf {
    run.join("samples")
}

/// One JSON object per logged step.
pub fn metrics(run: &Path) -> PathBuf {
    run.join("metrics.jsonl")
}

/// The resolved recipe of the run.
pub fn recipe(run: &Path) -> PathBuf {
    run.join("recipe.toml")
}

/// The run a model folder belongs to, where outputs made from it go: `RUN/final` and
/// `RUN/best` → `RUN`, `RUN/checkpoints/step-N` → `RUN`; any other folder (a run
/// directory, or a model folder copied out of its run) is its own root, so nothing is ever
/// written above it.
pub fn run_of(model_dir: &Path) -> PathBuf {
    easel_latent::bank::ZBank::run_root(model_dir)
}

/// Resolves a model directory: a folder holding `recipe.toml` and weights (`final/` or a
/// checkpoint), or a run directory (its `final/`, else its newest checkpoint).
pub fn model_dir(path: &Path) -> Result<PathBuf> {
    if path.join(checkpoint::RECIPE_FILE).exists() && path.join(checkpoint::STATE_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    let fin = final_dir(path);
    if fin.join(checkpoint::STATE_FILE).exists() {
        return Ok(fin);
    }
    if let Some((_, dir)) = checkpoint::list(&checkpoints(path))?.pop() {
        return Ok(dir);
    }
    Err(TrainError::Run(format!(
        "{}: no model here (expected a run directory with final/ or checkpoints/, or a folder with recipe.toml and weights)",
        path.display()
    )))
}

/// Which weights of a GAN's model folder to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeneratorWeights {
    /// The weight average (`generator_ema.safetensors`, `[model] ema_decay`) when the folder has
    /// one, else the trained generator.
    #[default]
    Averaged,
    /// The trained generator (`generator.safetensors`; `--raw`).
    Trained,
}
