//! Confirming concept arithmetic with a classifier, as issue 6 asks: on a generator trained on
//! labelled data (easel's shapes, whose shape and colour are known), a classifier trained on the
//! same data picks exemplars of each concept from a pool of generated samples; random exemplar
//! triples give `Y = Σ ± mean(exemplars)`, and the classifier says whether Y shows the expected
//! concept (e.g. red circles − red squares + blue squares → "blue circle").
//!
//! Chance is reported three ways: uniform over the classes; the base rate (how often a random
//! sample of the generator is classified as the target); and a control that runs the same
//! expression on random pool exemplars, ignoring their classes (what the procedure gives when
//! the concepts carry no meaning).

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::canvas::{self, Canvas, GREEN, INK, RED};
use crate::maths;
use crate::render::{Renderer, PAD};
use crate::{invalid, Result};

/// Class logits `[B, K]` for images `[B, C, H, W]` in [-1, 1].
pub type Classify<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

/// Images per classifier call.
const BATCH: usize = 128;

/// Predicted class and its softmax probability for every z.
pub fn classify(
    r: &Renderer,
    zs: &[Vec<f32>],
    classifier: &Classify,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let mut pred = Vec::with_capacity(zs.len());
    let mut conf = Vec::with_capacity(zs.len());
    for chunk in zs.chunks(BATCH) {
        let images = r.images(chunk, None)?;
        let logits = classifier(&images)?;
        let (b, k) = logits.dims2()?;
        if b != chunk.len() {
            return invalid(format!(
                "the classifier returned {b} rows of logits for {} images",
                chunk.len()
            ));
        }
        let rows = logits
            .to_dtype(candle_core::DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec2::<f32>()?;
        for row in rows {
            let (arg, max) =
                row.iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |(a, m), (i, &v)| {
                        if v > m {
                            (i, v)
                        } else {
                            (a, m)
                        }
                    });
            let denom: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            pred.push(arg as u32);
            conf.push((1.0 / denom) as f32);
            debug_assert!(arg < k);
        }
    }
    Ok((pred, conf))
}

/// The experiment's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// The expression: (weight, classifier class) per term, e.g. `[(1, red-circle),
    /// (−1, red-square), (1, blue-square)]`.
    pub terms: Vec<(f64, u32)>,
    /// The class the result should be (e.g. blue-circle).
    pub target: u32,
    /// Exemplars per concept (the DCGAN paper uses 3).
    pub per_concept: usize,
    /// Random exemplar triples (≥ 20 for the report).
    pub trials: usize,
    /// Seed of the exemplar picks and the jitter.
    pub seed: u64,
    /// Only pool samples the classifier gives at least this probability count as exemplars.
    pub min_confidence: f32,
    /// Jitter of the 8 neighbours of each Y (0.25 in the paper); 0 = no neighbours.
    pub jitter: f32,
}

/// The pool of generated samples exemplars are picked from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// z bank ids.
    pub ids: Vec<u64>,
    /// The vectors.
    pub z: Vec<Vec<f32>>,
    /// Predicted class of each sample.
    pub predicted: Vec<u32>,
    /// Probability of that prediction.
    pub confidence: Vec<f32>,
}

/// One random exemplar triple.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The exemplar ids of every term.
    pub members: Vec<Vec<u64>>,
    /// Predicted class of Y.
    pub predicted: u32,
    /// Its probability.
    pub confidence: f32,
    /// Predicted classes of Y's 8 jittered neighbours.
    pub neighbours: Vec<u32>,
    /// Predicted class of the control (same expression on class-blind random exemplars).
    pub control: u32,
}

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Every trial.
    pub trials: Vec<Trial>,
    /// Trials whose Y is classified as the target.
    pub hits: usize,
    /// Neighbours (over all trials) classified as the target.
    pub neighbour_hits: usize,
    /// Neighbours classified.
    pub neighbour_total: usize,
    /// Controls classified as the target.
    pub control_hits: usize,
    /// Fraction of the pool classified as the target.
    pub base_rate: f64,
    /// 1 / number of classes.
    pub uniform: f64,
    /// Pool samples eligible as exemplars of each term.
    pub candidates: Vec<usize>,
    /// The picture: one row per trial — each term's mean image, `=`, Y (outlined green when
    /// classified as the target, red otherwise).
    pub figure: Canvas,
}

impl CheckReport {
    /// Hit rate of Y.
    pub fn rate(&self) -> f64 {
        self.hits as f64 / self.trials.len().max(1) as f64
    }

    /// For class names made of `-`-separated attributes (`blue-circle`): how many trials' Y
    /// agree with the target on each attribute — `[("blue", 19), ("circle", 17)]`.
    pub fn attribute_hits(&self, target: u32, names: &[String]) -> Vec<(String, usize)> {
        let parts = |c: u32| -> Vec<String> {
            names
                .get(c as usize)
                .map(|n| n.split('-').map(str::to_string).collect())
                .unwrap_or_default()
        };
        let want = parts(target);
        (0..want.len())
            .map(|i| {
                let n = self
                    .trials
                    .iter()
                    .filter(|t| parts(t.predicted).get(i) == Some(&want[i]))
                    .count();
                (want[i].clone(), n)
            })
            .collect()
    }
}

/// The report as pretty JSON: settings, rates, chance and every trial's exemplar ids (so any
/// trial can be redrawn with `easel latent arith RUN --plus … --minus … --plus …`).
pub fn report_json(
    rep: &CheckReport,
    spec: &CheckSpec,
    names: &[String],
    model: &std::path::Path,
    classifier: &std::path::Path,
    pool_ids: std::ops::Range<u64>,
) -> String {
    let name = |c: u32| {
        names
            .get(c as usize)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    let t = rep.trials.len().max(1) as f64;
    let v = serde_json::json!({
        "model": model.display().to_string(),
        "classifier": classifier.display().to_string(),
        "terms": spec.terms.iter().map(|&(w, c)| serde_json::json!({"weight": w, "class": name(c)})).collect::<Vec<_>>(),
        "expect": name(spec.target),
        "per_concept": spec.per_concept,
        "trials": rep.trials.len(),
        "seed": spec.seed,
        "min_confidence": spec.min_confidence,
        "jitter": spec.jitter,
        "pool_ids": [pool_ids.start, pool_ids.end],
        "candidates": rep.candidates,
        "hits": rep.hits,
        "rate": rep.hits as f64 / t,
        "neighbour_hits": rep.neighbour_hits,
        "neighbour_total": rep.neighbour_total,
        "control_hits": rep.control_hits,
        "control_rate": rep.control_hits as f64 / t,
        "base_rate": rep.base_rate,
        "uniform": rep.uniform,
        "attributes": rep.attribute_hits(spec.target, names).into_iter().map(|(a, n)| serde_json::json!({"value": a, "hits": n})).collect::<Vec<_>>(),
        "trial_list": rep.trials.iter().map(|tr| serde_json::json!({
            "exemplars": tr.members,
            "predicted": name(tr.predicted),
            "confidence": tr.confidence,
            "neighbours": tr.neighbours.iter().map(|&c| name(c)).collect::<Vec<_>>(),
            "control": name(tr.control),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `k` distinct picks from `from`.
fn pick(rng: &mut ChaCha8Rng, from: &[usize], k: usize) -> Vec<usize> {
    let mut v = from.to_vec();
    for i in 0..k.min(v.len()) {
        let j = rng.random_range(i..v.len());
        v.swap(i, j);
    }
    v.truncate(k);
    v
}

/// Runs the experiment on `pool` (see the module docs). `names` are the classifier's class
/// names (for error messages).
pub fn run(
    r: &Renderer,
    pool: &Pool,
    classifier: &Classify,
    spec: &CheckSpec,
    num_classes: usize,
    names: &[String],
) -> Result<CheckReport> {
    if spec.terms.is_empty() {
        return invalid("the expression has no terms");
    }
    if spec.trials == 0 || spec.per_concept == 0 {
        return invalid("--trials and --per-concept must be at least 1");
    }
    let n = pool.z.len();
    if n == 0 || pool.predicted.len() != n || pool.confidence.len() != n || pool.ids.len() != n {
        return invalid("an empty or inconsistent pool");
    }
    let name = |c: u32| {
        names
            .get(c as usize)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    let mut eligible = Vec::new();
    for &(_, class) in &spec.terms {
        let e: Vec<usize> = (0..n)
            .filter(|&i| pool.predicted[i] == class && pool.confidence[i] >= spec.min_confidence)
            .collect();
        if e.len() < spec.per_concept {
            let mut counts: Vec<(usize, u32)> = Vec::new();
            for c in 0..num_classes.max(1) as u32 {
                let k = (0..n)
                    .filter(|&i| {
                        pool.predicted[i] == c && pool.confidence[i] >= spec.min_confidence
                    })
                    .count();
                if k > 0 {
                    counts.push((k, c));
                }
            }
            counts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let common: Vec<String> = counts
                .iter()
                .take(5)
                .map(|&(k, c)| format!("{} ({k})", name(c)))
                .collect();
            return invalid(format!(
                "only {} of the {n} pool samples are classified `{}` with probability ≥ {}; {} exemplars are needed — draw a bigger pool (--pool) or lower --min-confidence (the pool's most frequent classes: {})",
                e.len(),
                name(class),
                spec.min_confidence,
                spec.per_concept,
                common.join(", ")
            ));
        }
        eligible.push(e);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let everyone: Vec<usize> = (0..n).collect();
    let mut members = Vec::new();
    let mut ys = Vec::new();
    let mut controls = Vec::new();
    let mut means_all = Vec::new();
    for _ in 0..spec.trials {
        let mut terms = Vec::new();
        let mut ctl_terms = Vec::new();
        let mut ids = Vec::new();
        for (e, &(w, _)) in eligible.iter().zip(&spec.terms) {
            let picked = pick(&mut rng, e, spec.per_concept);
            let zs: Vec<&[f32]> = picked.iter().map(|&i| pool.z[i].as_slice()).collect();
            terms.push((w, maths::mean(&zs)?));
            ids.push(picked.iter().map(|&i| pool.ids[i]).collect::<Vec<u64>>());
            let random = pick(&mut rng, &everyone, spec.per_concept);
            let zs: Vec<&[f32]> = random.iter().map(|&i| pool.z[i].as_slice()).collect();
            ctl_terms.push((w, maths::mean(&zs)?));
        }
        let y = maths::signed_sum(
            &terms
                .iter()
                .map(|(w, m)| (*w, m.as_slice()))
                .collect::<Vec<_>>(),
        )?;
        let c = maths::signed_sum(
            &ctl_terms
                .iter()
                .map(|(w, m)| (*w, m.as_slice()))
                .collect::<Vec<_>>(),
        )?;
        means_all.push(terms.into_iter().map(|(_, m)| m).collect::<Vec<_>>());
        members.push(ids);
        ys.push(y);
        controls.push(c);
    }
    let neighbours: Vec<Vec<f32>> = if spec.jitter > 0.0 {
        ys.iter()
            .enumerate()
            .map(|(t, y)| maths::jitter(y, 8, spec.jitter, spec.seed ^ ((t as u64 + 1) << 20)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    let mut all = ys.clone();
    all.extend(controls.iter().cloned());
    all.extend(neighbours.iter().cloned());
    let (pred, conf) = classify(r, &all, classifier)?;
    let t = spec.trials;
    let nb = if spec.jitter > 0.0 { 8 } else { 0 };
    let mut trials = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        trials.push(Trial {
            members: m,
            predicted: pred[i],
            confidence: conf[i],
            neighbours: pred[2 * t + i * nb..2 * t + (i + 1) * nb].to_vec(),
            control: pred[t + i],
        });
    }
    let hits = trials.iter().filter(|x| x.predicted == spec.target).count();
    let control_hits = trials.iter().filter(|x| x.control == spec.target).count();
    let neighbour_hits = trials
        .iter()
        .flat_map(|x| &x.neighbours)
        .filter(|&&c| c == spec.target)
        .count();
    let base_rate = pool.predicted.iter().filter(|&&c| c == spec.target).count() as f64 / n as f64;

    // Figure: per trial, the term means, =, Y.
    let mut zs: Vec<Vec<f32>> = Vec::new();
    for (means, y) in means_all.iter().zip(&ys) {
        zs.extend(means.iter().cloned());
        zs.push(y.clone());
    }
    let tiles = r.tiles(&zs, None)?;
    let per = spec.terms.len() + 1;
    let mut rows = Vec::new();
    for (i, trial) in trials.iter().enumerate() {
        let ts = &tiles[i * per..(i + 1) * per];
        let mut parts = Vec::new();
        for (j, &(w, _)) in spec.terms.iter().enumerate() {
            let (sign, ink) = if w < 0.0 { ("-", RED) } else { ("+", GREEN) };
            parts.push(Canvas::text(sign, 1, 1, ink));
            parts.push(canvas::sheet(&ts[j..j + 1], 1, PAD, &[])?.canvas);
        }
        parts.push(Canvas::text("=", 1, 1, INK));
        let mut y = canvas::sheet(&ts[per - 1..per], 1, PAD, &[])?;
        let (x0, y0) = y.origins[0];
        let hit = trial.predicted == spec.target;
        y.canvas.outline(
            x0,
            y0,
            ts[0].width,
            ts[0].height,
            if hit { GREEN } else { RED },
        );
        parts.push(y.canvas);
        rows.push(Canvas::hcat(&parts, 2));
    }
    Ok(CheckReport {
        hits,
        neighbour_hits,
        neighbour_total: trials.len() * nb,
        control_hits,
        base_rate,
        uniform: 1.0 / num_classes.max(1) as f64,
        candidates: eligible.iter().map(Vec::len).collect(),
        trials,
        figure: Canvas::vcat(&rows, 0).pad(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::tiny_dcgan;
    use candle_core::Device;
    use easel_nn::BnMode;

    /// A "classifier" that reads the class off the image: class = sign pattern of the mean of
    /// the first two channels. Classes 0..4.
    fn by_colour(images: &Tensor) -> candle_core::Result<Tensor> {
        let m = images.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?; // [B, C]
        let v = m.to_vec2::<f32>()?;
        let mut out = Vec::new();
        for row in v {
            let c = (row[0] > 0.0) as usize * 2 + (row[1] > 0.0) as usize;
            let mut l = [0f32; 4];
            l[c] = 10.0;
            out.extend_from_slice(&l);
        }
        Tensor::from_vec(out, (v_len(images)?, 4), images.device())
    }
    fn v_len(t: &Tensor) -> candle_core::Result<usize> {
        t.dim(0)
    }

    #[test]
    fn classify_takes_the_argmax_and_softmax() {
        let (g, _s) = tiny_dcgan(0, 1);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let zs = maths::normal(5, 8, 1);
        let fixed = |x: &Tensor| -> candle_core::Result<Tensor> {
            let b = x.dim(0)?;
            Tensor::from_vec([0f32, 2f32.ln(), 0.0].repeat(b), (b, 3), x.device())
        };
        let (p, c) = classify(&r, &zs, &fixed).unwrap();
        assert_eq!(p, vec![1; 5]);
        // softmax(0, ln 2, 0)[1] = 2 / 4.
        assert!(c.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn experiment_counts_hits_and_controls() {
        let (g, _s) = tiny_dcgan(0, 2);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let zs = maths::normal(200, 8, 3);
        let (pred, conf) = classify(&r, &zs, &by_colour).unwrap();
        let pool = Pool {
            ids: (100..300).collect(),
            z: zs,
            predicted: pred.clone(),
            confidence: conf,
        };
        // Which classes the random generator produces at all:
        let mut counts = [0usize; 4];
        for &p in &pred {
            counts[p as usize] += 1;
        }
        let present: Vec<u32> = (0..4u32).filter(|&c| counts[c as usize] >= 3).collect();
        assert!(!present.is_empty(), "{counts:?}");
        let c0 = present[0];
        // A single-term expression "+ mean(3 exemplars of c0)": Y is then a mean of c0 samples.
        let spec = CheckSpec {
            terms: vec![(1.0, c0)],
            target: c0,
            per_concept: 3,
            trials: 6,
            seed: 1,
            min_confidence: 0.5,
            jitter: 0.25,
        };
        let names: Vec<String> = (0..4).map(|c| format!("c{c}")).collect();
        let rep = run(&r, &pool, &by_colour, &spec, 4, &names).unwrap();
        assert_eq!(rep.trials.len(), 6);
        assert_eq!(rep.neighbour_total, 48);
        assert_eq!(rep.candidates, vec![counts[c0 as usize]]);
        assert!((rep.base_rate - counts[c0 as usize] as f64 / 200.0).abs() < 1e-12);
        assert_eq!(rep.uniform, 0.25);
        // Every exemplar id is an eligible pool id of the right class, three distinct per term.
        for t in &rep.trials {
            let m = &t.members[0];
            assert_eq!(m.len(), 3);
            assert!(m[0] != m[1] && m[1] != m[2] && m[0] != m[2]);
            for id in m {
                assert_eq!(pred[(id - 100) as usize], c0);
            }
        }
        // Hits are counted from the predictions, and the figure has one row per trial.
        let hits = rep.trials.iter().filter(|t| t.predicted == c0).count();
        assert_eq!(rep.hits, hits);
        assert!(rep.figure.height > 6 * 16);
        // Attribute agreement, read off `-`-separated names.
        let two: Vec<String> = ["a-x", "b-x", "a-y", "b-y"].map(String::from).to_vec();
        let attrs = rep.attribute_hits(c0, &two);
        let parts: Vec<&str> = two[c0 as usize].split('-').collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].0, parts[0]);
        let first = rep
            .trials
            .iter()
            .filter(|t| two[t.predicted as usize].starts_with(parts[0]))
            .count();
        assert_eq!(attrs[0].1, first);
        assert!(attrs[1].1 >= rep.hits && attrs[0].1 >= rep.hits);
        // Same seed, same report; another seed, other exemplars.
        let again = run(&r, &pool, &by_colour, &spec, 4, &names).unwrap();
        assert_eq!(again.trials, rep.trials);
        let other = run(
            &r,
            &pool,
            &by_colour,
            &CheckSpec {
                seed: 2,
                ..spec.clone()
            },
            4,
            &names,
        )
        .unwrap();
        assert_ne!(other.trials[0].members, rep.trials[0].members);
        // Too few exemplars: a clear error naming the class.
        let absent = (0..4u32).find(|&c| counts[c as usize] < 3);
        if let Some(a) = absent {
            let err = run(
                &r,
                &pool,
                &by_colour,
                &CheckSpec {
                    terms: vec![(1.0, a)],
                    ..spec.clone()
                },
                4,
                &names,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("`c{a}`")) && err.contains("--pool"),
                "{err}"
            );
        }
        let err = run(
            &r,
            &pool,
            &by_colour,
            &CheckSpec {
                min_confidence: 1.1,
                ..spec
            },
            4,
            &names,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--min-confidence"), "{err}");
    }
}
