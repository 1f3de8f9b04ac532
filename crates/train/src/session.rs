//! What the CLI's commands do: start a run, resume it, sample from it, describe it.
//!
//! Only this module and the CLI know about run directories and recipe files; steps and models
//! see tensors, devices and configs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{self, TrainState};
use crate::error::{IoContext, Result, TrainError};
use crate::fit::{self, layout, DeviceLoader, FitOptions, FitOutcome, TrainStep};
use crate::grid;
use crate::recipe::{ModelRecipe, Recipe};
use crate::rng::{derive_seed, StepRng};
use crate::steps::gan::{self, GanStep};

/// Builds the training step a recipe describes.
pub fn build_step(recipe: &Recipe, device: &Device) -> Result<Box<dyn TrainStep>> {
    if let ModelRecipe::Classifier(_) = &recipe.model {
        return Ok(Box::new(crate::steps::classifier::ClassifierStep::new(
            recipe, device,
        )?));
    }
    if let ModelRecipe::Lapgan(m) = &recipe.model {
        return Ok(Box::new(crate::steps::lapgan::LapganStep::new(
            recipe, m, device,
        )?));
    }
    if let ModelRecipe::Style(m) = &recipe.model {
        return Ok(Box::new(crate::steps::style::StyleStep::new(
            recipe, m, device,
        )?));
    }
    if let ModelRecipe::Sr(m) = &recipe.model {
        return Ok(Box::new(crate::steps::sr::SrStep::new(recipe, m, device)?));
    }
    match gan::spec(recipe)? {
        Some(spec) => Ok(Box::new(GanStep::new(recipe, spec, device)?)),
        None => Err(TrainError::Run(format!(
            "no training step for kind `{}`",
            recipe.model.kind()
        ))),
    }
}

/// Whether training this recipe takes second-order gradients (WGAN-GP).
pub(crate) fn needs_double_backward(recipe: &Recipe) -> bool {
    matches!(&recipe.model, ModelRecipe::Wgan(w) if w.penalty == crate::recipe::Penalty::Gp)
}

/// Fills in what the data decides (the class count of a conditional GAN or a classifier), so the
/// resolved recipe is complete and `final/` can rebuild the networks without the data.
fn resolve_with_data(recipe: &mut Recipe, dataset: &dyn easel_data::Dataset) -> Result<()> {
    crate::steps::classifier::resolve(recipe);
    let slot = match &mut recipe.model {
        ModelRecipe::Cgan(m) => Some(&mut m.num_classes),
        ModelRecipe::Lapgan(m) if m.conditional => Some(&mut m.num_classes),
        ModelRecipe::Classifier(m) => Some(&mut m.num_classes),
        _ => None,
    };
    if let Some(num_classes) = slot {
        let have = dataset.num_classes();
        match (*num_classes, have) {
            (None, Some(n)) => *num_classes = Some(n),
            (None, None) => {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "a `{}` recipe needs labelled data, but {} has no classes",
                        recipe.model.kind(),
                        dataset.describe()
                    ),
                })
            }
            (Some(want), Some(n)) if want != n => {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "model.num_classes = {want}, but {} has {n} classes",
                        dataset.describe()
                    ),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// How a `train` or `resume` ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Finished or interrupted.
    pub outcome: FitOutcome,
    /// Wall time of this session in seconds.
    pub seconds: f64,
    /// A classifier run that finished: (test accuracy, test images, test data description).
    pub test_accuracy: Option<(f64, usize, String)>,
}

/// Options for [`train`].
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// The recipe file.
    pub recipe: PathBuf,
    /// `--set key=value` overrides.
    pub overrides: Vec<String>,
    /// `--run-dir`; default `runs/<recipe name>-<date>-<time>`.
    pub run_dir: Option<PathBuf>,
    /// The training device.
    pub device: Device,
    /// Print nothing.
    pub quiet: bool,
}

fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Starts a new run from a recipe.
pub fn train(req: &TrainRequest, interrupt: &AtomicBool) -> Result<RunReport> {
    let mut recipe = Recipe::load(&req.recipe, &req.overrides)?;
    let run_dir = match &req.run_dir {
        Some(d) => d.clone(),
        None => {
            let stem = req
                .recipe
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            PathBuf::from("runs").join(format!("{stem}-{}", timestamp()))
        }
    };
    if run_dir.exists()
        && std::fs::read_dir(&run_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(TrainError::Run(format!(
            "run directory {} already exists and is not empty: `easel resume {}` continues it, or choose another --run-dir",
            run_dir.display(),
            run_dir.display()
        )));
    }
    // Open the data and build the networks before creating anything on disk, so a missing
    // dataset or a bad architecture leaves no half-made run directory behind.
    let dataset = easel_data::open(&recipe.data, recipe.seed)?;
    resolve_with_data(&mut recipe, dataset.as_ref())?;
    build_step(&recipe, &req.device)?;
    crate::eval::check_training_eval(&recipe, &req.device)?;
    std::fs::create_dir_all(&run_dir).ctx("creating", &run_dir)?;
    let recipe_toml = recipe.to_toml()?;
    checkpoint::write_file_atomically(&layout::recipe(&run_dir), recipe_toml.as_bytes())?;
    let state = TrainState {
        step: 0,
        batches: 0,
        rng: StepRng::new(recipe.seed, "step"),
        train_seconds: 0.0,
        kind: recipe.model.kind().to_string(),
        networks: vec![],
        easel_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    run(
        &recipe,
        &recipe_toml,
        &run_dir,
        &req.device,
        Some(dataset),
        None,
        state,
        interrupt,
        req.quiet,
    )
}

/// Continues a run from its newest checkpoint; `overrides` may change `train.*`, `optim.*` and
/// `eval.*` (e.g. `train.steps=M` to extend a finished run).
pub fn resume(
    run_dir: &Path,
    overrides: &[String],
    device: &Device,
    interrupt: &AtomicBool,
    quiet: bool,
) -> Result<RunReport> {
    for o in overrides {
        let key = o.split('=').next().unwrap_or("");
        if !(key.starts_with("train.") || key.starts_with("optim.") || key.starts_with("eval.")) {
            return Err(TrainError::Recipe {
                path: format!("--set {o}"),
                message: "resume can only change train.*, optim.* and eval.* keys (the networks and data are fixed by the run)".into(),
            });
        }
    }
    let recipe_path = layout::recipe(run_dir);
    if !recipe_path.exists() {
        return Err(TrainError::Run(format!(
            "{} is not an easel run directory (no recipe.toml); `easel train RECIPE --run-dir {}` starts one",
            run_dir.display(),
            run_dir.display()
        )));
    }
    let recipe = Recipe::load_run(&recipe_path, overrides)?;
    let recipe_toml = recipe.to_toml()?;
    let (_, ckpt) = checkpoint::list(&layout::checkpoints(run_dir))?
        .pop()
        .ok_or_else(|| {
            TrainError::Run(format!(
            "no complete checkpoint in {}: nothing to resume (start a new run with `easel train`)",
            layout::checkpoints(run_dir).display()
        ))
        })?;
    let state = checkpoint::read_state(&ckpt)?;
    if state.step >= recipe.train.steps {
        return Err(TrainError::Run(format!(
            "{} already has {} of {} steps: pass --set train.steps=M with M > {} to train further",
            run_dir.display(),
            state.step,
            recipe.train.steps,
            state.step
        )));
    }
    checkpoint::write_file_atomically(&recipe_path, recipe_toml.as_bytes())?;
    run(
        &recipe,
        &recipe_toml,
        run_dir,
        device,
        None,
        Some(&ckpt),
        state,
        interrupt,
        quiet,
    )
}

#[allow(clippy::too_many_arguments)]
fn run(
    recipe: &Recipe,
    recipe_toml: &str,
    run_dir: &Path,
    device: &Device,
    dataset: Option<std::sync::Arc<dyn easel_data::Dataset>>,
    checkpoint_dir: Option<&Path>,
    mut state: TrainState,
    interrupt: &AtomicBool,
    quiet: bool,
) -> Result<RunReport> {
    if needs_double_backward(recipe) && !crate::double_backward::enabled() {
        // WGAN-GP: train on a thread where candle keeps gradient graphs (see double_backward).
        return crate::double_backward::scope(|| {
            run(
                recipe,
                recipe_toml,
                run_dir,
                device,
                dataset,
                checkpoint_dir,
                state,
                interrupt,
                quiet,
            )
        });
    }
    let started = Instant::now();
    let dataset = match dataset {
        Some(d) => d,
        None => easel_data::open(&recipe.data, recipe.seed)?,
    };
    let mut step = build_step(recipe, device)?;
    if let Some(dir) = checkpoint_dir {
        state = fit::load_checkpoint(step.as_mut(), dir)?;
    } else {
        // A grid of real images beside the previews, for comparison.
        let n = dataset.len().min(64);
        let [c, h, w] = dataset.shape();
        let mut pixels = Vec::with_capacity(n * c * h * w);
        for i in 0..n {
            pixels.extend(dataset.get(i, 0)?.pixels);
        }
        let real = Tensor::from_vec(pixels, (n, c, h, w), &Device::Cpu)?;
        std::fs::create_dir_all(layout::samples(run_dir))
            .ctx("creating", layout::samples(run_dir))?;
        grid::make_grid(&real, grid::default_ncol(n), 2, 0)?
            .save_png(&layout::samples(run_dir).join("real.png"))?;
    }
    let loader = easel_data::Loader::new(
        dataset.clone(),
        recipe.train.batch_size,
        derive_seed(recipe.seed, "data"),
        true,
        state.batches,
        recipe.data.workers,
    )?;
    if !quiet {
        let params: Vec<String> = step
            .networks()
            .iter()
            .map(|(n, s)| format!("{n} {:.2}M params", s.num_parameters() as f64 / 1e6))
            .collect();
        println!("easel {} | {}", recipe.model.kind(), dataset.describe());
        println!(
            "device {} | {} | run dir {}",
            crate::device::describe(device),
            params.join(", "),
            run_dir.display()
        );
        if state.step > 0 {
            println!("resuming at step {} of {}", state.step, recipe.train.steps);
        }
        println!("TensorBoard: tensorboard --logdir {}", run_dir.display());
    }
    let evaluator = crate::eval::TrainingEvaluator::new(recipe, run_dir, device, quiet)?;
    let mut data = DeviceLoader::new(loader, device);
    let opts = FitOptions {
        run_dir,
        train: &recipe.train,
        recipe_toml,
        interrupt,
        quiet,
        evaluator: evaluator.as_ref().map(|e| e as &dyn fit::Evaluator),
    };
    let outcome = fit::fit(step.as_mut(), &mut data, &mut state, &opts)?;
    let test_accuracy = match (&recipe.model, &outcome) {
        (ModelRecipe::Classifier(_), FitOutcome::Finished { step }) => {
            classifier_test_accuracy(recipe, run_dir, *step, device, quiet)?
        }
        _ => None,
    };
    Ok(RunReport {
        run_dir: run_dir.to_path_buf(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
        test_accuracy,
    })
}

/// Accuracy of a finished classifier on the test split of its data, printed and appended to
/// `metrics.jsonl`; `None` (with a note) when the data has no test split.
fn classifier_test_accuracy(
    recipe: &Recipe,
    run_dir: &Path,
    step: u64,
    device: &Device,
    quiet: bool,
) -> Result<Option<(f64, usize, String)>> {
    use std::io::Write;
    let note = |m: String| {
        if !quiet {
            println!("{m}");
        }
    };
    if recipe.data.source == easel_data::Source::Folder {
        note("test accuracy: skipped (an image folder has no test split; measure one with `easel eval RUN --against DIR`)".into());
        return Ok(None);
    }
    let real = crate::eval::RealData::Dataset {
        data: easel_data::DataConfig {
            split: easel_data::Split::Test,
            ..recipe.data.clone()
        },
        seed: recipe.seed,
    };
    let (acc, n, desc) =
        match crate::eval::classifier_accuracy(&layout::final_dir(run_dir), &real, device, quiet) {
            Ok(r) => r,
            Err(TrainError::Data(e)) => {
                note(format!(
                    "test accuracy: skipped, the test split cannot be read: {e}"
                ));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
    note(format!(
        "test accuracy {:.2} % ({} of {n} wrong) on {desc}",
        100.0 * acc,
        ((1.0 - acc) * n as f64).round() as u64
    ));
    let line = serde_json::json!({"step": step, "test_accuracy": acc, "test_images": n});
    let path = layout::metrics(run_dir);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .ctx("opening", &path)?;
    writeln!(f, "{line}").ctx("appending to", &path)?;
    Ok(Some((acc, n, desc)))
}

/// Options for [`sample`].
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// A run directory, its `final/`, or one of its checkpoint directories.
    pub model: PathBuf,
    /// Number of images (for a conditional model without `class`: columns of the class grid ×
    /// classes, rounded up to whole columns).
    pub n: usize,
    /// Conditional models: draw every image of this class. Unset: a class grid, one row per class
    /// with the same z in each column.
    pub class: Option<usize>,
    /// Seed for z; default derived from the recipe seed.
    pub seed: Option<u64>,
    /// Output PNG; default `<run>/samples/sample-s<seed>-n<n>.png`
    /// (`sheet-s<seed>-n<n>.png` for a contact sheet).
    pub out: Option<PathBuf>,
    /// Device to run the generator on.
    pub device: Device,
    /// Write a numbered contact sheet (each tile's z bank id under it) instead of a plain grid.
    pub sheet: bool,
    /// Which weights to sample (the average by default when the run keeps one).
    pub weights: GeneratorWeights,
}

/// What [`sample`] wrote.
#[derive(Debug, Clone)]
pub struct SampleReport {
    /// The PNG grid.
    pub png: PathBuf,
    /// The z vectors (`z` `[n, nz]`, safetensors with metadata), in grid order.
    pub z: PathBuf,
    /// The seed used.
    pub seed: u64,
    /// The model directory used.
    pub model_dir: PathBuf,
    /// The z bank ids of the images, in grid order (see [`easel_latent::bank`]).
    pub ids: std::ops::Range<u64>,
    /// The z bank folder (`<run>/zbank`).
    pub bank: PathBuf,
}

pub use crate::run_dir::{model_dir, GeneratorWeights};

pub use crate::load::{load_generator, load_generator_with};

/// Draws `n` images from a trained generator, writes a PNG grid and the z vectors beside it.
pub fn sample(req: &SampleRequest) -> Result<SampleReport> {
    if req.n == 0 {
        return Err(TrainError::Run("--n must be at least 1".into()));
    }
    let dir = model_dir(&req.model)?;
    let (recipe, g, mode) = load_generator_with(&dir, &req.device, req.weights)?;
    let seed = req
        .seed
        .unwrap_or_else(|| derive_seed(recipe.seed, "sample") % 1_000_000);
    let nz = g.latent_dim();
    let classes = g.num_classes();
    let mut rng = StepRng::new(seed, "sample-z");
    // (z, labels, grid columns)
    let (z, labels, ncol) = match (classes, req.class) {
        (0, Some(_)) => {
            return Err(TrainError::Run(format!(
                "--class: the model in {} is unconditional",
                dir.display()
            )));
        }
        (0, None) => {
            let z = Tensor::from_vec(rng.normal_vec(req.n * nz), (req.n, nz), &req.device)?;
            (z, None, grid::default_ncol(req.n))
        }
        (k, Some(c)) if c >= k => {
            return Err(TrainError::Run(format!(
                "--class {c}: the model has classes 0..{}",
                k - 1
            )));
        }
        (_, Some(c)) => {
            let z = Tensor::from_vec(rng.normal_vec(req.n * nz), (req.n, nz), &req.device)?;
            let l = Tensor::from_vec(vec![c as u32; req.n], req.n, &req.device)?;
            (z, Some(l), grid::default_ncol(req.n))
        }
        (k, None) => {
            let cols = req.n.div_ceil(k);
            let one = rng.normal_vec(cols * nz);
            let mut all = Vec::with_capacity(k * one.len());
            let mut labels = Vec::with_capacity(k * cols);
            for c in 0..k {
                all.extend_from_slice(&one);
                labels.extend(std::iter::repeat_n(c as u32, cols));
            }
            let z = Tensor::from_vec(all, (k * cols, nz), &req.device)?;
            (
                z,
                Some(Tensor::from_vec(labels, k * cols, &req.device)?),
                cols,
            )
        }
    };
    let total = z.dim(0)?;
    // Eval-mode batch norm makes every image independent of the others, so chunking is exact.
    let chunk = if mode == easel_nn::BnMode::Eval {
        256
    } else {
        total
    };
    let mut parts = Vec::new();
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        let l = labels
            .as_ref()
            .map(|l| l.narrow(0, start, len))
            .transpose()?;
        let levels = g.generate_levels(&z.narrow(0, start, len)?, l.as_ref(), mode)?;
        parts.push(if levels.len() > 1 {
            // Multi-scale models: each level's output side by side, one row per image.
            crate::steps::lapgan::side_by_side(&levels)?
        } else {
            g.generate(&z.narrow(0, start, len)?, l.as_ref(), mode)?
        });
        start += len;
    }
    let levels_per_image =
        parts.first().map(|p| p.dim(0)).transpose()?.unwrap_or(1) / chunk.min(total).max(1);
    let ncol = if levels_per_image > 1 {
        levels_per_image
    } else {
        ncol
    };
    let images = Tensor::cat(&parts, 0)?;
    let run_root = layout::run_of(&dir);
    let png = match &req.out {
        Some(p) => p.clone(),
        None => layout::samples(&run_root).join(format!(
            "{}-s{seed}-n{}.png",
            if req.sheet { "sheet" } else { "sample" },
            req.n
        )),
    };
    if let Some(parent) = png.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).ctx("creating", parent)?;
        }
    }
    let state = checkpoint::read_state(&dir)?;
    // Every draw goes into the run's z bank, so its images can be named by id.
    let latent_err = |e: easel_latent::LatentError| TrainError::Run(e.to_string());
    let mut bank =
        easel_latent::bank::ZBank::open_or_create(&run_root, nz, classes, g.image_shape())
            .map_err(latent_err)?;
    let zhost = z.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let lhost = labels
        .as_ref()
        .map(|l| {
            l.to_device(&Device::Cpu)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()
        })
        .transpose()?;
    let ids = bank
        .append(
            &zhost.flatten_all()?.to_vec1::<f32>()?,
            lhost.as_deref(),
            &easel_latent::bank::DrawInfo {
                model_dir: &dir,
                step: state.step,
                seed,
                class: req.class.map(|c| c as u32),
                image: Some(&png),
                source: if req.sheet {
                    "sample --sheet"
                } else {
                    "sample"
                },
            },
        )
        .map_err(latent_err)?;
    if req.sheet {
        // Ids go in a band under each image (the last level's tile for multi-scale models);
        // tiles are copied unchanged, so each is exactly what its z gives.
        let lpi = levels_per_image.max(1);
        let tiles = easel_latent::canvas::Canvas::tiles(&images).map_err(latent_err)?;
        let captions: Vec<Option<String>> = (0..tiles.len())
            .map(|t| (t % lpi == lpi - 1).then(|| (ids.start + (t / lpi) as u64).to_string()))
            .collect();
        easel_latent::canvas::sheet(&tiles, ncol, 2, &captions)
            .and_then(|s| s.canvas.save_png(&png))
            .map_err(latent_err)?;
    } else {
        grid::make_grid(&images, ncol, 2, 0)?.save_png(&png)?;
    }
    let zpath = png.with_extension("z.safetensors");
    let meta = [
        ("model_dir".to_string(), dir.display().to_string()),
        ("step".to_string(), state.step.to_string()),
        ("seed".to_string(), seed.to_string()),
        ("grid_columns".to_string(), ncol.to_string()),
        ("first_id".to_string(), ids.start.to_string()),
        (
            "order".to_string(),
            "row-major: image i is at row i / grid_columns, column i % grid_columns".to_string(),
        ),
    ];
    save_z(&z, labels.as_ref(), &zpath, &meta)?;
    Ok(SampleReport {
        png,
        z: zpath,
        seed,
        model_dir: dir,
        ids,
        bank: bank.dir().to_path_buf(),
    })
}

fn save_z(
    z: &Tensor,
    labels: Option<&Tensor>,
    path: &Path,
    meta: &[(String, String)],
) -> Result<()> {
    let z = z.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let zbytes: Vec<u8> = z
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let lbytes: Option<Vec<u8>> = match labels {
        Some(l) => Some(
            l.to_device(&Device::Cpu)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        None => None,
    };
    let err = |e: safetensors::SafeTensorError| TrainError::Run(format!("z tensors: {e}"));
    let zview =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, z.dims().to_vec(), &zbytes)
            .map_err(err)?;
    let mut views = vec![("z", zview)];
    if let Some(lb) = &lbytes {
        let lview =
            safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![z.dim(0)?], lb)
                .map_err(err)?;
        views.push(("labels", lview));
    }
    let metadata: std::collections::HashMap<String, String> = meta.iter().cloned().collect();
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TrainError::Run(format!("serialising z: {e}")))?;
    checkpoint::write_file_atomically(path, &data)
}

/// A human-readable description of a run directory.
pub fn inspect(run_dir: &Path) -> Result<String> {
    use std::fmt::Write;
    let recipe_path = layout::recipe(run_dir);
    if !recipe_path.exists() {
        return Err(TrainError::Run(format!(
            "{} is not an easel run directory (no recipe.toml)",
            run_dir.display()
        )));
    }
    let recipe = Recipe::load_run(&recipe_path, &[])?;
    let mut s = String::new();
    let _ = writeln!(s, "run        {}", run_dir.display());
    let _ = writeln!(
        s,
        "recipe     {} — {}",
        recipe.model.kind(),
        recipe.description
    );
    let _ = writeln!(
        s,
        "data       {:?} {}×{}×{}{}",
        recipe.data.source,
        recipe.data.channels,
        recipe.data.image_size,
        recipe.data.image_size,
        recipe
            .data
            .dir
            .as_ref()
            .map(|d| format!(" from {}", d.display()))
            .unwrap_or_default()
    );
    let ckpts = checkpoint::list(&layout::checkpoints(run_dir))?;
    let done = ckpts.last().map(|(s, _)| *s).unwrap_or(0);
    let _ = writeln!(
        s,
        "progress   {done} of {} steps saved (batch {}, seed {})",
        recipe.train.steps, recipe.train.batch_size, recipe.seed
    );
    if let Some((_, last)) = ckpts.last() {
        if let Ok(st) = checkpoint::read_state(last) {
            let _ = writeln!(s, "time       {:.1} s of training", st.train_seconds);
        }
    }
    let _ = writeln!(s, "checkpoints");
    if ckpts.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for (step, dir) in &ckpts {
        let _ = writeln!(
            s,
            "  step {step:>8}  {}  {:.1} MB",
            dir.display(),
            dir_size(dir) as f64 / 1e6
        );
    }
    let fin = layout::final_dir(run_dir);
    match checkpoint::read_state(&fin) {
        Ok(st) => {
            let _ = writeln!(s, "final      {} (step {})", fin.display(), st.step);
            if st.networks.iter().any(|n| n == gan::EMA_NETWORK) {
                let _ = writeln!(
                    s,
                    "weights    {}: sample, eval and latent use the generator's weight average ({}); --raw the trained generator",
                    st.networks.join(", "),
                    gan::EMA_NETWORK
                );
            }
        }
        Err(_) => {
            let _ = writeln!(s, "final      (not yet: the run has not finished)");
        }
    }
    let samples: Vec<PathBuf> = std::fs::read_dir(layout::samples(run_dir))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
                .collect()
        })
        .unwrap_or_default();
    let latest = samples
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .max();
    let _ = writeln!(
        s,
        "samples    {} PNG(s){}",
        samples.len(),
        latest
            .map(|p| format!(", latest {}", p.display()))
            .unwrap_or_default()
    );
    if let Ok(text) = std::fs::read_to_string(layout::metrics(run_dir)) {
        if let Some(last) = text.lines().last() {
            let _ = writeln!(s, "last log   {last}");
        }
    }
    Ok(s)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Recipes under `dir` (recursively) with their descriptions, sorted by path.
pub fn list_recipes(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).ctx("listing", &d)?;
        for e in entries {
            let p = e.ctx("listing", &d)?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                let desc = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
                    .and_then(|t| {
                        t.get("description")
                            .and_then(|v| v.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "(no description)".into());
                out.push((p, desc));
            }
        }
    }
    out.sort();
    Ok(out)
}
