//! Training a feed-forward style network (Johnson, Alahi & Fei-Fei 2016, pytorch/examples
//! `fast_neural_style`): `[model] kind = "style"`.
//!
//! Each step stylises a batch of content crops (the recipe's `[data]`, e.g. a folder at
//! `image_size = 256`, `crop = "random"`) with [`TransformerNet`] and minimises
//!
//! ```text
//! content_weight · u² · mse(φ_c(y), φ_c(x))  +  style_weight · u⁴ · Σ_l mse(G(φ_l(y)), G(φ_l(s)))
//!   + tv_weight · TV(y)
//! ```
//!
//! with `φ` the VGG activations (content `relu2_2`; style `relu1_2, relu2_2, relu3_3, relu4_3`
//! for VGG16, the ends of the same blocks `relu1_2, relu2_2, relu3_4, relu4_4` for VGG19), `G`
//! the Gram matrix over `C·H·W` ([`GramNorm::Elements`](easel_losses::perceptual::GramNorm)), `s`
//! the style image at `style_size`, and Adam at 10⁻³ — pytorch/examples' loss and defaults
//! (`content_weight = 1e5`, `style_weight = 1e10`). Those weights are tied to torchvision's input
//! scale; `u` converts them to the VGG file's layout (`u = 1` for torchvision weights, ≈ 1/57.5
//! for the Keras/Caffe layout, see [`easel_models::vgg::Layout::input_scale_vs_caffe`]), so the
//! same recipe values mean the same balance with either file.
//!
//! `init_from = "runs/…/final"` starts from a trained network (fine-tuning to another style) and
//! `freeze = ["conv1", "in1", …]` keeps the parameters under those name prefixes fixed; both are
//! shared with the super-resolution step ([`init_from`], [`trainable_except`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use easel_losses::perceptual::{self, ContentNorm, GramNorm, StyleNorm, TvNorm};
use easel_models::style::TransformerNet;
use easel_models::vgg::{Depth, Layout, Pooling, Tap, Vgg};
use easel_nn::ParamStore;

pub use crate::recipe::style::StyleRecipe;

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};
use crate::recipe::{ModelRecipe, Recipe};
use crate::rng::derive_seed;

/// The network's name in checkpoints (`transformer.safetensors`) and `[optim.transformer]`.
pub const NETWORK: &str = "transformer";

/// The default style layers of a VGG depth (ends of blocks 1–4).
pub fn default_style_layers(depth: Depth) -> Vec<Tap> {
    let last = depth.convs_per_block();
    (1..=4).map(|b| Tap::relu(b, last[b - 1])).collect()
}

/// Loss-weight unit of a VGG layout relative to torchvision's (see the module docs).
pub fn layout_unit(layout: Layout) -> f64 {
    Layout::Torchvision.input_scale_vs_caffe() / layout.input_scale_vs_caffe()
}

/// Loads `<network>.safetensors` of the model directory `dir` into `store` (names and shapes
/// must match: the same architecture).
pub fn init_from(store: &ParamStore, dir: &Path, network: &str) -> Result<()> {
    let dir = crate::run_dir::model_dir(dir)
        .map_err(|e| TrainError::Run(format!("model.init_from: {e}")))?;
    let path = dir.join(format!("{network}.safetensors"));
    let tensors = checkpoint::load_tensors(&path, store.device())?;
    store.load_tensors(&tensors).map_err(|e| {
        TrainError::Run(format!(
            "model.init_from {}: {e} (the network there must have the same architecture)",
            path.display()
        ))
    })
}

/// The trainable variables of `store` except those under the name prefixes `freeze` (each must
/// name at least one parameter).
pub fn trainable_except(
    store: &ParamStore,
    freeze: &[String],
) -> Result<Vec<(String, candle_core::Var)>> {
    let all = store.trainable();
    let under = |name: &str, p: &str| name == p || name.starts_with(&format!("{p}."));
    for p in freeze {
        if !all.iter().any(|(n, _)| under(n, p)) {
            let mut tops: Vec<&str> = all
                .iter()
                .map(|(n, _)| n.split('.').next().unwrap_or(n))
                .collect();
            tops.dedup();
            return Err(TrainError::Recipe {
                path: "recipe".into(),
                message: format!(
                    "model.freeze: `{p}` names no parameter; the network's layers are {}",
                    tops.join(", ")
                ),
            });
        }
    }
    let kept: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| !freeze.iter().any(|p| under(n, p)))
        .collect();
    if kept.is_empty() {
        return Err(TrainError::Recipe {
            path: "recipe".into(),
            message: "model.freeze leaves nothing to train".into(),
        });
    }
    Ok(kept)
}

/// Builds the style network of a recipe with its store (seeded by the recipe seed).
pub fn build(
    recipe: &Recipe,
    m: &StyleRecipe,
    device: &Device,
) -> Result<(TransformerNet, ParamStore)> {
    let store = ParamStore::new(device, derive_seed(recipe.seed, "init/transformer"));
    let net = TransformerNet::new(&m.config(), store.var_builder())?;
    Ok((net, store))
}

/// Rebuilds a trained style network from a model directory (`final/` or a checkpoint) alone.
pub fn load_transformer(dir: &Path, device: &Device) -> Result<(Recipe, TransformerNet)> {
    let recipe = Recipe::load(&dir.join(checkpoint::RECIPE_FILE), &[])?;
    let ModelRecipe::Style(m) = &recipe.model else {
        return Err(TrainError::Run(format!(
            "{}: a `{}` model is not a style network (`easel stylize` needs a run of kind = \"style\")",
            dir.display(),
            recipe.model.kind()
        )));
    };
    let (_, store) = build(&recipe, m, device)?;
    // Rebuild on plain (detached) tensors: inference then records no autograd graph.
    let tensors = checkpoint::load_for_inference(dir, NETWORK, &store, device)?;
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
    let net = TransformerNet::new(&m.config(), vb)?;
    Ok((recipe, net))
}

/// The style network, its optimiser, the frozen VGG and the style targets.
pub struct StyleStep {
    net: TransformerNet,
    store: ParamStore,
    opt: Optimizer,
    vgg: Vgg,
    content_tap: Tap,
    style_taps: Vec<Tap>,
    /// Gram matrices `[1, C, C]` of the style image, one per style tap.
    style_grams: Vec<Tensor>,
    content_weight: f64,
    style_weight: f64,
    tv_weight: f64,
    preview_x: Option<Tensor>,
    preview_count: usize,
}

fn recipe_err(message: String) -> TrainError {
    TrainError::Recipe {
        path: "recipe".into(),
        message,
    }
}

impl StyleStep {
    /// Builds the step: the network (from `init_from` if set), VGG and the style Grams.
    pub fn new(recipe: &Recipe, m: &StyleRecipe, device: &Device) -> Result<Self> {
        m.validate().map_err(recipe_err)?;
        for name in recipe.optim.keys() {
            if name != NETWORK {
                return Err(recipe_err(format!(
                    "optim.{name}: a style recipe has no network `{name}` (expected {NETWORK})"
                )));
            }
        }
        if recipe.data.channels != 3 {
            return Err(recipe_err(
                "a style recipe needs RGB data (data.channels = 3)".into(),
            ));
        }
        let (net, store) = build(recipe, m, device)?;
        if let Some(dir) = &m.init_from {
            init_from(&store, dir, NETWORK)?;
        }
        let params = trainable_except(&store, &m.freeze)?;
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
        let opt = Optimizer::new(spec, params)?;
        let vgg = crate::transfer::load_vgg(&m.vgg, Pooling::Max, device)?;
        let depth = vgg.config().depth;
        let content_tap = vgg
            .taps(&[&m.content_layer])
            .map_err(|e| recipe_err(format!("model.content_layer: {e}")))?[0];
        let style_taps = match &m.style_layers {
            Some(l) => vgg
                .taps(l)
                .map_err(|e| recipe_err(format!("model.style_layers: {e}")))?,
            None => default_style_layers(depth),
        };
        if style_taps.is_empty() {
            return Err(recipe_err("model.style_layers is empty".into()));
        }
        let style = crate::transfer::Image::open(&m.style_image, "style image")?;
        let style = match m.style_size {
            Some(s) => {
                let (w, h) = style.fit(s);
                style.resized(w, h)
            }
            None => style,
        };
        let need = style_taps
            .iter()
            .map(|t| t.min_input_side())
            .max()
            .unwrap_or(1);
        if style.w.min(style.h) < need {
            return Err(recipe_err(format!(
                "the style image is {}×{} at style_size; the style layers need at least {need} pixels a side",
                style.w, style.h
            )));
        }
        let feats = vgg.features(&style.to_tensor(device)?, &style_taps)?;
        let style_grams = feats
            .iter()
            .map(|f| perceptual::gram_matrix(f, GramNorm::Elements).map(|g| g.detach()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let u = layout_unit(vgg.config().layout);
        Ok(Self {
            net,
            store,
            opt,
            vgg,
            content_tap,
            style_taps,
            style_grams,
            content_weight: m.content_weight * u * u,
            style_weight: m.style_weight * u.powi(4),
            tv_weight: m.tv_weight,
            preview_x: None,
            preview_count: recipe.train.preview_count.clamp(1, 8),
        })
    }

    /// The network.
    pub fn net(&self) -> &TransformerNet {
        &self.net
    }

    /// The losses of stylising `x` `[B, 3, H, W]` in [−1, 1]: (total, content, style, tv), each
    /// weighted.
    pub fn losses(&self, x: &Tensor) -> Result<(Tensor, [f64; 3])> {
        let y = self.net.stylize(x)?; // [B, 3, H, W]
        let mut taps = vec![self.content_tap];
        taps.extend_from_slice(&self.style_taps);
        let fy = self.vgg.features(&y, &taps)?;
        let fx = self.vgg.features(&x.detach(), &[self.content_tap])?;
        let content = perceptual::content_loss(&fy[0], &fx[0].detach(), ContentNorm::Mse)?
            .affine(self.content_weight, 0.0)?;
        let weights = vec![1.0; self.style_taps.len()];
        let style = perceptual::style_loss(&fy[1..], &self.style_grams, &weights, StyleNorm::Mse)?
            .affine(self.style_weight, 0.0)?;
        let mut total = (&content + &style)?;
        let mut tv_v = 0.0;
        if self.tv_weight > 0.0 {
            let tv =
                perceptual::total_variation(&y, TvNorm::Squared)?.affine(self.tv_weight, 0.0)?;
            tv_v = scalar(&tv)?;
            total = (total + tv)?;
        }
        Ok((total, [scalar(&content)?, scalar(&style)?, tv_v]))
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl TrainStep for StyleStep {
    fn kind(&self) -> &'static str {
        "style"
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        vec![(NETWORK, self.store.clone())]
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.opt.state_tensors(NETWORK)?;
        if let Some(p) = &self.preview_x {
            out.push(("preview.content".into(), p.clone()));
        }
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.opt.load_state(tensors, NETWORK)?;
        self.preview_x = tensors.get("preview.content").cloned();
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, _ctx: &mut StepContext) -> Result<Scalars> {
        let batch = data.next_batch()?;
        let x = batch.images; // [B, 3, S, S] in [−1, 1]
        let b = x.dim(0)?;
        if self.preview_x.is_none() {
            let n = self.preview_count.min(b);
            self.preview_x = Some(x.narrow(0, 0, n)?.copy()?);
        }
        let (total, [content, style, tv]) = self.losses(&x)?;
        let grads = total.backward()?;
        self.opt.step(&grads)?;
        Ok(vec![
            ("loss", scalar(&total)?),
            ("content", content),
            ("style", style),
            ("tv", tv),
            ("batch_size", b as f64),
        ])
    }

    /// Top row: the fixed content images; bottom row: their stylisations.
    fn preview(&mut self) -> Result<Tensor> {
        let Some(x) = &self.preview_x else {
            return Ok(Tensor::full(-1f32, (1, 3, 8, 8), &Device::Cpu)?);
        };
        let y = self.net.stylize(x)?.clamp(-1f32, 1f32)?;
        Ok(Tensor::cat(&[x, &y], 0)?)
    }

    fn preview_columns(&self) -> Option<usize> {
        self.preview_x.as_ref().and_then(|x| x.dim(0).ok())
    }

    fn format_scalars(&self, s: &Scalars) -> String {
        s.iter()
            .map(|(k, v)| format!("{k} {v:.4e}"))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

// ---------------------------------------------------------------------------------------------
// `easel stylize`

/// The image files among `inputs`: files as given, directories expanded to their PNG/JPEG files
/// (sorted, not recursive). Missing paths and empty directories are errors.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
    };
    let mut out = Vec::new();
    if inputs.is_empty() {
        return Err(TrainError::Run("no input images given".into()));
    }
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| TrainError::Run(format!("listing {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image(f))
                .collect();
            if files.is_empty() {
                return Err(TrainError::Run(format!(
                    "{}: no PNG or JPEG images in this folder",
                    p.display()
                )));
            }
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(TrainError::Run(format!(
                "{}: no such file or folder",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// `out/<stem>.png` for each input, refusing two inputs with the same stem.
pub(crate) fn output_paths(files: &[PathBuf], out: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashSet::new();
    files
        .iter()
        .map(|f| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            if !seen.insert(stem.clone()) {
                return Err(TrainError::Run(format!(
                    "two inputs are named `{stem}`: their outputs would overwrite each other; pass them in separate runs"
                )));
            }
            Ok(out.join(format!("{stem}{suffix}.png")))
        })
        .collect()
}

/// Options for [`stylize`].
#[derive(Debug, Clone)]
pub struct StylizeRequest {
    /// A style run directory, its `final/`, or a checkpoint folder.
    pub model: PathBuf,
    /// Image files and/or folders of images.
    pub inputs: Vec<PathBuf>,
    /// Output folder (default `RUN/stylized/`).
    pub out: Option<PathBuf>,
    /// Shrink every input by this factor first (pytorch/examples `--content-scale`).
    pub content_scale: Option<f64>,
    /// Keep the input's colours: the output's luminance with the input's chroma (YIQ).
    pub original_colors: bool,
    /// The device.
    pub device: Device,
    /// No progress bar.
    pub quiet: bool,
}

/// Stylises every input with a trained style network rebuilt from its model directory alone;
/// returns the files written (`<out>/<stem>.png`, same size as the possibly scaled input).
pub fn stylize(req: &StylizeRequest) -> Result<Vec<PathBuf>> {
    if let Some(s) = req.content_scale {
        if !(s > 0.0 && s.is_finite()) {
            return Err(TrainError::Run(format!(
                "--content-scale must be a positive number, got {s}"
            )));
        }
    }
    let dir = crate::run_dir::model_dir(&req.model)?;
    let (_, net) = load_transformer(&dir, &req.device)?;
    let files = expand_inputs(&req.inputs)?;
    let out_dir = req
        .out
        .clone()
        .unwrap_or_else(|| crate::run_dir::stylized(&crate::run_dir::run_of(&dir)));
    let outs = output_paths(&files, &out_dir, "")?;
    let bar = if req.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(files.len() as u64)
    };
    for (f, o) in files.iter().zip(&outs) {
        bar.set_message(f.display().to_string());
        let mut img = crate::transfer::Image::open(f, "input image")?;
        if let Some(s) = req.content_scale {
            let w = ((img.w as f64 / s) as usize).max(1);
            let h = ((img.h as f64 / s) as usize).max(1);
            img = img.resized(w, h);
        }
        if img.w < 5 || img.h < 5 {
            return Err(TrainError::Run(format!(
                "{}: {}×{} pixels is too small to stylise (at least 5×5)",
                f.display(),
                img.w,
                img.h
            )));
        }
        let y = net
            .stylize(&img.to_tensor(&req.device)?)?
            .clamp(-1f32, 1f32)?;
        let mut styled = crate::transfer::Image::from_tensor(&y)?;
        if req.original_colors {
            styled = styled.luminance().with_chroma_of(&img);
        }
        styled.save(o)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(outs)
}
