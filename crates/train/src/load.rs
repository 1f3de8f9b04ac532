//! Rebuilding trained networks from a model folder (`final/`, `best/` or a checkpoint) alone:
//! its `recipe.toml` says what to build, its safetensors what to load. Used by sampling,
//! evaluation and the latent tools.

use std::path::Path;

use candle_core::Device;
use easel_models::ImageGenerator;

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::recipe::{ModelRecipe, Recipe};
use crate::run_dir::GeneratorWeights;
use crate::steps::gan;

/// Rebuilds the generator saved in a model directory (`final/` or a checkpoint) from that folder
/// alone: its weight average when it has one (see [`load_generator_with`]).
pub fn load_generator(
    dir: &Path,
    device: &Device,
) -> Result<(Recipe, Box<dyn ImageGenerator>, easel_nn::BnMode)> {
    load_generator_with(dir, device, GeneratorWeights::default())
}

/// [`load_generator`] with a choice of weights.
pub fn load_generator_with(
    dir: &Path,
    device: &Device,
    weights: GeneratorWeights,
) -> Result<(Recipe, Box<dyn ImageGenerator>, easel_nn::BnMode)> {
    let recipe = Recipe::load_run(&dir.join(checkpoint::RECIPE_FILE), &[])?;
    if let ModelRecipe::Lapgan(m) = &recipe.model {
        let spec = crate::steps::lapgan::spec(&recipe, m)?;
        let (g, stores) = crate::steps::lapgan::build_generator(&recipe, &spec, device)?;
        for (name, store) in stores {
            checkpoint::load_network(dir, name, &store, device)?;
        }
        return Ok((recipe, Box::new(g), spec.sample_mode));
    }
    match gan::spec(&recipe)? {
        Some(spec) => {
            let (g, store) = gan::build_generator(&recipe, &spec, device)?;
            let averaged = dir.join(format!("{}.safetensors", gan::EMA_NETWORK));
            let name = if weights == GeneratorWeights::Averaged && averaged.exists() {
                gan::EMA_NETWORK
            } else {
                "generator"
            };
            checkpoint::load_network(dir, name, &store, device)?;
            Ok((recipe, Box::new(g), spec.sample_mode))
        }
        None => Err(TrainError::Run(format!(
            "{}: a `{}` model has no generator to sample",
            dir.display(),
            recipe.model.kind()
        ))),
    }
}
