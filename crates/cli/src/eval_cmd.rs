//! `easel eval`: measure a run's generator, a folder of images or a classifier run against real
//! data; prints a table and writes a JSON report. The work is `easel_train::eval::evaluate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use easel_train::eval::{self, EvalRequest, ExtractorSpec, Metric};

/// A comma-separated metric list, checked while parsing the arguments.
#[derive(Clone, Debug)]
pub struct MetricList(pub Vec<Metric>);

fn parse_metrics(s: &str) -> Result<MetricList, String> {
    Metric::parse_list(s).map(MetricList)
}

/// Arguments of `easel eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (or its final/, best/ or a checkpoint folder) or a folder of images. A
    /// classifier run reports its test accuracy.
    pub target: PathBuf,
    /// Reference images: a recipe or dataset TOML (its data table, e.g.
    /// recipes/dcgan-mnist.toml) or an image folder. Default: the run's own data.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Change the reference data table: --set data.split=test --set data.dir=… (repeatable).
    #[arg(long = "set", value_name = "data.KEY=VALUE")]
    pub set: Vec<String>,
    /// Comma-separated: fid, kid, is, pr, swd, nn, div, modes. Default: fid,kid,pr,div, plus
    /// is,modes when the extractor gives class logits.
    #[arg(long, value_parser = parse_metrics)]
    pub metrics: Option<MetricList>,
    /// Images to generate (or at most this many of an image folder).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Reference images (a fixed seeded subset; default the whole set, at most 50 000).
    #[arg(long)]
    pub n_ref: Option<usize>,
    /// Feature extractor: inception (pytorch-fid weights, see the error message for where to
    /// get them), inception:WEIGHTS.safetensors, classifier:RUN_DIR (an easel classifier run:
    /// FID-MNIST, offline), vgg:WEIGHTS.safetensors (VGG16/19, 512-d relu5 features at 224×224)
    /// or pixels.
    #[arg(long, default_value = "inception")]
    pub extractor: ExtractorSpec,
    /// Seed of the latent vectors and of the metrics' random choices (default from the recipe).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where reference statistics are cached (default RUN/eval/cache or data/.cache/metrics).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// JSON report (default RUN/eval/eval-step-N-EXTRACTOR.json, or IMAGE_DIR.eval.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print only the table and the report path (no progress).
    #[arg(long, short)]
    pub quiet: bool,
    /// Measure a GAN run's trained generator, not its weight average (runs with
    /// `model.ema_decay` keep both; the average is the default).
    #[arg(long)]
    pub raw: bool,
}

/// Runs `easel eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let device = easel_train::device::parse_device(&args.device)?;
    let report = eval::evaluate(&EvalRequest {
        target: args.target,
        against: args.against,
        overrides: args.set,
        metrics: args.metrics.map(|m| m.0),
        n: args.n,
        n_ref: args.n_ref,
        extractor: args.extractor,
        out: args.out,
        seed: args.seed,
        cache_dir: args.cache_dir,
        device,
        quiet: args.quiet,
        weights: crate::weights_flag(args.raw),
    })?;
    print!("{}", report.table());
    println!(
        "{} vs {} images, seed {}, {:.1} s; reference cache: {}",
        report.n, report.n_ref, report.seed, report.seconds, report.cache
    );
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    println!("report {}", report.json.display());
    Ok(ExitCode::SUCCESS)
}
