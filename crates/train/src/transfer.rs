//! Optimisation-based image synthesis on VGG features (`easel transfer`): Gatys, Ecker & Bethge's
//! style transfer ("Image Style Transfer Using Convolutional Neural Networks", CVPR 2016), texture
//! synthesis from Gram matrices ("Texture Synthesis Using Convolutional Neural Networks", NeurIPS
//! 2015) and feature inversion (Mahendran & Vedaldi, "Understanding Deep Image Representations by
//! Inverting Them", CVPR 2015): the pixels of one image are optimised, with L-BFGS or Adam, so that
//! its VGG activations match a content image's and its Gram matrices a style image's.
//!
//! # The objective
//!
//! With `F_l` the generated image's activations at layer `l` (`N_l` channels × `M_l` positions),
//! `P_l` the content image's, and `A_l` the style target's Gram matrix per position:
//!
//! ```text
//! L = α · Σ_{l ∈ content} ½ Σ (F_l − P_l)²                         (Gatys eq. 1)
//!   + β · Σ_{l ∈ style} w_l · Σ (F_l F_lᵀ / M_l − A_l)² / (4 N_l²)   (Gatys eq. 4, = Σ(G − A)²/(4N²M²))
//!   + γ · Σ (x_{i,j} − x_{i+1,j})² + (x_{i,j} − x_{i,j+1})²          (squared TV, pixels 0..255)
//! ```
//!
//! The style term is Gatys' `E_l` exactly when the style image has the generated image's size; the
//! per-position Gram makes it meaningful for style images of any size (and `--style-scale`).
//! Several style images are blended by their Gram matrices, `A_l = Σ_k b_k A_l^(k)` with blend
//! weights `b` summing to 1 (as Johnson's `neural-style` does).
//!
//! Activations are in the units of the Caffe VGG the paper used (input 0..255). Weights in the
//! torchvision layout see inputs about 57× smaller, so their content and style terms are
//! multiplied by `1/s²` and `1/s⁴` with `s` =
//! [`easel_models::vgg::Layout::input_scale_vs_caffe`]: the same α, β, γ then mean roughly the
//! same on either file (an approximation: biases do not scale).
//!
//! Defaults are the paper's: content `relu4_2` (Caffe's `conv4_2` blob, after its in-place ReLU),
//! style `relu1_1 … relu5_1` with `w_l = 1/5`, `α/β = 10⁻³` ([`DEFAULT_STYLE_WEIGHT`]), L-BFGS, no
//! TV. Two departures, both settable: max-pooling (the network as trained; Gatys use average
//! pooling: [`Pooling::Avg`]) and, for style transfer, the content image as the starting point
//! (Gatys start from white noise; from the content image fewer iterations are needed and more of
//! the content's layout survives at the same weights).
//!
//! The paper's α/β assumes Gatys' VGG whose filters were rescaled to unit mean activation; on the
//! unnormalised Caffe/Keras VGG19 the same `α/β = 10⁻³` was checked by eye at 256 and 512 px
//! (Starry Night onto chelsea: clearly stylised, the cat recognisable); `10⁻⁴` mostly paints the
//! cat over.
//!
//! # Modes
//!
//! - **style transfer**: a content image and one or more style images;
//! - **texture synthesis**: no content image (`--content none`): style terms only, from noise;
//! - **feature inversion**: no style image (`--style none`): content terms only, from noise; the
//!   content layer is the one to invert (`--layer relu3_1`);
//! - **original colours** ([`TransferConfig::original_colors`], Gatys et al., "Preserving Color in
//!   Neural Artistic Style Transfer", 2016, luminance-only transfer): content and style are reduced
//!   to their luminance (the style's matched in mean and standard deviation to the content's), a
//!   one-channel image is optimised, and the result's luminance is combined with the content's
//!   YIQ chroma;
//! - **coarse to fine** ([`TransferConfig::scales`]): the optimisation runs at each longest side in
//!   turn, starting each scale from the previous result upsampled (bicubic).
//!
//! The loss of every iteration goes to a JSON-lines log beside the output image (see
//! [`log_path`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use easel_data::HubConfig;
use easel_losses::perceptual::{
    content_loss, gram_matrix, style_layer_loss, total_variation, ContentNorm, GramNorm, StyleNorm,
    TvNorm,
};
use easel_models::vgg::{self, Tap, Vgg};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, TrainError};
use crate::lbfgs::{Converged, Lbfgs, LbfgsConfig};
use crate::optim::{AdamConfig, OptimSpec, Optimizer};

/// The hub repository and file used when no `--vgg` file is given: torchvision's ImageNet VGG19
/// as timm publishes it (`features.N.weight`, RGB with ImageNet mean/std).
pub const HUB_VGG: (&str, &str) = ("timm/vgg19.tv_in1k", "model.safetensors");

/// The advice every "no VGG weights" error ends with.
pub const VGG_FIX: &str =
    "or pass --vgg PATH with a VGG16/VGG19 safetensors file: torchvision/timm \
     names (`features.N.weight`, e.g. `model.safetensors` of timm/vgg19.tv_in1k) or Keras/caffe \
     names (`blockB_convC.weight`, BGR 0..255; convert a Keras .h5 or a torch .pth with \
     `safetensors.torch.save_file(state_dict, PATH)`)";

/// α, the content weight (Gatys: α/β = 10⁻³ or 10⁻⁴).
pub const DEFAULT_CONTENT_WEIGHT: f64 = 1.0;
/// β, the style weight.
pub const DEFAULT_STYLE_WEIGHT: f64 = 1e3;

pub use easel_models::vgg::Pooling;

/// `max` or `avg` (`average`) as a [`Pooling`].
pub fn parse_pooling(s: &str) -> std::result::Result<Pooling, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "max" => Ok(Pooling::Max),
        "avg" | "average" => Ok(Pooling::Avg),
        _ => Err(format!("--pooling {s}: use max or avg")),
    }
}

/// The optimiser of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// L-BFGS with a strong-Wolfe line search (Gatys et al.).
    Lbfgs,
    /// Adam, one gradient per iteration, pixels clamped to the valid range after each step (the
    /// TensorFlow tutorial).
    Adam,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lbfgs" | "l-bfgs" => Ok(Method::Lbfgs),
            "adam" => Ok(Method::Adam),
            _ => Err(format!("unknown optimiser `{s}`: use lbfgs or adam")),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Lbfgs => "L-BFGS",
            Method::Adam => "Adam",
        })
    }
}

/// Where the optimisation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitKind {
    /// The content image.
    Content,
    /// The (first) style image, resized to the output size.
    Style,
    /// Gaussian noise, σ = 0.25 around mid-grey (seeded).
    Noise,
}

impl FromStr for InitKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "content" => Ok(InitKind::Content),
            "style" => Ok(InitKind::Style),
            "noise" | "random" => Ok(InitKind::Noise),
            _ => Err(format!("unknown init `{s}`: use content, style or noise")),
        }
    }
}

impl fmt::Display for InitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitKind::Content => "content",
            InitKind::Style => "style",
            InitKind::Noise => "noise",
        })
    }
}

/// Everything `easel transfer` does (see the module docs for the objective).
#[derive(Debug, Clone, PartialEq)]
pub struct TransferConfig {
    /// The content image; `None` for texture synthesis.
    pub content: Option<PathBuf>,
    /// Style images; empty for feature inversion.
    pub styles: Vec<PathBuf>,
    /// One blend weight per style image (normalised to sum 1); empty = equal.
    pub style_blend: Vec<f64>,
    /// The output image (`.png`, `.jpg`); intermediate images and the loss log go beside it.
    pub out: PathBuf,
    /// A local VGG weights file; `None` = [`HUB_VGG`] from the hub cache (downloaded when online).
    pub vgg: Option<PathBuf>,
    /// Hub cache, endpoint, timeout and offline switch for that download.
    pub hub: HubConfig,
    /// Pooling between VGG blocks.
    pub pooling: Pooling,
    /// L-BFGS or Adam.
    pub method: Method,
    /// Iterations at each scale.
    pub iterations: usize,
    /// Adam's learning rate (pixels in [−1, 1]).
    pub lr: f64,
    /// L-BFGS history size.
    pub history: usize,
    /// Where to start; `None`: the content image for style transfer, noise otherwise.
    pub init: Option<InitKind>,
    /// α.
    pub content_weight: f64,
    /// β.
    pub style_weight: f64,
    /// γ (squared total variation on 0..255 pixels).
    pub tv_weight: f64,
    /// Content layers (`relu4_2`; several are summed).
    pub content_layers: Vec<String>,
    /// Style layers (`relu1_1 … relu5_1`).
    pub style_layers: Vec<String>,
    /// One weight per style layer; empty = `1/n` each.
    pub style_layer_weights: Vec<f64>,
    /// Keep the content's colours (luminance-only transfer).
    pub original_colors: bool,
    /// Style images are resized so that their longest side is this times the output's.
    pub style_scale: f64,
    /// Longest sides of the coarse-to-fine schedule, increasing; empty = one scale, the content
    /// (or style) image's longest side capped at [`TransferConfig::max_size`].
    pub scales: Vec<usize>,
    /// Largest longest side allowed (a guard against accidental huge runs).
    pub max_size: usize,
    /// Write the current image every this many iterations (0 = never).
    pub save_every: usize,
    /// Without a terminal, print a progress line every this many iterations (0 = never).
    pub print_every: usize,
    /// Seed for the noise initialisation.
    pub seed: u64,
    /// Print nothing.
    pub quiet: bool,
}

impl TransferConfig {
    /// The paper's defaults for `content` → `styles` written to `out`.
    pub fn new(content: Option<PathBuf>, styles: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            content,
            styles,
            style_blend: Vec::new(),
            out,
            vgg: None,
            hub: HubConfig::default(),
            pooling: Pooling::Max,
            method: Method::Lbfgs,
            iterations: 500,
            lr: 0.02,
            history: 10,
            init: None,
            content_weight: DEFAULT_CONTENT_WEIGHT,
            style_weight: DEFAULT_STYLE_WEIGHT,
            tv_weight: 0.0,
            content_layers: vec!["relu4_2".into()],
            style_layers: vgg::gatys_style_taps()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            style_layer_weights: Vec::new(),
            original_colors: false,
            style_scale: 1.0,
            scales: Vec::new(),
            max_size: 512,
            save_every: 0,
            print_every: 10,
            seed: 0,
            quiet: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// VGG weights

/// Resolves the VGG weights file: `vgg` if given, else [`HUB_VGG`] from the hub cache,
/// downloaded when online; offline without a cached copy, the error says how to get one.
pub fn resolve_vgg(vgg: Option<&Path>, hub: &HubConfig) -> Result<PathBuf> {
    match vgg {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(easel_data::hub_fetch_model_file(
            HUB_VGG.0, HUB_VGG.1, hub, VGG_FIX,
        )?),
    }
}

/// Loads a VGG16/VGG19 feature extractor from a safetensors file onto `device` (f32). The layout
/// (torchvision/timm or Keras/caffe), depth and widths are read from the tensor names and shapes
/// ([`vgg::Config::detect`]); other tensors (classifier heads) are ignored. Errors name the file
/// and what was expected.
pub fn load_vgg(path: &Path, pooling: Pooling, device: &Device) -> Result<Vgg> {
    if !path.is_file() {
        return Err(TrainError::Run(format!(
            "VGG weights {}: no such file; check the path, {VGG_FIX}",
            path.display()
        )));
    }
    let unreadable = |e: String| {
        TrainError::Run(format!(
            "VGG weights {}: cannot read it as safetensors ({e}); {VGG_FIX}",
            path.display()
        ))
    };
    // Only the convolutions are converted: hub files also hold a ~0.5 GB classifier.
    let bytes = std::fs::read(path).ctx("reading", path)?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| unreadable(e.to_string()))?;
    let shapes: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec()))
        .collect();
    let cfg = vgg::Config::detect(&shapes)
        .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?
        .with_pooling(pooling);
    let mut tensors = HashMap::new();
    for (b, &n) in cfg.depth.convs_per_block().iter().enumerate() {
        for c in 1..=n {
            let name = cfg.layout.conv_name(cfg.depth, b + 1, c);
            for part in ["weight", "bias"] {
                let key = format!("{name}.{part}");
                let view = file.tensor(&key).map_err(|e| unreadable(e.to_string()))?;
                let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
                    .map_err(|e| unreadable(format!("{key}: {e}")))?;
                tensors.insert(key, t);
            }
        }
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Vgg::new(&cfg, vb).map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Images

/// An image as channel planes in [−1, 1] (`c × h × w` f32, row-major per channel), c = 1 or 3.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Channels (1: luminance, 3: RGB).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c·h·w` values.
    pub data: Vec<f32>,
}

/// BT.601 / YIQ rows (R, G, B in [0, 1]).
const YIQ: [[f64; 3]; 3] = [
    [0.299, 0.587, 0.114],
    [0.595_716, -0.274_453, -0.321_263],
    [0.211_456, -0.522_591, 0.311_135],
];

fn inverse3(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut inv = [[0.0; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // The adjugate by cyclic cofactors (signs included), over the determinant.
            let (j1, j2, i1, i2) = ((j + 1) % 3, (j + 2) % 3, (i + 1) % 3, (i + 2) % 3);
            *v = (m[j1][i1] * m[j2][i2] - m[j1][i2] * m[j2][i1]) / det;
        }
    }
    inv
}

impl Image {
    /// Reads a PNG or JPEG (any colour type; alpha is dropped, grey becomes RGB). `role` names
    /// the image in errors ("content image").
    pub fn open(path: &Path, role: &str) -> Result<Self> {
        if !path.is_file() {
            return Err(TrainError::Run(format!(
                "{role} {}: no such file (check the path{})",
                path.display(),
                if role.starts_with("content") {
                    "; `--content none` synthesises a texture from the style alone"
                } else {
                    "; `--style none` inverts the content image's features instead"
                }
            )));
        }
        let img = image::open(path).map_err(|e| {
            TrainError::Run(format!(
                "{role} {}: cannot decode it as an image ({e}); use a PNG or JPEG file",
                path.display()
            ))
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                data[c * h * w + i] = px.0[c] as f32 / 127.5 - 1.0;
            }
        }
        Ok(Self { c: 3, h, w, data })
    }

    /// The image resized to `w × h` (Lanczos-3 when shrinking, Catmull-Rom when enlarging),
    /// values clamped to [−1, 1].
    pub fn resized(&self, w: usize, h: usize) -> Self {
        if (w, h) == (self.w, self.h) {
            return self.clone();
        }
        let filter = if w < self.w || h < self.h {
            image::imageops::FilterType::Lanczos3
        } else {
            image::imageops::FilterType::CatmullRom
        };
        let (sw, sh, n) = (self.w, self.h, self.w * self.h);
        let to01 = |v: f32| ((v + 1.0) * 0.5).clamp(0.0, 1.0);
        let mut data = vec![0f32; self.c * w * h];
        if self.c == 3 {
            let mut buf = Vec::with_capacity(3 * n);
            for i in 0..n {
                for c in 0..3 {
                    buf.push(to01(self.data[c * n + i]));
                }
            }
            let src = image::Rgb32FImage::from_raw(sw as u32, sh as u32, buf).expect("sized");
            let dst = image::imageops::resize(&src, w as u32, h as u32, filter);
            for (i, px) in dst.pixels().enumerate() {
                for c in 0..3 {
                    data[c * w * h + i] = px.0[c].clamp(0.0, 1.0) * 2.0 - 1.0;
                }
            }
        } else {
            for c in 0..self.c {
                let buf: Vec<f32> = self.data[c * n..(c + 1) * n]
                    .iter()
                    .map(|&v| to01(v))
                    .collect();
                let src = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(
                    sw as u32, sh as u32, buf,
                )
                .expect("sized");
                let dst = image::imageops::resize(&src, w as u32, h as u32, filter);
                for (i, px) in dst.pixels().enumerate() {
                    data[c * w * h + i] = px.0[0].clamp(0.0, 1.0) * 2.0 - 1.0;
                }
            }
        }
        Self {
            c: self.c,
            h,
            w,
            data,
        }
    }

    /// The size with longest side `side` and this image's aspect ratio.
    pub fn fit(&self, side: usize) -> (usize, usize) {
        fit_size(self.w, self.h, side)
    }

    /// `[1, c, h, w]` f32 on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, self.c, self.h, self.w),
            device,
        )?)
    }

    /// From a `[1, c, h, w]` tensor (any dtype, device).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (_, c, h, w) = t.dims4()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self { c, h, w, data })
    }

    /// BT.601 luminance as a one-channel image (`Y = 0.299 R + 0.587 G + 0.114 B`).
    pub fn luminance(&self) -> Self {
        if self.c == 1 {
            return self.clone();
        }
        let n = self.h * self.w;
        let y = YIQ[0];
        let data = (0..n)
            .map(|i| {
                (y[0] * self.data[i] as f64
                    + y[1] * self.data[n + i] as f64
                    + y[2] * self.data[2 * n + i] as f64) as f32
            })
            .collect();
        Self {
            c: 1,
            h: self.h,
            w: self.w,
            data,
        }
    }

    /// The one-channel image affinely mapped to `reference`'s mean and standard deviation
    /// (Gatys et al. 2016, luminance-only transfer: the style's luminance matched to the
    /// content's).
    pub fn match_moments(&self, reference: &Image) -> Self {
        let stats = |v: &[f32]| {
            let n = v.len().max(1) as f64;
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
            (m, var.sqrt())
        };
        let (ms, ss) = stats(&self.data);
        let (mr, sr) = stats(&reference.data);
        let k = if ss > 1e-12 { sr / ss } else { 1.0 };
        Self {
            data: self
                .data
                .iter()
                .map(|&x| ((x as f64 - ms) * k + mr) as f32)
                .collect(),
            ..self.clone()
        }
    }

    /// RGB from this one-channel image's luminance and `chroma`'s YIQ chroma (same size).
    pub fn with_chroma_of(&self, chroma: &Image) -> Self {
        let n = self.h * self.w;
        let inv = inverse3(YIQ);
        let mut data = vec![0f32; 3 * n];
        for i in 0..n {
            let rgb = |c: usize| (chroma.data[c * n + i] as f64 + 1.0) * 0.5;
            let (r, g, b) = (rgb(0), rgb(1), rgb(2));
            let iq = [
                YIQ[1][0] * r + YIQ[1][1] * g + YIQ[1][2] * b,
                YIQ[2][0] * r + YIQ[2][1] * g + YIQ[2][2] * b,
            ];
            let y = (self.data[i] as f64 + 1.0) * 0.5;
            for (c, row) in inv.iter().enumerate() {
                let v = row[0] * y + row[1] * iq[0] + row[2] * iq[1];
                data[c * n + i] = (v * 2.0 - 1.0) as f32;
            }
        }
        Self {
            c: 3,
            h: self.h,
            w: self.w,
            data,
        }
    }

    /// Writes the image (clamped, rounded as `torchvision.utils.save_image`) as PNG or JPEG by
    /// the extension, creating the folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        let format = match ext.as_deref() {
            Some("png") => image::ImageFormat::Png,
            Some("jpg" | "jpeg") => image::ImageFormat::Jpeg,
            _ => {
                return Err(TrainError::Run(format!(
                    "output {}: unknown image type; name it .png or .jpg",
                    path.display()
                )))
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).ctx("creating", dir)?;
        }
        let n = self.h * self.w;
        let mut px = vec![0u8; n * self.c];
        for i in 0..n {
            for c in 0..self.c {
                let v01 = ((self.data[c * n + i] + 1.0) * 0.5).clamp(0.0, 1.0);
                px[i * self.c + c] = (v01 * 255.0 + 0.5).floor().min(255.0) as u8;
            }
        }
        let color = if self.c == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        image::save_buffer_with_format(path, &px, self.w as u32, self.h as u32, color, format)
            .map_err(|e| TrainError::Run(format!("writing {}: {e}", path.display())))
    }
}

/// `(w', h')` with longest side `side` and the aspect ratio of `w × h` (the other side rounded,
/// at least 1).
pub fn fit_size(w: usize, h: usize, side: usize) -> (usize, usize) {
    let long = w.max(h).max(1) as f64;
    let scale = |v: usize| ((v as f64 * side as f64 / long).round() as usize).max(1);
    if w >= h {
        (side, scale(h))
    } else {
        (scale(w), side)
    }
}

// ---------------------------------------------------------------------------------------------
// The objective

/// The loss terms at one point: the weighted total and the unweighted content, style and TV terms
/// (content and style in Caffe units, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossParts {
    /// `α·content + β·style + γ·tv`.
    pub total: f64,
    /// `Σ_l ½ Σ (F_l − P_l)²`.
    pub content: f64,
    /// `Σ_l w_l E_l`.
    pub style: f64,
    /// Squared total variation on 0..255 pixels.
    pub tv: f64,
}

/// The network, the layers and the weights: what stays fixed across scales.
struct Problem {
    vgg: Vgg,
    /// Union of the content and style taps, in the order features are asked for.
    taps: Vec<Tap>,
    content_idx: Vec<usize>,
    style_idx: Vec<usize>,
    style_layer_weights: Vec<f64>,
    alpha: f64,
    beta: f64,
    gamma: f64,
    /// Layout factors: content ×1/s², style ×1/s⁴.
    content_unit: f64,
    style_unit: f64,
}

/// The targets at one output size.
struct Targets {
    /// `[1, C, h, w]` per content layer.
    content: Vec<Tensor>,
    /// Per style layer: the blended per-position Gram `[1, C, C]` times the generated image's
    /// position count, i.e. comparable with an unnormalised Gram of the generated image.
    style: Vec<Tensor>,
}

impl Problem {
    fn new(vgg: Vgg, content_layers: &[Tap], style_layers: &[Tap], cfg: &TransferConfig) -> Self {
        let mut taps: Vec<Tap> = Vec::new();
        let mut index = |t: &Tap| match taps.iter().position(|u| u == t) {
            Some(i) => i,
            None => {
                taps.push(*t);
                taps.len() - 1
            }
        };
        let content_idx = content_layers.iter().map(&mut index).collect();
        let style_idx = style_layers.iter().map(&mut index).collect();
        let style_layer_weights = if cfg.style_layer_weights.is_empty() {
            vec![1.0 / style_layers.len().max(1) as f64; style_layers.len()]
        } else {
            cfg.style_layer_weights.clone()
        };
        let s = vgg.config().layout.input_scale_vs_caffe();
        Self {
            vgg,
            taps,
            content_idx,
            style_idx,
            style_layer_weights,
            alpha: cfg.content_weight,
            beta: cfg.style_weight,
            gamma: cfg.tv_weight,
            content_unit: 1.0 / (s * s),
            style_unit: 1.0 / (s * s * s * s),
        }
    }

    /// The network input for an optimised image `[1, c, h, w]` (one-channel images are
    /// repeated to RGB).
    fn rgb(x: &Tensor) -> Result<Tensor> {
        Ok(if x.dim(1)? == 1 {
            Tensor::cat(&[x, x, x], 1)?
        } else {
            x.clone()
        })
    }

    /// Targets for `content` (at the output size) and `styles` with blend weights, for an
    /// output of `out_hw` pixels.
    fn targets(
        &self,
        content: Option<&Tensor>,
        styles: &[(Tensor, f64)],
        out_hw: (usize, usize),
    ) -> Result<Targets> {
        let content_t = match content {
            Some(c) if !self.content_idx.is_empty() => {
                let taps: Vec<Tap> = self.content_idx.iter().map(|&i| self.taps[i]).collect();
                self.vgg
                    .features(&Self::rgb(c)?, &taps)?
                    .into_iter()
                    .map(|t| t.detach())
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut style_t: Vec<Option<Tensor>> = vec![None; self.style_idx.len()];
        let taps: Vec<Tap> = self.style_idx.iter().map(|&i| self.taps[i]).collect();
        for (img, b) in styles {
            let f = self.vgg.features(&Self::rgb(img)?, &taps)?;
            for (slot, f) in style_t.iter_mut().zip(f) {
                let g = (gram_matrix(&f.detach(), GramNorm::Positions)? * *b)?;
                *slot = Some(match slot.take() {
                    None => g,
                    Some(acc) => (acc + g)?,
                });
            }
        }
        // Per-position Grams times the positions M_l of the generated image's layer.
        let style = style_t
            .into_iter()
            .flatten()
            .zip(&taps)
            .map(|(g, t)| Ok((g * (t.side(out_hw.0) * t.side(out_hw.1)) as f64)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Targets {
            content: content_t,
            style,
        })
    }

    /// The weighted total (a scalar tensor to differentiate) and its parts.
    fn losses(&self, x: &Tensor, t: &Targets) -> Result<(Tensor, LossParts)> {
        let dev = x.device();
        let zero = || Tensor::zeros((), x.dtype(), dev);
        let feats = self.vgg.features(&Self::rgb(x)?, &self.taps)?;
        let mut content = zero()?;
        for (&i, p) in self.content_idx.iter().zip(&t.content) {
            content = (content + content_loss(&feats[i], p, ContentNorm::Half)?)?;
        }
        let content = (content * self.content_unit)?;
        let mut style = zero()?;
        if !t.style.is_empty() {
            for ((&i, a), w) in self
                .style_idx
                .iter()
                .zip(&t.style)
                .zip(&self.style_layer_weights)
            {
                let e = style_layer_loss(&feats[i], a, StyleNorm::Gatys)?;
                style = (style + (e * *w)?)?;
            }
        }
        let style = (style * self.style_unit)?;
        let tv = if self.gamma != 0.0 {
            total_variation(&(x * 127.5)?, TvNorm::Squared)?
        } else {
            zero()?
        };
        let total = ((content.affine(self.alpha, 0.0)? + style.affine(self.beta, 0.0)?)?
            + tv.affine(self.gamma, 0.0)?)?;
        let v = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let parts = LossParts {
            total: v(&total)?,
            content: v(&content)?,
            style: v(&style)?,
            tv: v(&tv)?,
        };
        Ok((total, parts))
    }

    /// The losses and the gradient of the total with respect to `x`.
    fn eval_grad(&self, x: &Tensor, t: &Targets) -> Result<(LossParts, Tensor)> {
        let var = Var::from_tensor(x)?;
        let (total, parts) = self.losses(var.as_tensor(), t)?;
        let grads = total.backward()?;
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| {
                TrainError::Run("transfer: the loss does not depend on the image".into())
            })?
            .detach();
        Ok((parts, g))
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// One line of the loss log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterRecord {
    /// Longest side of this scale.
    pub scale: usize,
    /// Iteration within the scale (0 = the starting point).
    pub iter: usize,
    /// Objective evaluations this iteration.
    pub evals: usize,
    /// Losses after the iteration.
    #[serde(flatten)]
    pub loss: LossParts,
    /// Seconds since the scale started (target computation excluded).
    pub seconds: f64,
}

/// What one scale did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Longest side.
    pub scale: usize,
    /// Output width and height.
    pub size: (usize, usize),
    /// Losses at the starting point.
    pub initial: LossParts,
    /// Losses at the end.
    pub last: LossParts,
    /// Iterations done.
    pub iterations: usize,
    /// Objective evaluations (forward + backward passes), including the starting point.
    pub evals: usize,
    /// Seconds spent iterating (targets excluded).
    pub seconds: f64,
    /// Why L-BFGS stopped early, if it did.
    pub converged: Option<String>,
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferReport {
    /// The output image.
    pub out: PathBuf,
    /// The loss log (JSON lines, one [`IterRecord`] each).
    pub log: PathBuf,
    /// Intermediate images written.
    pub intermediates: Vec<PathBuf>,
    /// One entry per scale run.
    pub scales: Vec<ScaleReport>,
    /// The VGG used.
    pub vgg: String,
    /// Feature inversion: PSNR (dB, RGB, 0..255) of the result against the content image.
    pub psnr: Option<f64>,
    /// Stopped by the interrupt flag.
    pub interrupted: bool,
}

/// The loss log's path for an output image: `DIR/STEM.losses.jsonl`.
pub fn log_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transfer".into());
    out.with_file_name(format!("{stem}.losses.jsonl"))
}

/// An intermediate image's path: `DIR/STEM-SCALEpx-iterNNNN.EXT`.
fn intermediate_path(out: &Path, scale: usize, iter: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transfer".into());
    let ext = out
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    out.with_file_name(format!("{stem}-{scale}px-iter{iter:04}.{ext}"))
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Run(msg.into())
}

fn check_config(cfg: &TransferConfig) -> Result<()> {
    if cfg.content.is_none() && cfg.styles.is_empty() {
        return Err(bad(
            "transfer: no content and no style image; give --content, --style or both",
        ));
    }
    if !cfg.style_blend.is_empty() && cfg.style_blend.len() != cfg.styles.len() {
        return Err(bad(format!(
            "--style-blend has {} weights for {} style images; give one per --style",
            cfg.style_blend.len(),
            cfg.styles.len()
        )));
    }
    if cfg.style_blend.iter().any(|b| !b.is_finite() || *b < 0.0)
        || (!cfg.style_blend.is_empty() && cfg.style_blend.iter().sum::<f64>() <= 0.0)
    {
        return Err(bad(format!(
            "--style-blend {:?}: weights must be ≥ 0 with a positive sum",
            cfg.style_blend
        )));
    }
    for (name, v) in [
        ("--content-weight", cfg.content_weight),
        ("--style-weight", cfg.style_weight),
        ("--tv-weight", cfg.tv_weight),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(bad(format!("{name} {v}: must be a finite number ≥ 0")));
        }
    }
    if cfg.iterations == 0 {
        return Err(bad("--iters 0: at least one iteration is needed"));
    }
    if cfg.method == Method::Adam && !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(bad(format!("--lr {}: must be > 0", cfg.lr)));
    }
    if !(cfg.style_scale.is_finite() && cfg.style_scale > 0.0) {
        return Err(bad(format!(
            "--style-scale {}: must be > 0",
            cfg.style_scale
        )));
    }
    if cfg.history == 0 {
        return Err(bad("--history 0: L-BFGS needs at least one pair"));
    }
    for w in cfg.scales.windows(2) {
        if w[1] < w[0] {
            return Err(bad(format!(
                "--scales {:?}: sizes must increase (coarse to fine)",
                cfg.scales
            )));
        }
    }
    if let Some(&big) = cfg.scales.iter().max() {
        if big > cfg.max_size {
            return Err(bad(format!(
                "--scales {:?}: {big} px is above --max-size {}; raise --max-size to run that large",
                cfg.scales, cfg.max_size
            )));
        }
    }
    if cfg.max_size < 16 || cfg.scales.iter().any(|&s| s < 16) {
        return Err(bad(
            "image sizes below 16 px leave nothing of VGG's deeper layers; use at least 16",
        ));
    }
    if cfg.original_colors && cfg.content.is_none() {
        return Err(bad(
            "--original-colors keeps the content image's colours, but there is no content image",
        ));
    }
    match (cfg.init, cfg.content.is_some(), cfg.styles.is_empty()) {
        (Some(InitKind::Content), false, _) => {
            return Err(bad("--init content needs a content image"))
        }
        (Some(InitKind::Style), _, true) => return Err(bad("--init style needs a style image")),
        _ => {}
    }
    Ok(())
}

/// Progress output: a bar on a terminal, lines every `print_every` iterations otherwise.
struct Progress {
    bar: ProgressBar,
    quiet: bool,
    print_every: usize,
}

impl Progress {
    fn new(total: u64, quiet: bool, print_every: usize) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:25} {pos}/{len} it ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            quiet,
            print_every,
        }
    }
    fn line(&self, s: &str) {
        if self.quiet {
        } else if self.bar.is_hidden() {
            println!("{s}");
        } else {
            self.bar.println(s);
        }
    }
    fn iter(&self, r: &IterRecord, of: usize) {
        let msg = format!(
            "{}px total {:.4e} content {:.4e} style {:.4e} tv {:.3e}",
            r.scale, r.loss.total, r.loss.content, r.loss.style, r.loss.tv
        );
        self.bar.inc(1);
        self.bar.set_message(msg.clone());
        if !self.quiet
            && self.bar.is_hidden()
            && self.print_every > 0
            && (r.iter.is_multiple_of(self.print_every) || r.iter == of)
        {
            println!(
                "iter {:>4}/{of} {msg} ({:.3} s/iter, {} evals)",
                r.iter,
                r.seconds / r.iter.max(1) as f64,
                r.evals
            );
        }
    }
}

fn noise(c: usize, h: usize, w: usize, seed: u64) -> Image {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..c * h * w)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            (0.25 * z) as f32
        })
        .collect();
    Image { c, h, w, data }
}

/// The image to write: a one-channel (luminance) result gets `chroma`'s colours.
fn finish_image(x: &Image, chroma: Option<&Image>) -> Image {
    match chroma {
        Some(c) if x.c == 1 => x.with_chroma_of(c),
        _ => x.clone(),
    }
}

fn converged_reason(c: Converged) -> &'static str {
    match c {
        Converged::Gradient => "gradient below tolerance",
        Converged::Change => "no further change",
        Converged::LineSearch => "line search found no decrease (float precision reached)",
    }
}

/// One scale's optimisation: what it reads and where it reports.
struct ScaleRun<'a> {
    cfg: &'a TransferConfig,
    device: &'a Device,
    problem: &'a Problem,
    targets: &'a Targets,
    scale: usize,
    /// `(1, c, h, w)` of the optimised image.
    shape: (usize, usize, usize, usize),
    start: Instant,
    log: &'a mut std::fs::File,
    log_path: &'a Path,
    progress: &'a Progress,
    interrupt: &'a AtomicBool,
    /// The content image whose chroma a luminance result takes.
    content: Option<&'a Image>,
    intermediates: &'a mut Vec<PathBuf>,
    interrupted: bool,
}

impl ScaleRun<'_> {
    fn report(&self) -> ScaleReport {
        ScaleReport {
            scale: self.scale,
            size: (self.shape.3, self.shape.2),
            initial: LossParts::default(),
            last: LossParts::default(),
            iterations: 0,
            evals: 0,
            seconds: 0.0,
            converged: None,
        }
    }

    fn image(shape: (usize, usize, usize, usize), data: Vec<f32>) -> Image {
        let (_, c, h, w) = shape;
        Image { c, h, w, data }
    }

    /// Logs an iteration (and shows it unless it is the starting point).
    fn record(&mut self, iter: usize, evals: usize, loss: LossParts) -> Result<()> {
        let r = IterRecord {
            scale: self.scale,
            iter,
            evals,
            loss,
            seconds: self.start.elapsed().as_secs_f64(),
        };
        let line = serde_json::to_string(&r).map_err(|e| bad(e.to_string()))?;
        writeln!(self.log, "{line}").ctx("writing", self.log_path)?;
        if iter > 0 {
            self.progress.iter(&r, self.cfg.iterations);
        }
        Ok(())
    }

    /// Writes the intermediate image of iteration `iter` if one is due.
    fn maybe_save(&mut self, iter: usize, img: impl FnOnce() -> Result<Image>) -> Result<()> {
        let every = self.cfg.save_every;
        if every > 0 && iter.is_multiple_of(every) && iter < self.cfg.iterations {
            let p = intermediate_path(&self.cfg.out, self.scale, iter);
            finish_image(&img()?, self.content).save(&p)?;
            self.intermediates.push(p);
        }
        Ok(())
    }

    fn stop_requested(&mut self) -> bool {
        self.interrupted |= self.interrupt.load(Ordering::SeqCst);
        self.interrupted
    }

    /// L-BFGS with the pixels bounded to [−1, 1] (Gatys et al. use L-BFGS-B with pixel bounds;
    /// unbounded, the style term drives most pixels far outside the range).
    fn lbfgs(&mut self, x0: &Image) -> Result<(Image, ScaleReport)> {
        let mut sr = self.report();
        let (problem, targets, shape, device) =
            (self.problem, self.targets, self.shape, self.device);
        let evals_log: RefCell<Vec<LossParts>> = RefCell::new(Vec::new());
        let mut obj = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let t = Tensor::from_vec(xs, shape, device)?;
            let (parts, g) = problem.eval_grad(&t, targets)?;
            evals_log.borrow_mut().push(parts);
            let g = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok((parts.total, g))
        };
        let lcfg = LbfgsConfig {
            history: self.cfg.history,
            bounds: Some((-1.0, 1.0)),
            ..LbfgsConfig::default()
        };
        let x0v: Vec<f64> = x0.data.iter().map(|&v| v as f64).collect();
        let mut opt = Lbfgs::new(lcfg, x0v, &mut obj)?;
        sr.initial = evals_log.borrow()[0];
        sr.last = sr.initial;
        self.record(0, 1, sr.initial)?;
        let to_image = |opt: &Lbfgs| opt.x().iter().map(|&v| v as f32).collect::<Vec<f32>>();
        for it in 1..=self.cfg.iterations {
            if self.stop_requested() {
                break;
            }
            evals_log.borrow_mut().clear();
            let step = opt.step(&mut obj)?;
            // The accepted point's parts: the evaluation whose total is the new f.
            if let Some(p) = evals_log.borrow().iter().rev().find(|p| p.total == opt.f()) {
                sr.last = *p;
            }
            if step.evals > 0 || step.converged.is_none() {
                sr.iterations = it;
            }
            self.record(it, step.evals, sr.last)?;
            self.maybe_save(it, || Ok(Self::image(shape, to_image(&opt))))?;
            if let Some(c) = step.converged {
                sr.converged = Some(converged_reason(c).to_string());
                self.progress.line(&format!(
                    "{}px: L-BFGS stopped after {it} iterations: {}",
                    self.scale,
                    converged_reason(c)
                ));
                self.progress.bar.inc((self.cfg.iterations - it) as u64);
                break;
            }
        }
        sr.evals = opt.evals();
        sr.seconds = self.start.elapsed().as_secs_f64();
        Ok((Self::image(shape, to_image(&opt)), sr))
    }

    /// Adam, pixels clamped to [−1, 1] after every step.
    fn adam(&mut self, x0: &Image) -> Result<(Image, ScaleReport)> {
        let mut sr = self.report();
        let var = Var::from_tensor(&x0.to_tensor(self.device)?)?;
        let mut adam = Optimizer::new(
            OptimSpec::Adam(AdamConfig {
                lr: self.cfg.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            }),
            vec![("image".into(), var.clone())],
        )?;
        for it in 1..=self.cfg.iterations {
            if self.stop_requested() {
                break;
            }
            let (total, parts) = self.problem.losses(var.as_tensor(), self.targets)?;
            if !parts.total.is_finite() {
                return Err(bad(format!(
                    "the loss became {} at {} px, iteration {it}; lower --lr",
                    parts.total, self.scale
                )));
            }
            if it == 1 {
                sr.initial = parts;
                self.record(0, 1, parts)?;
            }
            let grads = total.backward()?;
            adam.step(&grads)?;
            var.set(&var.as_tensor().clamp(-1f32, 1f32)?)?;
            sr.iterations = it;
            sr.evals += 1;
            // Adam logs the loss at the point its step was computed from (as training loops
            // do); the final point's loss is evaluated below.
            self.record(it, 1, parts)?;
            self.maybe_save(it, || Image::from_tensor(var.as_tensor()))?;
        }
        let (_, last) = self
            .problem
            .losses(&var.as_tensor().detach(), self.targets)?;
        sr.last = last;
        sr.seconds = self.start.elapsed().as_secs_f64();
        Ok((Image::from_tensor(var.as_tensor())?, sr))
    }
}

/// Runs the optimisation `cfg` describes on `device`, writing the output image, intermediates and
/// the loss log. `interrupt` stops it after the current iteration (the image so far is saved).
pub fn run(
    cfg: &TransferConfig,
    device: &Device,
    interrupt: &AtomicBool,
) -> Result<TransferReport> {
    check_config(cfg)?;
    // Inputs first: a wrong path should not wait for the weights.
    let content = cfg
        .content
        .as_ref()
        .map(|p| Image::open(p, "content image"))
        .transpose()?;
    let styles = cfg
        .styles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let role = if cfg.styles.len() > 1 {
                format!("style image {}", i + 1)
            } else {
                "style image".to_string()
            };
            Image::open(p, &role)
        })
        .collect::<Result<Vec<_>>>()?;
    // Fail on an unwritable output type before the long part.
    let ext_ok = cfg
        .out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"));
    if !ext_ok {
        return Err(bad(format!(
            "--out {}: unknown image type; name it .png or .jpg",
            cfg.out.display()
        )));
    }
    let vgg_path = resolve_vgg(cfg.vgg.as_deref(), &cfg.hub)?;
    let vgg = load_vgg(&vgg_path, cfg.pooling, device)?;
    let depth = vgg.config().depth;
    let layer_err = |what: &str, e: candle_core::Error| bad(format!("{what}: {e}"));
    let content_layers = if content.is_some() {
        vgg::parse_taps(&cfg.content_layers, depth).map_err(|e| layer_err("--content-layers", e))?
    } else {
        Vec::new()
    };
    let style_layers = if styles.is_empty() {
        Vec::new()
    } else {
        vgg::parse_taps(&cfg.style_layers, depth).map_err(|e| layer_err("--style-layers", e))?
    };
    if content.is_some() && content_layers.is_empty() {
        return Err(bad(
            "--content-layers is empty: name at least one layer (relu4_2)",
        ));
    }
    if !styles.is_empty() && style_layers.is_empty() {
        return Err(bad(
            "--style-layers is empty: name at least one layer (relu1_1,…)",
        ));
    }
    if !cfg.style_layer_weights.is_empty() && cfg.style_layer_weights.len() != style_layers.len() {
        return Err(bad(format!(
            "--style-layer-weights has {} values for {} style layers",
            cfg.style_layer_weights.len(),
            style_layers.len()
        )));
    }
    let blend: Vec<f64> = if cfg.style_blend.is_empty() {
        vec![1.0 / styles.len().max(1) as f64; styles.len()]
    } else {
        let s: f64 = cfg.style_blend.iter().sum();
        cfg.style_blend.iter().map(|b| b / s).collect()
    };
    let reference = content.as_ref().unwrap_or_else(|| &styles[0]);
    let scales = if cfg.scales.is_empty() {
        vec![reference.w.max(reference.h).min(cfg.max_size)]
    } else {
        cfg.scales.clone()
    };
    let deepest_need = content_layers
        .iter()
        .chain(&style_layers)
        .map(|t| t.min_input_side())
        .max()
        .unwrap_or(1);
    let init = cfg.init.unwrap_or(match (&content, styles.is_empty()) {
        (Some(_), false) => InitKind::Content,
        _ => InitKind::Noise,
    });
    let luminance = cfg.original_colors;
    let channels = if luminance { 1 } else { 3 };
    let problem = Problem::new(vgg, &content_layers, &style_layers, cfg);
    let vgg_desc = format!(
        "{} {} ({} pooling) from {}",
        depth,
        problem.vgg.config().layout,
        match cfg.pooling {
            Pooling::Max => "max",
            Pooling::Avg => "average",
        },
        vgg_path.display()
    );

    let log = log_path(&cfg.out);
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ctx("creating", dir)?;
    }
    let mut log_file = std::fs::File::create(&log).ctx("creating", &log)?;
    let progress = Progress::new(
        (cfg.iterations * scales.len()) as u64,
        cfg.quiet,
        cfg.print_every,
    );
    progress.line(&format!(
        "{}: {}{} with {} ({} iterations per scale, scales {:?} px, init {init}), VGG {vgg_desc}",
        cfg.out.display(),
        match (&content, styles.len()) {
            (Some(_), 0) => "feature inversion".to_string(),
            (None, _) => "texture synthesis".to_string(),
            (Some(_), n) => format!("style transfer from {n} style image(s)"),
        },
        if luminance { " (original colours)" } else { "" },
        cfg.method,
        cfg.iterations,
        scales,
    ));

    let mut report = TransferReport {
        out: cfg.out.clone(),
        log: log.clone(),
        intermediates: Vec::new(),
        scales: Vec::new(),
        vgg: vgg_desc,
        psnr: None,
        interrupted: false,
    };
    let mut current: Option<Image> = None;
    let mut content_at = None;
    for &scale in &scales {
        let (w, h) = reference.fit(scale);
        if w < deepest_need || h < deepest_need {
            return Err(bad(format!(
                "at {scale} px the output is {w}×{h}, too small for the deepest layer asked for \
                 (it needs {deepest_need}×{deepest_need}); use larger --scales / --max-size or \
                 shallower layers"
            )));
        }
        // Targets at this scale.
        let content_img = content.as_ref().map(|c| c.resized(w, h));
        let content_in =
            content_img
                .as_ref()
                .map(|c| if luminance { c.luminance() } else { c.clone() });
        let style_imgs = styles
            .iter()
            .map(|s| {
                let side = ((scale as f64 * cfg.style_scale).round() as usize).max(1);
                let (sw, sh) = s.fit(side);
                if sw < deepest_need || sh < deepest_need {
                    return Err(bad(format!(
                        "the style image at --style-scale {} is {sw}×{sh} px, too small for the \
                         style layers (they need {deepest_need}×{deepest_need})",
                        cfg.style_scale
                    )));
                }
                let r = s.resized(sw, sh);
                Ok(match (&content_in, luminance) {
                    (Some(c), true) => r.luminance().match_moments(c),
                    _ => r,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let content_t = content_in
            .as_ref()
            .map(|c| c.to_tensor(device))
            .transpose()?;
        let style_t = style_imgs
            .iter()
            .zip(&blend)
            .map(|(s, b)| Ok((s.to_tensor(device)?, *b)))
            .collect::<Result<Vec<_>>>()?;
        let targets = problem.targets(content_t.as_ref(), &style_t, (h, w))?;
        drop(style_t);

        // Starting point.
        let x0 = match &current {
            Some(prev) => prev.resized(w, h),
            None => match init {
                InitKind::Content => content_in.clone().expect("checked: content exists"),
                InitKind::Style => {
                    let s = styles[0].resized(w, h);
                    match &content_in {
                        Some(c) if luminance => s.luminance().match_moments(c),
                        _ if luminance => s.luminance(),
                        _ => s,
                    }
                }
                InitKind::Noise => noise(channels, h, w, cfg.seed),
            },
        };
        let mut ctx = ScaleRun {
            cfg,
            device,
            problem: &problem,
            targets: &targets,
            scale,
            shape: (1, channels, h, w),
            start: Instant::now(),
            log: &mut log_file,
            log_path: &log,
            progress: &progress,
            interrupt,
            content: content_img.as_ref().filter(|_| luminance),
            intermediates: &mut report.intermediates,
            interrupted: false,
        };
        let (result, sr) = match cfg.method {
            Method::Lbfgs => ctx.lbfgs(&x0)?,
            Method::Adam => ctx.adam(&x0)?,
        };
        report.interrupted = ctx.interrupted;
        if scales.len() > 1 {
            // Between scales (the caller summarises every scale at the end).
            progress.line(&format!(
                "{scale}px ({w}×{h}) done: {} iterations, {:.1} s; style {:.4e} → {:.4e}, \
                 content {:.4e} → {:.4e}",
                sr.iterations,
                sr.seconds,
                sr.initial.style,
                sr.last.style,
                sr.initial.content,
                sr.last.content,
            ));
        }
        report.scales.push(sr);
        current = Some(result);
        content_at = content_img;
        if report.interrupted {
            break;
        }
    }
    progress.bar.finish_and_clear();
    let result = current.expect("at least one scale ran");
    let out_img = finish_image(&result, content_at.as_ref().filter(|_| luminance));
    out_img.save(&cfg.out)?;
    if styles.is_empty() {
        if let Some(c) = &content_at {
            let clamp = |i: &Image| -> Result<Tensor> {
                Ok(i.to_tensor(&Device::Cpu)?.clamp(-1f32, 1f32)?)
            };
            let p = easel_metrics::quality::psnr(
                &clamp(&out_img)?,
                &clamp(c)?,
                &easel_metrics::quality::QualityConfig::rgb(),
            )?;
            report.psnr = p.first().copied();
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use easel_models::vgg::{Config, Depth, Layout};

    /// Seeded weights for a narrow VGG (`widths`) in `layout`, plus a classifier head that the
    /// loader must ignore.
    fn random_weights(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = HashMap::new();
        let mut c_in = 3;
        for (b, &n) in cfg.depth.convs_per_block().iter().enumerate() {
            for c in 1..=n {
                let o = cfg.widths[b];
                let k = (6.0 / (c_in * 9) as f64).sqrt();
                let w: Vec<f32> = (0..o * c_in * 9)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * k * 0.6) as f32
                    })
                    .collect();
                let bias: Vec<f32> = (0..o)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * 0.05) as f32
                    })
                    .collect();
                let name = cfg.layout.conv_name(cfg.depth, b + 1, c);
                m.insert(
                    format!("{name}.weight"),
                    Tensor::from_vec(w, (o, c_in, 3, 3), &Device::Cpu).unwrap(),
                );
                m.insert(
                    format!("{name}.bias"),
                    Tensor::from_vec(bias, o, &Device::Cpu).unwrap(),
                );
                c_in = o;
            }
        }
        let head = match cfg.layout {
            Layout::Torchvision => "pre_logits.fc1.weight",
            Layout::Caffe => "fc1.weight",
        };
        m.insert(
            head.into(),
            Tensor::zeros((4, cfg.widths[4], 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        m
    }

    fn narrow(depth: Depth, layout: Layout) -> Config {
        Config {
            depth,
            layout,
            pooling: Pooling::Max,
            widths: [4, 5, 6, 6, 7],
        }
    }

    #[test]
    fn loads_both_layouts_from_files_the_test_writes() {
        let d = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let x = noise(3, 37, 33, 5).to_tensor(&dev).unwrap();
        for depth in [Depth::Vgg16, Depth::Vgg19] {
            for layout in [Layout::Torchvision, Layout::Caffe] {
                let cfg = narrow(depth, layout);
                let m = random_weights(&cfg, 7);
                let path = d.path().join(format!("{depth}-{layout:?}.safetensors"));
                candle_core::safetensors::save(&m, &path).unwrap();
                let vgg = load_vgg(&path, Pooling::Avg, &dev).unwrap();
                assert_eq!(vgg.config(), &cfg.clone().with_pooling(Pooling::Avg));
                // The same activations as the network built from the tensors themselves.
                let reference = Vgg::new(
                    &cfg.clone().with_pooling(Pooling::Avg),
                    VarBuilder::from_tensors(m, DType::F32, &dev),
                )
                .unwrap();
                let last = format!("relu5_{}", depth.convs_per_block()[4]);
                let taps = vgg.taps(&["conv1_1", "relu2_2", "pool3", &last]).unwrap();
                let a = vgg.features(&x, &taps).unwrap();
                let b = reference.features(&x, &taps).unwrap();
                for (a, b) in a.iter().zip(&b) {
                    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{depth} {layout:?}");
                }
            }
        }
        // Bad files: each error names the file and says what to pass instead.
        let missing = d.path().join("nope.safetensors");
        let e = load_vgg(&missing, Pooling::Max, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope.safetensors") && e.contains("no such file") && e.contains("--vgg"),
            "{e}"
        );
        let junk = d.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a safetensors file").unwrap();
        let e = load_vgg(&junk, Pooling::Max, &dev).unwrap_err().to_string();
        assert!(
            e.contains("junk.safetensors") && e.contains("cannot read it as safetensors"),
            "{e}"
        );
        let other = d.path().join("other.safetensors");
        let mut m = HashMap::new();
        m.insert(
            "fc.weight".to_string(),
            Tensor::zeros((2, 2), DType::F32, &dev).unwrap(),
        );
        candle_core::safetensors::save(&m, &other).unwrap();
        let e = load_vgg(&other, Pooling::Max, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("other.safetensors") && e.contains("no VGG convolution"),
            "{e}"
        );
        // Offline without a cached copy: the hub error says how to do without it.
        let hub = HubConfig {
            cache_dir: Some(d.path().join("hub")),
            offline: true,
            ..HubConfig::default()
        };
        let e = resolve_vgg(None, &hub).unwrap_err().to_string();
        assert!(
            e.contains("timm/vgg19.tv_in1k") && e.contains("--vgg PATH"),
            "{e}"
        );
    }

    fn f64_problem(layout: Layout, cfg: &TransferConfig) -> (Problem, Vec<Tap>, Vec<Tap>) {
        let vcfg = narrow(Depth::Vgg19, layout);
        let m = random_weights(&vcfg, 11);
        let vgg = Vgg::new(&vcfg, VarBuilder::from_tensors(m, DType::F64, &Device::Cpu)).unwrap();
        let content = vgg::parse_taps(&cfg.content_layers, Depth::Vgg19).unwrap();
        let style = vgg::parse_taps(&cfg.style_layers, Depth::Vgg19).unwrap();
        (Problem::new(vgg, &content, &style, cfg), content, style)
    }

    fn f64_image(c: usize, h: usize, w: usize, seed: u64) -> Tensor {
        noise(c, h, w, seed)
            .to_tensor(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    }

    fn sum_sq(t: &Tensor) -> f64 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The loss terms against the paper's formulas written out on the network's activations:
    /// content ½Σ(F − P)², style Σ_l w_l Σ(G − A)²/(4N²M²) with unnormalised Grams of a style
    /// image of the output's size, TV on 0..255 pixels; the torchvision layout's unit factors.
    #[test]
    fn loss_terms_are_the_papers_formulas() {
        let mut cfg = TransferConfig::new(None, vec![], "o.png".into());
        cfg.content_layers = vec!["relu2_1".into(), "relu3_1".into()];
        cfg.style_layers = vec!["relu1_1".into(), "relu2_2".into(), "relu4_1".into()];
        cfg.style_layer_weights = vec![0.5, 0.3, 0.2];
        cfg.content_weight = 2.0;
        cfg.style_weight = 7.0;
        cfg.tv_weight = 1e-3;
        for layout in [Layout::Caffe, Layout::Torchvision] {
            let (p, ct, st) = f64_problem(layout, &cfg);
            let (h, w) = (20, 18);
            let x = f64_image(3, h, w, 1);
            let content = f64_image(3, h, w, 2);
            let style = f64_image(3, h, w, 3);
            let t = p
                .targets(Some(&content), &[(style.clone(), 1.0)], (h, w))
                .unwrap();
            let (_, parts) = p.losses(&x, &t).unwrap();
            let s = layout.input_scale_vs_caffe();
            let fx = p.vgg.features(&x, &ct).unwrap();
            let fc = p.vgg.features(&content, &ct).unwrap();
            let want_c: f64 = fx
                .iter()
                .zip(&fc)
                .map(|(a, b)| 0.5 * sum_sq(&(a - b).unwrap()))
                .sum::<f64>()
                / (s * s);
            let gx = p.vgg.features(&x, &st).unwrap();
            let gs = p.vgg.features(&style, &st).unwrap();
            let mut want_s = 0.0;
            for ((a, b), wl) in gx.iter().zip(&gs).zip(&cfg.style_layer_weights) {
                let (_, n, hh, ww) = a.dims4().unwrap();
                let m = hh * ww;
                let fa = a.reshape((n, m)).unwrap().to_vec2::<f64>().unwrap();
                let fb = b.reshape((n, m)).unwrap().to_vec2::<f64>().unwrap();
                let mut e = 0.0;
                for i in 0..n {
                    for j in 0..n {
                        let g: f64 = (0..m).map(|k| fa[i][k] * fa[j][k]).sum();
                        let a: f64 = (0..m).map(|k| fb[i][k] * fb[j][k]).sum();
                        e += (g - a).powi(2);
                    }
                }
                want_s += wl * e / (4.0 * (n * n) as f64 * (m * m) as f64);
            }
            want_s /= s.powi(4);
            let xs = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let mut want_tv = 0.0;
            for c in 0..3 {
                for i in 0..h - 1 {
                    for j in 0..w - 1 {
                        let v = |i: usize, j: usize| 127.5 * xs[(c * h + i) * w + j];
                        want_tv +=
                            (v(i, j) - v(i + 1, j)).powi(2) + (v(i, j) - v(i, j + 1)).powi(2);
                    }
                }
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-300);
            assert!(
                close(parts.content, want_c),
                "{layout:?} content {} vs {want_c}",
                parts.content
            );
            assert!(
                close(parts.style, want_s),
                "{layout:?} style {} vs {want_s}",
                parts.style
            );
            assert!(
                close(parts.tv, want_tv),
                "{layout:?} tv {} vs {want_tv}",
                parts.tv
            );
            let total = 2.0 * want_c + 7.0 * want_s + 1e-3 * want_tv;
            assert!(close(parts.total, total), "{} vs {total}", parts.total);
            // Blended style images of other sizes: per layer, Σ_k b_k G_k / M_k times the
            // output's M_l (so Gatys' formula applies with the output's own size).
            let s1 = f64_image(3, 11, 25, 4);
            let s2 = f64_image(3, 31, 16, 5);
            let tt = p
                .targets(None, &[(s1.clone(), 0.25), (s2.clone(), 0.75)], (h, w))
                .unwrap();
            let f1 = p.vgg.features(&s1, &st).unwrap();
            let f2 = p.vgg.features(&s2, &st).unwrap();
            for (l, tap) in st.iter().enumerate() {
                let m_out = (tap.side(h) * tap.side(w)) as f64;
                let per_pos = |f: &Tensor| {
                    let (_, n, hh, ww) = f.dims4().unwrap();
                    let v = f.reshape((n, hh * ww)).unwrap().to_vec2::<f64>().unwrap();
                    let mut g = vec![vec![0.0; n]; n];
                    for i in 0..n {
                        for j in 0..n {
                            g[i][j] = (0..hh * ww).map(|k| v[i][k] * v[j][k]).sum::<f64>()
                                / (hh * ww) as f64;
                        }
                    }
                    g
                };
                let (g1, g2) = (per_pos(&f1[l]), per_pos(&f2[l]));
                let got = tt.style[l].squeeze(0).unwrap().to_vec2::<f64>().unwrap();
                for i in 0..g1.len() {
                    for j in 0..g1.len() {
                        let want = (0.25 * g1[i][j] + 0.75 * g2[i][j]) * m_out;
                        assert!(
                            (got[i][j] - want).abs() <= 1e-9 * want.abs().max(1e-12),
                            "{layout:?} {tap} [{i}][{j}]: {} vs {want}",
                            got[i][j]
                        );
                    }
                }
            }
        }
    }

    /// The whole objective's gradient (content + blended styles + TV, RGB and one-channel
    /// images) against central finite differences in f64.
    #[test]
    fn objective_gradient_matches_finite_differences() {
        let mut cfg = TransferConfig::new(None, vec![], "o.png".into());
        cfg.content_layers = vec!["relu3_2".into()];
        cfg.style_layers = vec!["relu1_1".into(), "relu2_1".into(), "relu3_1".into()];
        cfg.style_weight = 50.0;
        cfg.tv_weight = 1e-4;
        let (p, _, _) = f64_problem(Layout::Caffe, &cfg);
        let p = Problem {
            vgg: p.vgg.with_pooling(Pooling::Avg),
            ..p
        };
        for c in [3, 1] {
            let (h, w) = (13, 16);
            let x0 = f64_image(c, h, w, 21);
            let content = f64_image(c, h, w, 22);
            let s1 = f64_image(c, 9, 11, 23);
            let s2 = f64_image(c, 17, 12, 24);
            let t = p
                .targets(Some(&content), &[(s1, 0.7), (s2, 0.3)], (h, w))
                .unwrap();
            let (parts, g) = p.eval_grad(&x0, &t).unwrap();
            assert!(parts.content > 0.0 && parts.style > 0.0 && parts.tv > 0.0);
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let xs = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let f = |d: f64, k: usize| {
                let mut v = xs.clone();
                v[k] += d;
                let x = Tensor::from_vec(v, (1, c, h, w), &Device::Cpu).unwrap();
                p.losses(&x, &t).unwrap().1.total
            };
            let (mut checked, mut kinks) = (0, 0);
            for k in (0..xs.len()).step_by(xs.len() / 25) {
                let hh = 1e-5;
                let fd = (f(hh, k) - f(-hh, k)) / (2.0 * hh);
                let fd4 = (f(hh / 4.0, k) - f(-hh / 4.0, k)) / (hh / 2.0);
                let tol = 1e-5 * fd.abs().max(1e-3 * parts.total.abs().max(1.0));
                if (fd - fd4).abs() > tol {
                    kinks += 1; // a ReLU switches inside ±h: not differentiable there
                    continue;
                }
                checked += 1;
                assert!(
                    (fd - g[k]).abs() < tol,
                    "c={c} pixel {k}: analytic {} vs {fd}",
                    g[k]
                );
            }
            assert!(
                checked > 10 && kinks * 5 <= checked,
                "{checked} checked, {kinks} kinks"
            );
        }
    }

    /// The objective and its gradient against PyTorch (float64) on a narrow random VGG19 in the
    /// caffe layout: `tests/fixtures/transfer/`, written by `bench/transfer_torch_golden.py`
    /// (content and style images of different sizes, a random point, every loss term weighted).
    #[test]
    fn objective_and_gradient_match_pytorch() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/transfer");
        let g: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{dir}/torch-golden.json")).unwrap(),
        )
        .unwrap();
        let tensor = |v: &serde_json::Value| {
            let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
            let data: Vec<f64> = serde_json::from_value(v["data"].clone()).unwrap();
            Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
        };
        let names = |k: &str| -> Vec<String> { serde_json::from_value(g[k].clone()).unwrap() };
        let mut cfg = TransferConfig::new(None, vec![], "o.png".into());
        cfg.content_layers = names("content_layers");
        cfg.style_layers = names("style_layers");
        cfg.content_weight = g["alpha"].as_f64().unwrap();
        cfg.style_weight = g["beta"].as_f64().unwrap();
        cfg.tv_weight = g["gamma"].as_f64().unwrap();
        // The file through the loader (f32, layout detected), then in f64 like the reference.
        let vgg = load_vgg(
            Path::new(&format!("{dir}/tiny-vgg19-caffe.safetensors")),
            Pooling::Max,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(vgg.config().widths, [4, 6, 6, 8, 8]);
        let m = candle_core::safetensors::load(
            format!("{dir}/tiny-vgg19-caffe.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let vgg = Vgg::new(
            vgg.config(),
            VarBuilder::from_tensors(m, DType::F64, &Device::Cpu),
        )
        .unwrap();
        let ct = vgg::parse_taps(&cfg.content_layers, Depth::Vgg19).unwrap();
        let st = vgg::parse_taps(&cfg.style_layers, Depth::Vgg19).unwrap();
        let p = Problem::new(vgg, &ct, &st, &cfg);
        let x = tensor(&g["x"]);
        let (_, _, h, w) = x.dims4().unwrap();
        let t = p
            .targets(
                Some(&tensor(&g["content"])),
                &[(tensor(&g["style"]), 1.0)],
                (h, w),
            )
            .unwrap();
        let (parts, grad) = p.eval_grad(&x, &t).unwrap();
        let want = &g["loss"];
        for (name, got) in [
            ("total", parts.total),
            ("content", parts.content),
            ("style", parts.style),
            ("tv", parts.tv),
        ] {
            let w = want[name].as_f64().unwrap();
            assert!(
                (got - w).abs() <= 1e-9 * w.abs(),
                "{name}: {got} vs PyTorch {w}"
            );
        }
        let grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want: Vec<f64> = serde_json::from_value(g["grad"].clone()).unwrap();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in grad.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-9 * scale,
                "∂L/∂x[{i}]: {a} vs PyTorch {b}"
            );
        }
    }

    #[test]
    fn yiq_round_trip_and_luminance() {
        let inv = inverse3(YIQ);
        for (i, row) in YIQ.iter().enumerate() {
            for j in 0..3 {
                let v: f64 = row.iter().zip(&inv).map(|(r, inv_k)| r * inv_k[j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12,
                    "{i}{j}: {v}"
                );
            }
        }
        // Recombining an image's own luminance with its own chroma gives it back.
        let img = noise(3, 5, 7, 1);
        let back = img.luminance().with_chroma_of(&img);
        for (a, b) in img.data.iter().zip(&back.data) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Grey pixels keep their value as luminance.
        let grey = Image {
            c: 3,
            h: 1,
            w: 2,
            data: vec![0.5, -0.25, 0.5, -0.25, 0.5, -0.25],
        };
        let y = grey.luminance();
        assert!((y.data[0] - 0.5).abs() < 1e-6 && (y.data[1] + 0.25).abs() < 1e-6);
    }
}
