//! Training easel's domain classifier ([`easel_models::classifier`]): cross-entropy on the class
//! labels, Adam, and a step learning-rate schedule (`lr_drop_at`, `lr_drop_factor`).
//!
//! The reference schedule (PyTorch, [`easel_models::classifier`]'s docs): Adam at 10⁻³ for 3
//! epochs, then 10⁻⁴ for 2, batch 128 → 99.49 % MNIST test accuracy. The learning rate of a step
//! depends only on the step number, so resume is exact.
//!
//! Each step reports the loss, the batch accuracy, a running accuracy (exponential moving
//! average over about 50 steps, bias-corrected, saved in checkpoints) and the learning rate. The
//! preview sorts the last training batch by predicted class: row `k` holds images the network
//! currently calls class `k`, so a misclassified image is one in the wrong row.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use easel_models::classifier::{Classifier, Config};
use easel_nn::{BnMode, ParamStore};

use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};
use crate::recipe::{ClassifierPreset, ClassifierRecipe, ModelRecipe, Recipe};
use crate::rng::derive_seed;

/// The network's name in checkpoints (`classifier.safetensors`) and `[optim.classifier]`.
pub const NETWORK: &str = "classifier";

/// Decay of the running accuracy (≈ the last 50 steps).
const RUNNING_DECAY: f64 = 0.98;

/// The preset a classifier recipe resolves to: the stated one, else by `data.channels`.
pub fn preset(recipe: &Recipe, m: &ClassifierRecipe) -> ClassifierPreset {
    m.preset.unwrap_or(if recipe.data.channels == 1 {
        ClassifierPreset::Mnist
    } else {
        ClassifierPreset::Cifar10
    })
}

/// The network configuration of a classifier recipe: image size and channels from `[data]`,
/// widths from the preset unless stated. Needs `num_classes` (filled in from the data).
pub fn config(recipe: &Recipe) -> Result<Config> {
    let ModelRecipe::Classifier(m) = &recipe.model else {
        return Err(TrainError::Run(format!(
            "a `{}` recipe is not a classifier",
            recipe.model.kind()
        )));
    };
    let base = match preset(recipe, m) {
        ClassifierPreset::Mnist => Config::mnist(),
        ClassifierPreset::Cifar10 => Config::cifar10(),
    };
    let num_classes = m.num_classes.ok_or_else(|| TrainError::Recipe {
        path: "recipe".into(),
        message:
            "model.num_classes is unset (it is filled in from labelled data when training starts)"
                .into(),
    })?;
    if num_classes < 2 {
        return Err(TrainError::Recipe {
            path: "recipe".into(),
            message: format!("a classifier needs at least 2 classes, the data has {num_classes}"),
        });
    }
    Ok(Config {
        image_size: recipe.data.image_size,
        channels: recipe.data.channels,
        num_classes,
        width: m.width.unwrap_or(base.width),
        feature_dim: m.feature_dim.unwrap_or(base.feature_dim),
    })
}

/// Writes the preset and widths into the recipe, so the resolved recipe states them.
pub fn resolve(recipe: &mut Recipe) {
    let p = match &recipe.model {
        ModelRecipe::Classifier(m) => preset(recipe, m),
        _ => return,
    };
    let base = match p {
        ClassifierPreset::Mnist => Config::mnist(),
        ClassifierPreset::Cifar10 => Config::cifar10(),
    };
    if let ModelRecipe::Classifier(m) = &mut recipe.model {
        m.preset = Some(p);
        m.width.get_or_insert(base.width);
        m.feature_dim.get_or_insert(base.feature_dim);
    }
}

/// Builds the classifier with its parameter store (seeded by the recipe seed).
pub fn build(recipe: &Recipe, device: &Device) -> Result<(Classifier, ParamStore)> {
    let cfg = config(recipe)?;
    let store = ParamStore::new(device, derive_seed(recipe.seed, "init/classifier"));
    let net = Classifier::new(&cfg, store.var_builder())?;
    Ok((net, store))
}

/// The learning rate after `step` completed steps: `base · factor^(drops ≤ step)`.
pub fn lr_at(base: f64, drops: &[u64], factor: f64, step: u64) -> f64 {
    let n = drops.iter().filter(|&&d| d <= step).count();
    base * factor.powi(n as i32)
}

/// Classifier, its optimiser and the running accuracy.
pub struct ClassifierStep {
    net: Classifier,
    store: ParamStore,
    opt: Optimizer,
    base_lr: f64,
    lr_drop_at: Vec<u64>,
    lr_drop_factor: f64,
    /// (Σ decayed accuracies, Σ decayed weights): running accuracy = .0 / .1.
    running: (f64, f64),
    last_images: Option<Tensor>,
    preview_count: usize,
}

impl ClassifierStep {
    /// Builds the step for a classifier recipe on `device`.
    pub fn new(recipe: &Recipe, device: &Device) -> Result<Self> {
        let ModelRecipe::Classifier(m) = &recipe.model else {
            return Err(TrainError::Run(
                "ClassifierStep needs a classifier recipe".into(),
            ));
        };
        for name in recipe.optim.keys() {
            if name != NETWORK {
                return Err(TrainError::Recipe {
                    path: "recipe".into(),
                    message: format!(
                        "optim.{name}: a classifier recipe has no network `{name}` (expected classifier)"
                    ),
                });
            }
        }
        let (net, store) = build(recipe, device)?;
        let spec = recipe
            .optim
            .get(NETWORK)
            .cloned()
            .unwrap_or(OptimSpec::Adam(AdamConfig {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            }));
        let base_lr = spec.lr();
        let opt = Optimizer::new(spec, store.trainable())?;
        Ok(Self {
            net,
            store,
            opt,
            base_lr,
            lr_drop_at: m.lr_drop_at.clone(),
            lr_drop_factor: m.lr_drop_factor,
            running: (0.0, 0.0),
            last_images: None,
            preview_count: recipe.train.preview_count.max(1),
        })
    }

    /// The network.
    pub fn net(&self) -> &Classifier {
        &self.net
    }
}

/// Fraction of rows of `logits` `[B, K]` whose argmax equals `labels` `[B]`.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let b = logits.dim(0)?;
    if b == 0 {
        return Ok(0.0);
    }
    let pred = logits.argmax(1)?; // [B] u32
    let hits = pred
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(hits / b as f64)
}

impl TrainStep for ClassifierStep {
    fn kind(&self) -> &'static str {
        "classifier"
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        vec![(NETWORK, self.store.clone())]
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.opt.state_tensors(NETWORK)?;
        out.push((
            "metrics.running_accuracy".into(),
            Tensor::new(&[self.running.0, self.running.1], &Device::Cpu)?,
        ));
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.opt.load_state(tensors, NETWORK)?;
        if let Some(t) = tensors.get("metrics.running_accuracy") {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if let [a, w] = v.as_slice() {
                self.running = (*a, *w);
            }
        }
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, ctx: &mut StepContext) -> Result<Scalars> {
        let lr = lr_at(
            self.base_lr,
            &self.lr_drop_at,
            self.lr_drop_factor,
            ctx.step,
        );
        self.opt.set_lr(lr);
        let batch = data.next_batch()?;
        let b = batch.images.dim(0)?;
        let (_, logits) = self.net.forward_t(&batch.images, BnMode::Train)?; // [B, K]
        let labels = batch.labels.to_dtype(DType::U32)?;
        let k = logits.dim(1)?;
        let max_label = labels.max_all()?.to_scalar::<u32>()? as usize;
        if max_label >= k {
            return Err(TrainError::Run(format!(
                "label {max_label} in the data, but the classifier has {k} classes (model.num_classes)"
            )));
        }
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        let acc = accuracy(&logits.detach(), &labels)?;
        self.running = (
            RUNNING_DECAY * self.running.0 + (1.0 - RUNNING_DECAY) * acc,
            RUNNING_DECAY * self.running.1 + (1.0 - RUNNING_DECAY),
        );
        self.last_images = Some(batch.images.detach());
        Ok(vec![
            ("loss", loss.to_dtype(DType::F64)?.to_scalar::<f64>()?),
            ("accuracy", acc),
            ("running_accuracy", self.running.0 / self.running.1),
            ("lr", lr),
            ("batch_size", b as f64),
        ])
    }

    fn preview(&mut self) -> Result<Tensor> {
        let cfg = self.net.config();
        let (c, s, k) = (cfg.channels, cfg.image_size, cfg.num_classes);
        let cols = (self.preview_count / k).clamp(1, 16);
        let blank = || Tensor::full(-1f32, (1, c, s, s), &Device::Cpu);
        let Some(images) = &self.last_images else {
            return Ok(Tensor::cat(
                &(0..k * cols)
                    .map(|_| blank())
                    .collect::<candle_core::Result<Vec<_>>>()?,
                0,
            )?);
        };
        let (_, logits) = self.net.forward_t(images, BnMode::Eval)?;
        let pred = logits
            .argmax(1)?
            .to_device(&Device::Cpu)?
            .to_vec1::<u32>()?;
        let images = images.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let mut rows: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        for (i, p) in pred.iter().enumerate() {
            let row = &mut rows[(*p as usize).min(k - 1)];
            if row.len() < cols {
                row.push(images.narrow(0, i, 1)?);
            }
        }
        let mut tiles = Vec::with_capacity(k * cols);
        for row in rows {
            let have = row.len();
            tiles.extend(row);
            for _ in have..cols {
                tiles.push(blank()?);
            }
        }
        Ok(Tensor::cat(&tiles, 0)?)
    }

    fn preview_columns(&self) -> Option<usize> {
        Some((self.preview_count / self.net.config().num_classes).clamp(1, 16))
    }

    fn format_scalars(&self, s: &Scalars) -> String {
        let get = |k: &str| {
            s.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        format!(
            "loss {:.4}  acc {:.2} %  running acc {:.2} %  lr {:.1e}",
            get("loss"),
            100.0 * get("accuracy"),
            100.0 * get("running_accuracy"),
            get("lr")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_drops_after_the_given_steps() {
        let drops = [3, 5];
        let lrs: Vec<f64> = (0..7).map(|s| lr_at(1e-3, &drops, 0.1, s)).collect();
        let want = [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{lrs:?}");
        }
        assert_eq!(lr_at(2e-3, &[], 0.1, 1000), 2e-3);
    }

    #[test]
    fn accuracy_counts_argmax_hits() {
        let l = Tensor::new(&[[0f32, 1.], [2., 1.], [0., 3.], [5., 0.]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 0, 0, 0], &Device::Cpu).unwrap();
        assert_eq!(accuracy(&l, &y).unwrap(), 0.75);
    }
}
