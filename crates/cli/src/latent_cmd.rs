//! `easel latent`: interpolation, concept arithmetic, attribute directions and class sweeps on the
//! ids of a run's z bank (written by `easel sample`), and the classifier check of concept
//! arithmetic. The work is `easel_latent`'s; this file parses arguments, loads the generator the
//! ids were drawn for, and prints where each PNG went.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use easel_latent::bank::{self, Entry, ZBank};
use easel_latent::check::{self, CheckSpec, Pool};
use easel_latent::maths::{self, Interp};
use easel_latent::render::{self, Latent, Renderer, Term};
use easel_train::session;

/// A comma-separated list of z bank ids (`3,17,22`), checked while parsing the arguments.
#[derive(Clone, Debug)]
pub struct Ids(pub Vec<u64>);

fn parse_ids(s: &str) -> Result<Ids, String> {
    bank::parse_ids(s).map(Ids)
}

/// Arguments of `easel latent`.
#[derive(Args, Debug)]
pub struct LatentArgs {
    #[command(subcommand)]
    command: LatentCommand,
}

/// Options every latent command shares.
#[derive(Args, Debug)]
struct Common {
    /// Conditional models: render with this class (default: the class the ids were drawn with).
    #[arg(long)]
    class: Option<u32>,
    /// Render with this model folder (a run, its final/ or a checkpoint) instead of the one the
    /// ids were drawn for.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output PNG (default RUN/samples/latent/…).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Render with the trained generator's own weights, not its weight average (runs with
    /// `model.ema_decay` keep both; the average is the default).
    #[arg(long)]
    raw: bool,
}

#[derive(Subcommand, Debug)]
enum LatentCommand {
    /// Interpolate between ids: one row per --from/--to pair, both ends included.
    Interpolate {
        /// The run directory (its z bank is RUN/zbank, written by `easel sample RUN --sheet`).
        run: PathBuf,
        /// Start id(s), e.g. 3 or 3,5,8.
        #[arg(long, value_parser = parse_ids)]
        from: Ids,
        /// End id(s), one per start id (or one for all).
        #[arg(long, value_parser = parse_ids)]
        to: Ids,
        /// Images per row, ends included.
        #[arg(long, default_value_t = 9)]
        steps: usize,
        /// Spherical interpolation (great circle) instead of a straight line.
        #[arg(long)]
        slerp: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Concept arithmetic: each --plus/--minus is a concept (the mean of its ids); the result Y
    /// and 8 jittered neighbours are drawn in a 3×3 grid beside the exemplars.
    Arith {
        /// The run directory.
        run: PathBuf,
        /// Ids of a concept to add, e.g. 3,17,22 (repeatable).
        #[arg(long, value_parser = parse_ids)]
        plus: Vec<Ids>,
        /// Ids of a concept to subtract (repeatable).
        #[arg(long, value_parser = parse_ids)]
        minus: Vec<Ids>,
        /// Neighbours are Y + U(−J, J) per coordinate (the DCGAN paper's 0.25); 0 draws Y alone.
        #[arg(long, default_value_t = 0.25)]
        jitter: f32,
        /// Seed of the jitter.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Attribute direction d = mean(--pos) − mean(--neg), and walks z + t·d from each --apply id.
    Direction {
        /// The run directory.
        run: PathBuf,
        /// Ids showing the attribute, e.g. 1,2,3,4.
        #[arg(long, value_parser = parse_ids)]
        pos: Ids,
        /// Ids without it (or with its opposite).
        #[arg(long, value_parser = parse_ids)]
        neg: Ids,
        /// Id(s) to walk along the direction (one row each).
        #[arg(long, value_parser = parse_ids)]
        apply: Ids,
        /// Images per walk.
        #[arg(long, default_value_t = 9)]
        steps: usize,
        /// Range of t, `LO,HI` (0,1 walks from the id to id + d).
        #[arg(long, default_value = "0,1", allow_hyphen_values = true)]
        span: String,
        #[command(flatten)]
        common: Common,
    },
    /// Conditional models: each id's z rendered as every class (rows: fixed z across classes;
    /// columns: fixed class across z).
    Classes {
        /// The run directory.
        run: PathBuf,
        /// Ids, one row each.
        #[arg(long, value_parser = parse_ids)]
        ids: Ids,
        /// Classes, one column each (default all).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Confirm concept arithmetic with a classifier: exemplars of each concept are picked by the
    /// classifier from a pool of samples (added to the z bank); random exemplar sets give Y, and
    /// the rate at which Y is classified as --expect is reported against chance.
    Check {
        /// The run directory of the generator.
        run: PathBuf,
        /// An easel classifier run trained on the same data (e.g. recipes/classifier-shapes.toml).
        #[arg(long)]
        classifier: PathBuf,
        /// A class name (or number) of the classifier to add, e.g. red-circle (repeatable).
        #[arg(long)]
        plus: Vec<String>,
        /// A class to subtract, e.g. red-square (repeatable).
        #[arg(long)]
        minus: Vec<String>,
        /// The class the result should be, e.g. blue-circle.
        #[arg(long)]
        expect: String,
        /// Random exemplar sets.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Exemplars per concept.
        #[arg(long, default_value_t = 3)]
        per_concept: usize,
        /// Samples in the pool exemplars are picked from.
        #[arg(long, default_value_t = 2000)]
        pool: usize,
        /// Only samples classified with at least this probability are exemplars.
        #[arg(long, default_value_t = 0.9)]
        min_confidence: f32,
        /// Jitter of Y's 8 neighbours (also classified).
        #[arg(long, default_value_t = 0.25)]
        jitter: f32,
        /// Seed of the pool and of the picks.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Render with this model folder instead of the run's final/ (or newest checkpoint).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output PNG (default RUN/samples/latent/check-EXPECT-sSEED.png; the JSON report beside it).
        #[arg(long)]
        out: Option<PathBuf>,
        /// cpu, cuda, cuda:N, metal or auto.
        #[arg(long, default_value = "auto")]
        device: String,
    },
}

/// The generator and bank entries a command works on.
struct Loaded {
    bank: ZBank,
    entries: Vec<Entry>,
    generator: Box<dyn easel_latent::ImageGenerator>,
    mode: easel_latent::BnMode,
    device: candle_core::Device,
    model: PathBuf,
}

/// Opens the bank of `run`, fetches `ids`, and loads the model they were drawn for (or `model`).
fn load(run: &Path, ids: &[u64], common: &Common) -> anyhow::Result<Loaded> {
    let (model, raw) = (common.model.as_deref(), common.raw);
    let device = easel_train::device::parse_device(&common.device)?;
    let bank = easel_train::run_dir::open_bank(run)?;
    let entries = bank.get(ids)?;
    let model = match model {
        Some(m) => session::model_dir(m)?,
        None => {
            let m = bank.model_of(&entries)?;
            if !m.exists() {
                bail!(
                    "{}: the model these ids were drawn for no longer exists (old checkpoints are removed as training goes on); pass --model {} to render them with the run's current model",
                    m.display(),
                    bank.run().display()
                );
            }
            m
        }
    };
    let (_, generator, mode) =
        session::load_generator_with(&model, &device, crate::weights_flag(raw))
            .with_context(|| format!("loading the generator in {}", model.display()))?;
    let want = bank.index().latent_dim;
    if generator.latent_dim() != want {
        bail!(
            "wrong z size: the z bank {} holds z of size {want}, but the generator in {} takes z of size {}; pass --model with a checkpoint of the run the bank belongs to",
            bank.dir().display(),
            model.display(),
            generator.latent_dim()
        );
    }
    Ok(Loaded {
        bank,
        entries,
        generator,
        mode,
        device,
        model,
    })
}

/// `RUN/samples/latent/NAME.png`, or `out`.
fn output(bank: &ZBank, out: Option<PathBuf>, name: &str) -> PathBuf {
    out.unwrap_or_else(|| {
        easel_train::run_dir::latent_figures(bank.run()).join(format!("{name}.png"))
    })
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join("-")
}

/// The order in which `--plus`/`--minus` appear on the command line (clap keeps each list's
/// order but not their interleaving), so `A − B + C` is drawn in the order written.
fn term_signs(plus: usize, minus: usize) -> Vec<bool> {
    let signs: Vec<bool> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .filter_map(|a| {
            if a == "--plus" || a.starts_with("--plus=") {
                Some(true)
            } else if a == "--minus" || a.starts_with("--minus=") {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    let p = signs.iter().filter(|&&s| s).count();
    if p == plus && signs.len() - p == minus {
        signs
    } else {
        let mut v = vec![true; plus];
        v.extend(std::iter::repeat_n(false, minus));
        v
    }
}

fn parse_span(s: &str) -> anyhow::Result<(f64, f64)> {
    let bad = || anyhow::anyhow!("--span {s}: expected LO,HI such as 0,1 or -1,1");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let lo: f64 = a.trim().parse().map_err(|_| bad())?;
    let hi: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(lo.is_finite() && hi.is_finite()) || lo == hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Runs `easel latent …`.
pub fn run(args: LatentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LatentCommand::Interpolate {
            run,
            from,
            to,
            steps,
            slerp,
            common,
        } => {
            let (from, to) = (from.0, to.0);
            let to = if to.len() == 1 && from.len() > 1 {
                vec![to[0]; from.len()]
            } else {
                to
            };
            if from.len() != to.len() {
                bail!(
                    "--from has {} ids but --to has {}: give one end per start (or a single --to for all)",
                    from.len(),
                    to.len()
                );
            }
            let all: Vec<u64> = from.iter().chain(&to).copied().collect();
            let l = load(&run, &all, &common)?;
            let r = Renderer::new(l.generator.as_ref(), l.mode, &l.device);
            let lat: Vec<Latent> = l.entries.into_iter().map(Latent::from).collect();
            let n = from.len();
            let pairs: Vec<(Latent, Latent)> = (0..n)
                .map(|i| (lat[i].clone(), lat[n + i].clone()))
                .collect();
            let how = if slerp { Interp::Slerp } else { Interp::Lerp };
            let canvas = render::interpolation(&r, &pairs, steps, how, common.class)?;
            let name = format!(
                "interpolate-{}-to-{}-{}{}",
                join(&from),
                join(&to),
                steps,
                if slerp { "-slerp" } else { "" }
            );
            let png = output(&l.bank, common.out, &name);
            canvas.save_png(&png)?;
            println!(
                "wrote {} ({} row(s) of {steps}, {}; model {})",
                png.display(),
                n,
                if slerp { "slerp" } else { "lerp" },
                l.model.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LatentCommand::Arith {
            run,
            plus,
            minus,
            jitter,
            seed,
            common,
        } => {
            if plus.is_empty() && minus.is_empty() {
                bail!("give the expression as --plus IDS [--minus IDS] [--plus IDS] …, e.g. --plus 3,17,22 --minus 5,9,40 --plus 11,12,13");
            }
            let signs = term_signs(plus.len(), minus.len());
            let (mut p, mut m) = (plus.into_iter(), minus.into_iter());
            let groups: Vec<(f64, Vec<u64>)> = signs
                .iter()
                .filter_map(|&s| {
                    if s {
                        p.next().map(|g| (1.0, g.0))
                    } else {
                        m.next().map(|g| (-1.0, g.0))
                    }
                })
                .collect();
            let all: Vec<u64> = groups.iter().flat_map(|(_, g)| g.clone()).collect();
            let l = load(&run, &all, &common)?;
            let r = Renderer::new(l.generator.as_ref(), l.mode, &l.device);
            let mut lat = l.entries.into_iter().map(Latent::from);
            let terms: Vec<Term> = groups
                .iter()
                .map(|(w, g)| Term {
                    weight: *w,
                    members: lat.by_ref().take(g.len()).collect(),
                })
                .collect();
            let a = render::arithmetic(&r, &terms, jitter, seed, common.class)?;
            let expr: String = groups
                .iter()
                .map(|(w, g)| format!("{}{}", if *w > 0.0 { "p" } else { "m" }, join(g)))
                .collect::<Vec<_>>()
                .join("-");
            let png = output(&l.bank, common.out, &format!("arith-{expr}"));
            a.canvas.save_png(&png)?;
            let text: Vec<String> = groups
                .iter()
                .map(|(w, g)| {
                    format!(
                        "{} mean({})",
                        if *w > 0.0 { "+" } else { "−" },
                        g.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                    )
                })
                .collect();
            println!(
                "wrote {} (Y = {}; |Y| = {:.2}; {} neighbours ±{jitter}; model {})",
                png.display(),
                text.join(" "),
                maths::norm(&a.result),
                a.neighbours.len(),
                l.model.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LatentCommand::Direction {
            run,
            pos,
            neg,
            apply,
            steps,
            span,
            common,
        } => {
            let span = parse_span(&span)?;
            let all: Vec<u64> = pos
                .0
                .iter()
                .chain(&neg.0)
                .chain(&apply.0)
                .copied()
                .collect();
            let l = load(&run, &all, &common)?;
            let r = Renderer::new(l.generator.as_ref(), l.mode, &l.device);
            let lat: Vec<Latent> = l.entries.into_iter().map(Latent::from).collect();
            let (np, nn) = (pos.0.len(), neg.0.len());
            let (canvas, d) = render::direction(
                &r,
                &lat[..np],
                &lat[np..np + nn],
                &lat[np + nn..],
                steps,
                span,
                common.class,
            )?;
            let name = format!(
                "direction-p{}-n{}-a{}",
                join(&pos.0),
                join(&neg.0),
                join(&apply.0)
            );
            let png = output(&l.bank, common.out, &name);
            canvas.save_png(&png)?;
            println!(
                "wrote {} (|d| = {:.2}; t from {} to {} in {steps} steps; model {})",
                png.display(),
                maths::norm(&d),
                span.0,
                span.1,
                l.model.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LatentCommand::Classes {
            run,
            ids,
            classes,
            common,
        } => {
            let l = load(&run, &ids.0, &common)?;
            let k = l.generator.num_classes();
            if k == 0 {
                bail!(
                    "the generator in {} is unconditional: class sweeps need a conditional model (cgan, or a lapgan with conditional = true)",
                    l.model.display()
                );
            }
            let classes = if classes.is_empty() {
                (0..k as u32).collect()
            } else {
                classes
            };
            if let Some(c) = classes.iter().find(|&&c| c as usize >= k) {
                bail!(
                    "--classes: class {c} is out of range (the generator has classes 0..{})",
                    k - 1
                );
            }
            let r = Renderer::new(l.generator.as_ref(), l.mode, &l.device);
            let lat: Vec<Latent> = l.entries.into_iter().map(Latent::from).collect();
            let canvas = render::class_grid(&r, &lat, &classes)?;
            let png = output(&l.bank, common.out, &format!("classes-{}", join(&ids.0)));
            canvas.save_png(&png)?;
            println!(
                "wrote {} ({} z × {} classes; model {})",
                png.display(),
                lat.len(),
                classes.len(),
                l.model.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LatentCommand::Check {
            run,
            classifier,
            plus,
            minus,
            expect,
            trials,
            per_concept,
            pool,
            min_confidence,
            jitter,
            seed,
            model,
            out,
            device,
        } => check_cmd(CheckArgs {
            run,
            classifier,
            plus,
            minus,
            expect,
            spec: CheckSpec {
                terms: Vec::new(),
                target: 0,
                per_concept,
                trials,
                seed,
                min_confidence,
                jitter,
            },
            pool,
            model,
            out,
            device,
        }),
    }
}

struct CheckArgs {
    run: PathBuf,
    classifier: PathBuf,
    plus: Vec<String>,
    minus: Vec<String>,
    expect: String,
    spec: CheckSpec,
    pool: usize,
    model: Option<PathBuf>,
    out: Option<PathBuf>,
    device: String,
}

fn check_cmd(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let device = easel_train::device::parse_device(&a.device)?;
    if a.pool == 0 {
        bail!("--pool must be at least 1 (e.g. 2000)");
    }
    let model = session::model_dir(a.model.as_deref().unwrap_or(&a.run))?;
    let (_, generator, mode) = session::load_generator(&model, &device)
        .with_context(|| format!("loading the generator in {}", model.display()))?;
    if generator.num_classes() > 0 {
        bail!(
            "the generator in {} is conditional: the check needs an unconditional generator (the classifier picks the concepts)",
            model.display()
        );
    }
    // The classifier and its class names.
    let cdir = session::model_dir(&a.classifier)?;
    let crecipe = easel_train::recipe::Recipe::load(&easel_train::run_dir::recipe(&cdir), &[])?;
    let names = easel_train::eval::RealData::Dataset {
        data: crecipe.data.clone(),
        seed: crecipe.seed,
    }
    .open(None)
    .with_context(|| format!("opening the data of the classifier {}", cdir.display()))?
    .class_names();
    let extractor = easel_train::eval::load_extractor(
        &easel_train::eval::ExtractorSpec::Classifier(cdir.clone()),
        generator.image_shape(),
        &device,
    )?;
    let k = extractor.num_classes().unwrap_or(names.len());
    let class_of = |s: &str| -> anyhow::Result<u32> {
        if let Some(i) = names.iter().position(|n| n == s) {
            return Ok(i as u32);
        }
        match s.parse::<u32>() {
            Ok(i) if (i as usize) < k => Ok(i),
            _ => bail!(
                "`{s}` is not a class of the classifier in {} (its classes: {})",
                cdir.display(),
                names.join(", ")
            ),
        }
    };
    let signs = term_signs(a.plus.len(), a.minus.len());
    let (mut p, mut m) = (a.plus.iter(), a.minus.iter());
    let mut terms = Vec::new();
    for s in signs {
        let (w, name) = if s { (1.0, p.next()) } else { (-1.0, m.next()) };
        if let Some(name) = name {
            terms.push((w, class_of(name)?));
        }
    }
    if terms.is_empty() {
        bail!("give the expression as --plus CLASS --minus CLASS --plus CLASS, e.g. --plus red-circle --minus red-square --plus blue-square");
    }
    let target = class_of(&a.expect)?;
    let spec = CheckSpec {
        terms,
        target,
        ..a.spec
    };

    // The pool: seeded normal z, added to the run's z bank so its ids can be reused.
    let nz = generator.latent_dim();
    let zs = maths::normal(a.pool, nz, spec.seed);
    let run_root = easel_train::run_dir::run_of(&a.run);
    let mut bank = ZBank::open_or_create(&run_root, nz, 0, generator.image_shape())?;
    let step = easel_train::checkpoint::read_state(&model)?.step;
    let flat: Vec<f32> = zs.iter().flatten().copied().collect();
    let ids = bank.append(
        &flat,
        None,
        &bank::DrawInfo {
            model_dir: &model,
            step,
            seed: spec.seed,
            class: None,
            image: None,
            source: "latent check pool",
        },
    )?;
    let r = Renderer::new(generator.as_ref(), mode, &device);
    let classify = |x: &candle_core::Tensor| -> candle_core::Result<candle_core::Tensor> {
        extractor
            .logits(x)?
            .ok_or_else(|| candle_core::Error::Msg("the classifier gave no logits".into()))
    };
    let (predicted, confidence) = check::classify(&r, &zs, &classify)?;
    let pool = Pool {
        ids: ids.clone().collect(),
        z: zs,
        predicted,
        confidence,
    };
    let rep = check::run(&r, &pool, &classify, &spec, k, &names)?;

    let name = |c: u32| names.get(c as usize).cloned().unwrap_or(c.to_string());
    let expr: Vec<String> = spec
        .terms
        .iter()
        .map(|&(w, c)| format!("{}{}", if w > 0.0 { "+" } else { "−" }, name(c)))
        .collect();
    let png = a.out.unwrap_or_else(|| {
        easel_train::run_dir::latent_figures(bank.run()).join(format!(
            "check-{}-s{}.png",
            name(target),
            spec.seed
        ))
    });
    rep.figure.save_png(&png)?;
    let json = png.with_extension("json");
    let report = check::report_json(&rep, &spec, &names, &model, &cdir, ids.clone());
    std::fs::write(&json, report).with_context(|| format!("writing {}", json.display()))?;

    let eligible: Vec<String> = spec
        .terms
        .iter()
        .zip(&rep.candidates)
        .map(|(&(_, c), n)| format!("{} {n}", name(c)))
        .collect();
    let t = rep.trials.len();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "pool: {} samples of {} (z bank ids {}..{}), classified by {}; exemplars with p ≥ {}: {}",
        a.pool,
        model.display(),
        ids.start,
        ids.end,
        cdir.display(),
        spec.min_confidence,
        eligible.join(", ")
    );
    println!(
        "Y = {} (means of {} exemplars): classified {} in {}/{t} trials ({:.1} %)",
        expr.join(" "),
        spec.per_concept,
        name(target),
        rep.hits,
        pct(rep.hits, t)
    );
    if rep.neighbour_total > 0 {
        println!(
            "  its 8 neighbours Y + U(±{}): {}/{} ({:.1} %)",
            spec.jitter,
            rep.neighbour_hits,
            rep.neighbour_total,
            pct(rep.neighbour_hits, rep.neighbour_total)
        );
    }
    let attrs: Vec<String> = rep
        .attribute_hits(target, &names)
        .into_iter()
        .map(|(a, n)| format!("{a} {n}/{t}"))
        .collect();
    if attrs.len() > 1 {
        println!("  attributes of Y: {}", attrs.join(", "));
    }
    println!(
        "chance: uniform 1/{k} = {:.1} %; base rate of {} in the pool {:.1} %; same expression on class-blind random exemplars {}/{t} ({:.1} %)",
        100.0 * rep.uniform,
        name(target),
        100.0 * rep.base_rate,
        rep.control_hits,
        pct(rep.control_hits, t)
    );
    println!("wrote {} and {}", png.display(), json.display());
    Ok(ExitCode::SUCCESS)
}
