//! `easel`: train, resume, sample from and inspect generative image models.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use easel_train::fit::FitOutcome;
use easel_train::session;

mod eval_cmd;
mod latent_cmd;
mod style_cmd;
mod transfer_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "easel",
    version,
    about = "Generative image models on candle: train from recipes, resume, sample."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a recipe into a new run directory.
    Train {
        /// Recipe file (see `easel recipes`).
        recipe: PathBuf,
        /// Override a recipe value, type-checked: --set train.steps=2000 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// cpu, cuda, cuda:N, metal or auto.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Run directory (default runs/RECIPE-DATE-TIME).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Continue a run from its newest checkpoint (extend it with --set train.steps=M).
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        /// Override train.* or optim.* values: --set train.steps=4000.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// cpu, cuda, cuda:N, metal or auto.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Write a recipe's training images (after its resize/crop/pad) to a folder of PNGs, one
    /// subfolder per class when labelled (`ImageFolder` layout), e.g. to train another tool on them.
    ExportData {
        /// Recipe file; its `[data]` table and seed choose the images (shapes: the run's set).
        recipe: PathBuf,
        /// New (or empty) folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Only the first N images (default: all).
        #[arg(long)]
        n: Option<usize>,
        /// Override a recipe value: --set seed=2 --set data.split=test (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Draw images from a trained generator: a PNG grid plus the z vectors beside it.
    Sample {
        /// A run directory, its final/ folder, or a checkpoint folder.
        run_dir: PathBuf,
        /// Number of images.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Seed for the latent vectors.
        #[arg(long)]
        seed: Option<u64>,
        /// Conditional models: every image of this class (default: a class grid, one row per
        /// class, the same z in each column).
        #[arg(long)]
        class: Option<usize>,
        /// Output PNG (default RUN/samples/sample-sSEED-nN.png, or sheet-… with --sheet); z goes
        /// to OUT.z.safetensors and to the run's z bank (RUN/zbank).
        #[arg(long)]
        out: Option<PathBuf>,
        /// cpu, cuda, cuda:N, metal or auto.
        #[arg(long, default_value = "auto")]
        device: String,
        /// A numbered contact sheet: each image's z bank id under it, for `easel latent`.
        #[arg(long)]
        sheet: bool,
        /// Sample the trained generator's own weights, not its weight average (runs with
        /// `model.ema_decay` keep both; the average is the default).
        #[arg(long)]
        raw: bool,
    },
    /// List recipes with their descriptions.
    Recipes {
        /// Folder to search.
        #[arg(default_value = "recipes")]
        dir: PathBuf,
    },
    /// Describe a run: recipe, progress, checkpoints, samples.
    Inspect {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Measure a run's generator (or an image folder, or a classifier run) against real data:
    /// FID, KID, IS, precision/recall, SWD, nearest neighbours, diversity, mode coverage.
    Eval(eval_cmd::EvalArgs),
    /// Latent tools on the ids of `easel sample --sheet`: interpolate, arith, direction,
    /// classes (conditional models) and check (concept arithmetic confirmed by a classifier).
    Latent(latent_cmd::LatentArgs),
    /// Optimise an image on VGG features: style transfer (Gatys et al.), texture synthesis
    /// (--content none), feature inversion (--style none --layer relu3_1).
    Transfer(Box<transfer_cmd::TransferArgs>),
    /// Stylise images with a trained feed-forward style network (kind = "style").
    Stylize(style_cmd::StylizeArgs),
    /// Upscale images with a trained super-resolution network (kind = "sr"), tiled.
    Upscale(style_cmd::UpscaleArgs),
    /// Measure training speed (images/s with forward/backward/optimiser split).
    Bench {
        /// What to measure: `dcgan` (the pytorch/examples configurations) or a recipe file
        /// (its training step on a fixed random batch of the recipe's size).
        #[arg(default_value = "dcgan")]
        what: String,
        /// Recipe overrides when WHAT is a recipe, e.g. `train.batch_size=32`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Timed steps per configuration (after warm-up).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Only the 32×32 configuration (quick).
        #[arg(long)]
        quick: bool,
        /// cpu, cuda, cuda:N, metal or auto.
        #[arg(long, default_value = "auto")]
        device: String,
    },
}

/// First Ctrl-C: finish the step, save a checkpoint, exit. Second: exit at once.
fn install_interrupt() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let f = flag.clone();
    let handler = move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit without saving)");
            f.store(true, Ordering::SeqCst);
        } else {
            eprintln!("\ninterrupt: quitting without saving");
            std::process::exit(130);
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!(
            "warning: cannot install the Ctrl-C handler ({e}); Ctrl-C will stop without saving"
        );
    }
    flag
}

fn report(r: &session::RunReport) -> ExitCode {
    match &r.outcome {
        FitOutcome::Finished { step } => {
            println!(
                "finished {step} steps in {:.1} s; run directory {}",
                r.seconds,
                r.run_dir.display()
            );
            println!("sample from it: easel sample {}", r.run_dir.display());
            ExitCode::SUCCESS
        }
        FitOutcome::Interrupted { step, checkpoint } => {
            println!(
                "stopped at step {step}; checkpoint {}\ncontinue with: easel resume {}",
                checkpoint.display(),
                r.run_dir.display()
            );
            ExitCode::from(130)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train {
            recipe,
            set,
            device,
            run_dir,
            quiet,
        } => {
            let device = easel_train::device::parse_device(&device)?;
            let flag = install_interrupt();
            let req = session::TrainRequest {
                recipe,
                overrides: set,
                run_dir,
                device,
                quiet,
            };
            let r = session::train(&req, &flag)?;
            Ok(report(&r))
        }
        Command::Resume {
            run_dir,
            set,
            device,
            quiet,
        } => {
            let device = easel_train::device::parse_device(&device)?;
            let flag = install_interrupt();
            let r = session::resume(&run_dir, &set, &device, &flag, quiet)?;
            Ok(report(&r))
        }
        Command::Sample {
            run_dir,
            n,
            seed,
            class,
            out,
            device,
            sheet,
            raw,
        } => {
            let device = easel_train::device::parse_device(&device)?;
            let r = session::sample(&session::SampleRequest {
                model: run_dir,
                n,
                seed,
                class,
                out,
                device,
                sheet,
                weights: weights_flag(raw),
            })?;
            println!(
                "wrote {} (seed {}, model {})",
                r.png.display(),
                r.seed,
                r.model_dir.display()
            );
            println!("z vectors: {}", r.z.display());
            println!(
                "z bank ids {}..{} in {} (use them with `easel latent`)",
                r.ids.start,
                r.ids.end,
                r.bank.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Recipes { dir } => {
            let list = session::list_recipes(&dir)
                .with_context(|| format!("listing recipes in {}", dir.display()))?;
            let width = list
                .iter()
                .map(|(p, _)| p.display().to_string().len())
                .max()
                .unwrap_or(0);
            for (p, d) in list {
                println!("{:width$}  {d}", p.display().to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportData {
            recipe,
            out,
            n,
            set,
            quiet,
        } => {
            let recipe_path = recipe;
            let recipe = easel_train::recipe::Recipe::load(&recipe_path, &set)?;
            let r = easel_train::export::export(&recipe, &out, n, quiet)?;
            if !quiet {
                let layout = if r.classes.is_empty() {
                    "unlabelled".to_string()
                } else {
                    format!(
                        "{} class folders: {}",
                        r.classes.len(),
                        r.classes.join(", ")
                    )
                };
                println!(
                    "wrote {} images of {} to {} ({layout})",
                    r.images,
                    r.describe,
                    r.dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { run_dir } => {
            print!("{}", session::inspect(&run_dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => eval_cmd::run(args),
        Command::Latent(args) => latent_cmd::run(args),
        Command::Transfer(args) => transfer_cmd::run(*args),
        Command::Stylize(args) => style_cmd::stylize(args),
        Command::Upscale(args) => style_cmd::upscale(args),
        Command::Bench {
            what,
            set,
            steps,
            quick,
            device,
        } => {
            let device = easel_train::device::parse_device(&device)?;
            match what.as_str() {
                "dcgan" => {
                    easel_train::bench::dcgan(&device, steps, quick)?;
                    Ok(ExitCode::SUCCESS)
                }
                path if path.ends_with(".toml") => {
                    let recipe = easel_train::recipe::Recipe::load(std::path::Path::new(path), &set)?;
                    println!(
                        "easel bench {path} | device {} | {} timed steps after 1 warm-up",
                        easel_train::device::describe(&device),
                        steps.max(1)
                    );
                    let r = easel_train::bench::recipe(&recipe, &device, steps)?;
                    easel_train::bench::print_recipe(&r);
                    Ok(ExitCode::SUCCESS)
                }
                other => anyhow::bail!(
                    "unknown benchmark `{other}` (available: dcgan, or a recipe file such as recipes/wgan-mnist.toml)"
                ),
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (index 15 in both its v2 and v3 option enums; the
/// `libmimalloc-sys` bindings carry no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS after mimalloc's default 10 ms.
/// A training step frees and reallocates the same large buffers every few milliseconds; purging
/// them makes the kernel zero fresh pages on the next step (`clear_page_erms` in a profile).
/// `MIMALLOC_PURGE_DELAY=…` in the environment still wins. The resident set stays at the peak of a
/// step, which is what the step needs anyway (BENCHMARKS.md, issue 3).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it at each purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    tune_allocator();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--raw` → the trained generator; otherwise its weight average when the run keeps one.
pub(crate) fn weights_flag(raw: bool) -> session::GeneratorWeights {
    if raw {
        session::GeneratorWeights::Trained
    } else {
        session::GeneratorWeights::Averaged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index 15 is mimalloc's purge delay: its documented default (1000 ms in v3, the version
    /// `libmimalloc-sys` builds) before, "never purge" (-1) after.
    #[test]
    fn allocator_keeps_freed_memory() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the user's setting wins; nothing of ours to check
        }
        // SAFETY: reads a plain integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        tune_allocator();
        assert_eq!(get(), -1);
    }
}
