//! `easel bench`: training throughput of the reference configurations and of any recipe.
//!
//! Benchmarks, not tests: they print measurements (min / median / max over timed steps after a
//! warm-up step) for BENCHMARKS.md. Data is a fixed random batch, so only the step is measured.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::fit::{Batch, BatchSource, StepContext, TrainStep};
use crate::recipe::{DcganRecipe, ModelRecipe, Recipe, TrainConfig};
use crate::rng::StepRng;
use crate::steps::gan::{self, GanStep, PhaseTimes};

struct FixedBatch {
    batch: Batch,
    drawn: u64,
}

impl BatchSource for FixedBatch {
    fn next_batch(&mut self) -> Result<Batch> {
        self.drawn += 1;
        Ok(self.batch.clone())
    }
    fn position(&self) -> u64 {
        self.drawn
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Result of one configuration.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Human label.
    pub label: String,
    /// Seconds per step, one per timed step.
    pub step_seconds: Vec<f64>,
    /// Phase totals over the timed steps.
    pub phases: PhaseTimes,
    /// Images per step.
    pub batch: usize,
}

/// Times `steps` DCGAN training steps at `size`×`size`×`channels`, ngf = ndf = 64, batch `batch`.
pub fn dcgan_config(
    device: &Device,
    size: usize,
    channels: usize,
    batch: usize,
    steps: usize,
) -> Result<BenchResult> {
    let data = easel_data::DataConfig {
        image_size: size,
        channels,
        ..Default::default()
    };
    let m = DcganRecipe::default(); // nz 100, ngf = ndf = 64
    let recipe = Recipe {
        description: "bench".into(),
        seed: 0,
        data,
        model: ModelRecipe::Dcgan(m),
        optim: Default::default(),
        train: TrainConfig {
            steps: steps as u64 + 1,
            batch_size: batch,
            checkpoint_every: 1000,
            sample_every: 0,
            log_every: 1,
            histogram_every: 0,
            keep_last: 1,
            preview_count: 1,
            lr_decay_from: None,
        },
        eval: None,
    };
    let spec = gan::spec(&recipe)?
        .ok_or_else(|| crate::TrainError::Run("bench: not a GAN recipe".into()))?;
    let mut step = GanStep::new(&recipe, spec, device)?;
    let mut rng = StepRng::new(0, "bench");
    let images = Tensor::from_vec(
        rng.uniform_vec(batch * channels * size * size, -1.0, 1.0),
        (batch, channels, size, size),
        device,
    )?;
    let labels = Tensor::zeros(batch, candle_core::DType::U32, device)?;
    let mut src = FixedBatch {
        batch: Batch { images, labels },
        drawn: 0,
    };
    // Warm-up (allocations, thread pool start).
    step.step(
        &mut src,
        &mut StepContext {
            rng: &mut rng,
            step: 0,
            device,
        },
    )?;
    step.timings = Some(PhaseTimes::default());
    let mut secs = Vec::with_capacity(steps);
    for i in 0..steps {
        let t = std::time::Instant::now();
        step.step(
            &mut src,
            &mut StepContext {
                rng: &mut rng,
                step: i as u64 + 1,
                device,
            },
        )?;
        device.synchronize()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(BenchResult {
        label: format!("DCGAN {size}×{size}×{channels}, ngf=ndf=64, batch {batch}"),
        step_seconds: secs,
        phases: step.timings.take().unwrap_or_default(),
        batch,
    })
}

/// Prints one result.
pub fn print(r: &BenchResult) {
    let mut s = r.step_seconds.clone();
    let n = s.len() as f64;
    let med = median(&mut s);
    let (min, max) = (s[0], s[s.len() - 1]);
    let total: f64 = r.phases.forward + r.phases.backward + r.phases.optimizer;
    let pct = |x: f64| 100.0 * x / total.max(1e-12);
    println!("{}", r.label);
    println!(
        "  step time  min {:.3} s  median {:.3} s  max {:.3} s  ({} steps)",
        min,
        med,
        max,
        r.step_seconds.len()
    );
    println!(
        "  throughput {:.1} images/s  ({:.3} steps/s) at the median",
        r.batch as f64 / med,
        1.0 / med
    );
    println!(
        "  split      forward {:.3} s ({:.0}%)  backward {:.3} s ({:.0}%)  optimiser {:.3} s ({:.0}%)  per step",
        r.phases.forward / n,
        pct(r.phases.forward),
        r.phases.backward / n,
        pct(r.phases.backward),
        r.phases.optimizer / n,
        pct(r.phases.optimizer)
    );
}

/// `easel bench dcgan`: the 64×64×3 batch-64 step of pytorch/examples and the 32×32×1 variant.
pub fn dcgan(device: &Device, steps: usize, quick: bool) -> Result<()> {
    let steps = steps.max(1);
    println!(
        "easel bench dcgan | device {} | {} timed steps after 1 warm-up",
        crate::device::describe(device),
        steps
    );
    if !quick {
        print(&dcgan_config(device, 64, 3, 64, steps)?);
    }
    print(&dcgan_config(device, 32, 1, 64, steps)?);
    Ok(())
}

/// Times `steps` training steps of the step a recipe describes, on a fixed random batch of the
/// recipe's image size and batch size (labels cycle through the classes), after one warm-up step.
///
/// Steps are numbered from 1001 so WGAN runs its steady schedule (n_critic critic updates per
/// generator step) rather than the 100-critic warm-up of its first 25 steps. A conditional
/// recipe without `num_classes` gets 10. WGAN-GP runs where second-order gradients are on.
pub fn recipe(recipe: &Recipe, device: &Device, steps: usize) -> Result<BenchResult> {
    if crate::session::needs_double_backward(recipe) && !crate::double_backward::enabled() {
        return crate::double_backward::scope(|| self::recipe(recipe, device, steps));
    }
    let mut recipe = recipe.clone();
    let mut classes = 1;
    crate::steps::classifier::resolve(&mut recipe);
    match &mut recipe.model {
        ModelRecipe::Cgan(m) => classes = *m.num_classes.get_or_insert(10),
        ModelRecipe::Lapgan(m) if m.conditional => classes = *m.num_classes.get_or_insert(10),
        ModelRecipe::Classifier(m) => classes = *m.num_classes.get_or_insert(10),
        _ => {}
    }
    let mut step = crate::session::build_step(&recipe, device)?;
    let (b, c, s) = (
        recipe.train.batch_size,
        recipe.data.channels,
        recipe.data.image_size,
    );
    let mut rng = StepRng::new(recipe.seed, "bench");
    let images = Tensor::from_vec(
        rng.uniform_vec(b * c * s * s, -1.0, 1.0),
        (b, c, s, s),
        device,
    )?;
    let labels: Vec<u32> = (0..b).map(|i| (i % classes) as u32).collect();
    let labels = Tensor::from_vec(labels, b, device)?;
    let mut src = FixedBatch {
        batch: Batch { images, labels },
        drawn: 0,
    };
    let mut run = |i: u64, src: &mut FixedBatch, rng: &mut StepRng| -> Result<f64> {
        let t = std::time::Instant::now();
        step.step(
            src,
            &mut StepContext {
                rng,
                step: 1000 + i,
                device,
            },
        )?;
        device.synchronize()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(0, &mut src, &mut rng)?; // warm-up
    let mut secs = Vec::with_capacity(steps);
    for i in 1..=steps.max(1) as u64 {
        secs.push(run(i, &mut src, &mut rng)?);
    }
    Ok(BenchResult {
        label: format!(
            "{} ({}), {s}×{s}×{c}, batch {b}",
            recipe.description,
            recipe.model.kind()
        ),
        step_seconds: secs,
        phases: PhaseTimes::default(),
        batch: b,
    })
}

/// Prints a recipe result: the step time and throughput (no phase split: steps of every kind
/// are measured from outside).
pub fn print_recipe(r: &BenchResult) {
    let mut s = r.step_seconds.clone();
    let med = median(&mut s);
    println!("{}", r.label);
    println!(
        "  step time  min {:.3} s  median {:.3} s  max {:.3} s  ({} steps)",
        s[0],
        med,
        s[s.len() - 1],
        s.len()
    );
    println!(
        "  throughput {:.2} steps/s  {:.1} images/s at the median",
        1.0 / med,
        r.batch as f64 / med
    );
}
