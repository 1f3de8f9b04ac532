//! The embedded "shapes" dataset: procedurally generated, labelled images of
//! one saturated, anti-aliased shape on a plain dark background.
//!
//! It needs no files and no network, trains a DCGAN in minutes, and a person
//! can tell at a glance whether samples are right (a star is a star). Every
//! image is drawn from its own ChaCha8 stream keyed by (seed, split, index),
//! so any index costs O(1), nothing is held in memory, and the same seed gives
//! byte-identical images on every machine. The attributes behind each image
//! are public ([`Shapes::attributes`], [`render`]) so later tests can check
//! latent arithmetic ("red circle − red + blue ≈ blue circle").

use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::config::{ShapesLabel, SIZE_RANGE};

use crate::config::{Crop, ShapesConfig, Split};
use crate::rng;
use crate::transform::{self, RawImage};
use crate::{DataError, Dataset, Sample};

/// The kind of shape; the label of a shapes sample is its index in [`ShapeKind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeKind {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An equilateral triangle pointing up.
    Triangle,
    /// A square standing on a corner.
    Diamond,
    /// A plus sign.
    Cross,
    /// A five-pointed star pointing up.
    Star,
}

impl ShapeKind {
    /// All kinds, in label order.
    pub const ALL: [ShapeKind; 6] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Diamond,
        ShapeKind::Cross,
        ShapeKind::Star,
    ];

    /// The class name, e.g. `circle`.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Diamond => "diamond",
            ShapeKind::Cross => "cross",
            ShapeKind::Star => "star",
        }
    }

    /// The label: the index in [`ShapeKind::ALL`].
    pub fn label(self) -> u32 {
        ShapeKind::ALL.iter().position(|&k| k == self).unwrap_or(0) as u32
    }
}

impl fmt::Display for ShapeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fill colour of a shape: eight well-separated saturated colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Colour {
    /// (230, 40, 40)
    Red,
    /// (255, 140, 0)
    Orange,
    /// (245, 220, 30)
    Yellow,
    /// (40, 190, 60)
    Green,
    /// (30, 200, 220)
    Cyan,
    /// (45, 85, 235)
    Blue,
    /// (220, 60, 210)
    Magenta,
    /// (240, 240, 240)
    White,
}

impl Colour {
    /// All colours, in the order they are drawn from.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Cyan,
        Colour::Blue,
        Colour::Magenta,
        Colour::White,
    ];

    /// The sRGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 40, 40],
            Colour::Orange => [255, 140, 0],
            Colour::Yellow => [245, 220, 30],
            Colour::Green => [40, 190, 60],
            Colour::Cyan => [30, 200, 220],
            Colour::Blue => [45, 85, 235],
            Colour::Magenta => [220, 60, 210],
            Colour::White => [240, 240, 240],
        }
    }

    /// The name, e.g. `red`.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Cyan => "cyan",
            Colour::Blue => "blue",
            Colour::Magenta => "magenta",
            Colour::White => "white",
        }
    }
}

impl ShapesLabel {
    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            ShapesLabel::Kind => ShapeKind::ALL.len(),
            ShapesLabel::Color => Colour::ALL.len(),
            ShapesLabel::KindColor => ShapeKind::ALL.len() * Colour::ALL.len(),
        }
    }

    /// The label of an image with these attributes.
    pub fn label(self, attrs: &ShapeAttrs) -> u32 {
        let colour = Colour::ALL
            .iter()
            .position(|&c| c == attrs.colour)
            .unwrap_or(0) as u32;
        match self {
            ShapesLabel::Kind => attrs.kind.label(),
            ShapesLabel::Color => colour,
            ShapesLabel::KindColor => attrs.kind.label() * Colour::ALL.len() as u32 + colour,
        }
    }

    /// Class names in label order: `circle`, …; `red`, …; `red-circle`, `orange-circle`, ….
    pub fn class_names(self) -> Vec<String> {
        match self {
            ShapesLabel::Kind => ShapeKind::ALL.iter().map(|k| k.name().into()).collect(),
            ShapesLabel::Color => Colour::ALL.iter().map(|c| c.name().into()).collect(),
            ShapesLabel::KindColor => ShapeKind::ALL
                .iter()
                .flat_map(|k| {
                    Colour::ALL
                        .iter()
                        .map(move |c| format!("{}-{}", c.name(), k.name()))
                })
                .collect(),
        }
    }
}

/// Everything that determines one shapes image. Geometry is in fractions of
/// the image side, so the same attributes render at any size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeAttrs {
    /// Which shape (the label).
    pub kind: ShapeKind,
    /// Fill colour.
    pub colour: Colour,
    /// Nominal radius as a fraction of the image side (0.18–0.30 when
    /// sampled); each kind is scaled so all have a similar visual weight.
    pub size: f32,
    /// Horizontal centre, fraction of the width (0 = left edge).
    pub x: f32,
    /// Vertical centre, fraction of the height (0 = top edge).
    pub y: f32,
    /// Plain background colour (dark, lightly varied from image to image).
    pub background: [u8; 3],
}

/// How far (in units of `size`) the largest kind reaches from its centre;
/// positions keep the whole shape plus a small margin inside the image.
const EXTENT: f32 = 1.25;
const MARGIN: f32 = 0.07;

/// The largest size that keeps every kind inside the frame: `EXTENT · size + MARGIN ≤ ½`.
pub const MAX_SIZE: f32 = (0.5 - MARGIN) / EXTENT;

impl ShapeAttrs {
    /// Draws the attributes of image `index` of a set keyed by `seed` and
    /// `stream` (the split). Pure function of its arguments.
    pub fn sample(seed: u64, stream: u64, index: u64) -> ShapeAttrs {
        Self::sample_sized(seed, stream, index, SIZE_RANGE)
    }

    /// [`ShapeAttrs::sample`] with sizes drawn from `(lo, hi)` (fractions of the side; see
    /// [`ShapesConfig::size`]); the kind, colour and background of an index do not depend on it.
    pub fn sample_sized(seed: u64, stream: u64, index: u64, (lo, hi): (f32, f32)) -> ShapeAttrs {
        let mut r = rng::rng(&[seed, 0x7368_6170_6573, stream, index]); // "shapes"
        let kind = ShapeKind::ALL[rng::below(&mut r, ShapeKind::ALL.len())];
        let colour = Colour::ALL[rng::below(&mut r, Colour::ALL.len())];
        let size = lo + (hi - lo) * rng::unit(&mut r) as f32;
        let reach = EXTENT * size + MARGIN;
        let x = reach + (1.0 - 2.0 * reach) * rng::unit(&mut r) as f32;
        let y = reach + (1.0 - 2.0 * reach) * rng::unit(&mut r) as f32;
        let base = 14.0 + 42.0 * rng::unit(&mut r);
        let mut background = [0u8; 3];
        for c in &mut background {
            *c = (base + 16.0 * (rng::unit(&mut r) - 0.5))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        ShapeAttrs {
            kind,
            colour,
            size,
            x,
            y,
            background,
        }
    }
}

/// A polygon as vertices relative to the centre, in units of `size`.
fn polygon(kind: ShapeKind) -> Vec<(f32, f32)> {
    use std::f32::consts::PI;
    match kind {
        ShapeKind::Triangle => {
            let r = 1.25;
            (0..3)
                .map(|i| {
                    let a = -PI / 2.0 + i as f32 * 2.0 * PI / 3.0;
                    (r * a.cos(), r * a.sin())
                })
                .collect()
        }
        ShapeKind::Star => {
            let (outer, inner) = (1.2, 0.5);
            (0..10)
                .map(|i| {
                    let a = -PI / 2.0 + i as f32 * PI / 5.0;
                    let r = if i % 2 == 0 { outer } else { inner };
                    (r * a.cos(), r * a.sin())
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Even–odd point-in-polygon test.
fn in_polygon(poly: &[(f32, f32)], px: f32, py: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether the point (u, v), relative to the centre in units of `size`, is
/// inside the shape.
fn inside(kind: ShapeKind, poly: &[(f32, f32)], u: f32, v: f32) -> bool {
    match kind {
        ShapeKind::Circle => u * u + v * v <= 1.0,
        ShapeKind::Square => u.abs() <= 0.82 && v.abs() <= 0.82,
        ShapeKind::Diamond => u.abs() + v.abs() <= 1.15,
        ShapeKind::Cross => {
            let (arm, half) = (1.05, 0.34);
            (u.abs() <= arm && v.abs() <= half) || (v.abs() <= arm && u.abs() <= half)
        }
        ShapeKind::Triangle | ShapeKind::Star => in_polygon(poly, u, v),
    }
}

/// Renders attributes to an `image_size × image_size` RGB image (rows of
/// interleaved R, G, B bytes), anti-aliased with 4×4 supersampling.
pub fn render(attrs: &ShapeAttrs, image_size: usize) -> Vec<u8> {
    render_with(attrs, image_size, 4)
}

/// [`render`] with `ss × ss` samples per pixel (1 = no anti-aliasing).
pub fn render_with(attrs: &ShapeAttrs, image_size: usize, ss: usize) -> Vec<u8> {
    let s = image_size;
    let ss = ss.max(1);
    let mut out = Vec::with_capacity(s * s * 3);
    for _ in 0..s * s {
        out.extend_from_slice(&attrs.background);
    }
    if s == 0 {
        return out;
    }
    let poly = polygon(attrs.kind);
    let (cx, cy, r) = (
        attrs.x * s as f32,
        attrs.y * s as f32,
        attrs.size * s as f32,
    );
    if r <= 0.0 {
        return out;
    }
    let reach = EXTENT * r + 1.0;
    let lo = |c: f32| ((c - reach).floor().max(0.0)) as usize;
    let hi = |c: f32| ((c + reach).ceil().max(0.0) as usize).min(s);
    let fg = attrs.colour.rgb();
    let n = (ss * ss) as f32;
    for py in lo(cy)..hi(cy) {
        for px in lo(cx)..hi(cx) {
            let mut hits = 0u32;
            for sy in 0..ss {
                let v = (py as f32 + (sy as f32 + 0.5) / ss as f32 - cy) / r;
                for sx in 0..ss {
                    let u = (px as f32 + (sx as f32 + 0.5) / ss as f32 - cx) / r;
                    if inside(attrs.kind, &poly, u, v) {
                        hits += 1;
                    }
                }
            }
            if hits > 0 {
                let a = hits as f32 / n;
                let o = (py * s + px) * 3;
                for c in 0..3 {
                    let bg = attrs.background[c] as f32;
                    out[o + c] = (bg + (fg[c] as f32 - bg) * a).round() as u8;
                }
            }
        }
    }
    out
}

/// The shapes dataset: `count` images drawn on demand.
#[derive(Debug, Clone)]
pub struct Shapes {
    seed: u64,
    stream: u64,
    len: usize,
    split: Split,
    image_size: usize,
    channels: usize,
    supersample: usize,
    label: ShapesLabel,
    size: (f32, f32),
}

impl Shapes {
    /// A shapes set of `cfg.count` (train) or `cfg.test_count` (test) images
    /// keyed by `cfg.seed`, or by `seed` when that is unset.
    pub fn new(
        cfg: &ShapesConfig,
        seed: u64,
        split: Split,
        image_size: usize,
        channels: usize,
    ) -> Result<Shapes, DataError> {
        if image_size < 16 {
            return Err(DataError::config(
                "image_size",
                format!("{image_size} is too small for shapes"),
                "use 16 or more, e.g. 32 or 64",
            ));
        }
        if channels != 1 && channels != 3 {
            return Err(DataError::config(
                "channels",
                format!("{channels} is not supported"),
                "use 1 (grey) or 3 (RGB)",
            ));
        }
        let [lo, hi] = cfg.size;
        if !(lo.is_finite() && hi.is_finite() && 0.05 <= lo && lo <= hi && hi <= MAX_SIZE) {
            return Err(DataError::config(
                "shapes.size",
                format!("[{lo}, {hi}] is not a size range"),
                format!("use [lo, hi] with 0.05 ≤ lo ≤ hi ≤ {MAX_SIZE:.3}, e.g. [0.26, 0.34]"),
            ));
        }
        let len = match split {
            Split::Train => cfg.count,
            Split::Test => cfg.test_count,
        };
        Ok(Shapes {
            seed: cfg.seed.unwrap_or(seed),
            stream: match split {
                Split::Train => 0,
                Split::Test => 1,
            },
            len,
            split,
            image_size,
            channels,
            supersample: cfg.supersample.clamp(1, 16),
            label: cfg.label,
            size: (lo, hi),
        })
    }

    /// The attributes of image `index` (any index, even past `len`).
    pub fn attributes(&self, index: usize) -> ShapeAttrs {
        ShapeAttrs::sample_sized(self.seed, self.stream, index as u64, self.size)
    }

    /// Image `index` as RGB bytes (`image_size² × 3`), before any grey
    /// conversion or normalisation.
    pub fn image(&self, index: usize) -> Vec<u8> {
        render_with(&self.attributes(index), self.image_size, self.supersample)
    }

    /// The seed the images are keyed by.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl Dataset for Shapes {
    fn len(&self) -> usize {
        self.len
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.label.num_classes())
    }

    fn class_names(&self) -> Vec<String> {
        self.label.class_names()
    }

    fn get(&self, index: usize, _aug_seed: u64) -> Result<Sample, DataError> {
        if index >= self.len {
            return Err(DataError::OutOfRange {
                index,
                len: self.len,
            });
        }
        let attrs = self.attributes(index);
        let rgb = render_with(&attrs, self.image_size, self.supersample);
        let img = RawImage {
            width: self.image_size,
            height: self.image_size,
            channels: 3,
            data: &rgb,
        };
        Ok(Sample {
            pixels: transform::prepare(img, self.image_size, self.channels, Crop::Center, 0),
            label: self.label.label(&attrs),
        })
    }

    fn describe(&self) -> String {
        format!(
            "shapes {}, {} generated images {}×{}×{} (seed {}; {} kinds × {} colours)",
            self.split,
            self.len,
            self.channels,
            self.image_size,
            self.image_size,
            self.seed,
            ShapeKind::ALL.len(),
            Colour::ALL.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(seed: u64, size: usize) -> Shapes {
        Shapes::new(&ShapesConfig::default(), seed, Split::Train, size, 3).unwrap()
    }

    #[test]
    fn same_seed_is_byte_identical_and_index_order_free() {
        let a = shapes(42, 32);
        let b = shapes(42, 32);
        // Out of order on purpose: each index has its own stream.
        for i in [17usize, 3, 19_999, 0, 3] {
            assert_eq!(a.image(i), b.image(i));
            assert_eq!(a.get(i, 0).unwrap().pixels, b.get(i, 99).unwrap().pixels);
        }
    }

    #[test]
    fn different_seeds_and_splits_differ() {
        let a = shapes(1, 32);
        let b = shapes(2, 32);
        let same = (0..50).filter(|&i| a.image(i) == b.image(i)).count();
        assert_eq!(same, 0);
        let t = Shapes::new(&ShapesConfig::default(), 1, Split::Test, 32, 3).unwrap();
        assert_eq!(t.len(), 2000);
        assert!((0..50).all(|i| a.image(i) != t.image(i)));
        // A fixed shapes.seed overrides the run seed.
        let cfg = ShapesConfig {
            seed: Some(5),
            ..ShapesConfig::default()
        };
        let c1 = Shapes::new(&cfg, 1, Split::Train, 32, 3).unwrap();
        let c2 = Shapes::new(&cfg, 2, Split::Train, 32, 3).unwrap();
        assert_eq!(c1.image(7), c2.image(7));
    }

    #[test]
    fn size_range_is_honoured_and_keeps_every_shape_in_the_frame() {
        let cfg = ShapesConfig {
            size: [0.26, MAX_SIZE],
            ..ShapesConfig::default()
        };
        let big = Shapes::new(&cfg, 3, Split::Train, 32, 3).unwrap();
        let small = shapes(3, 32);
        for i in 0..500 {
            let (a, b) = (big.attributes(i), small.attributes(i));
            assert!((0.26..=MAX_SIZE).contains(&a.size), "{a:?}");
            // Kind, colour and background do not depend on the size range.
            assert_eq!(
                (a.kind, a.colour, a.background),
                (b.kind, b.colour, b.background)
            );
            // The largest reach (EXTENT · size) plus the margin stays inside [0, 1].
            let reach = EXTENT * a.size + MARGIN;
            assert!(a.x - reach >= -1e-6 && a.x + reach <= 1.0 + 1e-6, "{a:?}");
            assert!(a.y - reach >= -1e-6 && a.y + reach <= 1.0 + 1e-6, "{a:?}");
            // No shape pixel on the image border: the border keeps the background colour.
            let img = big.image(i);
            let bg = a.background;
            for k in 0..32 {
                for (r, c) in [(0, k), (31, k), (k, 0), (k, 31)] {
                    let o = (r * 32 + c) * 3;
                    assert_eq!(img[o..o + 3], bg, "image {i} pixel ({r}, {c})");
                }
            }
        }
        // Bad ranges name the key and the allowed bounds.
        for bad in [[0.3, 0.2], [0.01, 0.2], [0.2, 0.4], [f32::NAN, 0.3]] {
            let cfg = ShapesConfig {
                size: bad,
                ..ShapesConfig::default()
            };
            let e = Shapes::new(&cfg, 1, Split::Train, 32, 3)
                .unwrap_err()
                .to_string();
            assert!(e.contains("shapes.size") && e.contains("0.344"), "{e}");
        }
    }

    #[test]
    fn classes_are_balanced_ish() {
        let s = shapes(7, 32);
        let mut counts = [0usize; 6];
        for i in 0..6000 {
            counts[s.get(i, 0).unwrap().label as usize] += 1;
        }
        for c in counts {
            assert!((850..=1150).contains(&c), "{counts:?}");
        }
        assert_eq!(s.class_names().len(), 6);
        assert_eq!(s.num_classes(), Some(6));
    }

    #[test]
    fn colour_and_kind_colour_labels() {
        let with = |label| {
            let cfg = ShapesConfig {
                label,
                ..ShapesConfig::default()
            };
            Shapes::new(&cfg, 7, Split::Train, 32, 3).unwrap()
        };
        let (kind, colour, both) = (
            with(ShapesLabel::Kind),
            with(ShapesLabel::Color),
            with(ShapesLabel::KindColor),
        );
        assert_eq!(kind.num_classes(), Some(6));
        assert_eq!(colour.num_classes(), Some(8));
        assert_eq!(both.num_classes(), Some(48));
        let names = both.class_names();
        assert_eq!(names.len(), 48);
        assert_eq!(names[0], "red-circle");
        assert_eq!(names[8 + 5], "blue-square");
        assert_eq!(colour.class_names()[5], "blue");
        let mut seen = [0usize; 48];
        for i in 0..4800 {
            let a = both.attributes(i);
            let (k, c, kc) = (
                kind.get(i, 0).unwrap(),
                colour.get(i, 0).unwrap(),
                both.get(i, 0).unwrap(),
            );
            // Same image, three labellings, each read off the known attributes.
            assert_eq!(k.pixels, kc.pixels);
            assert_eq!(ShapeKind::ALL[k.label as usize], a.kind);
            assert_eq!(Colour::ALL[c.label as usize], a.colour);
            assert_eq!(
                names[kc.label as usize],
                format!("{}-{}", a.colour.name(), a.kind.name())
            );
            seen[kc.label as usize] += 1;
        }
        // All 48 combinations occur (≈ 100 each).
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        // The recipe spelling.
        let cfg: ShapesConfig = toml::from_str("label = \"kind_color\"").unwrap();
        assert_eq!(cfg.label, ShapesLabel::KindColor);
        assert_eq!(ShapesConfig::default().label, ShapesLabel::Kind);
        assert!(toml::from_str::<ShapesConfig>("label = \"size\"").is_err());
    }

    #[test]
    fn shapes_fit_and_are_visible_at_16_32_64() {
        for size in [16usize, 32, 64] {
            let s = shapes(3, size);
            for i in 0..200 {
                let a = s.attributes(i);
                let img = render(&a, size);
                assert_eq!(img.len(), size * size * 3);
                // The border row/column stays background: nothing is clipped.
                for k in 0..size {
                    for &(x, y) in &[(k, 0), (k, size - 1), (0, k), (size - 1, k)] {
                        let o = (y * size + x) * 3;
                        assert_eq!(&img[o..o + 3], &a.background, "{a:?} at {size}");
                    }
                }
                // A good share of pixels clearly differs from the background.
                let bg = a.background;
                let covered = img
                    .chunks_exact(3)
                    .filter(|p| (0..3).any(|c| (p[c] as i32 - bg[c] as i32).abs() > 40))
                    .count();
                assert!(covered * 100 >= size * size * 5, "{a:?} at {size}");
            }
        }
    }

    #[test]
    fn samples_are_normalised_and_shaped() {
        let s = Shapes::new(&ShapesConfig::default(), 0, Split::Train, 32, 1).unwrap();
        assert_eq!(s.shape(), [1, 32, 32]);
        let x = s.get(0, 0).unwrap();
        assert_eq!(x.pixels.len(), 32 * 32);
        assert!(x.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(s.get(20_000, 0).is_err());
        assert!(Shapes::new(&ShapesConfig::default(), 0, Split::Train, 8, 3).is_err());
    }
}
