//! The DCGAN step (Radford et al. 2016; the loop of pytorch/examples `dcgan/main.py`).
//!
//! (1) Update D: maximise log D(x) + log(1 − D(G(z))) — BCE on real images (target 1, or
//!     1 − label_smoothing) and on detached fakes (target 0).
//! (2) Update G: maximise log D(G(z)) — the non-saturating loss, BCE of D(G(z)) against 1.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use easel_losses::bce_with_logits;
use easel_models::dcgan::{Config, Discriminator, Generator};
use easel_nn::{ops, BnMode, ParamStore};

use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};
use crate::recipe::{DcganRecipe, Recipe, SampleBn};
use crate::rng::{derive_seed, StepRng};

/// Network names used in checkpoints and `[optim.<name>]`.
pub const NETWORKS: [&str; 2] = ["generator", "discriminator"];

/// The paper's optimiser: Adam, lr 2e-4, β1 0.5.
pub fn default_optim() -> OptimSpec {
    OptimSpec::Adam(AdamConfig {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    })
}

/// The network configuration a recipe describes (size and channels come from `[data]`).
pub fn model_config(recipe: &Recipe, m: &DcganRecipe) -> Config {
    Config {
        image_size: recipe.data.image_size,
        channels: recipe.data.channels,
        nz: m.nz,
        ngf: m.ngf,
        ndf: m.ndf,
        leaky_slope: m.leaky_slope,
    }
}

/// Builds the generator alone (for sampling) with its parameter store.
pub fn build_generator(
    recipe: &Recipe,
    m: &DcganRecipe,
    device: &Device,
) -> Result<(Generator, ParamStore)> {
    let store = ParamStore::new(device, derive_seed(recipe.seed, "init/generator"));
    let g = Generator::new(&model_config(recipe, m), store.var_builder())?;
    Ok((g, store))
}

/// Batch-norm mode for sampling.
pub fn sample_mode(m: &DcganRecipe) -> BnMode {
    match m.sample_bn {
        SampleBn::Eval => BnMode::Eval,
        SampleBn::Batch => BnMode::BatchStats,
    }
}

/// Generator, discriminator, one Adam each, and the fixed preview noise.
pub struct DcganStep {
    g: Generator,
    d: Discriminator,
    g_store: ParamStore,
    d_store: ParamStore,
    opt_g: Optimizer,
    opt_d: Optimizer,
    fixed_noise: Tensor,
    real_target: f64,
    sample_bn: BnMode,
    nz: usize,
    /// When set, each step adds its forward/backward/optimiser times here (benchmarks).
    pub timings: Option<PhaseTimes>,
}

/// Seconds spent in each phase of the steps run so far (the device is synchronised at each
/// boundary, so the split is honest on GPUs too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseTimes {
    /// Generator and discriminator forward passes and the losses.
    pub forward: f64,
    /// Both backward passes.
    pub backward: f64,
    /// Both optimiser updates.
    pub optimizer: f64,
}

/// Accumulates the time since the last mark into a phase when timing is on.
struct Clock<'a> {
    times: Option<&'a mut PhaseTimes>,
    device: Device,
    last: std::time::Instant,
}

impl Clock<'_> {
    fn mark(&mut self, phase: fn(&mut PhaseTimes) -> &mut f64) -> Result<()> {
        if let Some(t) = self.times.as_deref_mut() {
            self.device.synchronize()?;
            let now = std::time::Instant::now();
            *phase(t) += (now - self.last).as_secs_f64();
            self.last = now;
        }
        Ok(())
    }
}

impl DcganStep {
    /// Builds the step from a recipe on `device`; initialisation is seeded by the recipe seed.
    pub fn new(recipe: &Recipe, m: &DcganRecipe, device: &Device) -> Result<Self> {
        for name in recipe.optim.keys() {
            if !NETWORKS.contains(&name.as_str()) {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!("optim.{name}: a dcgan recipe has no network `{name}` (expected generator, discriminator)"),
                });
            }
        }
        let cfg = model_config(recipe, m);
        let (g, g_store) = build_generator(recipe, m, device)?;
        let d_store = ParamStore::new(device, derive_seed(recipe.seed, "init/discriminator"));
        let d = Discriminator::new(&cfg, d_store.var_builder())?;
        let spec = |n: &str| recipe.optim.get(n).cloned().unwrap_or_else(default_optim);
        let opt_g = Optimizer::new(spec("generator"), g_store.trainable())?;
        let opt_d = Optimizer::new(spec("discriminator"), d_store.trainable())?;
        let mut noise_rng = StepRng::new(recipe.seed, "preview-noise");
        let fixed_noise = noise_rng.randn((recipe.train.preview_count.max(1), cfg.nz), device)?;
        Ok(Self {
            g,
            d,
            g_store,
            d_store,
            opt_g,
            opt_d,
            fixed_noise,
            real_target: 1.0 - m.label_smoothing,
            sample_bn: sample_mode(m),
            nz: cfg.nz,
            timings: None,
        })
    }

    /// One DCGAN update on `real` `[B, C, S, S]` with noise `z` `[B, nz]`: what
    /// [`TrainStep::step`] runs after drawing its batch and noise (public for parity tests).
    pub fn update(&mut self, real: &Tensor, z: &Tensor) -> Result<Scalars> {
        let b = real.dim(0)?;
        let mut clock = Clock {
            times: self.timings.as_mut(),
            device: real.device().clone(),
            last: std::time::Instant::now(),
        };

        // (1) Update D: maximise log D(x) + log(1 − D(G(z))).
        let fake = self.g.forward_t(z, BnMode::Train)?; // [B, C, S, S]
        let d_real = self.d.forward_t(real, BnMode::Train)?; // [B] logits
        let d_fake = self.d.forward_t(&fake.detach(), BnMode::Train)?; // [B]
        let loss_d_real = bce_with_logits(&d_real, self.real_target)?;
        let loss_d_fake = bce_with_logits(&d_fake, 0.0)?;
        let loss_d = (&loss_d_real + &loss_d_fake)?;
        clock.mark(|t| &mut t.forward)?;
        let grads = loss_d.backward()?;
        clock.mark(|t| &mut t.backward)?;
        self.opt_d.step(&grads)?;
        clock.mark(|t| &mut t.optimizer)?;

        // (2) Update G: maximise log D(G(z)) (non-saturating).
        let d_fake2 = self.d.forward_t(&fake, BnMode::Train)?; // [B]
        let loss_g = bce_with_logits(&d_fake2, 1.0)?;
        clock.mark(|t| &mut t.forward)?;
        let grads = loss_g.backward()?;
        clock.mark(|t| &mut t.backward)?;
        self.opt_g.step(&grads)?;
        clock.mark(|t| &mut t.optimizer)?;

        Ok(vec![
            ("loss_d", scalar(&loss_d)?),
            ("loss_g", scalar(&loss_g)?),
            ("d_x", mean_sigmoid(&d_real)?),
            ("d_g_z1", mean_sigmoid(&d_fake)?),
            ("d_g_z2", mean_sigmoid(&d_fake2)?),
            ("batch_size", b as f64),
        ])
    }
}

fn mean_sigmoid(logits: &Tensor) -> Result<f64> {
    Ok(ops::sigmoid(logits)?
        .mean_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

impl TrainStep for DcganStep {
    fn kind(&self) -> &'static str {
        "dcgan"
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        vec![
            ("generator", self.g_store.clone()),
            ("discriminator", self.d_store.clone()),
        ]
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.opt_g.state_tensors("generator")?;
        out.extend(self.opt_d.state_tensors("discriminator")?);
        out.push(("preview.fixed_noise".into(), self.fixed_noise.clone()));
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.opt_g.load_state(tensors, "generator")?;
        self.opt_d.load_state(tensors, "discriminator")?;
        if let Some(n) = tensors.get("preview.fixed_noise") {
            self.fixed_noise = n.to_device(self.fixed_noise.device())?;
        }
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, ctx: &mut StepContext) -> Result<Scalars> {
        let real = data.next_batch()?.images; // [B, C, S, S]
        let z = ctx.rng.randn((real.dim(0)?, self.nz), ctx.device)?; // [B, nz]
        self.update(&real, &z)
    }

    fn preview(&mut self) -> Result<Tensor> {
        Ok(self.g.forward_t(&self.fixed_noise, self.sample_bn)?)
    }

    fn format_scalars(&self, s: &Scalars) -> String {
        let get = |k: &str| {
            s.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        format!(
            "Loss_D {:.4}  Loss_G {:.4}  D(x) {:.4}  D(G(z)) {:.4} / {:.4}",
            get("loss_d"),
            get("loss_g"),
            get("d_x"),
            get("d_g_z1"),
            get("d_g_z2")
        )
    }
}
