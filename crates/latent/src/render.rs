//! Images from latent vectors through the common [`ImageGenerator`] trait, and the figures of
//! the latent tools: interpolation rows, concept arithmetic with its 3×3 jitter grid and the
//! exemplars beside it, attribute-direction walks and class sweeps of conditional models.

use candle_core::{Device, Tensor};
use easel_models::ImageGenerator;
use easel_nn::BnMode;

use crate::bank::Entry;
use crate::canvas::{self, Canvas, GREEN, INK, RED};
use crate::maths::{self, Interp};
use crate::{invalid, Result};

/// A latent vector with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Latent {
    /// Its z bank id, if it has one (shown as a caption).
    pub id: Option<u64>,
    /// The vector.
    pub z: Vec<f32>,
    /// Its class (conditional models).
    pub label: Option<u32>,
}

impl From<Entry> for Latent {
    fn from(e: Entry) -> Self {
        Latent {
            id: Some(e.id),
            z: e.z,
            label: e.label,
        }
    }
}

impl Latent {
    fn name(&self) -> String {
        self.id
            .map(|i| format!("id {i}"))
            .unwrap_or_else(|| "a vector".into())
    }
}

/// A generator with its batch-norm mode and device: latent vectors in, images out.
pub struct Renderer<'a> {
    gen: &'a dyn ImageGenerator,
    mode: BnMode,
    device: Device,
}

/// Images per generator call in eval mode (every image is then independent of its batch).
const CHUNK: usize = 64;

/// Padding between tiles, as `easel sample`'s grids.
pub const PAD: usize = 2;

impl<'a> Renderer<'a> {
    /// Wraps `gen`, run in `mode` (the run's sampling mode; eval for DCGAN by default) on
    /// `device`.
    pub fn new(gen: &'a dyn ImageGenerator, mode: BnMode, device: &Device) -> Self {
        Renderer {
            gen,
            mode,
            device: device.clone(),
        }
    }

    /// The generator.
    pub fn generator(&self) -> &dyn ImageGenerator {
        self.gen
    }

    /// Checks that `z` fits the generator, naming `what` (e.g. `id 3`) otherwise.
    pub fn check_z(&self, z: &[f32], what: &str) -> Result<()> {
        let nz = self.gen.latent_dim();
        if z.len() != nz {
            return invalid(format!(
                "{what} has a z of size {}, but the generator takes z of size {nz} (was it drawn for another model? pass the run it was drawn for)",
                z.len()
            ));
        }
        if z.iter().any(|v| !v.is_finite()) {
            return invalid(format!("{what} has a z with NaN or infinite values"));
        }
        Ok(())
    }

    fn check_labels(&self, labels: Option<&[u32]>, n: usize) -> Result<()> {
        let k = self.gen.num_classes();
        match (k, labels) {
            (0, None) => Ok(()),
            (0, Some(_)) => invalid("--class: the generator is unconditional (it has no classes)"),
            (_, None) => invalid(format!(
                "the generator is conditional ({k} classes): pass --class C (0..{})",
                k - 1
            )),
            (_, Some(l)) if l.len() != n => invalid(format!("{} labels for {n} images", l.len())),
            (_, Some(l)) => match l.iter().find(|&&c| c as usize >= k) {
                Some(c) => invalid(format!(
                    "class {c} is out of range: the generator has classes 0..{}",
                    k - 1
                )),
                None => Ok(()),
            },
        }
    }

    /// Images `[N, C, H, W]` in [-1, 1] for `zs` (and one label each for conditional models).
    pub fn images(&self, zs: &[Vec<f32>], labels: Option<&[u32]>) -> Result<Tensor> {
        if zs.is_empty() {
            return invalid("no latent vectors to render");
        }
        for (i, z) in zs.iter().enumerate() {
            self.check_z(z, &format!("vector {i}"))?;
        }
        self.check_labels(labels, zs.len())?;
        let nz = self.gen.latent_dim();
        let chunk = if self.mode == BnMode::Eval {
            CHUNK
        } else {
            zs.len()
        };
        let mut parts = Vec::new();
        for start in (0..zs.len()).step_by(chunk) {
            let end = (start + chunk).min(zs.len());
            let flat: Vec<f32> = zs[start..end].iter().flatten().copied().collect();
            let z = Tensor::from_vec(flat, (end - start, nz), &self.device)?;
            let l = labels
                .map(|l| Tensor::from_vec(l[start..end].to_vec(), end - start, &self.device))
                .transpose()?;
            parts.push(self.gen.generate(&z, l.as_ref(), self.mode)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// [`Renderer::images`] as tiles.
    pub fn tiles(&self, zs: &[Vec<f32>], labels: Option<&[u32]>) -> Result<Vec<Canvas>> {
        Canvas::tiles(&self.images(zs, labels)?)
    }

    fn tiles_class(&self, zs: &[Vec<f32>], class: Option<u32>) -> Result<Vec<Canvas>> {
        let labels = class.map(|c| vec![c; zs.len()]);
        self.tiles(zs, labels.as_deref())
    }

    /// The class to render `latents` with: `explicit` if given (conditional models only), else
    /// their common label; an error naming two ids whose classes differ.
    pub fn resolve_class(&self, explicit: Option<u32>, latents: &[&Latent]) -> Result<Option<u32>> {
        let k = self.gen.num_classes();
        if k == 0 {
            if explicit.is_some() {
                return invalid("--class: the generator is unconditional (it has no classes)");
            }
            return Ok(None);
        }
        if let Some(c) = explicit {
            if c as usize >= k {
                return invalid(format!(
                    "--class {c}: the generator has classes 0..{}",
                    k - 1
                ));
            }
            return Ok(Some(c));
        }
        let mut found: Option<(&Latent, u32)> = None;
        for l in latents {
            match (l.label, found) {
                (None, _) => {
                    return invalid(format!(
                        "{} has no class; the generator is conditional ({k} classes): pass --class C",
                        l.name()
                    ))
                }
                (Some(c), None) => found = Some((l, c)),
                (Some(c), Some((f, fc))) if c != fc => {
                    return invalid(format!(
                        "{} (class {fc}) and {} (class {c}) were drawn with different classes; pass --class C to render them all as class C",
                        f.name(),
                        l.name()
                    ))
                }
                _ => {}
            }
        }
        Ok(found.map(|(_, c)| c))
    }
}

fn id_caption(l: &Latent) -> Option<String> {
    l.id.map(|i| i.to_string())
}

/// A row of tiles with captions, padded on the right to `width` (if wider).
fn row(tiles: &[Canvas], captions: &[Option<String>]) -> Result<Canvas> {
    Ok(canvas::sheet(tiles, tiles.len(), PAD, captions)?.canvas)
}

fn widen(c: &Canvas, width: usize) -> Canvas {
    let mut w = Canvas::new(width.max(c.width), c.height, canvas::BACKGROUND);
    w.blit(c, 0, 0);
    w
}

/// A sign or weight label for a term row: `+`, `-` or the weight.
fn sign_label(weight: f64) -> (String, [u8; 3]) {
    if weight == 1.0 {
        ("+".into(), GREEN)
    } else if weight == -1.0 {
        ("-".into(), RED)
    } else {
        (format!("{weight}"), if weight < 0.0 { RED } else { GREEN })
    }
}

/// Interpolations, one row per `(from, to)` pair, `steps` images each (both ends included, the
/// ends captioned with their ids).
pub fn interpolation(
    r: &Renderer,
    pairs: &[(Latent, Latent)],
    steps: usize,
    how: Interp,
    class: Option<u32>,
) -> Result<Canvas> {
    if pairs.is_empty() {
        return invalid("no pairs to interpolate");
    }
    let mut zs = Vec::new();
    let mut labels = Vec::new();
    let mut captions = Vec::new();
    for (a, b) in pairs {
        r.check_z(&a.z, &a.name())?;
        r.check_z(&b.z, &b.name())?;
        let c = r.resolve_class(class, &[a, b])?;
        for (i, z) in maths::interpolate(&a.z, &b.z, steps, how)?
            .into_iter()
            .enumerate()
        {
            zs.push(z);
            labels.extend(c);
            captions.push(if i == 0 {
                id_caption(a)
            } else if i == steps - 1 {
                id_caption(b)
            } else {
                None
            });
        }
    }
    let labels = (!labels.is_empty()).then_some(labels);
    let tiles = r.tiles(&zs, labels.as_deref())?;
    Ok(canvas::sheet(&tiles, steps, PAD, &captions)?.canvas)
}

/// One term of a concept expression: a weight (+1, −1, …) and the exemplars whose mean is the
/// concept.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// +1 for `--plus`, −1 for `--minus`.
    pub weight: f64,
    /// The exemplars (≥ 1; the paper uses 3).
    pub members: Vec<Latent>,
}

/// What [`arithmetic`] computed and drew.
#[derive(Debug, Clone)]
pub struct Arithmetic {
    /// Exemplar rows (sign, exemplars, their mean) on the left, `=`, then the result Y in the
    /// centre of its 8 jittered neighbours on the right.
    pub canvas: Canvas,
    /// The concept mean of every term.
    pub means: Vec<Vec<f32>>,
    /// Y = Σ weight · mean.
    pub result: Vec<f32>,
    /// The 8 neighbours Y + U(−jitter, jitter) (empty when jitter is 0).
    pub neighbours: Vec<Vec<f32>>,
    /// The class rendered with (conditional models).
    pub class: Option<u32>,
}

/// Concept arithmetic: Y = Σ weightᵢ · mean(membersᵢ), drawn as in the DCGAN paper's Fig. 7 —
/// each term's exemplars and mean, then Y with 8 neighbours `Y + U(−jitter, jitter)` (noise from
/// `seed`) in a 3×3 grid, Y in the centre (outlined).
pub fn arithmetic(
    r: &Renderer,
    terms: &[Term],
    jitter: f32,
    seed: u64,
    class: Option<u32>,
) -> Result<Arithmetic> {
    if terms.is_empty() {
        return invalid("an expression needs at least one term (--plus IDS)");
    }
    let all: Vec<&Latent> = terms.iter().flat_map(|t| &t.members).collect();
    for l in &all {
        r.check_z(&l.z, &l.name())?;
    }
    let class = r.resolve_class(class, &all)?;
    let mut means = Vec::new();
    for t in terms {
        let zs: Vec<&[f32]> = t.members.iter().map(|m| m.z.as_slice()).collect();
        means.push(maths::mean(&zs)?);
    }
    let weighted: Vec<(f64, &[f32])> = terms
        .iter()
        .zip(&means)
        .map(|(t, m)| (t.weight, m.as_slice()))
        .collect();
    let result = maths::signed_sum(&weighted)?;
    let neighbours = if jitter > 0.0 {
        maths::jitter(&result, 8, jitter, seed)?
    } else {
        maths::jitter(&result, 0, jitter, seed)?
    };
    // Every image in one batch: exemplars, means, then the result block.
    let mut zs: Vec<Vec<f32>> = all.iter().map(|l| l.z.clone()).collect();
    zs.extend(means.iter().cloned());
    let block: Vec<Vec<f32>> = if neighbours.is_empty() {
        vec![result.clone()]
    } else {
        let mut b = neighbours[..4].to_vec();
        b.push(result.clone());
        b.extend_from_slice(&neighbours[4..]);
        b
    };
    zs.extend(block.iter().cloned());
    let mut tiles = r.tiles_class(&zs, class)?.into_iter();
    let max_members = terms.iter().map(|t| t.members.len()).max().unwrap_or(1);
    let mut member_rows = Vec::new();
    for t in terms {
        let ts: Vec<Canvas> = tiles.by_ref().take(t.members.len()).collect();
        let caps: Vec<Option<String>> = t.members.iter().map(id_caption).collect();
        member_rows.push(row(&ts, &caps)?);
    }
    let member_w = member_rows.iter().map(|c| c.width).max().unwrap_or(0);
    let _ = max_members;
    let sign_scale = 2;
    let mut rows = Vec::new();
    for (t, members) in terms.iter().zip(&member_rows) {
        let mean_tile = tiles
            .next()
            .ok_or_else(|| crate::LatentError::Invalid("missing mean image".into()))?;
        let mean = row(&[mean_tile], &[])?;
        let (label, ink) = sign_label(t.weight);
        let sign = Canvas::text(&label, sign_scale, 2, ink);
        let sign = widen(&sign, canvas::text_width("-0.5", sign_scale) + 4);
        rows.push(Canvas::hcat(&[sign, widen(members, member_w), mean], 6));
    }
    let left = Canvas::vcat(&rows, 4);
    let block_tiles: Vec<Canvas> = tiles.collect();
    let ncol = if block_tiles.len() == 9 { 3 } else { 1 };
    let mut right = canvas::sheet(&block_tiles, ncol, PAD, &[])?;
    let centre = if block_tiles.len() == 9 { 4 } else { 0 };
    let (cx, cy) = right.origins[centre];
    let (tw, th) = (block_tiles[0].width, block_tiles[0].height);
    right.canvas.outline(cx, cy, tw, th, GREEN);
    let eq = Canvas::text("=", sign_scale, 2, INK);
    let canvas = Canvas::hcat(&[left, eq, right.canvas], 8).pad(2);
    Ok(Arithmetic {
        canvas,
        means,
        result,
        neighbours,
        class,
    })
}

/// An attribute direction `d = mean(pos) − mean(neg)` and walks `z + t·d` (`t` evenly from
/// `span.0` to `span.1`, `steps` images) for every id in `apply`: a `+` row (the positive
/// exemplars and their mean), a `−` row, then one row per walk, the starting image (t = 0, if in
/// the span) captioned with its id.
pub fn direction(
    r: &Renderer,
    pos: &[Latent],
    neg: &[Latent],
    apply: &[Latent],
    steps: usize,
    span: (f64, f64),
    class: Option<u32>,
) -> Result<(Canvas, Vec<f32>)> {
    if pos.is_empty() || neg.is_empty() || apply.is_empty() {
        return invalid("a direction needs --pos IDS, --neg IDS and --apply ID");
    }
    let all: Vec<&Latent> = pos.iter().chain(neg).chain(apply).collect();
    for l in &all {
        r.check_z(&l.z, &l.name())?;
    }
    let class = r.resolve_class(class, &all)?;
    let pz: Vec<&[f32]> = pos.iter().map(|l| l.z.as_slice()).collect();
    let nz: Vec<&[f32]> = neg.iter().map(|l| l.z.as_slice()).collect();
    let (pm, nm) = (maths::mean(&pz)?, maths::mean(&nz)?);
    let d = maths::direction(&pz, &nz)?;
    let mut zs: Vec<Vec<f32>> = pos.iter().chain(neg).map(|l| l.z.clone()).collect();
    zs.push(pm);
    zs.push(nm);
    let mut walks = Vec::new();
    for a in apply {
        walks.push(maths::walk(&a.z, &d, steps, span)?);
    }
    zs.extend(walks.iter().flatten().cloned());
    let mut tiles = r.tiles_class(&zs, class)?.into_iter();
    let pt: Vec<Canvas> = tiles.by_ref().take(pos.len()).collect();
    let nt: Vec<Canvas> = tiles.by_ref().take(neg.len()).collect();
    let (pmt, nmt) = match (tiles.next(), tiles.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => return invalid("missing mean images"),
    };
    let group_w = pos.len().max(neg.len()) * (pt[0].width + PAD) + PAD;
    let sign_w = canvas::text_width("-", 2) + 4;
    let group =
        |label: &str, ink, ts: &[Canvas], members: &[Latent], mean: Canvas| -> Result<Canvas> {
            let caps: Vec<Option<String>> = members.iter().map(id_caption).collect();
            let sign = widen(&Canvas::text(label, 2, 2, ink), sign_w);
            Ok(Canvas::hcat(
                &[sign, widen(&row(ts, &caps)?, group_w), row(&[mean], &[])?],
                6,
            ))
        };
    let mut rows = vec![
        group("+", GREEN, &pt, pos, pmt)?,
        group("-", RED, &nt, neg, nmt)?,
    ];
    // The step whose t is 0 (if the span contains it) gets the id caption.
    let zero = (0..steps).find(|&i| {
        let t = span.0 + (span.1 - span.0) * i as f64 / (steps - 1) as f64;
        t.abs() < 1e-9
    });
    for a in apply {
        let ts: Vec<Canvas> = tiles.by_ref().take(steps).collect();
        let caps: Vec<Option<String>> = (0..steps)
            .map(|i| if Some(i) == zero { id_caption(a) } else { None })
            .collect();
        rows.push(Canvas::hcat(
            &[
                widen(&Canvas::new(1, 1, canvas::BACKGROUND), sign_w),
                row(&ts, &caps)?,
            ],
            6,
        ));
    }
    Ok((Canvas::vcat(&rows, 6).pad(2), d))
}

/// Conditional models: one row per latent (the same z across classes), one column per class
/// (the same class across z). Rows are labelled with the id, columns captioned with the class.
pub fn class_grid(r: &Renderer, latents: &[Latent], classes: &[u32]) -> Result<Canvas> {
    let k = r.generator().num_classes();
    if k == 0 {
        return invalid("the generator is unconditional: class sweeps need a conditional model (cgan, or a conditional lapgan)");
    }
    if latents.is_empty() || classes.is_empty() {
        return invalid("a class grid needs at least one id and one class");
    }
    let mut zs = Vec::new();
    let mut labels = Vec::new();
    for l in latents {
        r.check_z(&l.z, &l.name())?;
        for &c in classes {
            zs.push(l.z.clone());
            labels.push(c);
        }
    }
    let tiles = r.tiles(&zs, Some(&labels))?;
    let caps: Vec<Option<String>> = classes.iter().map(|c| Some(c.to_string())).collect();
    let label_w = latents
        .iter()
        .map(|l| canvas::text_width(&l.id.map(|i| i.to_string()).unwrap_or_default(), 1) + 4)
        .max()
        .unwrap_or(4);
    let mut rows = Vec::new();
    for (i, l) in latents.iter().enumerate() {
        let rt = &tiles[i * classes.len()..(i + 1) * classes.len()];
        let name = l.id.map(|i| i.to_string()).unwrap_or_default();
        let label = widen(&Canvas::text(&name, 1, 2, INK), label_w);
        rows.push(Canvas::hcat(&[label, row(rt, &caps)?], 2));
    }
    Ok(Canvas::vcat(&rows, 0).pad(2))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bank::{DrawInfo, ZBank};
    use easel_models::dcgan::{Config, Generator};
    use easel_nn::ParamStore;

    /// A random-weight DCGAN generator (16×16 RGB, nz 8), optionally conditional.
    pub(crate) fn tiny_dcgan(classes: usize, seed: u64) -> (Generator, ParamStore) {
        let cfg = Config {
            image_size: 16,
            channels: 3,
            nz: 8,
            ngf: 8,
            ndf: 8,
            num_classes: classes,
            ..Config::pytorch_examples_64()
        };
        let store = ParamStore::new(&Device::Cpu, seed);
        let g = Generator::new(&cfg, store.var_builder()).unwrap();
        (g, store)
    }

    fn tiny_lapgan() -> easel_models::lapgan::LapganGenerator {
        use easel_models::lapgan::{LapganGenerator, LevelConfig, LevelGenerator};
        let base_cfg = Config {
            image_size: 8,
            channels: 3,
            nz: 4,
            ngf: 8,
            ndf: 8,
            ..Config::pytorch_examples_64()
        };
        let bs = ParamStore::new(&Device::Cpu, 1);
        let base = Generator::new(&base_cfg, bs.var_builder()).unwrap();
        let ls = ParamStore::new(&Device::Cpu, 2);
        let lvl = LevelGenerator::new(&LevelConfig::new(16, 3, 8, 8), ls.var_builder()).unwrap();
        LapganGenerator::from_parts(base, vec![lvl]).unwrap()
    }

    fn latents(zs: Vec<Vec<f32>>, first_id: u64, label: Option<u32>) -> Vec<Latent> {
        zs.into_iter()
            .enumerate()
            .map(|(i, z)| Latent {
                id: Some(first_id + i as u64),
                z,
                label,
            })
            .collect()
    }

    #[test]
    fn saved_z_reproduce_the_sheet_tile_exactly() {
        // The contact-sheet path of `easel sample`: tiles → numbered sheet → PNG, z → bank.
        let (g, _store) = tiny_dcgan(0, 3);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let zs = maths::normal(10, 8, 11);
        let tiles = r.tiles(&zs, None).unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut bank = ZBank::open_or_create(d.path(), 8, 0, [3, 16, 16]).unwrap();
        let flat: Vec<f32> = zs.iter().flatten().copied().collect();
        let info = DrawInfo {
            model_dir: d.path(),
            step: 0,
            seed: 11,
            class: None,
            image: None,
            source: "test",
        };
        let ids = bank.append(&flat, None, &info).unwrap();
        let caps: Vec<Option<String>> = ids.clone().map(|i| Some(i.to_string())).collect();
        let sheet = canvas::sheet(&tiles, 4, PAD, &caps).unwrap();
        let png = d.path().join("sheet.png");
        sheet.canvas.save_png(&png).unwrap();
        let saved = image::open(&png).unwrap().to_rgb8();

        // Fed the saved z alone (one image, a fresh batch), the generator gives tile 7 exactly.
        let e = ZBank::open(d.path()).unwrap().get(&[7]).unwrap().remove(0);
        let one = r.tiles(&[e.z], None).unwrap().remove(0);
        let (x, y) = sheet.origins[7];
        for yy in 0..16 {
            for xx in 0..16 {
                assert_eq!(
                    saved.get_pixel((x + xx) as u32, (y + yy) as u32).0,
                    one.pixel(xx, yy),
                    "pixel ({xx}, {yy})"
                );
            }
        }
        // And it is not trivially so: tile 7 differs from tile 6.
        assert_ne!(tiles[6], tiles[7]);
    }

    #[test]
    fn interpolation_rows_start_and_end_at_the_ids() {
        let (g, _s) = tiny_dcgan(0, 4);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let l = latents(maths::normal(4, 8, 1), 20, None);
        let pairs = vec![(l[0].clone(), l[1].clone()), (l[2].clone(), l[3].clone())];
        let c = interpolation(&r, &pairs, 5, Interp::Slerp, None).unwrap();
        let ends = r
            .tiles(&[l[0].z.clone(), l[1].z.clone(), l[2].z.clone()], None)
            .unwrap();
        // Layout: sheet of 5 columns, 2 rows; row 0 begins with A's image and ends with B's.
        let cell_h = (c.height - PAD) / 2;
        assert_eq!(c.width, 5 * 18 + 2);
        assert_eq!(c.crop(2, 2, 16, 16), ends[0]);
        assert_eq!(c.crop(2 + 4 * 18, 2, 16, 16), ends[1]);
        assert_eq!(c.crop(2, 2 + cell_h, 16, 16), ends[2]);
        assert!(interpolation(&r, &pairs, 1, Interp::Lerp, None).is_err());
        let bad = vec![(
            l[0].clone(),
            Latent {
                id: Some(99),
                z: vec![0.0; 5],
                label: None,
            },
        )];
        let err = interpolation(&r, &bad, 5, Interp::Lerp, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("id 99") && err.contains("size 5") && err.contains("size 8"),
            "{err}"
        );
        assert!(interpolation(&r, &pairs, 5, Interp::Lerp, Some(1))
            .unwrap_err()
            .to_string()
            .contains("unconditional"));
    }

    #[test]
    fn arithmetic_result_is_the_signed_sum_of_means_and_is_drawn_in_the_centre() {
        let (g, _s) = tiny_dcgan(0, 5);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let l = latents(maths::normal(9, 8, 2), 0, None);
        let terms = vec![
            Term {
                weight: 1.0,
                members: l[0..3].to_vec(),
            },
            Term {
                weight: -1.0,
                members: l[3..6].to_vec(),
            },
            Term {
                weight: 1.0,
                members: l[6..9].to_vec(),
            },
        ];
        let a = arithmetic(&r, &terms, 0.25, 9, None).unwrap();
        // Oracle: coordinate-wise (Σ a)/3 − (Σ b)/3 + (Σ c)/3.
        for k in 0..8 {
            let m = |s: &[Latent]| s.iter().map(|x| x.z[k] as f64).sum::<f64>() / 3.0;
            let want = m(&l[0..3]) - m(&l[3..6]) + m(&l[6..9]);
            assert!((a.result[k] as f64 - want).abs() < 1e-5);
        }
        assert_eq!(a.neighbours.len(), 8);
        for n in &a.neighbours {
            assert!(n
                .iter()
                .zip(&a.result)
                .all(|(x, y)| (x - y).abs() <= 0.25 + 1e-6));
        }
        // Same seed, same picture; another seed moves the neighbours.
        let b = arithmetic(&r, &terms, 0.25, 9, None).unwrap();
        assert_eq!(a.canvas, b.canvas);
        let c = arithmetic(&r, &terms, 0.25, 10, None).unwrap();
        assert_ne!(a.canvas, c.canvas);
        // The centre tile of the 3×3 block is Y's image: find it in the canvas.
        let y = r
            .tiles(std::slice::from_ref(&a.result), None)
            .unwrap()
            .remove(0);
        let found = (0..a.canvas.height - 16)
            .any(|yy| (0..a.canvas.width - 16).any(|xx| a.canvas.crop(xx, yy, 16, 16) == y));
        assert!(found, "Y's image is in the figure");
        // No jitter: Y alone.
        let z = arithmetic(&r, &terms, 0.0, 9, None).unwrap();
        assert!(z.neighbours.is_empty());
        assert!(z.canvas.width < a.canvas.width);
    }

    #[test]
    fn direction_walks_from_the_id() {
        let (g, _s) = tiny_dcgan(0, 6);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let l = latents(maths::normal(5, 8, 3), 0, None);
        let (c, d) = direction(&r, &l[0..2], &l[2..4], &l[4..5], 5, (0.0, 1.0), None).unwrap();
        assert_eq!(d.len(), 8);
        for (k, dk) in d.iter().enumerate() {
            let want = (l[0].z[k] + l[1].z[k]) / 2.0 - (l[2].z[k] + l[3].z[k]) / 2.0;
            assert!((dk - want).abs() < 1e-5);
        }
        let start = r.tiles(&[l[4].z.clone()], None).unwrap().remove(0);
        let moved: Vec<f32> = l[4].z.iter().zip(&d).map(|(a, b)| a + b).collect();
        let end = r.tiles(&[moved], None).unwrap().remove(0);
        let find = |t: &Canvas| {
            (0..c.height - 16).any(|yy| (0..c.width - 16).any(|xx| c.crop(xx, yy, 16, 16) == *t))
        };
        assert!(find(&start) && find(&end));
        assert!(direction(&r, &l[0..2], &[], &l[4..5], 5, (0.0, 1.0), None).is_err());
    }

    #[test]
    fn conditional_models_need_a_class_and_sweep_classes() {
        let (g, _s) = tiny_dcgan(3, 7);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let mut l = latents(maths::normal(2, 8, 4), 0, Some(1));
        let c = class_grid(&r, &l, &[0, 1, 2]).unwrap();
        // Row 0, column 2 is z₀ rendered as class 2.
        let want = r.tiles(&[l[0].z.clone()], Some(&[2])).unwrap().remove(0);
        let found =
            (0..c.height - 16).any(|yy| (0..c.width - 16).any(|xx| c.crop(xx, yy, 16, 16) == want));
        assert!(found);
        // Classes change the image for a fixed z.
        let other = r.tiles(&[l[0].z.clone()], Some(&[0])).unwrap().remove(0);
        assert_ne!(want, other);
        // Labels of the ids are used; different ones need --class.
        assert_eq!(r.resolve_class(None, &[&l[0], &l[1]]).unwrap(), Some(1));
        l[1].label = Some(2);
        let err = r
            .resolve_class(None, &[&l[0], &l[1]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("id 0 (class 1)")
                && err.contains("id 1 (class 2)")
                && err.contains("--class"),
            "{err}"
        );
        assert_eq!(r.resolve_class(Some(0), &[&l[0], &l[1]]).unwrap(), Some(0));
        assert!(r.resolve_class(Some(3), &[&l[0]]).is_err());
        assert!(r
            .images(&[l[0].z.clone()], None)
            .unwrap_err()
            .to_string()
            .contains("--class"));
        let pairs = vec![(l[0].clone(), l[1].clone())];
        assert!(interpolation(&r, &pairs, 3, Interp::Lerp, None).is_err());
        assert!(interpolation(&r, &pairs, 3, Interp::Lerp, Some(2)).is_ok());
        // An unconditional model has no class grid.
        let (u, _s) = tiny_dcgan(0, 7);
        let ru = Renderer::new(&u, BnMode::Eval, &Device::Cpu);
        assert!(class_grid(&ru, &l, &[0])
            .unwrap_err()
            .to_string()
            .contains("unconditional"));
    }

    #[test]
    fn lapgan_works_through_the_common_trait() {
        let g = tiny_lapgan();
        let nz = g.latent_dim(); // 4 + 16·16 noise plane
        assert_eq!(nz, 4 + 256);
        let r = Renderer::new(&g, BnMode::Eval, &Device::Cpu);
        let l = latents(maths::normal(4, nz, 5), 0, None);
        let c = interpolation(&r, &[(l[0].clone(), l[1].clone())], 3, Interp::Slerp, None).unwrap();
        assert_eq!(
            c.crop(2, 2, 16, 16),
            r.tiles(&[l[0].z.clone()], None).unwrap()[0]
        );
        let terms = vec![
            Term {
                weight: 1.0,
                members: l[0..2].to_vec(),
            },
            Term {
                weight: -1.0,
                members: l[2..4].to_vec(),
            },
        ];
        assert!(arithmetic(&r, &terms, 0.25, 1, None).is_ok());
        // A DCGAN-sized z is refused with both sizes named.
        let err = r.images(&[vec![0.0; 8]], None).unwrap_err().to_string();
        assert!(err.contains("size 8") && err.contains("size 260"), "{err}");
    }
}
