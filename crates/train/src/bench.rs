//! `easel bench`: training throughput of the reference configurations.
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
