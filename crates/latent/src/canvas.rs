//! 8-bit RGB pictures: tiles from generator output, a 3×5 bitmap font, contact sheets, and
//! simple composition (side by side, stacked) for the figures.
//!
//! Tiles are converted exactly as `easel sample` (and torchvision's `save_image`) converts
//! images: `[-1, 1] → [0, 1]`, clamped, `⌊x·255 + ½⌋`. Grey images are repeated to RGB. Text is
//! drawn only in the padding around tiles, never over a tile, so every tile of a contact sheet is
//! exactly what the generator produced from that tile's z.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{file_err, invalid, Result};

/// An RGB picture, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width × 3` bytes.
    pub pixels: Vec<u8>,
}

/// Colour of the background and padding.
pub const BACKGROUND: [u8; 3] = [0, 0, 0];
/// Colour of ids and signs.
pub const INK: [u8; 3] = [235, 235, 235];
/// Colour of the minus sign and of misses in check figures.
pub const RED: [u8; 3] = [235, 70, 70];
/// Colour of the plus sign and of hits in check figures.
pub const GREEN: [u8; 3] = [70, 220, 90];

/// The byte `easel sample` writes for a generator value `v` in [-1, 1].
pub fn to_byte(v: f32) -> u8 {
    let v01 = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
    (v01 * 255.0 + 0.5).floor().min(255.0) as u8
}

/// 3×5 glyphs: each row's low 3 bits, left pixel = bit 2.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '+' => [0b000, 0b010, 0b111, 0b010, 0b000],
        '-' | '−' => [0b000, 0b000, 0b111, 0b000, 0b000],
        '=' => [0b000, 0b111, 0b000, 0b111, 0b000],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        ':' => [0b000, 0b010, 0b000, 0b010, 0b000],
        '#' => [0b101, 0b111, 0b101, 0b111, 0b101],
        'x' => [0b000, 0b101, 0b010, 0b101, 0b000],
        ' ' => [0; 5],
        _ => return None,
    })
}

/// Width in pixels of `text` at `scale` (glyphs 3 wide, 1 pixel apart).
pub fn text_width(text: &str, scale: usize) -> usize {
    let n = text.chars().count();
    if n == 0 {
        0
    } else {
        (4 * n - 1) * scale
    }
}

/// Height in pixels of a line of text at `scale`.
pub fn text_height(scale: usize) -> usize {
    5 * scale
}

impl Canvas {
    /// A `width × height` canvas filled with `fill`.
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Canvas {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&fill);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// One canvas per image of `images` `[N, C, H, W]` (values in [-1, 1], C = 1 or 3).
    pub fn tiles(images: &Tensor) -> Result<Vec<Canvas>> {
        let (n, c, h, w) = images.dims4()?;
        if c != 1 && c != 3 {
            return invalid(format!(
                "images need 1 or 3 channels, got shape {:?}",
                images.dims()
            ));
        }
        let data = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((0..n)
            .map(|i| {
                let mut t = Canvas::new(w, h, BACKGROUND);
                for y in 0..h {
                    for x in 0..w {
                        for ch in 0..3 {
                            let src = if c == 1 { 0 } else { ch };
                            t.pixels[(y * w + x) * 3 + ch] =
                                to_byte(data[((i * c + src) * h + y) * w + x]);
                        }
                    }
                }
                t
            })
            .collect())
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.pixels[o], self.pixels[o + 1], self.pixels[o + 2]]
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let o = (y * self.width + x) * 3;
            self.pixels[o..o + 3].copy_from_slice(&c);
        }
    }

    /// Copies `src` with its top-left corner at (x, y) (clipped at the edges).
    pub fn blit(&mut self, src: &Canvas, x: usize, y: usize) {
        for sy in 0..src.height {
            if y + sy >= self.height {
                break;
            }
            let w = src.width.min(self.width.saturating_sub(x));
            if w == 0 {
                return;
            }
            let d = ((y + sy) * self.width + x) * 3;
            let s = sy * src.width * 3;
            self.pixels[d..d + w * 3].copy_from_slice(&src.pixels[s..s + w * 3]);
        }
    }

    /// The `w × h` region at (x, y).
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Canvas {
        let mut c = Canvas::new(w, h, BACKGROUND);
        for yy in 0..h.min(self.height.saturating_sub(y)) {
            for xx in 0..w.min(self.width.saturating_sub(x)) {
                c.set(xx, yy, self.pixel(x + xx, y + yy));
            }
        }
        c
    }

    /// Draws `text` (digits, `+ − = . : # x` and space; other characters as `#`) with its
    /// top-left corner at (x, y).
    pub fn draw_text(&mut self, text: &str, x: usize, y: usize, scale: usize, ink: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let g = glyph(ch).or_else(|| glyph('#')).unwrap_or([0; 5]);
            let gx = x + i * 4 * scale;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(gx + col * scale + dx, y + row * scale + dy, ink);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `text` alone on a canvas of its size plus `margin` on every side.
    pub fn text(text: &str, scale: usize, margin: usize, ink: [u8; 3]) -> Canvas {
        let mut c = Canvas::new(
            text_width(text, scale) + 2 * margin,
            text_height(scale) + 2 * margin,
            BACKGROUND,
        );
        c.draw_text(text, margin, margin, scale, ink);
        c
    }

    /// Draws a 1-pixel rectangle outline just outside the `w × h` box at (x, y).
    pub fn outline(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3]) {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        let (x1, y1) = (x + w, y + h);
        for xx in x0..=x1 {
            self.set(xx, y0, colour);
            self.set(xx, y1, colour);
        }
        for yy in y0..=y1 {
            self.set(x0, yy, colour);
            self.set(x1, yy, colour);
        }
    }

    /// `parts` side by side, `gap` pixels apart, vertically centred.
    pub fn hcat(parts: &[Canvas], gap: usize) -> Canvas {
        let h = parts.iter().map(|p| p.height).max().unwrap_or(0);
        let w = parts.iter().map(|p| p.width).sum::<usize>() + gap * parts.len().saturating_sub(1);
        let mut c = Canvas::new(w, h, BACKGROUND);
        let mut x = 0;
        for p in parts {
            c.blit(p, x, (h - p.height) / 2);
            x += p.width + gap;
        }
        c
    }

    /// `parts` stacked, `gap` pixels apart, left-aligned.
    pub fn vcat(parts: &[Canvas], gap: usize) -> Canvas {
        let w = parts.iter().map(|p| p.width).max().unwrap_or(0);
        let h = parts.iter().map(|p| p.height).sum::<usize>() + gap * parts.len().saturating_sub(1);
        let mut c = Canvas::new(w, h, BACKGROUND);
        let mut y = 0;
        for p in parts {
            c.blit(p, 0, y);
            y += p.height + gap;
        }
        c
    }

    /// `margin` pixels of background around the canvas.
    pub fn pad(&self, margin: usize) -> Canvas {
        let mut c = Canvas::new(
            self.width + 2 * margin,
            self.height + 2 * margin,
            BACKGROUND,
        );
        c.blit(self, margin, margin);
        c
    }

    /// Writes the canvas as an RGB PNG, atomically (temporary sibling, then rename), creating
    /// the parent folder.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| file_err(parent, format!("creating: {e}")))?;
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        image::save_buffer_with_format(
            &tmp,
            &self.pixels,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| file_err(&tmp, format!("writing PNG: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err(path, format!("renaming into place: {e}")))
    }
}

/// Where a [`Sheet`] put each tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sheet {
    /// The picture.
    pub canvas: Canvas,
    /// Top-left corner of tile `i`.
    pub origins: Vec<(usize, usize)>,
}

/// The larger text scale (1 or 2) at which every caption fits under a tile of width `w` (at
/// most 2, so the rows of one figure agree).
fn caption_scale(captions: &[Option<String>], w: usize) -> usize {
    let longest = captions
        .iter()
        .flatten()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    (1..=2)
        .rev()
        .find(|&s| text_width(&"0".repeat(longest), s) <= w + 2)
        .unwrap_or(1)
}

/// A numbered contact sheet: `tiles` in rows of `ncol` with `pad` pixels around them and each
/// caption (e.g. the z bank id) drawn in a band under its tile. Tiles are copied unchanged.
pub fn sheet(
    tiles: &[Canvas],
    ncol: usize,
    pad: usize,
    captions: &[Option<String>],
) -> Result<Sheet> {
    let Some(first) = tiles.first() else {
        return invalid("a contact sheet of zero images");
    };
    if !captions.is_empty() && captions.len() != tiles.len() {
        return invalid(format!(
            "{} captions for {} tiles",
            captions.len(),
            tiles.len()
        ));
    }
    let (w, h) = (first.width, first.height);
    if tiles.iter().any(|t| (t.width, t.height) != (w, h)) {
        return invalid("contact sheet tiles of different sizes");
    }
    let ncol = ncol.clamp(1, tiles.len());
    let nrow = tiles.len().div_ceil(ncol);
    let has_captions = captions.iter().any(Option::is_some);
    let scale = caption_scale(captions, w);
    let band = if has_captions {
        text_height(scale) + 2
    } else {
        0
    };
    let cell_h = h + band + pad;
    let mut canvas = Canvas::new(ncol * (w + pad) + pad, nrow * cell_h + pad, BACKGROUND);
    let mut origins = Vec::with_capacity(tiles.len());
    for (i, t) in tiles.iter().enumerate() {
        let (x, y) = (pad + (i % ncol) * (w + pad), pad + (i / ncol) * cell_h);
        canvas.blit(t, x, y);
        origins.push((x, y));
        if let Some(Some(c)) = captions.get(i) {
            let tw = text_width(c, scale);
            let cx = x + w.saturating_sub(tw) / 2;
            canvas.draw_text(c, cx, y + h + 1, scale, INK);
        }
    }
    Ok(Sheet { canvas, origins })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_match_easel_sample() {
        // The mapping of easel_train::grid (torchvision's save_image).
        assert_eq!(
            [-1.0f32, -0.5, 0.0, 0.5, 1.0, 2.0, -3.0].map(to_byte),
            [0, 64, 128, 191, 255, 255, 0]
        );
    }

    #[test]
    fn tiles_grey_and_rgb() {
        let t = Tensor::new(&[-1f32, 0.0, 0.5, 1.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 2))
            .unwrap();
        let c = &Canvas::tiles(&t).unwrap()[0];
        assert_eq!(c.pixel(0, 0), [0, 0, 0]);
        assert_eq!(c.pixel(1, 0), [128, 128, 128]);
        assert_eq!(c.pixel(1, 1), [255, 255, 255]);
        let rgb = Tensor::new(&[1f32, -1.0, 0.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap();
        assert_eq!(Canvas::tiles(&rgb).unwrap()[0].pixel(0, 0), [255, 0, 128]);
        let two = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(Canvas::tiles(&two).is_err());
    }

    #[test]
    fn digits_render_as_their_bitmaps() {
        let c = Canvas::text("10", 1, 0, INK);
        assert_eq!((c.width, c.height), (7, 5));
        let on = |x, y| c.pixel(x, y) == INK;
        // "1": column 1 is lit on every row; "0" is a ring with a hole at (5, 2).
        assert!((0..5).all(|y| on(1, y)));
        assert!(on(4, 2) && on(6, 2) && !on(5, 2) && !on(3, 2));
        let big = Canvas::text("7", 2, 1, INK);
        assert_eq!((big.width, big.height), (8, 12));
        // Unknown characters do not panic.
        let _ = Canvas::text("a?", 1, 0, INK);
        for ch in "0123456789+-=.:#x ".chars() {
            assert!(glyph(ch).is_some());
        }
    }

    #[test]
    fn sheet_keeps_tiles_exact_and_captions_outside() {
        let tiles: Vec<Canvas> = (0..5u8)
            .map(|i| {
                let mut t = Canvas::new(16, 16, [i * 40, 10, 200]);
                t.set(3, 3, [1, 2, 3]);
                t
            })
            .collect();
        let caps: Vec<Option<String>> = (0..5).map(|i| Some(format!("{}", 100 + i))).collect();
        let s = sheet(&tiles, 3, 2, &caps).unwrap();
        assert_eq!(s.origins.len(), 5);
        for (t, &(x, y)) in tiles.iter().zip(&s.origins) {
            assert_eq!(&s.canvas.crop(x, y, 16, 16), t);
        }
        // Captions sit in the band under the tiles: ink appears only there.
        let scale = caption_scale(&caps, 16);
        assert_eq!(scale, 1); // "104" is 11 px wide; scale 2 would be 22 > 18
        let band = text_height(scale) + 2;
        assert_eq!(s.canvas.height, 2 * (16 + band + 2) + 2);
        let inked: usize = (0..s.canvas.height)
            .flat_map(|y| (0..s.canvas.width).map(move |x| (x, y)))
            .filter(|&(x, y)| s.canvas.pixel(x, y) == INK)
            .count();
        assert!(inked > 5 * 10, "{inked}");
        assert!(sheet(&tiles, 3, 2, &caps[..2]).is_err());
        assert!(sheet(&[], 3, 2, &[]).is_err());
        // Without captions the layout is easel sample's grid.
        let plain = sheet(&tiles, 3, 2, &[]).unwrap();
        assert_eq!(
            (plain.canvas.width, plain.canvas.height),
            (3 * 18 + 2, 2 * 18 + 2)
        );
    }

    #[test]
    fn composition_and_png_round_trip() {
        let a = Canvas::new(3, 2, [255, 0, 0]);
        let b = Canvas::new(2, 4, [0, 255, 0]);
        let h = Canvas::hcat(&[a.clone(), b.clone()], 1);
        assert_eq!((h.width, h.height), (6, 4));
        assert_eq!(h.pixel(0, 1), [255, 0, 0]);
        assert_eq!(h.pixel(0, 0), BACKGROUND);
        assert_eq!(h.pixel(4, 0), [0, 255, 0]);
        let v = Canvas::vcat(&[a, b], 2);
        assert_eq!((v.width, v.height), (3, 8));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/v.png");
        v.save_png(&p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (3, 8));
        assert_eq!(img.into_raw(), v.pixels);
    }
}
