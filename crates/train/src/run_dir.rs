//! Where things live in a run directory (`RUN/checkpoints/step-N/`, `RUN/final/`, `RUN/best/`,
//! `RUN/samples/`, `RUN/eval/`, `RUN/metrics.jsonl`, `RUN/recipe.toml`) and how a path given on
//! the command line resolves to a model folder. Modules that need a run path ask here.
//! (Issue 16 grows this into the one owner of every run-folder name.)

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Result, TrainError};

/// Folder of the step checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Folder of the finished model.
pub const FINAL: &str = "final";
/// Folder of the best model by the evaluation metric.
pub const BEST: &str = "best";

/// Step checkpoints.
pub fn checkpoints(run: &Path) -> PathBuf {
    run.join(CHECKPOINTS)
}

/// The finished model: resolved recipe beside the weights.
pub fn final_dir(run: &Path) -> PathBuf {
    run.join(FINAL)
}

/// The model with the best evaluation metric so far (like `final/`, plus `best.json`).
pub fn best_dir(run: &Path) -> PathBuf {
    run.join(BEST)
}

/// Evaluation outputs and the reference-statistics cache.
pub fn eval_dir(run: &Path) -> PathBuf {
    run.join("eval")
}

/// Preview grids.
pub fn samples(run: &Path) -> PathBuf {
    run.join("samples")
}

/// Figures of the latent tools (`easel latent …`).
pub fn latent_figures(run: &Path) -> PathBuf {
    samples(run).join("latent")
}

/// Images written by `easel stylize` (without `--out`).
pub fn stylized(run: &Path) -> PathBuf {
    run.join("stylized")
}

/// Images written by `easel upscale` (without `--out`).
pub fn upscaled(run: &Path) -> PathBuf {
    run.join("upscaled")
}

/// One JSON object per logged step.
pub fn metrics(run: &Path) -> PathBuf {
    run.join("metrics.jsonl")
}

/// The resolved recipe of the run.
pub fn recipe(run: &Path) -> PathBuf {
    run.join(checkpoint::RECIPE_FILE)
}

/// The run a model folder belongs to, where outputs made from it go: `RUN/final` and
/// `RUN/best` → `RUN`, `RUN/checkpoints/step-N` → `RUN`; any other folder (a run
/// directory, or a model folder copied out of its run) is its own root, so nothing is ever
/// written above it.
pub fn run_of(model_dir: &Path) -> PathBuf {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if matches!(name(model_dir).as_deref(), Some(FINAL | BEST)) {
        if let Some(p) = model_dir.parent() {
            return p.to_path_buf();
        }
    }
    if let Some(parent) = model_dir.parent() {
        if name(parent).as_deref() == Some(CHECKPOINTS) {
            if let Some(run) = parent.parent() {
                return run.to_path_buf();
            }
        }
    }
    model_dir.to_path_buf()
}

/// The z bank of the run a path belongs to (see [`run_of`]); an error that says what to do when
/// it has none, or when the path is not a run directory at all.
pub fn open_bank(path: &Path) -> Result<easel_latent::bank::ZBank> {
    let root = run_of(path);
    easel_latent::bank::ZBank::open(&root).map_err(|e| {
        if recipe(&root).exists() || final_dir(&root).exists() {
            TrainError::Run(e.to_string())
        } else {
            TrainError::Run(format!(
                "{}: {} does not look like an easel run directory (no recipe.toml); pass the run directory",
                easel_latent::bank::ZBank::dir_of(&root).display(),
                root.display()
            ))
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_root_never_climbs_above_a_standalone_folder() {
        let p = |s: &str| run_of(Path::new(s));
        assert_eq!(p("runs/a/final"), Path::new("runs/a"));
        assert_eq!(p("runs/a/best"), Path::new("runs/a"));
        assert_eq!(p("runs/a/checkpoints/step-00000500"), Path::new("runs/a"));
        assert_eq!(p("runs/a"), Path::new("runs/a"));
        // A model folder copied out of its run keeps its outputs inside itself (this once
        // resolved to the folder's grandparent, `/`).
        assert_eq!(p("/tmp/model"), Path::new("/tmp/model"));
    }

    /// The bank of a run opens from the run, its final/ or a checkpoint folder inside it; a
    /// folder that is no run says so.
    #[test]
    fn bank_opens_from_any_model_folder_of_its_run() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir_all(final_dir(&run)).unwrap();
        std::fs::write(recipe(&run), "").unwrap();
        let mut bank = easel_latent::bank::ZBank::open_or_create(&run, 2, 0, [1, 8, 8]).unwrap();
        let info = easel_latent::bank::DrawInfo {
            model_dir: &final_dir(&run),
            step: 3,
            seed: 1,
            class: None,
            image: None,
            source: "test",
        };
        bank.append(&[1.0, 2.0, 3.0, 4.0], None, &info).unwrap();
        for p in [
            run.clone(),
            final_dir(&run),
            checkpoints(&run).join("step-00000010"),
        ] {
            let b = open_bank(&p).unwrap();
            let e = b.get(&[1]).unwrap();
            assert_eq!(e[0].z, vec![3.0, 4.0]);
            assert_eq!(b.model_of(&e).unwrap(), final_dir(&run));
        }
        let other = d.path().join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        let e = open_bank(&other).unwrap_err().to_string();
        assert!(e.contains("does not look like an easel run"), "{e}");
        std::fs::write(recipe(&other), "").unwrap();
        let e = open_bank(&other).unwrap_err().to_string();
        assert!(e.contains("no z bank") && e.contains("--sheet"), "{e}");
    }
}
