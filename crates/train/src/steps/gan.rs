//! The GAN step shared by DCGAN, conditional GAN and WGAN: one generator, one discriminator (or
//! critic), one optimiser each, owned by the step.
//!
//! DCGAN / cGAN (Radford et al. 2016; Mirza & Osindero 2014; the loop of pytorch/examples
//! `dcgan/main.py`):
//! (1) update D: maximise log D(x|y) + log(1 − D(G(z|y')|y')) — BCE on real images (target 1, or
//!     1 − label_smoothing) and on detached fakes (target 0);
//! (2) update G: maximise log D(G(z|y')|y') — the non-saturating loss, on the same fakes.
//!
//! WGAN (Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al. 2017):
//! (1) `n` critic updates, each on a fresh batch and fresh noise, minimising
//!     E[D(G(z))] − E[D(x)] (+ λ·E[(‖∇D(x̂)‖₂ − 1)²] with x̂ = αx + (1 − α)G(z), α ~ U(0, 1) per
//!     sample), then clipping every critic parameter to ±c (WGAN);
//! (2) one generator update minimising −E[D(G(z))] on fresh noise.
//! `n` follows Arjovsky's schedule (100 for the first 25 generator steps and every 500th) or is
//! constant. The logged Wasserstein estimate is E[D(x)] − E[D(G(z))] of the last critic update.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use easel_losses::bce_with_logits;
use easel_models::dcgan::{Config, Discriminator, Generator};
use easel_nn::{ops, BnMode, ParamStore};

use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer, RmsPropConfig};
use crate::recipe::{CriticSchedule, DNorm, ModelRecipe, Penalty, Recipe, SampleBn};
use crate::rng::{derive_seed, StepRng};

/// Network names used in checkpoints and `[optim.<name>]`.
pub const NETWORKS: [&str; 2] = ["generator", "discriminator"];

/// The averaged generator's name in checkpoints (`generator_ema.safetensors`).
pub const EMA_NETWORK: &str = "generator_ema";

/// The adversarial objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GanLoss {
    /// Non-saturating BCE; real images have this target (1 − label smoothing).
    Bce {
        /// Target for real images.
        real_target: f64,
    },
    /// Wasserstein critic.
    Wasserstein {
        /// Clip critic parameters to ±c after each update.
        clip: Option<f64>,
        /// Gradient-penalty weight λ.
        gp_weight: Option<f64>,
        /// Critic updates per generator update.
        n_critic: usize,
        /// Arjovsky's 100-update warm-up and every-500th schedule.
        arjovsky: bool,
    },
}

/// Everything a GAN step needs, resolved from a recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct GanSpec {
    /// `dcgan`, `cgan` or `wgan`.
    pub kind: &'static str,
    /// The networks.
    pub net: Config,
    /// The objective.
    pub loss: GanLoss,
    /// Batch norm for previews and sampling.
    pub sample_mode: BnMode,
    /// Default optimiser of each network when the recipe names none.
    pub default_optim: OptimSpec,
    /// Decay of the generator's weight average (`[model] ema_decay`; 0 = none).
    pub ema_decay: f64,
}

fn adam(lr: f64, beta1: f64, beta2: f64) -> OptimSpec {
    OptimSpec::Adam(AdamConfig {
        lr,
        beta1,
        beta2,
        eps: 1e-8,
        weight_decay: 0.0,
    })
}

fn mode(s: SampleBn) -> BnMode {
    match s {
        SampleBn::Eval => BnMode::Eval,
        SampleBn::Batch => BnMode::BatchStats,
    }
}

fn ema_decay(d: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&d) {
        return Err(TrainError::Recipe {
            path: "recipe".into(),
            message: format!(
                "model.ema_decay = {d}: use a decay in [0, 1), e.g. 0.999 (0 turns the weight average off)"
            ),
        });
    }
    Ok(d)
}

/// The GAN spec of a recipe, or `None` for non-GAN kinds. `num_classes` is the dataset's
/// (used by conditional recipes that do not state it).
pub fn spec(recipe: &Recipe) -> Result<Option<GanSpec>> {
    let base = Config {
        image_size: recipe.data.image_size,
        channels: recipe.data.channels,
        ..Config::default()
    };
    Ok(Some(match &recipe.model {
        ModelRecipe::Dcgan(m) => GanSpec {
            kind: "dcgan",
            net: Config {
                nz: m.nz,
                ngf: m.ngf,
                ndf: m.ndf,
                leaky_slope: m.leaky_slope,
                spectral_norm: m.spectral_norm,
                d_norm: m.d_norm,
                ..base
            },
            loss: GanLoss::Bce {
                real_target: 1.0 - m.label_smoothing,
            },
            sample_mode: mode(m.sample_bn),
            default_optim: adam(2e-4, 0.5, 0.999),
            ema_decay: ema_decay(m.ema_decay)?,
        },
        ModelRecipe::Cgan(m) => {
            let classes = m.num_classes.ok_or_else(|| TrainError::Recipe {
                path: "recipe".into(),
                message: "model.num_classes is unset (it is filled in from labelled data when training starts)".into(),
            })?;
            if classes < 2 {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "a conditional GAN needs at least 2 classes, the data has {classes}"
                    ),
                });
            }
            GanSpec {
                kind: "cgan",
                net: Config {
                    nz: m.nz,
                    ngf: m.ngf,
                    ndf: m.ndf,
                    leaky_slope: m.leaky_slope,
                    spectral_norm: m.spectral_norm,
                    d_norm: m.d_norm,
                    num_classes: classes,
                    d_conditioning: m.discriminator,
                    ..base
                },
                loss: GanLoss::Bce {
                    real_target: 1.0 - m.label_smoothing,
                },
                sample_mode: mode(m.sample_bn),
                default_optim: adam(2e-4, 0.5, 0.999),
                ema_decay: ema_decay(m.ema_decay)?,
            }
        }
        ModelRecipe::Wgan(m) => {
            let d_norm = m.d_norm.unwrap_or(if m.penalty == Penalty::Gp {
                DNorm::None
            } else {
                DNorm::Batch
            });
            GanSpec {
                kind: "wgan",
                net: Config {
                    nz: m.nz,
                    ngf: m.ngf,
                    ndf: m.ndf,
                    leaky_slope: m.leaky_slope,
                    spectral_norm: m.spectral_norm,
                    d_norm,
                    ..base
                },
                loss: GanLoss::Wasserstein {
                    clip: (m.penalty == Penalty::Clip).then_some(m.clip),
                    gp_weight: (m.penalty == Penalty::Gp).then_some(m.gp_weight),
                    n_critic: m.n_critic,
                    arjovsky: m.schedule == CriticSchedule::Arjovsky,
                },
                sample_mode: mode(m.sample_bn),
                // Arjovsky et al.: RMSProp 5e-5 (momentum-based optimisers destabilise the
                // clipped critic); Gulrajani et al.: Adam(1e-4, 0.5, 0.9).
                default_optim: if m.penalty == Penalty::Gp {
                    adam(1e-4, 0.5, 0.9)
                } else {
                    OptimSpec::Rmsprop(RmsPropConfig {
                        lr: 5e-5,
                        alpha: 0.99,
                        eps: 1e-8,
                        momentum: 0.0,
                        weight_decay: 0.0,
                    })
                },
                ema_decay: ema_decay(m.ema_decay)?,
            }
        }
        ModelRecipe::Lapgan(_)
        | ModelRecipe::Classifier(_)
        | ModelRecipe::Style(_)
        | ModelRecipe::Sr(_) => return Ok(None),
    }))
}

/// Builds the generator alone (for sampling) with its parameter store.
pub fn build_generator(
    recipe: &Recipe,
    spec: &GanSpec,
    device: &Device,
) -> Result<(Generator, ParamStore)> {
    let store = ParamStore::new(device, derive_seed(recipe.seed, "init/generator"));
    let g = Generator::new(&spec.net, store.var_builder())?;
    Ok((g, store))
}

/// Seconds spent in each phase of the steps run so far (the device is synchronised at each
/// boundary, so the split is honest on GPUs too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseTimes {
    /// Generator and discriminator forward passes and the losses.
    pub forward: f64,
    /// The backward passes.
    pub backward: f64,
    /// The optimiser updates (and clipping).
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

/// Batches of fixed noise over which the averaged generator's batch-norm statistics are
/// recomputed (× the training batch size).
pub const EMA_BN_BATCHES: usize = 16;

/// The averaged generator (`[model] ema_decay`): saved as `generator_ema`, sampled by default.
struct EmaGenerator {
    g: Generator,
    store: ParamStore,
    decay: f64,
    /// The weights moved since the batch-norm statistics were last recomputed.
    stale: bool,
    /// Fixed inputs of the recomputation: `EMA_BN_BATCHES` batches of z (and labels), from the
    /// recipe seed alone, so the statistics are a function of the weights.
    bn_inputs: Vec<(Tensor, Option<Tensor>)>,
}

impl EmaGenerator {
    fn new(recipe: &Recipe, spec: &GanSpec, g_store: &ParamStore, device: &Device) -> Result<Self> {
        let (g, store) = build_generator(recipe, spec, device)?;
        crate::ema::copy(&store, g_store)?;
        let mut rng = StepRng::new(recipe.seed, "ema-batch-norm");
        let (b, nz, k) = (
            recipe.train.batch_size.max(2),
            spec.net.nz,
            spec.net.num_classes,
        );
        let bn_inputs = (0..EMA_BN_BATCHES)
            .map(|i| {
                let z = rng.randn((b, nz), device)?;
                let labels = if k > 0 {
                    let l: Vec<u32> = (0..b).map(|j| ((i * b + j) % k) as u32).collect();
                    Some(Tensor::from_vec(l, b, device)?)
                } else {
                    None
                };
                Ok((z, labels))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            g,
            store,
            decay: spec.ema_decay,
            stale: true,
            bn_inputs,
        })
    }

    /// Recomputes the running statistics for the current averaged weights when they moved.
    fn sync(&mut self, sample_mode: BnMode) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        if sample_mode == BnMode::Eval {
            let (g, inputs) = (&self.g, &self.bn_inputs);
            easel_nn::recompute_batch_norm_stats(&self.store, inputs.len(), |i| {
                let (z, l) = &inputs[i];
                g.forward_labels(z, l.as_ref(), BnMode::Train).map(|_| ())
            })?;
        }
        self.stale = false;
        Ok(())
    }
}

/// Generator, discriminator/critic, one optimiser each, and the fixed preview inputs.
pub struct GanStep {
    spec: GanSpec,
    g: Generator,
    d: Discriminator,
    g_store: ParamStore,
    d_store: ParamStore,
    opt_g: Optimizer,
    opt_d: Optimizer,
    /// The recipe learning rates of G and D (`train.lr_decay_from` scales them).
    base_lr: [f64; 2],
    fixed_noise: Tensor,
    fixed_labels: Option<Tensor>,
    preview_cols: Option<usize>,
    ema: Option<EmaGenerator>,
    /// When set, each step adds its forward/backward/optimiser times here (benchmarks).
    pub timings: Option<PhaseTimes>,
}

impl GanStep {
    /// Builds the step from a recipe's GAN spec on `device`; initialisation is seeded by the recipe seed.
    pub fn new(recipe: &Recipe, spec: GanSpec, device: &Device) -> Result<Self> {
        for name in recipe.optim.keys() {
            if !NETWORKS.contains(&name.as_str()) {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "optim.{name}: a {} recipe has no network `{name}` (expected generator, discriminator)",
                        spec.kind
                    ),
                });
            }
        }
        let (g, g_store) = build_generator(recipe, &spec, device)?;
        let d_store = ParamStore::new(device, derive_seed(recipe.seed, "init/discriminator"));
        let d = Discriminator::new(&spec.net, d_store.var_builder())?;
        let optim = |n: &str| {
            recipe
                .optim
                .get(n)
                .cloned()
                .unwrap_or_else(|| spec.default_optim.clone())
        };
        let opt_g = Optimizer::new(optim("generator"), g_store.trainable())?;
        let opt_d = Optimizer::new(optim("discriminator"), d_store.trainable())?;
        let mut noise_rng = StepRng::new(recipe.seed, "preview-noise");
        let classes = spec.net.num_classes;
        let (fixed_noise, fixed_labels, preview_cols) =
            if let Some(per_class) = recipe.train.preview_count.checked_div(classes) {
                // A class grid: one row per class, the same z in every row of a column.
                let cols = per_class.clamp(1, 10);
                let z = noise_rng.normal_vec(cols * spec.net.nz);
                let mut all = Vec::with_capacity(classes * z.len());
                let mut labels = Vec::with_capacity(classes * cols);
                for c in 0..classes {
                    all.extend_from_slice(&z);
                    labels.extend(std::iter::repeat_n(c as u32, cols));
                }
                (
                    Tensor::from_vec(all, (classes * cols, spec.net.nz), device)?,
                    Some(Tensor::from_vec(labels, classes * cols, device)?),
                    Some(cols),
                )
            } else {
                (
                    noise_rng.randn((recipe.train.preview_count.max(1), spec.net.nz), device)?,
                    None,
                    None,
                )
            };
        let base_lr = [opt_g.spec().lr(), opt_d.spec().lr()];
        let ema = if spec.ema_decay > 0.0 {
            Some(EmaGenerator::new(recipe, &spec, &g_store, device)?)
        } else {
            None
        };
        Ok(Self {
            spec,
            g,
            d,
            g_store,
            d_store,
            opt_g,
            opt_d,
            base_lr,
            fixed_noise,
            fixed_labels,
            preview_cols,
            ema,
            timings: None,
        })
    }

    /// The resolved spec.
    pub fn spec(&self) -> &GanSpec {
        &self.spec
    }

    fn random_labels(&self, ctx: &mut StepContext, b: usize) -> Result<Option<Tensor>> {
        let classes = self.spec.net.num_classes;
        if classes == 0 {
            return Ok(None);
        }
        let v: Vec<u32> = (0..b)
            .map(|_| ctx.rng.below(classes as u64) as u32)
            .collect();
        Ok(Some(Tensor::from_vec(v, b, ctx.device)?))
    }

    fn critic_iters(&self, generator_step: u64) -> usize {
        match self.spec.loss {
            GanLoss::Bce { .. } => 1,
            GanLoss::Wasserstein {
                n_critic, arjovsky, ..
            } => {
                if arjovsky && (generator_step < 25 || generator_step.is_multiple_of(500)) {
                    100
                } else {
                    n_critic
                }
            }
        }
    }

    /// One DCGAN/cGAN update on `real` `[B, C, S, S]` (with `labels` `[B]` if conditional) and noise
    /// `z` `[B, nz]` with fake labels `fake_labels`: what [`TrainStep::step`] runs for BCE losses
    /// after drawing its inputs (public so parity tests can feed PyTorch's inputs).
    pub fn update(&mut self, real: &Tensor, z: &Tensor) -> Result<Scalars> {
        self.update_bce(real, None, z, None)
    }

    fn update_bce(
        &mut self,
        real: &Tensor,
        labels: Option<&Tensor>,
        z: &Tensor,
        fake_labels: Option<&Tensor>,
    ) -> Result<Scalars> {
        let GanLoss::Bce { real_target } = self.spec.loss else {
            return Err(TrainError::Run(
                "update_bce called on a Wasserstein step".into(),
            ));
        };
        let b = real.dim(0)?;
        let mut clock = Clock {
            times: self.timings.as_mut(),
            device: real.device().clone(),
            last: std::time::Instant::now(),
        };

        // (1) Update D: maximise log D(x) + log(1 − D(G(z))).
        let fake = self.g.forward_labels(z, fake_labels, BnMode::Train)?; // [B, C, S, S]
        let d_real = self.d.forward_labels(real, labels, BnMode::Train)?; // [B] logits
        let d_fake = self
            .d
            .forward_labels(&fake.detach(), fake_labels, BnMode::Train)?; // [B]
        let loss_d = (bce_with_logits(&d_real, real_target)? + bce_with_logits(&d_fake, 0.0)?)?;
        clock.mark(|t| &mut t.forward)?;
        let grads = loss_d.backward()?;
        clock.mark(|t| &mut t.backward)?;
        self.opt_d.step(&grads)?;
        clock.mark(|t| &mut t.optimizer)?;

        // (2) Update G: maximise log D(G(z)) (non-saturating), on the same fakes.
        let d_fake2 =
            ops::with_frozen_params(|| self.d.forward_labels(&fake, fake_labels, BnMode::Train))?; // [B]
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

    /// The networks' updates of one step (the weight average follows in [`TrainStep::step`]).
    fn step_networks(
        &mut self,
        data: &mut dyn BatchSource,
        ctx: &mut StepContext,
    ) -> Result<Scalars> {
        if matches!(self.spec.loss, GanLoss::Wasserstein { .. }) {
            return self.step_wasserstein(data, ctx);
        }
        let batch = data.next_batch()?;
        let b = batch.images.dim(0)?;
        let z = ctx.rng.randn((b, self.spec.net.nz), ctx.device)?; // [B, nz]
        let conditional = self.spec.net.num_classes > 0;
        let fake_labels = self.random_labels(ctx, b)?;
        let labels = conditional.then_some(&batch.labels);
        self.update_bce(&batch.images, labels, &z, fake_labels.as_ref())
    }

    fn step_wasserstein(
        &mut self,
        data: &mut dyn BatchSource,
        ctx: &mut StepContext,
    ) -> Result<Scalars> {
        let GanLoss::Wasserstein {
            clip, gp_weight, ..
        } = self.spec.loss
        else {
            return Err(TrainError::Run(
                "step_wasserstein called on a BCE step".into(),
            ));
        };
        let iters = self.critic_iters(ctx.step);
        let nz = self.spec.net.nz;
        let (mut w_est, mut gp_val, mut loss_d_val, mut b) = (0.0, 0.0, 0.0, 0);
        for _ in 0..iters {
            let real = data.next_batch()?.images; // [B, C, S, S]
            b = real.dim(0)?;
            let z = ctx.rng.randn((b, nz), ctx.device)?;
            let mut clock = Clock {
                times: self.timings.as_mut(),
                device: ctx.device.clone(),
                last: std::time::Instant::now(),
            };
            let fake = self.g.forward_labels(&z, None, BnMode::Train)?.detach(); // [B, C, S, S]
            let d_real = self
                .d
                .forward_labels(&real, None, BnMode::Train)?
                .mean_all()?;
            let d_fake = self
                .d
                .forward_labels(&fake, None, BnMode::Train)?
                .mean_all()?;
            let mut loss_d = (&d_fake - &d_real)?; // E[D(G(z))] − E[D(x)]
            if let Some(lambda) = gp_weight {
                let alpha =
                    Tensor::from_vec(ctx.rng.uniform_vec(b, 0.0, 1.0), (b, 1, 1, 1), ctx.device)?;
                let gp = gradient_penalty(&self.d, &real, &fake, &alpha)?;
                gp_val = scalar(&gp)?;
                loss_d = (loss_d + (gp * lambda)?)?;
            }
            clock.mark(|t| &mut t.forward)?;
            let grads = loss_d.backward()?;
            clock.mark(|t| &mut t.backward)?;
            self.opt_d.step(&grads)?;
            if let Some(c) = clip {
                for (_, var) in self.d_store.trainable() {
                    var.set(&var.as_tensor().clamp(-c, c)?)?;
                }
            }
            clock.mark(|t| &mut t.optimizer)?;
            w_est = scalar(&d_real)? - scalar(&d_fake)?;
            loss_d_val = scalar(&loss_d)?;
        }
        // Generator: minimise −E[D(G(z))] on fresh noise.
        let z = ctx.rng.randn((b.max(1), nz), ctx.device)?;
        let mut clock = Clock {
            times: self.timings.as_mut(),
            device: ctx.device.clone(),
            last: std::time::Instant::now(),
        };
        let fake = self.g.forward_labels(&z, None, BnMode::Train)?;
        let loss_g = ops::with_frozen_params(|| self.d.forward_labels(&fake, None, BnMode::Train))?
            .mean_all()?
            .neg()?;
        clock.mark(|t| &mut t.forward)?;
        let grads = loss_g.backward()?;
        clock.mark(|t| &mut t.backward)?;
        self.opt_g.step(&grads)?;
        clock.mark(|t| &mut t.optimizer)?;
        let mut out = vec![
            ("loss_d", loss_d_val),
            ("loss_g", scalar(&loss_g)?),
            ("wasserstein", w_est),
            ("critic_iters", iters as f64),
        ];
        if gp_weight.is_some() {
            out.push(("gp", gp_val));
        }
        out.push(("batch_size", b as f64));
        Ok(out)
    }
}

/// E[(‖∇ₓ̂ D(x̂)‖₂ − 1)²] with x̂ = α·real + (1 − α)·fake, the norm over all non-batch dims.
///
/// The result must be differentiated a second time (its gradient with respect to the critic's
/// parameters goes through ∇ₓ̂D). candle detaches gradients during backward unless
/// `CANDLE_GRAD_DO_NOT_DETACH=1` was set for the thread before its first backward, so this runs
/// under [`crate::double_backward::scope`] and refuses to run otherwise.
pub fn gradient_penalty(
    d: &Discriminator,
    real: &Tensor,
    fake: &Tensor,
    alpha: &Tensor,
) -> Result<Tensor> {
    crate::double_backward::ensure_enabled()?;
    let b = real.dim(0)?;
    let x_hat = (real.broadcast_mul(alpha)? + fake.broadcast_mul(&alpha.affine(-1.0, 1.0)?)?)?;
    let x_hat = Var::from_tensor(&x_hat.detach())?; // [B, C, S, S], a leaf we differentiate against
                                                    // The critic's layers run with candle's ops here: their backward is itself differentiable.
    let score = ops::with_generic_ops(|| d.forward_labels(x_hat.as_tensor(), None, BnMode::Train))?;
    let grads = score.sum_all()?.backward()?;
    let g = grads.get(x_hat.as_tensor()).ok_or_else(|| {
        TrainError::Run("gradient penalty: no gradient reached the interpolates".into())
    })?;
    let norm = (g.reshape((b, ()))?.sqr()?.sum(1)? + 1e-12)?.sqrt()?; // [B]
    Ok((norm - 1.0)?.sqr()?.mean_all()?)
}

fn mean_sigmoid(logits: &Tensor) -> Result<f64> {
    Ok(ops::sigmoid(logits)?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl TrainStep for GanStep {
    fn kind(&self) -> &'static str {
        self.spec.kind
    }

    fn scale_lr(&mut self, factor: f64) -> Result<()> {
        self.opt_g.set_lr(self.base_lr[0] * factor);
        self.opt_d.set_lr(self.base_lr[1] * factor);
        Ok(())
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        let mut nets = vec![
            ("generator", self.g_store.clone()),
            ("discriminator", self.d_store.clone()),
        ];
        if let Some(e) = &self.ema {
            nets.push((EMA_NETWORK, e.store.clone()));
        }
        nets
    }

    fn sync(&mut self) -> Result<()> {
        let mode = self.spec.sample_mode;
        match &mut self.ema {
            Some(e) => e.sync(mode),
            None => Ok(()),
        }
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.opt_g.state_tensors("generator")?;
        out.extend(self.opt_d.state_tensors("discriminator")?);
        out.push(("preview.fixed_noise".into(), self.fixed_noise.clone()));
        if let Some(l) = &self.fixed_labels {
            out.push(("preview.fixed_labels".into(), l.clone()));
        }
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.opt_g.load_state(tensors, "generator")?;
        self.opt_d.load_state(tensors, "discriminator")?;
        if let Some(n) = tensors.get("preview.fixed_noise") {
            self.fixed_noise = n.to_device(self.fixed_noise.device())?;
        }
        if let (Some(l), Some(mine)) = (tensors.get("preview.fixed_labels"), &self.fixed_labels) {
            self.fixed_labels = Some(l.to_dtype(DType::U32)?.to_device(mine.device())?);
        }
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, ctx: &mut StepContext) -> Result<Scalars> {
        let scalars = self.step_networks(data, ctx)?;
        if let Some(e) = &mut self.ema {
            crate::ema::update(&e.store, &self.g_store, crate::ema::beta(e.decay, ctx.step))?;
            e.stale = true;
        }
        Ok(scalars)
    }

    fn preview(&mut self) -> Result<Tensor> {
        self.sync()?;
        let g = self.ema.as_ref().map_or(&self.g, |e| &e.g);
        Ok(g.forward_labels(
            &self.fixed_noise,
            self.fixed_labels.as_ref(),
            self.spec.sample_mode,
        )?)
    }

    fn preview_columns(&self) -> Option<usize> {
        self.preview_cols
    }

    fn generator(&self) -> Option<(&dyn easel_models::ImageGenerator, BnMode)> {
        let g = self.ema.as_ref().map_or(&self.g, |e| &e.g);
        Some((g, self.spec.sample_mode))
    }

    fn format_scalars(&self, s: &Scalars) -> String {
        let get = |k: &str| {
            s.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        match self.spec.loss {
            GanLoss::Bce { .. } => format!(
                "Loss_D {:.4}  Loss_G {:.4}  D(x) {:.4}  D(G(z)) {:.4} / {:.4}",
                get("loss_d"),
                get("loss_g"),
                get("d_x"),
                get("d_g_z1"),
                get("d_g_z2")
            ),
            GanLoss::Wasserstein { gp_weight, .. } => {
                let mut line = format!(
                    "Loss_D {:.4}  Loss_G {:.4}  W {:.4}  critic×{}",
                    get("loss_d"),
                    get("loss_g"),
                    get("wasserstein"),
                    get("critic_iters")
                );
                if gp_weight.is_some() {
                    line.push_str(&format!("  GP {:.4}", get("gp")));
                }
                line
            }
        }
    }
}
