//! Training a super-resolution network ([`easel_models::sr`]): `[model] kind = "sr"`.
//!
//! The recipe's `[data]` gives high-resolution crops (`image_size` a multiple of `scale`, e.g. a
//! folder with `crop = "random"`, seeded by the run); each batch is downsampled by `scale` with a
//! bicubic filter on the fly (Catmull-Rom, antialiased like PIL's `BICUBIC`; deterministic, so
//! resume stays exact) and the network learns to undo it. The loss is
//!
//! ```text
//! pixel_weight · mse(ŷ, y)  +  perceptual_weight · u² · mse(φ(ŷ), φ(y))  +  adversarial_weight · BCE(D(ŷ), 1)
//! ```
//!
//! on [0, 1] images, `φ` the VGG layer `content_layer` (`relu2_2`, Johnson et al.), `u` the
//! layout unit of [`super::style::layout_unit`]. With `adversarial_weight > 0` (SRGAN: 10⁻³ with a
//! perceptual content loss) an SRGAN [`Discriminator`] is trained beside it on the same BCE GAN
//! losses as easel's DCGAN step (real → 1, detached fake → 0; the generator's pass through the
//! discriminator under [`easel_nn::ops::with_frozen_params`]).
//!
//! Each step logs the batch's PSNR on the Y channel with a border of `scale` pixels cropped (the
//! papers' protocol) for the network and for bicubic upsampling of the same inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use easel_losses::adversarial::bce_with_logits;
use easel_losses::perceptual::{self, ContentNorm};
use easel_metrics::quality::{psnr, QualityConfig};
use easel_models::sr::{Discriminator, SrNet};
use easel_models::vgg::{Pooling, Tap, Vgg};
use easel_nn::{ops, BnMode, ParamStore};

use super::style::{init_from, layout_unit, trainable_except};
pub use crate::recipe::sr::SrRecipe;

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::fit::{BatchSource, Scalars, StepContext, TrainStep};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};
use crate::recipe::{ModelRecipe, Recipe};
use crate::rng::derive_seed;

/// The super-resolution network's name in checkpoints and `[optim.generator]`.
pub const NETWORK: &str = "generator";
/// The SRGAN discriminator's name (only with `adversarial_weight > 0`).
pub const DISCRIMINATOR: &str = "discriminator";

/// Bicubic (Catmull-Rom, antialiased) resize of `x` `[B, C, H, W]` in [−1, 1] to `h × w`, on the
/// host; values clamped to [−1, 1]. Returns a tensor on `x`'s device.
pub fn bicubic_resize(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, sh, sw) = x.dims4()?;
    let v = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(b * c * h * w);
    for plane in v.chunks(sh * sw) {
        let buf: Vec<f32> = plane.iter().map(|&p| (p + 1.0) * 0.5).collect();
        let src =
            image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(sw as u32, sh as u32, buf)
                .ok_or_else(|| TrainError::Run("bicubic resize: bad plane size".into()))?;
        let dst = image::imageops::resize(
            &src,
            w as u32,
            h as u32,
            image::imageops::FilterType::CatmullRom,
        );
        out.extend(dst.pixels().map(|p| p.0[0].clamp(0.0, 1.0) * 2.0 - 1.0));
    }
    Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?)
}

/// The super-resolved images of `lr` `[B, 3, h, w]` in [−1, 1]: the network's output, plus the
/// bicubic upsampling of `lr` when the network is residual ([`easel_models::sr::Config::residual`]).
/// `net_out` is the network's own output for `lr` (whole image or assembled tiles).
pub fn add_bicubic(net: &SrNet, lr: &Tensor, net_out: Tensor) -> Result<Tensor> {
    if !net.config().residual {
        return Ok(net_out);
    }
    let (h, w) = (net_out.dim(2)?, net_out.dim(3)?);
    Ok((net_out + bicubic_resize(lr, h, w)?.detach())?)
}

/// Builds the generator of a recipe with its store.
pub fn build(recipe: &Recipe, m: &SrRecipe, device: &Device) -> Result<(SrNet, ParamStore)> {
    let store = ParamStore::new(device, derive_seed(recipe.seed, "init/generator"));
    let net = SrNet::new(&m.config(), store.var_builder())?;
    Ok((net, store))
}

/// Rebuilds a trained super-resolution network from a model directory alone.
pub fn load_sr(dir: &Path, device: &Device) -> Result<(Recipe, SrNet)> {
    let recipe = Recipe::load(&dir.join(checkpoint::RECIPE_FILE), &[])?;
    let ModelRecipe::Sr(m) = &recipe.model else {
        return Err(TrainError::Run(format!(
            "{}: a `{}` model is not a super-resolution network (`easel upscale` needs a run of kind = \"sr\")",
            dir.display(),
            recipe.model.kind()
        )));
    };
    let (_, store) = build(&recipe, m, device)?;
    // Plain tensors: inference records no autograd graph (batch norm in eval mode only reads its
    // running statistics).
    let tensors = checkpoint::load_for_inference(dir, NETWORK, &store, device)?;
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
    let net = SrNet::new(&m.config(), vb)?;
    Ok((recipe, net))
}

struct Adversary {
    d: Discriminator,
    store: ParamStore,
    opt: Optimizer,
    weight: f64,
}

/// The super-resolution network, its optimiser, and optionally VGG and a discriminator.
pub struct SrStep {
    net: SrNet,
    store: ParamStore,
    opt: Optimizer,
    scale: usize,
    pixel_weight: f64,
    perceptual: Option<(Vgg, Tap, f64)>,
    adversary: Option<Adversary>,
    preview_hr: Option<Tensor>,
    preview_count: usize,
}

fn recipe_err(message: String) -> TrainError {
    TrainError::Recipe {
        path: "recipe".into(),
        message,
    }
}

fn adam(lr: f64, beta1: f64) -> OptimSpec {
    OptimSpec::Adam(AdamConfig {
        lr,
        beta1,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl SrStep {
    /// Builds the step for a `kind = "sr"` recipe.
    pub fn new(recipe: &Recipe, m: &SrRecipe, device: &Device) -> Result<Self> {
        m.validate(recipe.data.image_size).map_err(recipe_err)?;
        if recipe.data.channels != 3 {
            return Err(recipe_err(
                "an sr recipe needs RGB data (data.channels = 3)".into(),
            ));
        }
        let adversarial = m.adversarial_weight > 0.0;
        for name in recipe.optim.keys() {
            if name != NETWORK && !(adversarial && name == DISCRIMINATOR) {
                return Err(recipe_err(format!(
                    "optim.{name}: this sr recipe has no network `{name}` (expected {NETWORK}{})",
                    if adversarial { " or discriminator" } else { "" }
                )));
            }
        }
        let (net, store) = build(recipe, m, device)?;
        if let Some(dir) = &m.init_from {
            init_from(&store, dir, NETWORK)?;
        }
        let spec = recipe
            .optim
            .get(NETWORK)
            .cloned()
            .unwrap_or(adam(1e-3, 0.9));
        let opt = Optimizer::new(spec, trainable_except(&store, &m.freeze)?)?;
        let perceptual = match (&m.vgg, m.perceptual_weight > 0.0) {
            (Some(path), true) => {
                let vgg = crate::transfer::load_vgg(path, Pooling::Max, device)?;
                let tap = vgg
                    .taps(&[&m.content_layer])
                    .map_err(|e| recipe_err(format!("model.content_layer: {e}")))?[0];
                let need = tap.min_input_side();
                if recipe.data.image_size < need {
                    return Err(recipe_err(format!(
                        "data.image_size {} is too small for {tap} (needs {need})",
                        recipe.data.image_size
                    )));
                }
                let u = layout_unit(vgg.config().layout);
                Some((vgg, tap, m.perceptual_weight * u * u))
            }
            _ => None,
        };
        let adversary = if adversarial {
            let store = ParamStore::new(device, derive_seed(recipe.seed, "init/discriminator"));
            let d = Discriminator::new(m.discriminator_width, store.var_builder())?;
            let spec = recipe
                .optim
                .get(DISCRIMINATOR)
                .cloned()
                .unwrap_or(adam(1e-4, 0.9));
            let opt = Optimizer::new(spec, store.trainable())?;
            Some(Adversary {
                d,
                store,
                opt,
                weight: m.adversarial_weight,
            })
        } else {
            None
        };
        Ok(Self {
            net,
            store,
            opt,
            scale: m.scale,
            pixel_weight: m.pixel_weight,
            perceptual,
            adversary,
            preview_hr: None,
            preview_count: recipe.train.preview_count.clamp(1, 8),
        })
    }

    /// The low-resolution inputs of high-resolution images `[B, 3, S, S]` (bicubic, ÷ scale).
    pub fn downsample(&self, hr: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = hr.dims4()?;
        bicubic_resize(hr, h / self.scale, w / self.scale)
    }
}

impl TrainStep for SrStep {
    fn kind(&self) -> &'static str {
        "sr"
    }

    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        let mut v = vec![(NETWORK, self.store.clone())];
        if let Some(a) = &self.adversary {
            v.push((DISCRIMINATOR, a.store.clone()));
        }
        v
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.opt.state_tensors(NETWORK)?;
        if let Some(a) = &self.adversary {
            out.extend(a.opt.state_tensors(DISCRIMINATOR)?);
        }
        if let Some(p) = &self.preview_hr {
            out.push(("preview.hr".into(), p.clone()));
        }
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.opt.load_state(tensors, NETWORK)?;
        if let Some(a) = &mut self.adversary {
            a.opt.load_state(tensors, DISCRIMINATOR)?;
        }
        self.preview_hr = tensors.get("preview.hr").cloned();
        Ok(())
    }

    fn step(&mut self, data: &mut dyn BatchSource, _ctx: &mut StepContext) -> Result<Scalars> {
        let hr = data.next_batch()?.images; // [B, 3, S, S] in [−1, 1]
        let b = hr.dim(0)?;
        if self.preview_hr.is_none() {
            self.preview_hr = Some(hr.narrow(0, 0, self.preview_count.min(b))?.copy()?);
        }
        let lr = self.downsample(&hr)?; // [B, 3, S/s, S/s]
        let sr = add_bicubic(&self.net, &lr, self.net.upscale(&lr, BnMode::Train)?)?; // [B, 3, S, S]
        let mut out: Scalars = Vec::new();
        // Discriminator first (on the detached output), as the DCGAN step does.
        if let Some(a) = &mut self.adversary {
            let real = a.d.forward(&hr.affine(0.5, 0.5)?, BnMode::Train)?;
            let fake = a.d.forward(&sr.detach().affine(0.5, 0.5)?, BnMode::Train)?;
            let loss_d = (bce_with_logits(&real, 1.0)? + bce_with_logits(&fake, 0.0)?)?;
            a.opt.step(&loss_d.backward()?)?;
            out.push(("loss_d", scalar(&loss_d)?));
        }
        // Pixel MSE on [0, 1] images: ((ŷ − y)/2)².
        let diff = (&sr - &hr)?.affine(0.5, 0.0)?;
        let pixel = diff.sqr()?.mean_all()?;
        let mut total = pixel.affine(self.pixel_weight, 0.0)?;
        out.push(("pixel_mse", scalar(&pixel)?));
        if let Some((vgg, tap, w)) = &self.perceptual {
            let fy = vgg.features(&sr, &[*tap])?;
            let fx = vgg.features(&hr, &[*tap])?;
            let p = perceptual::content_loss(&fy[0], &fx[0].detach(), ContentNorm::Mse)?
                .affine(*w, 0.0)?;
            out.push(("perceptual", scalar(&p)?));
            total = (total + p)?;
        }
        if let Some(a) = &self.adversary {
            let logits =
                ops::with_frozen_params(|| a.d.forward(&sr.affine(0.5, 0.5)?, BnMode::BatchStats))?;
            let adv = bce_with_logits(&logits, 1.0)?.affine(a.weight, 0.0)?;
            out.push(("adversarial", scalar(&adv)?));
            total = (total + adv)?;
        }
        self.opt.step(&total.backward()?)?;
        let q = QualityConfig::super_resolution(self.scale);
        let bic = bicubic_resize(&lr, hr.dim(2)?, hr.dim(3)?)?;
        out.insert(0, ("loss", scalar(&total)?));
        out.push((
            "psnr_y",
            mean(&psnr(&sr.detach().clamp(-1f32, 1f32)?, &hr, &q)?),
        ));
        out.push(("psnr_y_bicubic", mean(&psnr(&bic, &hr, &q)?)));
        out.push(("batch_size", b as f64));
        Ok(out)
    }

    /// Rows: bicubic upsampling of the low-resolution input, the network's output, the original.
    fn preview(&mut self) -> Result<Tensor> {
        let Some(hr) = &self.preview_hr else {
            return Ok(Tensor::full(-1f32, (1, 3, 8, 8), &Device::Cpu)?);
        };
        let lr = self.downsample(hr)?;
        let (h, w) = (hr.dim(2)?, hr.dim(3)?);
        let bic = bicubic_resize(&lr, h, w)?;
        let sr = add_bicubic(&self.net, &lr, self.net.upscale(&lr, BnMode::Eval)?)?
            .clamp(-1f32, 1f32)?;
        Ok(Tensor::cat(&[&bic, &sr, hr], 0)?)
    }

    fn preview_columns(&self) -> Option<usize> {
        self.preview_hr.as_ref().and_then(|x| x.dim(0).ok())
    }
}

// ---------------------------------------------------------------------------------------------
// `easel upscale`

/// Upscales `x` `[1, 3, h, w]` (in [−1, 1]) in tiles of `tile × tile` low-resolution pixels
/// overlapping by `overlap` on every side: the image is cut into cores of `tile − 2·overlap`
/// pixels, each is upscaled with its margin (clipped at the image border) and only the core's
/// output is kept, so memory is bounded by the tile size and, when the overlap covers the
/// network's receptive field, the result equals upscaling the whole image at once
/// (batch norm in eval mode makes tiles independent).
pub fn upscale_tiled(net: &SrNet, x: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if tile <= 2 * overlap {
        return Err(TrainError::Run(format!(
            "--tile ({tile}) must be larger than twice --overlap ({overlap})"
        )));
    }
    let s = net.config().scale;
    if h <= tile && w <= tile {
        return Ok(net.upscale(x, BnMode::Eval)?);
    }
    let core = tile - 2 * overlap;
    let mut rows = Vec::new();
    for y0 in (0..h).step_by(core) {
        let ch = core.min(h - y0);
        let (ty0, ty1) = span(y0, y0 + ch, overlap, h);
        let mut cols = Vec::new();
        for x0 in (0..w).step_by(core) {
            let cw = core.min(w - x0);
            let (tx0, tx1) = span(x0, x0 + cw, overlap, w);
            let t = x.narrow(2, ty0, ty1 - ty0)?.narrow(3, tx0, tx1 - tx0)?;
            let up = net.upscale(&t, BnMode::Eval)?; // [B, C, s·th, s·tw]
            cols.push(
                up.narrow(2, s * (y0 - ty0), s * ch)?
                    .narrow(3, s * (x0 - tx0), s * cw)?,
            );
        }
        rows.push(Tensor::cat(&cols, 3)?);
    }
    let out = Tensor::cat(&rows, 2)?;
    debug_assert_eq!(out.dims(), [b, c, s * h, s * w]);
    Ok(out)
}

/// The input range of the tile whose core is `c0..c1` of `0..n`: the core plus `overlap` on
/// each side, clipped to the image and widened to at least [`MIN_TILE`] pixels where the image
/// allows (a thin last core still gets a tile the network accepts).
fn span(c0: usize, c1: usize, overlap: usize, n: usize) -> (usize, usize) {
    let (mut a, mut b) = (c0.saturating_sub(overlap), (c1 + overlap).min(n));
    while b - a < MIN_TILE && (a > 0 || b < n) {
        a = a.saturating_sub(1);
        if b - a < MIN_TILE && b < n {
            b += 1;
        }
    }
    (a, b)
}

/// The smallest tile side [`upscale_tiled`] runs the network on (Johnson's 9×9 reflection pad
/// needs 5).
const MIN_TILE: usize = 8;

/// Options for [`upscale`].
#[derive(Debug, Clone)]
pub struct UpscaleRequest {
    /// An sr run directory, its `final/`, or a checkpoint folder.
    pub model: PathBuf,
    /// Image files and/or folders.
    pub inputs: Vec<PathBuf>,
    /// Output folder (default `RUN/upscaled/`).
    pub out: Option<PathBuf>,
    /// The factor asked for; must be the network's (checked).
    pub scale: usize,
    /// Tile side in input pixels.
    pub tile: usize,
    /// Overlap of neighbouring tiles in input pixels.
    pub overlap: usize,
    /// Treat the inputs as high-resolution originals: crop them to a multiple of the scale,
    /// downsample (bicubic), upscale, and measure PSNR/SSIM against them next to bicubic.
    pub evaluate: bool,
    /// The device.
    pub device: Device,
    /// No progress bar.
    pub quiet: bool,
}

/// PSNR/SSIM of one evaluated image (Y channel, border = scale).
#[derive(Debug, Clone, PartialEq)]
pub struct UpscaleScore {
    /// The original.
    pub file: PathBuf,
    /// (PSNR dB, SSIM) of the network's output.
    pub network: (f64, f64),
    /// (PSNR dB, SSIM) of bicubic upsampling.
    pub bicubic: (f64, f64),
}

/// Upscales every input with a network rebuilt from its model directory alone; returns the files
/// written and, with `evaluate`, the scores.
pub fn upscale(req: &UpscaleRequest) -> Result<(Vec<PathBuf>, Vec<UpscaleScore>)> {
    let dir = crate::run_dir::model_dir(&req.model)?;
    let (_, net) = load_sr(&dir, &req.device)?;
    let s = net.config().scale;
    if req.scale != s {
        return Err(TrainError::Run(format!(
            "--scale {}: the network in {} upscales ×{s}",
            req.scale,
            dir.display()
        )));
    }
    let files = super::style::expand_inputs(&req.inputs)?;
    let out_dir = req
        .out
        .clone()
        .unwrap_or_else(|| crate::run_dir::upscaled(&crate::run_dir::run_of(&dir)));
    let suffix = format!("_x{s}");
    let outs = super::style::output_paths(&files, &out_dir, &suffix)?;
    let bar = if req.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(files.len() as u64)
    };
    let q = QualityConfig::super_resolution(s);
    let mut scores = Vec::new();
    for (f, o) in files.iter().zip(&outs) {
        let img = crate::transfer::Image::open(f, "input image")?;
        let mut x = img.to_tensor(&req.device)?; // [1, 3, H, W]
        let mut hr = None;
        if req.evaluate {
            let (h, w) = (img.h - img.h % s, img.w - img.w % s);
            if h / s < 5 || w / s < 5 {
                return Err(TrainError::Run(format!(
                    "{}: {}×{} is too small to evaluate ×{s}",
                    f.display(),
                    img.w,
                    img.h
                )));
            }
            let orig = x.narrow(2, 0, h)?.narrow(3, 0, w)?;
            x = bicubic_resize(&orig, h / s, w / s)?;
            hr = Some(orig);
        } else if img.w < 5 || img.h < 5 {
            return Err(TrainError::Run(format!(
                "{}: {}×{} pixels is too small to upscale (at least 5×5)",
                f.display(),
                img.w,
                img.h
            )));
        }
        let y = add_bicubic(&net, &x, upscale_tiled(&net, &x, req.tile, req.overlap)?)?
            .clamp(-1f32, 1f32)?;
        crate::transfer::Image::from_tensor(&y)?.save(o)?;
        if let Some(hr) = hr {
            let bic = bicubic_resize(&x, hr.dim(2)?, hr.dim(3)?)?;
            let hr = hr.to_device(&Device::Cpu)?;
            let y = y.to_device(&Device::Cpu)?;
            let m = |a: &Tensor| -> Result<(f64, f64)> {
                Ok((
                    easel_metrics::quality::psnr(a, &hr, &q)?[0],
                    easel_metrics::quality::ssim(a, &hr, &q)?[0],
                ))
            };
            scores.push(UpscaleScore {
                file: f.clone(),
                network: m(&y)?,
                bicubic: m(&bic.to_device(&Device::Cpu)?)?,
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((outs, scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use easel_models::sr::{Arch, Config};

    /// A residual network starts as exactly bicubic upsampling (its last convolution is zero):
    /// at first only that convolution receives a gradient (everything before it is multiplied by
    /// its zero weights), and once it moves the gradient reaches every layer; `add_bicubic` adds
    /// exactly the bicubic image to a non-zero output too.
    #[test]
    fn residual_network_starts_at_bicubic() {
        let dev = Device::Cpu;
        let max_abs = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        for arch in [Arch::Johnson, Arch::Srresnet] {
            let cfg = Config {
                arch,
                scale: 4,
                width: 4,
                residual_blocks: 1,
                residual: true,
            };
            let store = ParamStore::new(&dev, 3);
            let net = SrNet::new(&cfg, store.var_builder()).unwrap();
            let lr = Tensor::rand(-1f32, 1., (2, 3, 7, 9), &dev).unwrap();
            let target = Tensor::rand(-1f32, 1., (2, 3, 28, 36), &dev).unwrap();
            let bic = bicubic_resize(&lr, 28, 36).unwrap();
            let out = net.upscale(&lr, BnMode::Train).unwrap();
            assert_eq!(out.dims(), [2, 3, 28, 36]);
            assert_eq!(max_abs(&out), 0.0, "{arch:?}: untrained residual is not 0");
            let loss = |net: &SrNet| {
                let out = net.upscale(&lr, BnMode::Train).unwrap();
                let sr = add_bicubic(net, &lr, out.clone()).unwrap();
                // sr = out + bicubic, exactly (checked while out is zero and once it is not).
                assert_eq!(max_abs(&(&sr - (&out + &bic).unwrap()).unwrap()), 0.0);
                (sr - &target).unwrap().sqr().unwrap().sum_all().unwrap()
            };
            let vars = store.trainable();
            // The zero-initialised layer: its weight is all zeros (batch-norm β is zero too, but
            // it sits before that layer), and its bias with it.
            let layers: Vec<&str> = vars
                .iter()
                .filter(|(k, v)| k.ends_with(".weight") && max_abs(v.as_tensor()) == 0.0)
                .map(|(k, _)| k.trim_end_matches("weight"))
                .collect();
            assert_eq!(
                layers.len(),
                1,
                "{arch:?}: zero-initialised layers {layers:?}"
            );
            let zero: Vec<&str> = vars
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with(layers[0]))
                .collect();
            let grads = loss(&net).backward().unwrap();
            let grad = |v: &candle_core::Var, g: &candle_core::backprop::GradStore| {
                g.get(v.as_tensor()).map_or(0.0, max_abs)
            };
            for (k, v) in &vars {
                let g = grad(v, &grads);
                if zero.contains(&k.as_str()) {
                    assert!(g > 0.0, "{arch:?}: the zero layer {k} gets no gradient");
                } else {
                    assert_eq!(g, 0.0, "{arch:?}: {k} has a gradient through zero weights");
                }
            }
            // Move the zero layer: every trainable tensor now receives a gradient.
            for (k, v) in &vars {
                if zero.contains(&k.as_str()) {
                    let t = Tensor::randn(0f32, 0.1, v.dims(), &dev).unwrap();
                    v.set(&t).unwrap();
                }
            }
            assert!(max_abs(&net.upscale(&lr, BnMode::Train).unwrap()) > 0.0);
            let grads = loss(&net).backward().unwrap();
            for (k, v) in &vars {
                assert!(grad(v, &grads) > 0.0, "{arch:?}: {k} gets no gradient");
            }
            // Not residual: add_bicubic passes the output through unchanged.
            let plain = SrNet::new(
                &Config {
                    residual: false,
                    ..cfg.clone()
                },
                ParamStore::new(&dev, 3).var_builder(),
            )
            .unwrap();
            let y = plain.upscale(&lr, BnMode::Eval).unwrap();
            assert!(max_abs(&y) > 0.0);
            let y2 = add_bicubic(&plain, &lr, y.clone()).unwrap();
            assert_eq!(max_abs(&(y - y2).unwrap()), 0.0);
        }
    }

    #[test]
    fn tiled_upscaling_equals_whole_image_upscaling() {
        let cfg = Config {
            arch: Arch::Johnson,
            scale: 4,
            width: 4,
            residual_blocks: 1,
            residual: false,
        };
        let store = ParamStore::new(&Device::Cpu, 3);
        let net = SrNet::new(&cfg, store.var_builder()).unwrap();
        let x = Tensor::rand(-1f32, 1f32, (1, 3, 29, 23), &Device::Cpu).unwrap();
        let whole = net.upscale(&x, BnMode::Eval).unwrap();
        let tiled = upscale_tiled(&net, &x, 20, 9).unwrap();
        assert_eq!(tiled.dims(), [1, 3, 116, 92]);
        let d = (whole - tiled)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "tiles differ from the whole image by {d}");
        assert!(upscale_tiled(&net, &x, 8, 4).is_err());
    }

    #[test]
    fn bicubic_downsampling_keeps_constants_and_shapes() {
        let x = Tensor::full(0.25f32, (2, 3, 16, 12), &Device::Cpu).unwrap();
        let y = bicubic_resize(&x, 4, 3).unwrap();
        assert_eq!(y.dims(), [2, 3, 4, 3]);
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|p| (p - 0.25).abs() < 1e-5), "{v:?}");
    }
}
