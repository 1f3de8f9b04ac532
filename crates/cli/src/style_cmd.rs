//! `easel stylize` and `easel upscale`: apply a trained style or super-resolution network to
//! images. The work is `easel_train::steps::style::stylize` / `easel_train::steps::sr::upscale`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use easel_train::steps::{sr, style};

/// Arguments of `easel stylize`.
#[derive(Args, Debug)]
pub struct StylizeArgs {
    /// A style run directory (kind = "style"), its final/, or a checkpoint folder.
    pub model: PathBuf,
    /// Images (PNG/JPEG) and/or folders of images; any size.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (default RUN/stylized/); one PNG per input, named after it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Shrink each input by this factor before stylising (pytorch/examples' --content-scale).
    #[arg(long)]
    pub content_scale: Option<f64>,
    /// Keep the input's colours: stylised luminance with the input's chroma.
    #[arg(long)]
    pub original_colors: bool,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `easel upscale`.
#[derive(Args, Debug)]
pub struct UpscaleArgs {
    /// A super-resolution run directory (kind = "sr"), its final/, or a checkpoint folder.
    pub model: PathBuf,
    /// Images (PNG/JPEG) and/or folders of images.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The upscaling factor; must be the network's.
    #[arg(long)]
    pub scale: usize,
    /// Output folder (default RUN/upscaled/); NAME_xS.png per input.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tile side in input pixels (memory stays bounded by it).
    #[arg(long, default_value_t = 128)]
    pub tile: usize,
    /// Overlap of neighbouring tiles in input pixels (≥ the receptive field gives seamless tiles).
    #[arg(long, default_value_t = 16)]
    pub overlap: usize,
    /// The inputs are high-resolution originals: downsample them (bicubic), upscale, and report
    /// PSNR/SSIM on the Y channel with a border of SCALE pixels, next to bicubic.
    #[arg(long)]
    pub evaluate: bool,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `easel stylize`.
pub fn stylize(a: StylizeArgs) -> anyhow::Result<ExitCode> {
    let device = easel_train::device::parse_device(&a.device)?;
    let outs = style::stylize(&style::StylizeRequest {
        model: a.model,
        inputs: a.inputs,
        out: a.out,
        content_scale: a.content_scale,
        original_colors: a.original_colors,
        device,
        quiet: a.quiet,
    })?;
    for o in &outs {
        println!("wrote {}", o.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `easel upscale`.
pub fn upscale(a: UpscaleArgs) -> anyhow::Result<ExitCode> {
    let device = easel_train::device::parse_device(&a.device)?;
    let (outs, scores) = sr::upscale(&sr::UpscaleRequest {
        model: a.model,
        inputs: a.inputs,
        out: a.out,
        scale: a.scale,
        tile: a.tile,
        overlap: a.overlap,
        evaluate: a.evaluate,
        device,
        quiet: a.quiet,
    })?;
    for o in &outs {
        println!("wrote {}", o.display());
    }
    if !scores.is_empty() {
        println!(
            "{:<40} {:>10} {:>8} {:>12} {:>8}",
            "image (Y, border = scale)", "PSNR net", "SSIM", "PSNR bicubic", "SSIM"
        );
        for s in &scores {
            let name = s
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!(
                "{name:<40} {:>10.2} {:>8.4} {:>12.2} {:>8.4}",
                s.network.0, s.network.1, s.bicubic.0, s.bicubic.1
            );
        }
        let n = scores.len() as f64;
        let avg = |f: &dyn Fn(&sr::UpscaleScore) -> f64| scores.iter().map(f).sum::<f64>() / n;
        println!(
            "{:<40} {:>10.2} {:>8.4} {:>12.2} {:>8.4}",
            "mean",
            avg(&|s| s.network.0),
            avg(&|s| s.network.1),
            avg(&|s| s.bicubic.0),
            avg(&|s| s.bicubic.1)
        );
    }
    Ok(ExitCode::SUCCESS)
}
