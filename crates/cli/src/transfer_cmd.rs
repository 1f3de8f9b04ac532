//! `easel transfer`: Gatys style transfer, texture synthesis and feature inversion by optimising
//! an image on VGG features (the work is in `easel_train::transfer`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use easel_train::transfer::{self, InitKind, Method, TransferConfig};

/// Arguments of `easel transfer`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  easel transfer --content cat.png --style starry.jpg --out out/cat.png --vgg vgg19.safetensors
  easel transfer --content cat.png --style a.jpg --style b.jpg --style-blend 0.7,0.3 --out o.png
  easel transfer --content none --style starry.jpg --out texture.png            (texture synthesis)
  easel transfer --content cat.png --style none --layer relu3_1 --out inv.png   (feature inversion)
  easel transfer --content cat.png --style starry.jpg --scales 256,512 --original-colors --out o.png")]
pub struct TransferArgs {
    /// Content image (PNG/JPEG), or `none` for texture synthesis.
    #[arg(long, value_name = "PATH|none")]
    content: String,
    /// Style image (repeatable to blend styles), or `none` for feature inversion.
    #[arg(long = "style", value_name = "PATH|none", required = true)]
    styles: Vec<String>,
    /// Blend weights of the style images, one per --style (normalised to sum 1): 0.7,0.3.
    #[arg(long, value_delimiter = ',', value_name = "W,W,…")]
    style_blend: Vec<f64>,
    /// Output image (.png or .jpg); the loss log (STEM.losses.jsonl) and intermediate images go
    /// beside it.
    #[arg(long)]
    out: PathBuf,
    /// VGG16/VGG19 weights (safetensors; torchvision/timm or Keras/caffe names). Default:
    /// timm/vgg19.tv_in1k from the Hugging Face cache, downloaded when online.
    #[arg(long, value_name = "PATH")]
    vgg: Option<PathBuf>,
    /// Optimiser: lbfgs (Gatys et al.) or adam.
    #[arg(long, default_value = "lbfgs", value_name = "lbfgs|adam")]
    optimizer: Method,
    /// Iterations at each scale (L-BFGS: one direction and line search each).
    #[arg(long, default_value_t = 500)]
    iters: usize,
    /// Adam's learning rate (pixels in [-1, 1]).
    #[arg(long, default_value_t = 0.02)]
    lr: f64,
    /// L-BFGS history (curvature pairs kept).
    #[arg(long, default_value_t = 10)]
    history: usize,
    /// Starting image: content, style or noise (default: content for style transfer, noise for
    /// texture synthesis and feature inversion).
    #[arg(long, value_name = "content|style|noise")]
    init: Option<InitKind>,
    /// α: weight of the content loss ½Σ(F−P)².
    #[arg(long, default_value_t = transfer::DEFAULT_CONTENT_WEIGHT)]
    content_weight: f64,
    /// β: weight of the style loss Σ w_l (G−A)²/(4N²M²) (the paper: α/β = 1e-3 or 1e-4).
    #[arg(long, default_value_t = transfer::DEFAULT_STYLE_WEIGHT)]
    style_weight: f64,
    /// γ: weight of the squared total variation (pixels 0..255).
    #[arg(long, default_value_t = 0.0)]
    tv_weight: f64,
    /// Content layers (the one to invert with --style none).
    #[arg(
        long,
        alias = "layer",
        value_delimiter = ',',
        default_value = "relu4_2",
        value_name = "LAYER,…"
    )]
    content_layers: Vec<String>,
    /// Style layers.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
        value_name = "LAYER,…"
    )]
    style_layers: Vec<String>,
    /// One weight per style layer (default 1/n each).
    #[arg(long, value_delimiter = ',', value_name = "W,…")]
    style_layer_weights: Vec<f64>,
    /// Pooling between VGG blocks: max (as trained) or avg (Gatys et al.).
    #[arg(long, default_value = "max", value_name = "max|avg")]
    pooling: String,
    /// Keep the content image's colours (luminance-only transfer).
    #[arg(long)]
    original_colors: bool,
    /// Style image size relative to the output (its longest side = this × the output's).
    #[arg(long, default_value_t = 1.0)]
    style_scale: f64,
    /// Coarse-to-fine longest sides, e.g. 256,512 (default: one scale, the content image's — or
    /// for textures the style image's — longest side capped at --max-size).
    #[arg(long, value_delimiter = ',', value_name = "PX,…")]
    scales: Vec<usize>,
    /// Largest longest side in pixels.
    #[arg(long, default_value_t = 512)]
    max_size: usize,
    /// Write the current image every N iterations (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    save_every: usize,
    /// Without a terminal, print the losses every N iterations.
    #[arg(long, default_value_t = 10, value_name = "N")]
    print_every: usize,
    /// Seed of the noise initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print nothing but errors and the result.
    #[arg(long, short)]
    quiet: bool,
}

fn none_or_path(s: &str) -> Option<PathBuf> {
    (!s.trim().eq_ignore_ascii_case("none")).then(|| PathBuf::from(s))
}

/// Ctrl-C stops after the current iteration and saves the image so far; a second one quits.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let f = flag.clone();
    let handler = move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\ninterrupt: saving the current image (Ctrl-C again to quit without it)");
            f.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: cannot install the Ctrl-C handler ({e})");
    }
    flag
}

/// Runs `easel transfer`.
pub fn run(a: TransferArgs) -> anyhow::Result<ExitCode> {
    let device = easel_train::device::parse_device(&a.device)?;
    let pooling = transfer::parse_pooling(&a.pooling).map_err(anyhow::Error::msg)?;
    let styles: Vec<PathBuf> = if a.styles.len() == 1 {
        none_or_path(&a.styles[0]).into_iter().collect()
    } else {
        if a.styles.iter().any(|s| none_or_path(s).is_none()) {
            anyhow::bail!("--style none cannot be combined with other --style images");
        }
        a.styles.iter().map(PathBuf::from).collect()
    };
    let mut cfg = TransferConfig::new(none_or_path(&a.content), styles, a.out);
    cfg.style_blend = a.style_blend;
    cfg.vgg = a.vgg;
    cfg.pooling = pooling;
    cfg.method = a.optimizer;
    cfg.iterations = a.iters;
    cfg.lr = a.lr;
    cfg.history = a.history;
    cfg.init = a.init;
    cfg.content_weight = a.content_weight;
    cfg.style_weight = a.style_weight;
    cfg.tv_weight = a.tv_weight;
    cfg.content_layers = a.content_layers;
    cfg.style_layers = a.style_layers;
    cfg.style_layer_weights = a.style_layer_weights;
    cfg.original_colors = a.original_colors;
    cfg.style_scale = a.style_scale;
    cfg.scales = a.scales;
    cfg.max_size = a.max_size;
    cfg.save_every = a.save_every;
    cfg.print_every = a.print_every;
    cfg.seed = a.seed;
    cfg.quiet = a.quiet;
    let flag = interrupt_flag();
    let r = transfer::run(&cfg, &device, &flag)?;
    for s in &r.scales {
        let ratio = if s.last.style > 0.0 {
            format!(" ({:.1}× lower)", s.initial.style / s.last.style)
        } else {
            String::new()
        };
        println!(
            "{} px ({}×{}): {} iterations, {} evaluations, {:.2} s/iter; style loss {:.4e} → {:.4e}{ratio}; content loss {:.4e} → {:.4e}",
            s.scale,
            s.size.0,
            s.size.1,
            s.iterations,
            s.evals,
            s.seconds / s.iterations.max(1) as f64,
            s.initial.style,
            s.last.style,
            s.initial.content,
            s.last.content
        );
    }
    if let Some(p) = r.psnr {
        println!("PSNR to the content image: {p:.2} dB");
    }
    println!("wrote {} (loss log {})", r.out.display(), r.log.display());
    if !r.intermediates.is_empty() {
        println!("{} intermediate images beside it", r.intermediates.len());
    }
    Ok(if r.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
