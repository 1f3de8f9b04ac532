//! The one training loop every easel trainer runs.
//!
//! A [`TrainStep`] owns its networks and optimisers (a GAN has two of each and may update its
//! critic several times per generator update); [`fit`] drives any step: batches, logging,
//! previews, histograms, checkpoints, the NaN guard and Ctrl-C. An optional [`Evaluator`]
//! measures the step's generator every few steps; [`BestTracker`] keeps `best/` by its metric.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use easel_models::ImageGenerator;
use easel_nn::{BnMode, ParamStore};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState, OPTIMIZER_FILE, RECIPE_FILE, STATE_FILE};
use crate::error::{IoContext, Result, TrainError};
use crate::grid;
use crate::recipe::TrainConfig;
use crate::rng::StepRng;

/// A batch on the training device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, C, H, W]` f32 in [-1, 1].
    pub images: Tensor,
    /// `[B]` u32 class labels (0 for unlabelled data).
    pub labels: Tensor,
}

/// Where a step gets its batches; a step may draw more than one per call (critic updates).
pub trait BatchSource {
    /// The next batch.
    fn next_batch(&mut self) -> Result<Batch>;
    /// Batches drawn so far in this run (saved in checkpoints so resume continues the stream).
    fn position(&self) -> u64;
}

/// [`easel_data::Loader`] uploading each batch to a device.
pub struct DeviceLoader {
    loader: easel_data::Loader,
    device: Device,
}

impl DeviceLoader {
    /// Wraps `loader`; batches are uploaded to `device`.
    pub fn new(loader: easel_data::Loader, device: &Device) -> Self {
        Self {
            loader,
            device: device.clone(),
        }
    }
}

impl BatchSource for DeviceLoader {
    fn next_batch(&mut self) -> Result<Batch> {
        let b = self.loader.next_batch()?;
        let images = Tensor::from_vec(b.pixels, b.shape.to_vec(), &self.device)?;
        let labels = Tensor::from_vec(b.labels, b.shape[0], &self.device)?;
        Ok(Batch { images, labels })
    }
    fn position(&self) -> u64 {
        self.loader.position()
    }
}

/// What a step sees besides its batches.
pub struct StepContext<'a> {
    /// The run's seeded stream for noise and other per-step randomness.
    pub rng: &'a mut StepRng,
    /// Steps completed before this one.
    pub step: u64,
    /// The training device.
    pub device: &'a Device,
}

/// Named scalars a step reports (`("loss_d", 1.23)`, …), in display order.
pub type Scalars = Vec<(&'static str, f64)>;

/// One kind of training, owning its networks and optimisers.
pub trait TrainStep {
    /// The model kind (`dcgan`, …), recorded in checkpoints.
    fn kind(&self) -> &'static str;
    /// The networks by name, e.g. `generator`, `discriminator`: saved as `<name>.safetensors`.
    fn networks(&self) -> Vec<(&'static str, ParamStore)>;
    /// Everything else that must survive a resume (optimiser moments, fixed preview noise, …).
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores what [`TrainStep::state`] returned.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// One training step; returns the scalars to log.
    fn step(&mut self, data: &mut dyn BatchSource, ctx: &mut StepContext) -> Result<Scalars>;
    /// Preview images `[N, C, H, W]` in [-1, 1] from fixed inputs, for the sample grid.
    fn preview(&mut self) -> Result<Tensor>;
    /// Columns of the preview grid (default: about square, 8 for 64 images).
    fn preview_columns(&self) -> Option<usize> {
        None
    }
    /// The generator being trained and the batch-norm mode to sample it with, for evaluation
    /// during training (`None`: the step has no generator, e.g. a classifier).
    fn generator(&self) -> Option<(&dyn ImageGenerator, BnMode)> {
        None
    }
    /// Multiplies every optimiser's recipe learning rate by `factor` for the coming steps
    /// (`train.lr_decay_from`). Steps without a schedule refuse, so a recipe never asks for a
    /// decay that silently does nothing.
    fn scale_lr(&mut self, factor: f64) -> Result<()> {
        let _ = factor;
        Err(TrainError::Run(format!(
            "train.lr_decay_from is not supported by `{}` training; remove it from the recipe",
            self.kind()
        )))
    }
    /// Brings state derived from the weights up to date before they are previewed, evaluated or
    /// saved (e.g. the batch-norm statistics of an averaged generator). Must not touch the
    /// training RNG or the data stream, so calling it more or less often changes no result.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    /// The console form of `scalars`.
    fn format_scalars(&self, scalars: &Scalars) -> String {
        scalars
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// How [`fit`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FitOutcome {
    /// All steps done; `final/` written.
    Finished {
        /// Steps completed.
        step: u64,
    },
    /// Stopped by Ctrl-C after saving a checkpoint.
    Interrupted {
        /// Steps completed.
        step: u64,
        /// The checkpoint written on the way out.
        checkpoint: PathBuf,
    },
}

pub use crate::recipe::metric::BestMetric;

/// Measures the step's model during training (e.g. FID of its generator).
///
/// Implementations must not touch the training RNG or the data stream (they get neither), so a
/// run with evaluation trains exactly as one without.
pub trait Evaluator {
    /// Evaluate after every this many steps (and after the last step); 0 = never.
    fn every(&self) -> u64;
    /// The metric that keeps `best/`, if any.
    fn best(&self) -> Option<BestMetric>;
    /// Metrics of `step`'s current model after `at` steps, by name.
    fn evaluate(&self, step: &dyn TrainStep, at: u64) -> Result<Vec<(String, f64)>>;
}

/// What `best/best.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// The deciding metric.
    pub metric: BestMetric,
    /// Its best value so far.
    pub value: f64,
    /// The step that reached it (the weights in `best/`).
    pub step: u64,
}

/// The best value of one metric so far; decides when `best/` is replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct BestTracker {
    metric: BestMetric,
    best: Option<(u64, f64)>,
}

impl BestTracker {
    /// A tracker with nothing seen yet.
    pub fn new(metric: BestMetric) -> Self {
        Self { metric, best: None }
    }

    /// Continues from a `best.json` of an earlier session when it tracked the same metric.
    pub fn resume(metric: BestMetric, record: Option<&BestRecord>) -> Self {
        let best = record
            .filter(|r| r.metric == metric && r.value.is_finite())
            .map(|r| (r.step, r.value));
        Self { metric, best }
    }

    /// Offers the value reached at `step`; true when it is strictly better than every earlier
    /// one (the first finite value always is; NaN and infinities never are).
    pub fn offer(&mut self, step: u64, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        let better = match self.best {
            None => true,
            Some((_, b)) if self.metric.lower_is_better => value < b,
            Some((_, b)) => value > b,
        };
        if better {
            self.best = Some((step, value));
        }
        better
    }

    /// (step, value) of the best so far.
    pub fn best(&self) -> Option<(u64, f64)> {
        self.best
    }

    /// The metric tracked.
    pub fn metric(&self) -> &BestMetric {
        &self.metric
    }
}

/// Reads `best/best.json` of a run, if there is a complete one.
pub fn read_best(run: &Path) -> Option<BestRecord> {
    let dir = layout::best_dir(run);
    checkpoint::read_state(&dir).ok()?;
    let text = fs::read_to_string(dir.join(BEST_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The record of the best model inside `best/`.
pub const BEST_FILE: &str = "best.json";

/// Everything [`fit`] needs besides the step and the data.
pub struct FitOptions<'a> {
    /// The run directory.
    pub run_dir: &'a Path,
    /// Lengths and intervals.
    pub train: &'a TrainConfig,
    /// The resolved recipe, copied into every checkpoint and `final/`.
    pub recipe_toml: &'a str,
    /// Set by the Ctrl-C handler; checked between steps.
    pub interrupt: &'a AtomicBool,
    /// Print nothing (tests).
    pub quiet: bool,
    /// Metrics measured during training, and `best/` by one of them.
    pub evaluator: Option<&'a dyn Evaluator>,
}

/// The run directory's layout (re-exported from [`crate::run_dir`], where it lives).
pub use crate::run_dir as layout;

struct Logger {
    metrics: fs::File,
    metrics_path: PathBuf,
    tb: Option<easel_tensorboard::SummaryWriter>,
    bar: ProgressBar,
    quiet: bool,
}

impl Logger {
    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            println!("{s}");
        } else {
            self.bar.println(s);
        }
    }
    fn warn(&self, s: &str) {
        if self.bar.is_hidden() {
            eprintln!("warning: {s}");
        } else {
            self.bar.println(format!("warning: {s}"));
        }
    }
    /// TensorBoard failures are reported once and logging to it stops; training goes on.
    fn tb<F: FnOnce(&mut easel_tensorboard::SummaryWriter) -> std::io::Result<()>>(
        &mut self,
        f: F,
    ) {
        if let Some(w) = self.tb.as_mut() {
            if let Err(e) = f(w) {
                self.warn(&format!("TensorBoard logging stopped: {e}"));
                self.tb = None;
            }
        }
    }
}

/// Keeps only lines of `metrics.jsonl` with `step ≤ upto` (resume after a crash past a checkpoint).
fn truncate_metrics(path: &Path, upto: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= upto)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    checkpoint::write_file_atomically(path, out.as_bytes())
}

/// Runs `step` until `opts.train.steps` steps are done, resuming from `state`.
pub fn fit(
    step: &mut dyn TrainStep,
    data: &mut dyn BatchSource,
    state: &mut TrainState,
    opts: &FitOptions,
) -> Result<FitOutcome> {
    let run = opts.run_dir;
    let cfg = opts.train;
    let device = step
        .networks()
        .first()
        .map(|(_, s)| s.device().clone())
        .unwrap_or(Device::Cpu);
    fs::create_dir_all(layout::samples(run)).ctx("creating", layout::samples(run))?;
    let metrics_path = layout::metrics(run);
    truncate_metrics(&metrics_path, state.step)?;
    let metrics = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .ctx("opening", &metrics_path)?;
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.steps)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let mut log = Logger {
        metrics,
        metrics_path,
        tb: None,
        bar,
        quiet: opts.quiet,
    };
    match easel_tensorboard::SummaryWriter::create(run) {
        Ok(w) => log.tb = Some(w),
        Err(e) => log.warn(&format!("TensorBoard events disabled: {e}")),
    }

    let mut last_saved = checkpoint::list(&layout::checkpoints(run))?
        .last()
        .map(|(s, _)| *s);
    let mut window_start = Instant::now();
    let mut window_images = 0u64;
    let mut window_steps = 0u64;
    let mut last_preview = None;
    let start_step = state.step;
    let mut tracker = opts.evaluator.and_then(|e| e.best()).map(|metric| {
        let record = read_best(run);
        BestTracker::resume(metric, record.as_ref())
    });

    while state.step < cfg.steps {
        if opts.interrupt.load(Ordering::SeqCst) {
            let dir = if last_saved == Some(state.step) {
                layout::checkpoints(run).join(checkpoint::step_dir_name(state.step))
            } else {
                step.sync()?;
                save_checkpoint(step, state, run, cfg, opts.recipe_toml)?
            };
            log.bar.abandon();
            log.line(&format!(
                "interrupted at step {}: checkpoint saved to {}",
                state.step,
                dir.display()
            ));
            return Ok(FitOutcome::Interrupted {
                step: state.step,
                checkpoint: dir,
            });
        }
        let t0 = Instant::now();
        let before = data.position();
        if opts.train.lr_decay_from.is_some() {
            step.scale_lr(opts.train.lr_factor(state.step))?;
        }
        let mut ctx = StepContext {
            rng: &mut state.rng,
            step: state.step,
            device: &device,
        };
        let scalars = step.step(data, &mut ctx)?;
        if let Some((name, value)) = scalars.iter().find(|(_, v)| !v.is_finite()) {
            log.bar.abandon();
            let checkpoint = match checkpoint::list(&layout::checkpoints(run))?.last() {
                Some((s, p)) => format!(
                    "The last good checkpoint (step {s}) is intact: {}.",
                    p.display()
                ),
                None => "No checkpoint had been written yet.".to_string(),
            };
            return Err(TrainError::NonFinite {
                step: state.step + 1,
                name: name.to_string(),
                value: *value,
                checkpoint,
            });
        }
        let dt = t0.elapsed().as_secs_f64();
        state.step += 1;
        state.batches = data.position();
        state.train_seconds += dt;
        let batch_size = match scalars.iter().find(|(k, _)| *k == "batch_size") {
            Some((_, b)) => *b as u64,
            None => 0,
        };
        window_images += (state.batches - before) * batch_size;
        window_steps += 1;
        log.bar.set_position(state.step);

        let s = state.step;
        if s.is_multiple_of(cfg.log_every) || s == start_step + 1 || s == cfg.steps {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let ips = window_images as f64 / secs;
            let shown: Scalars = scalars
                .iter()
                .filter(|(k, _)| *k != "batch_size")
                .cloned()
                .collect();
            let text = step.format_scalars(&shown);
            log.line(&format!("[{s}/{}] {text}  | {ips:.1} img/s", cfg.steps));
            log.bar.set_message(format!("{ips:.0} img/s"));
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), s.into());
            obj.insert("train_seconds".into(), state.train_seconds.into());
            obj.insert("images_per_sec".into(), ips.into());
            obj.insert("steps_per_sec".into(), (window_steps as f64 / secs).into());
            for (k, v) in &shown {
                obj.insert(k.to_string(), (*v).into());
            }
            let line = serde_json::Value::Object(obj).to_string();
            writeln!(log.metrics, "{line}").ctx("appending to", &log.metrics_path)?;
            log.tb(|w| {
                for (k, v) in &shown {
                    w.add_scalar(&format!("train/{k}"), *v, s)?;
                }
                w.add_scalar("perf/images_per_sec", ips, s)
            });
            window_start = Instant::now();
            window_images = 0;
            window_steps = 0;
        }
        if (cfg.sample_every > 0 && s.is_multiple_of(cfg.sample_every)) || s == cfg.steps {
            write_preview(step, run, s, &mut log)?;
            last_preview = Some(s);
        }
        if cfg.histogram_every > 0 && s.is_multiple_of(cfg.histogram_every) {
            write_histograms(step, s, &mut log)?;
        }
        if let Some(ev) = opts.evaluator {
            let every = ev.every();
            if every > 0 && (s.is_multiple_of(every) || s == cfg.steps) {
                step.sync()?;
                evaluate(ev, step, state, opts, tracker.as_mut(), &mut log)?;
            }
        }
        if s.is_multiple_of(cfg.checkpoint_every) || s == cfg.steps {
            step.sync()?;
            save_checkpoint(step, state, run, cfg, opts.recipe_toml)?;
            last_saved = Some(s);
        }
    }
    if last_preview != Some(state.step) && state.step > start_step {
        write_preview(step, run, state.step, &mut log)?;
    }
    step.sync()?;
    if last_saved != Some(state.step) {
        save_checkpoint(step, state, run, cfg, opts.recipe_toml)?;
    }
    write_checkpoint_dir(step, state, &layout::final_dir(run), opts.recipe_toml, &[])?;
    log.tb(|w| w.flush());
    log.bar.finish_and_clear();
    log.line(&format!(
        "done: {} steps; final model in {}",
        state.step,
        layout::final_dir(run).display()
    ));
    Ok(FitOutcome::Finished { step: state.step })
}

/// Runs the evaluator, logs its metrics and replaces `best/` when the deciding one improved.
fn evaluate(
    ev: &dyn Evaluator,
    step: &mut dyn TrainStep,
    state: &TrainState,
    opts: &FitOptions,
    tracker: Option<&mut BestTracker>,
    log: &mut Logger,
) -> Result<()> {
    let s = state.step;
    let t0 = Instant::now();
    let values = ev.evaluate(&*step, s)?;
    let secs = t0.elapsed().as_secs_f64();
    let mut obj = serde_json::Map::new();
    obj.insert("step".into(), s.into());
    for (k, v) in &values {
        obj.insert(format!("eval/{k}"), (*v).into());
    }
    obj.insert("eval_seconds".into(), secs.into());
    let mut improved = false;
    if let Some(t) = tracker {
        let name = t.metric().name.clone();
        if let Some((_, v)) = values.iter().find(|(k, _)| *k == name) {
            if t.offer(s, *v) {
                improved = true;
                let record = BestRecord {
                    metric: t.metric().clone(),
                    value: *v,
                    step: s,
                };
                let json = serde_json::to_string_pretty(&record)
                    .map_err(|e| TrainError::Run(format!("serialising best.json: {e}")))?;
                write_checkpoint_dir(
                    step,
                    state,
                    &layout::best_dir(opts.run_dir),
                    opts.recipe_toml,
                    &[(BEST_FILE, json.into_bytes())],
                )?;
            }
        }
        if let Some((bs, bv)) = t.best() {
            obj.insert(format!("eval/best_{name}"), bv.into());
            obj.insert("eval/best_step".into(), bs.into());
        }
    }
    let line = serde_json::Value::Object(obj).to_string();
    writeln!(log.metrics, "{line}").ctx("appending to", &log.metrics_path)?;
    log.tb(|w| {
        for (k, v) in &values {
            w.add_scalar(&format!("eval/{k}"), *v, s)?;
        }
        Ok(())
    });
    let shown = values
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ");
    log.line(&format!(
        "[{s}/{}] eval: {shown}  ({secs:.1} s){}",
        opts.train.steps,
        if improved { "  → best/" } else { "" }
    ));
    Ok(())
}

fn write_preview(step: &mut dyn TrainStep, run: &Path, s: u64, log: &mut Logger) -> Result<()> {
    let images = step.preview()?;
    let n = images.dim(0)?;
    let ncol = step
        .preview_columns()
        .unwrap_or_else(|| grid::default_ncol(n));
    let g = grid::make_grid(&images, ncol, 2, 0)?;
    let path = layout::samples(run).join(format!("step-{s:08}.png"));
    g.save_png(&path)?;
    let rgb: Vec<u8> = g.pixels.clone();
    log.tb(|w| w.add_image("samples", &rgb, g.width, g.height, g.channels, s));
    Ok(())
}

fn write_histograms(step: &mut dyn TrainStep, s: u64, log: &mut Logger) -> Result<()> {
    for (net, store) in step.networks() {
        for (name, var) in store.trainable() {
            let values = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            log.tb(|w| w.add_histogram(&format!("{net}/{name}"), &values, s));
        }
    }
    Ok(())
}

/// Refuses to save weights that are not finite (a NaN update must never overwrite good state).
fn check_finite(step: &dyn TrainStep, at: u64) -> Result<()> {
    for (net, store) in step.networks() {
        for (name, var) in store.all() {
            let sum = var
                .as_tensor()
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?;
            if !sum.is_finite() {
                return Err(TrainError::NonFinite {
                    step: at,
                    name: format!("{net} weight {name}"),
                    value: sum,
                    checkpoint: "Nothing was saved for this step.".into(),
                });
            }
        }
    }
    Ok(())
}

fn write_checkpoint_dir(
    step: &dyn TrainStep,
    state: &TrainState,
    dir: &Path,
    recipe_toml: &str,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    check_finite(step, state.step)?;
    let mut state = state.clone();
    state.kind = step.kind().to_string();
    state.networks = step.networks().iter().map(|(n, _)| n.to_string()).collect();
    checkpoint::write_dir_atomically(dir, |tmp| {
        for (name, store) in step.networks() {
            store
                .save(&tmp.join(format!("{name}.safetensors")))
                .map_err(|e| TrainError::Run(format!("saving {name}: {e}")))?;
        }
        checkpoint::save_tensors(&step.state()?, &tmp.join(OPTIMIZER_FILE))?;
        fs::write(tmp.join(RECIPE_FILE), recipe_toml).ctx("writing", tmp.join(RECIPE_FILE))?;
        for (name, bytes) in extra {
            fs::write(tmp.join(name), bytes).ctx("writing", tmp.join(name))?;
        }
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| TrainError::Run(format!("serialising state: {e}")))?;
        // state.json last: its presence marks a complete checkpoint.
        fs::write(tmp.join(STATE_FILE), json).ctx("writing", tmp.join(STATE_FILE))
    })
}

/// Writes `checkpoints/step-N/` and prunes old ones; returns its path.
pub fn save_checkpoint(
    step: &dyn TrainStep,
    state: &TrainState,
    run: &Path,
    cfg: &TrainConfig,
    recipe_toml: &str,
) -> Result<PathBuf> {
    let dir = layout::checkpoints(run).join(checkpoint::step_dir_name(state.step));
    fs::create_dir_all(layout::checkpoints(run)).ctx("creating", layout::checkpoints(run))?;
    write_checkpoint_dir(step, state, &dir, recipe_toml, &[])?;
    checkpoint::prune(&layout::checkpoints(run), cfg.keep_last)?;
    Ok(dir)
}

/// Loads a checkpoint directory into `step`; returns its state.
pub fn load_checkpoint(step: &mut dyn TrainStep, dir: &Path) -> Result<TrainState> {
    let state = checkpoint::read_state(dir)?;
    if state.kind != step.kind() {
        return Err(TrainError::Run(format!(
            "{} holds a `{}` checkpoint, but the recipe builds `{}`",
            dir.display(),
            state.kind,
            step.kind()
        )));
    }
    for (name, store) in step.networks() {
        let device = store.device().clone();
        checkpoint::load_network(dir, name, &store, &device)?;
    }
    let first_device = step
        .networks()
        .first()
        .map(|(_, s)| s.device().clone())
        .unwrap_or(Device::Cpu);
    let extra = checkpoint::load_tensors(&dir.join(OPTIMIZER_FILE), &first_device)?;
    step.load_state(&extra)?;
    Ok(state)
}
