//! The LAPGAN step (Denton et al. 2015): every level of the pyramid is its own GAN, all trained
//! on the same batch, independently (no gradient crosses levels), as the authors' eyescream code
//! trains its levels on precomputed pyramid pairs.
//!
//! For a batch of real images the Gaussian pyramid `I_0 (full size) … I_L (8×8)` is computed once.
//! The base pair learns `I_L` with DCGAN's BCE losses; it is either eyescream's fully connected
//! pair (`model.base = "mlp"`, whose discriminator dropout draws its masks from the step's seeded
//! stream, so runs repeat and resume exactly) or DCGAN's at 8×8 (`"dcgan"`). Each finer pair `k`
//! learns the residual `h_k = I_k − expand(I_{k+1})` conditioned on `l_k = expand(I_{k+1})` (and
//! the label, for the class-conditional model): G_k(z_k, l_k) generates a residual, and D_k
//! separates real from generated residuals given `l_k`. With `model.level_d_input = "sum"` (the
//! paper's, the default) D_k sees the full-resolution image `l_k + h_k` — the real `I_k` or the
//! generated `l_k + G_k(z_k, l_k)` — plus the label planes; with `"concat"` (easel's earlier
//! variant) it sees `h_k` and `l_k` as separate channels. D_k's dropout before its output layer
//! (`model.level_d_dropout`, eyescream's 0.5) draws its masks from the same seeded stream, fresh
//! for each of D_k's three passes (real, fake, generator update).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use easel_losses::bce_with_logits;
use easel_models::dcgan::{self, Discriminator, Generator};
use easel_models::lapgan::{
    BaseDiscriminator, BaseGenerator, BaseKind, LapganGenerator, LevelConfig, LevelDiscriminator,
    LevelGenerator, MlpConfig, MlpDiscriminator, MlpGenerator,
};
use easel_nn::{ops, pyramid, BnMode, ParamStore};

use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};
use crate::recipe::{LapganRecipe, Recipe, SampleBn};
use crate::rng::{derive_seed, StepRng};

/// Most finer levels supported (8 → 256).
pub const MAX_LEVELS: usize = 5;

/// Network names: level 0 is the 8×8 base, level k the k-th finer level.
const G_NAMES: [&str; MAX_LEVELS + 1] = [
    "base_generator",
    "level1_generator",
    "level2_generator",
    "level3_generator",
    "level4_generator",
    "level5_generator",
];
const D_NAMES: [&str; MAX_LEVELS + 1] = [
    "base_discriminator",
    "level1_discriminator",
    "level2_discriminator",
    "level3_discriminator",
    "level4_discriminator",
    "level5_discriminator",
];
const LOSS_D: [&str; MAX_LEVELS + 1] = [
    "loss_d_8",
    "loss_d_16",
    "loss_d_32",
    "loss_d_64",
    "loss_d_128",
    "loss_d_256",
];
const LOSS_G: [&str; MAX_LEVELS + 1] = [
    "loss_g_8",
    "loss_g_16",
    "loss_g_32",
    "loss_g_64",
    "loss_g_128",
    "loss_g_256",
];

/// The 8×8 base GAN's networks.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseSpec {
    /// eyescream's fully connected pair.
    Mlp(MlpConfig),
    /// DCGAN's convolutional pair at 8×8.
    Dcgan(dcgan::Config),
}

impl BaseSpec {
    /// Classes of the (conditional) model, 0 when unconditional.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Mlp(c) => c.num_classes,
            Self::Dcgan(c) => c.num_classes,
        }
    }
    /// Latent size of the base generator.
    pub fn nz(&self) -> usize {
        match self {
            Self::Mlp(c) => c.nz,
            Self::Dcgan(c) => c.nz,
        }
    }
    fn generator(&self, vb: candle_nn::VarBuilder) -> candle_core::Result<BaseGenerator> {
        Ok(match self {
            Self::Mlp(c) => BaseGenerator::Mlp(MlpGenerator::new(c, vb)?),
            Self::Dcgan(c) => BaseGenerator::Dcgan(Generator::new(c, vb)?),
        })
    }
    fn discriminator(&self, vb: candle_nn::VarBuilder) -> candle_core::Result<BaseDiscriminator> {
        Ok(match self {
            Self::Mlp(c) => BaseDiscriminator::Mlp(MlpDiscriminator::new(c, vb)?),
            Self::Dcgan(c) => BaseDiscriminator::Dcgan(Discriminator::new(c, vb)?),
        })
    }
}

/// The pyramid's geometry and networks as a recipe describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct LapganSpec {
    /// The 8×8 base GAN.
    pub base: BaseSpec,
    /// Finer levels, 16×16 upwards.
    pub levels: Vec<LevelConfig>,
    /// Real target of the BCE loss.
    pub real_target: f64,
    /// Batch norm for previews and sampling.
    pub sample_mode: BnMode,
}

/// The spec of a `lapgan` recipe (classes must be resolved for a conditional one).
pub fn spec(recipe: &Recipe, m: &LapganRecipe) -> Result<LapganSpec> {
    let size = recipe.data.image_size;
    let n_levels = (size / 8).trailing_zeros() as usize;
    if n_levels == 0 || n_levels > MAX_LEVELS || 8 << n_levels != size {
        return Err(TrainError::Recipe {
            path: "recipe".into(),
            message: format!(
                "lapgan needs data.image_size = 8·2^k, 1 ≤ k ≤ {MAX_LEVELS}, got {size}"
            ),
        });
    }
    let classes = if m.conditional {
        match m.num_classes {
            Some(n) if n >= 2 => n,
            _ => {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: "a conditional lapgan needs model.num_classes ≥ 2 (filled in from labelled data)".into(),
                })
            }
        }
    } else {
        0
    };
    let c = recipe.data.channels;
    let base = match m.base {
        BaseKind::Dcgan => BaseSpec::Dcgan(dcgan::Config {
            image_size: 8,
            channels: c,
            nz: m.nz,
            ngf: m.ngf,
            ndf: m.ndf,
            num_classes: classes,
            ..Default::default()
        }),
        BaseKind::Mlp => BaseSpec::Mlp(MlpConfig {
            num_classes: classes,
            g_hidden: m.base_g_hidden,
            d_hidden: m.base_d_hidden,
            dropout: m.base_dropout,
            ..MlpConfig::new(c, m.nz)
        }),
    };
    let levels = (1..=n_levels)
        .map(|k| LevelConfig {
            num_classes: classes,
            d_input: m.level_d_input,
            d_dropout: m.level_d_dropout,
            ..LevelConfig::new(8 << k, c, m.level_ngf, m.level_ndf)
        })
        .collect();
    let sample_mode = match m.sample_bn {
        SampleBn::Eval => BnMode::Eval,
        SampleBn::Batch => BnMode::BatchStats,
    };
    Ok(LapganSpec {
        base,
        levels,
        real_target: 1.0 - m.label_smoothing,
        sample_mode,
    })
}

fn store(recipe: &Recipe, name: &str, device: &Device) -> ParamStore {
    ParamStore::new(device, derive_seed(recipe.seed, &format!("init/{name}")))
}

/// The generator chain alone (for sampling), with each part's store and network name.
pub fn build_generator(
    recipe: &Recipe,
    spec: &LapganSpec,
    device: &Device,
) -> Result<(LapganGenerator, Vec<(&'static str, ParamStore)>)> {
    let base_store = store(recipe, G_NAMES[0], device);
    let base = spec.base.generator(base_store.var_builder())?;
    let mut stores = vec![(G_NAMES[0], base_store)];
    let mut levels = Vec::new();
    for (k, cfg) in spec.levels.iter().enumerate() {
        let s = store(recipe, G_NAMES[k + 1], device);
        levels.push(LevelGenerator::new(cfg, s.var_builder())?);
        stores.push((G_NAMES[k + 1], s));
    }
    Ok((LapganGenerator::from_parts(base, levels)?, stores))
}

fn adam() -> OptimSpec {
    OptimSpec::Adam(AdamConfig {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    })
}

/// All levels' networks and optimisers.
pub struct LapganStep {
    spec: LapganSpec,
    base_g: BaseGenerator,
    base_d: BaseDiscriminator,
    level_g: Vec<LevelGenerator>,
    level_d: Vec<LevelDiscriminator>,
    chain: LapganGenerator,
    g_stores: Vec<(&'static str, ParamStore)>,
    d_stores: Vec<(&'static str, ParamStore)>,
    opt_g: Vec<Optimizer>,
    opt_d: Vec<Optimizer>,
    fixed_z: Tensor,
    fixed_labels: Option<Tensor>,
}

impl LapganStep {
    /// Builds every level from the recipe (seeded per network).
    pub fn new(recipe: &Recipe, m: &LapganRecipe, device: &Device) -> Result<Self> {
        let spec = spec(recipe, m)?;
        let n = spec.levels.len();
        let (chain, g_stores) = build_generator(recipe, &spec, device)?;
        // The chain shares its tensors with separately held parts used for training.
        let base_g = spec.base.generator(g_stores[0].1.var_builder())?;
        let level_g = spec
            .levels
            .iter()
            .enumerate()
            .map(|(k, c)| LevelGenerator::new(c, g_stores[k + 1].1.var_builder()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut d_stores = Vec::new();
        let bs = store(recipe, D_NAMES[0], device);
        let base_d = spec.base.discriminator(bs.var_builder())?;
        d_stores.push((D_NAMES[0], bs));
        let mut level_d = Vec::new();
        for (k, c) in spec.levels.iter().enumerate() {
            let s = store(recipe, D_NAMES[k + 1], device);
            level_d.push(LevelDiscriminator::new(c, s.var_builder())?);
            d_stores.push((D_NAMES[k + 1], s));
        }
        let names: Vec<&str> = g_stores
            .iter()
            .chain(d_stores.iter())
            .map(|(n, _)| *n)
            .collect();
        for key in recipe.optim.keys() {
            if !names.contains(&key.as_str()) {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "optim.{key}: this lapgan has no network `{key}` (it has {})",
                        names.join(", ")
                    ),
                });
            }
        }
        let optim = |name: &str, s: &ParamStore| {
            Optimizer::new(
                recipe.optim.get(name).cloned().unwrap_or_else(adam),
                s.trainable(),
            )
        };
        let opt_g = g_stores
            .iter()
            .map(|(n, s)| optim(n, s))
            .collect::<Result<Vec<_>>>()?;
        let opt_d = d_stores
            .iter()
            .map(|(n, s)| optim(n, s))
            .collect::<Result<Vec<_>>>()?;
        let classes = spec.base.num_classes();
        let mut rng = StepRng::new(recipe.seed, "preview-noise");
        use easel_models::ImageGenerator;
        let dim = chain.latent_dim();
        let count = if classes > 0 {
            classes * 2
        } else {
            recipe.train.preview_count.clamp(1, 16)
        };
        let fixed_z = Tensor::from_vec(rng.normal_vec(count * dim), (count, dim), device)?;
        let fixed_labels = if classes > 0 {
            let l: Vec<u32> = (0..count).map(|i| (i / 2) as u32).collect();
            Some(Tensor::from_vec(l, count, device)?)
        } else {
            None
        };
        let _ = n;
        Ok(Self {
            spec,
            base_g,
            base_d,
            level_g,
            level_d,
            chain,
            g_stores,
            d_stores,
            opt_g,
            opt_d,
            fixed_z,
            fixed_labels,
        })
    }

    fn bce_pair(
        &mut self,
        level: usize,
        real_logits: &Tensor,
        fake_logits: &Tensor,
    ) -> Result<f64> {
        let loss_d = (bce_with_logits(real_logits, self.spec.real_target)?
            + bce_with_logits(fake_logits, 0.0)?)?;
        let grads = loss_d.backward()?;
        self.opt_d[level].step(&grads)?;
        scalar(&loss_d)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl TrainStep for LapganStep {
    fn kind(&self) -> &'static str {
        "lapgan"
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        let mut out = Vec::new();
        for (g, d) in self.g_stores.iter().zip(&self.d_stores) {
            out.push(g.clone());
            out.push(d.clone());
        }
        out
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (o, (n, _)) in self.opt_g.iter().zip(&self.g_stores) {
            out.extend(o.state_tensors(n)?);
        }
        for (o, (n, _)) in self.opt_d.iter().zip(&self.d_stores) {
            out.extend(o.state_tensors(n)?);
        }
        out.push(("preview.fixed_noise".into(), self.fixed_z.clone()));
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (o, (n, _)) in self.opt_g.iter_mut().zip(&self.g_stores) {
            o.load_state(tensors, n)?;
        }
        for (o, (n, _)) in self.opt_d.iter_mut().zip(&self.d_stores) {
            o.load_state(tensors, n)?;
        }
        if let Some(z) = tensors.get("preview.fixed_noise") {
            self.fixed_z = z.to_device(self.fixed_z.device())?;
        }
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, ctx: &mut StepContext) -> Result<Scalars> {
        let batch = data.next_batch()?;
        let b = batch.images.dim(0)?;
        let classes = self.spec.base.num_classes();
        let labels = (classes > 0).then(|| batch.labels.clone());
        let fake_labels = if classes > 0 {
            let v: Vec<u32> = (0..b)
                .map(|_| ctx.rng.below(classes as u64) as u32)
                .collect();
            Some(Tensor::from_vec(v, b, ctx.device)?)
        } else {
            None
        };
        let n = self.level_g.len();
        // Gaussian pyramid of the real batch: gauss[0] full size … gauss[n] 8×8.
        let gauss = pyramid::gaussian(&batch.images.detach(), n)?;
        let mut out: Scalars = Vec::new();

        // Base level: a GAN on the 8×8 images.
        let real = &gauss[n];
        let z = ctx.rng.randn((b, self.spec.base.nz()), ctx.device)?;
        let fake = self
            .base_g
            .forward(&z, fake_labels.as_ref(), BnMode::Train)?;
        // The MLP discriminator's dropout masks: fresh for every pass (as PyTorch's nn.Dropout
        // in training), drawn from the run's seeded stream in a fixed order.
        let rng = &mut *ctx.rng;
        let mut uniforms = |k: usize| rng.uniform_vec(k, 0.0, 1.0);
        let d_real =
            self.base_d
                .forward(real, labels.as_ref(), BnMode::Train, Some(&mut uniforms))?;
        let d_fake = self.base_d.forward(
            &fake.detach(),
            fake_labels.as_ref(),
            BnMode::Train,
            Some(&mut uniforms),
        )?;
        let ld = self.bce_pair(0, &d_real, &d_fake)?;
        let d_out = ops::with_frozen_params(|| {
            self.base_d.forward(
                &fake,
                fake_labels.as_ref(),
                BnMode::Train,
                Some(&mut uniforms),
            )
        })?;
        let lg = bce_with_logits(&d_out, 1.0)?;
        let grads = lg.backward()?;
        self.opt_g[0].step(&grads)?;
        out.push((LOSS_D[0], ld));
        out.push((LOSS_G[0], scalar(&lg)?));

        // Finer levels, each on (residual, upsampled coarse) pairs of the real pyramid.
        for k in 0..n {
            let fine = &gauss[n - 1 - k]; // level k+1 in the list = size 16·2^k
            let s = fine.dim(2)?;
            let coarse_up = pyramid::expand(&gauss[n - k], s, s)?; // [B, C, S, S]
            let h_real = (fine - &coarse_up)?;
            let noise = ctx.rng.randn((b, 1, s, s), ctx.device)?;
            let h_fake =
                self.level_g[k].forward(&noise, &coarse_up, fake_labels.as_ref(), BnMode::Train)?;
            // D's dropout masks (level_d_dropout > 0): fresh for each of its three passes, from
            // the run's seeded stream after this level's noise, like the base's.
            let rng = &mut *ctx.rng;
            let mut uniforms = |n: usize| rng.uniform_vec(n, 0.0, 1.0);
            let d_real = self.level_d[k].forward(
                &h_real,
                &coarse_up,
                labels.as_ref(),
                BnMode::Train,
                Some(&mut uniforms),
            )?;
            let d_fake = self.level_d[k].forward(
                &h_fake.detach(),
                &coarse_up,
                fake_labels.as_ref(),
                BnMode::Train,
                Some(&mut uniforms),
            )?;
            let ld = self.bce_pair(k + 1, &d_real, &d_fake)?;
            let d_out = ops::with_frozen_params(|| {
                self.level_d[k].forward(
                    &h_fake,
                    &coarse_up,
                    fake_labels.as_ref(),
                    BnMode::Train,
                    Some(&mut uniforms),
                )
            })?;
            let lg = bce_with_logits(&d_out, 1.0)?;
            let grads = lg.backward()?;
            self.opt_g[k + 1].step(&grads)?;
            out.push((LOSS_D[k + 1], ld));
            out.push((LOSS_G[k + 1], scalar(&lg)?));
        }
        let (sd, sg): (f64, f64) = out.iter().fold((0.0, 0.0), |(d, g), (k, v)| {
            if k.starts_with("loss_d") {
                (d + v, g)
            } else {
                (d, g + v)
            }
        });
        out.insert(0, ("loss_g", sg));
        out.insert(0, ("loss_d", sd));
        out.push(("batch_size", b as f64));
        Ok(out)
    }

    fn preview(&mut self) -> Result<Tensor> {
        // One row per sample: every level's image, upsampled (nearest) to full size, coarse to fine.
        let levels = self.chain.generate_levels(
            &self.fixed_z,
            self.fixed_labels.as_ref(),
            self.spec.sample_mode,
        )?;
        side_by_side(&levels)
    }

    fn generator(&self) -> Option<(&dyn easel_models::ImageGenerator, BnMode)> {
        Some((&self.chain, self.spec.sample_mode))
    }

    fn preview_columns(&self) -> Option<usize> {
        Some(self.level_g.len() + 1)
    }

    fn format_scalars(&self, s: &Scalars) -> String {
        s.iter()
            .filter(|(k, _)| k.starts_with("loss_d_") || k.starts_with("loss_g_"))
            .map(|(k, v)| format!("{} {v:.3}", k.trim_start_matches("loss_")))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// Interleaves per-level images into rows `[sample 0: level 0 … level L, sample 1: …]`, each
/// upsampled by nearest neighbour to the finest size and clamped to [-1, 1].
pub fn side_by_side(levels: &[Tensor]) -> Result<Tensor> {
    let last = levels
        .last()
        .ok_or_else(|| TrainError::Run("no levels to show".into()))?;
    let (n, _, s, _) = last.dims4()?;
    let up: Vec<Tensor> = levels
        .iter()
        .map(|t| -> Result<Tensor> { Ok(ops::upsample_nearest2d(&t.clamp(-1f32, 1f32)?, s, s)?) })
        .collect::<Result<_>>()?;
    let stacked = Tensor::stack(&up, 1)?; // [N, L+1, C, S, S]
    let (_, l, c, _, _) = stacked.dims5()?;
    Ok(stacked.reshape((n * l, c, s, s))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::Batch;
    use crate::recipe::ModelRecipe;
    use easel_models::lapgan::LevelDInput;

    fn load(name: &str, overrides: &[&str]) -> Result<Recipe> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../recipes")
            .join(name);
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Recipe::load(&path, &o)
    }

    fn lapgan(r: &Recipe) -> &LapganRecipe {
        match &r.model {
            ModelRecipe::Lapgan(m) => m,
            _ => panic!("not a lapgan recipe"),
        }
    }

    #[test]
    fn base_key_missing_means_dcgan_and_the_shipped_recipes_use_the_mlp() {
        // A resolved recipe written before `base` existed (as runs/bench-lapgan-mnist's).
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("recipe.toml");
        std::fs::write(
            &old,
            "seed = 1\n[data]\nsource = \"mnist\"\nimage_size = 32\nchannels = 1\n\
             [model]\nkind = \"lapgan\"\nnz = 100\nngf = 64\nndf = 64\nlevel_ngf = 64\n\
             level_ndf = 32\nconditional = false\nlabel_smoothing = 0.0\nsample_bn = \"eval\"\n\
             [train]\nsteps = 10\nbatch_size = 4\n",
        )
        .unwrap();
        let r = Recipe::load(&old, &[]).unwrap();
        let s = spec(&r, lapgan(&r)).unwrap();
        match &s.base {
            BaseSpec::Dcgan(c) => assert_eq!((c.image_size, c.nz, c.ngf, c.ndf), (8, 100, 64, 64)),
            b => panic!("old recipes must keep the DCGAN base, got {b:?}"),
        }
        // lapgan-mnist is class-conditional (MNIST's 10 classes, which training fills in from
        // the labels), lapgan-images is not.
        for (name, overrides, classes) in [
            ("lapgan-mnist.toml", "model.num_classes=10", 10),
            ("lapgan-images.toml", "data.dir=\"x\"", 0),
        ] {
            let r = load(name, &[overrides]).unwrap();
            let s = spec(&r, lapgan(&r)).unwrap();
            let want = MlpConfig {
                num_classes: classes,
                ..MlpConfig::new(r.data.channels, 100)
            };
            assert_eq!(s.base, BaseSpec::Mlp(want), "{name}");
        }
        for name in ["tiny/lapgan-mnist.toml", "tiny/lapgan-images.toml"] {
            let r = load(name, &["data.dir=\"x\""]).unwrap();
            assert!(matches!(lapgan(&r).base, BaseKind::Mlp), "{name}");
        }
        let e = load("lapgan-mnist.toml", &["model.base=\"conv\""])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mlp") && e.contains("dcgan"), "{e}");
        // The resolved recipe records the choice, so it reloads to the same networks.
        let r = load("lapgan-mnist.toml", &[]).unwrap();
        let text = toml::to_string(&r).unwrap();
        assert!(text.contains("base = \"mlp\""), "{text}");
    }

    struct Fixed(Batch);
    impl BatchSource for Fixed {
        fn next_batch(&mut self) -> Result<Batch> {
            Ok(self.0.clone())
        }
        fn position(&self) -> u64 {
            0
        }
    }

    /// Two steps of the tiny MLP-base recipe: (scalars of each step, the stream's next value).
    fn run(overrides: &[&str]) -> (Vec<Scalars>, f32) {
        let r = load("tiny/lapgan-mnist.toml", overrides).unwrap();
        let dev = Device::Cpu;
        let mut step = LapganStep::new(&r, lapgan(&r), &dev).unwrap();
        let mut data = StepRng::new(5, "data");
        let images =
            Tensor::from_vec(data.uniform_vec(8 * 32 * 32, -1., 1.), (8, 1, 32, 32), &dev).unwrap();
        let labels = Tensor::zeros(8, DType::U32, &dev).unwrap();
        let mut src = Fixed(Batch { images, labels });
        let mut rng = StepRng::new(1, "train");
        let out = (0..2)
            .map(|i| {
                step.step(
                    &mut src,
                    &mut StepContext {
                        rng: &mut rng,
                        step: i,
                        device: &dev,
                    },
                )
                .unwrap()
            })
            .collect();
        (out, rng.normal_vec(1)[0])
    }

    #[test]
    fn mlp_base_step_repeats_exactly_and_dropout_draws_from_the_step_stream() {
        let (a, next_a) = run(&[]);
        let (b, next_b) = run(&[]);
        assert_eq!(a, b, "same seed, same losses");
        assert_eq!(next_a, next_b);
        assert!(a[1].iter().any(|(k, v)| *k == "loss_d_8" && v.is_finite()));
        // Without dropout the stream is consumed differently (fewer draws) and D differs.
        let (c, next_c) = run(&["model.base_dropout=0.0"]);
        assert_ne!(next_a, next_c);
        let d8 = |s: &[Scalars]| s[0].iter().find(|(k, _)| *k == "loss_d_8").unwrap().1;
        assert_ne!(d8(&a), d8(&c));
    }

    #[test]
    fn level_discriminator_input_and_dropout_keys() {
        // The shipped recipes and a recipe without the keys: the paper's sum and dropout 0.5.
        let r = load("lapgan-mnist.toml", &["model.num_classes=10"]).unwrap();
        let s = spec(&r, lapgan(&r)).unwrap();
        for l in &s.levels {
            assert_eq!((l.d_input, l.d_dropout), (LevelDInput::Sum, 0.5));
        }
        let dir = tempfile::tempdir().unwrap();
        // A run's resolved recipe written before the keys existed (as runs/bench-lapgan-cond's).
        let old = "seed = 1\n[data]\nsource = \"mnist\"\nimage_size = 32\nchannels = 1\n\
                   [model]\nkind = \"lapgan\"\nbase = \"mlp\"\nnz = 100\nlevel_ngf = 64\n\
                   level_ndf = 32\nconditional = false\n[train]\nsteps = 10\nbatch_size = 4\n";
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, old).unwrap();
        let fresh = Recipe::load(&path, &[]).unwrap();
        assert_eq!(
            (lapgan(&fresh).level_d_input, lapgan(&fresh).level_d_dropout),
            (LevelDInput::Sum, 0.5),
            "a recipe being trained gets the paper's defaults"
        );
        let run = Recipe::load_run(&path, &["train.steps=20".into()]).unwrap();
        assert_eq!(
            (lapgan(&run).level_d_input, lapgan(&run).level_d_dropout),
            (LevelDInput::Concat, 0.0),
            "an old run keeps the level D it trained"
        );
        assert_eq!(run.train.steps, 20);
        let s = spec(&run, lapgan(&run)).unwrap();
        let d = ParamStore::new(&Device::Cpu, 0);
        LevelDiscriminator::new(&s.levels[0], d.var_builder()).unwrap();
        assert_eq!(d.tensors()["conv1.weight"].dims(), [32, 2, 4, 4], "[h, l]");
        // A resolved recipe written now records the keys, so load_run leaves them alone.
        let text = run.to_toml().unwrap();
        assert!(text.contains("level_d_input = \"concat\""), "{text}");
        let text = fresh.to_toml().unwrap();
        std::fs::write(&path, &text).unwrap();
        let again = Recipe::load_run(&path, &[]).unwrap();
        assert_eq!(lapgan(&again).level_d_input, LevelDInput::Sum);
        assert_eq!(again, fresh);
        // Bad values are named.
        let e = load("lapgan-mnist.toml", &["model.level_d_dropout=1.5"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.level_d_dropout") && e.contains("1.5"),
            "{e}"
        );
        let e = load("lapgan-mnist.toml", &["model.level_d_input=\"add\""])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add") && e.contains("sum") && e.contains("concat"),
            "{e}"
        );
        let e = load("lapgan-mnist.toml", &["model.level_d_sum=true"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("level_d_sum"), "unknown keys are refused: {e}");
    }

    #[test]
    fn level_dropout_repeats_exactly_and_draws_from_the_step_stream() {
        let (a, next_a) = run(&[]);
        let (b, next_b) = run(&[]);
        assert_eq!(a, b, "same seed, same losses");
        assert_eq!(next_a, next_b);
        // Without level dropout the stream is consumed differently and D_16's loss differs,
        // while the base level (drawn first) is unchanged at the first step.
        let (c, next_c) = run(&["model.level_d_dropout=0.0"]);
        assert_ne!(next_a, next_c);
        let get = |s: &[Scalars], key: &str| s[0].iter().find(|(k, _)| *k == key).unwrap().1;
        assert_eq!(get(&a, "loss_d_8"), get(&c, "loss_d_8"));
        assert_ne!(get(&a, "loss_d_16"), get(&c, "loss_d_16"));
        assert_ne!(get(&a, "loss_d_32"), get(&c, "loss_d_32"));
        // The concatenated input is a different network (and draws the same number of uniforms).
        let (e, next_e) = run(&["model.level_d_input=\"concat\""]);
        assert_eq!(next_a, next_e);
        assert_ne!(get(&a, "loss_d_16"), get(&e, "loss_d_16"));
    }
}
