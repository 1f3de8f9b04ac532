//! The per-sample pipeline: channel conversion, resize of the shorter side
//! with a triangle (bilinear) filter, centre/random crop, and normalisation
//! to [-1, 1].
//!
//! The resampler is PIL's (what torchvision's `Resize` on PIL images runs,
//! and what `antialias=True` approximates for tensors): output pixel `i`
//! samples at centre `(i + 0.5) * in/out`, the triangle filter is widened by
//! `in/out` when shrinking so every input pixel contributes (no aliasing),
//! and weights are renormalised at the borders. It runs on f32 planes so no
//! precision is lost to an intermediate u8 image.

use crate::config::Crop;
use crate::rng;

/// A decoded 8-bit image, rows of interleaved channels (HWC), 1 or 3 channels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawImage<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

/// ITU-R 601-2 luma, as PIL's `convert("L")`.
pub(crate) fn luma(r: f32, g: f32, b: f32) -> f32 {
    r * 0.299 + g * 0.587 + b * 0.114
}

/// Maps a byte value to [-1, 1]: 0 → -1, 255 → 1 (`x / 127.5 - 1`).
pub fn normalize(x: f32) -> f32 {
    x / 127.5 - 1.0
}

/// Converts interleaved 8-bit pixels between 1 and 3 channels (luma for
/// RGB → grey, repetition for grey → RGB).
pub(crate) fn convert_channels(data: &[u8], from: usize, to: usize) -> Vec<u8> {
    match (from, to) {
        (3, 1) => data
            .chunks_exact(3)
            .map(|p| luma(p[0] as f32, p[1] as f32, p[2] as f32).round() as u8)
            .collect(),
        (1, 3) => data.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => data.to_vec(),
    }
}

/// Size of the image after its shorter side is resized to `size`
/// (torchvision: the longer side is `int(size * long / short)`).
pub(crate) fn resized_dims(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size * height / width).max(size))
    } else {
        ((size * width / height).max(size), size)
    }
}

/// Contributions of the input pixels to one output pixel.
struct Tap {
    start: usize,
    weights: Vec<f32>,
}

/// PIL-style triangle-filter coefficients for output pixels
/// `first .. first + count` of an `in_len → out_len` resize.
fn taps(in_len: usize, out_len: usize, first: usize, count: usize) -> Vec<Tap> {
    let scale = in_len as f64 / out_len as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // triangle support is 1, widened when shrinking
    (first..first + count)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // `as i64` truncates towards zero, as PIL's `(int)` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_len as i64) as usize;
            let xmin = xmin.min(xmax.saturating_sub(1));
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filterscale).abs();
                    (1.0 - t).max(0.0)
                })
                .collect();
            let total: f64 = w.iter().sum();
            if total > 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            } else if let Some(first) = w.first_mut() {
                *first = 1.0;
            }
            Tap {
                start: xmin,
                weights: w.into_iter().map(|v| v as f32).collect(),
            }
        })
        .collect()
}

/// Resamples one row-major plane `w × h` to the window
/// `[ox, ox + out_w) × [oy, oy + out_h)` of its `rw × rh` resize.
#[allow(clippy::too_many_arguments)]
fn resample_plane(
    src: &[f32],
    w: usize,
    h: usize,
    rw: usize,
    rh: usize,
    ox: usize,
    oy: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<f32> {
    // Horizontal pass: h rows × out_w columns.
    let tx = taps(w, rw, ox, out_w);
    let mut tmp = vec![0f32; h * out_w];
    if w == rw {
        for y in 0..h {
            tmp[y * out_w..(y + 1) * out_w].copy_from_slice(&src[y * w + ox..y * w + ox + out_w]);
        }
    } else {
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, tap) in tx.iter().enumerate() {
                let mut acc = 0f32;
                for (k, &wt) in tap.weights.iter().enumerate() {
                    acc += wt * row[tap.start + k];
                }
                tmp[y * out_w + x] = acc;
            }
        }
    }
    // Vertical pass: out_h rows × out_w columns.
    if h == rh {
        return tmp[oy * out_w..(oy + out_h) * out_w].to_vec();
    }
    let ty = taps(h, rh, oy, out_h);
    let mut out = vec![0f32; out_h * out_w];
    for (y, tap) in ty.iter().enumerate() {
        let dst = &mut out[y * out_w..(y + 1) * out_w];
        for (k, &wt) in tap.weights.iter().enumerate() {
            let srow = &tmp[(tap.start + k) * out_w..(tap.start + k + 1) * out_w];
            for (d, s) in dst.iter_mut().zip(srow) {
                *d += wt * s;
            }
        }
    }
    out
}

/// The crop window's top-left corner inside the resized image.
fn crop_origin(rw: usize, rh: usize, size: usize, crop: Crop, aug_seed: u64) -> (usize, usize) {
    match crop {
        Crop::Center => ((rw - size) / 2, (rh - size) / 2),
        Crop::Random | Crop::RandomNative => {
            let mut r = rng::rng(&[aug_seed, 0x63726F70]); // "crop"
            (
                rng::below(&mut r, rw - size + 1),
                rng::below(&mut r, rh - size + 1),
            )
        }
    }
}

/// Turns a decoded image into a CHW f32 sample in [-1, 1] of
/// `out_channels × size × size`: channel conversion, shorter side resized to
/// `size`, crop, normalisation.
pub(crate) fn prepare(
    img: RawImage<'_>,
    size: usize,
    out_channels: usize,
    crop: Crop,
    aug_seed: u64,
) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    let n = w * h;
    // Planes to resample: grey sources stay one plane (repeated at the end);
    // RGB sources become one luma plane when grey output is wanted.
    let planes: Vec<Vec<f32>> = match (img.channels, out_channels) {
        (3, 1) => vec![img
            .data
            .chunks_exact(3)
            .map(|p| luma(p[0] as f32, p[1] as f32, p[2] as f32))
            .collect()],
        (3, _) => (0..3)
            .map(|c| {
                img.data
                    .iter()
                    .skip(c)
                    .step_by(3)
                    .map(|&v| v as f32)
                    .collect()
            })
            .collect(),
        _ => vec![img.data[..n].iter().map(|&v| v as f32).collect()],
    };
    let (rw, rh) = if crop == Crop::RandomNative && w.min(h) >= size {
        (w, h) // a window of the image as it is
    } else {
        resized_dims(w, h, size)
    };
    let (ox, oy) = crop_origin(rw, rh, size, crop, aug_seed);
    let resized: Vec<Vec<f32>> = planes
        .iter()
        .map(|p| resample_plane(p, w, h, rw, rh, ox, oy, size, size))
        .collect();
    let mut out = Vec::with_capacity(out_channels * size * size);
    for c in 0..out_channels {
        let plane = &resized[c.min(resized.len() - 1)];
        out.extend(plane.iter().map(|&v| normalize(v)));
    }
    out
}

#[cfg(test)]
pub(crate) fn resample_1d(src: &[f32], out_len: usize) -> Vec<f32> {
    resample_plane(src, src.len(), 1, out_len, 1, 0, 0, out_len, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn upsample_matches_hand_computed_pil_bilinear() {
        // 2 → 4: centres at 0.25, 0.75, 1.25, 1.75 in input coordinates;
        // the pixel at 0.75 mixes 0.75·x0 + 0.25·x1, the edges clamp.
        close(&resample_1d(&[0.0, 255.0], 4), &[0.0, 63.75, 191.25, 255.0]);
    }

    #[test]
    fn downsample_widens_the_filter() {
        // 4 → 2: scale 2, support 2. Output 0 centre 1.0 takes x0,x1,x2
        // with weights .75,.75,.25; output 1 centre 3.0 takes x1,x2,x3 with
        // .25,.75,.75; both normalised by 1.75.
        let src = [0.0, 100.0, 200.0, 255.0];
        let o0 = (0.75 * 0.0 + 0.75 * 100.0 + 0.25 * 200.0) / 1.75;
        let o1 = (0.25 * 100.0 + 0.75 * 200.0 + 0.75 * 255.0) / 1.75;
        close(&resample_1d(&src, 2), &[o0, o1]);
    }

    #[test]
    fn same_size_is_identity() {
        let src = [3.0, 7.0, 11.0, 250.0, 0.0];
        close(&resample_1d(&src, 5), &src);
    }

    #[test]
    fn normalisation_endpoints() {
        assert_eq!(normalize(0.0), -1.0);
        assert_eq!(normalize(255.0), 1.0);
        assert!(normalize(127.5).abs() < 1e-7);
    }

    #[test]
    fn two_by_two_to_four_is_separable_product() {
        // [[0, 255], [255, 255]] grey → 4×4, then normalised.
        let data = [0u8, 255, 255, 255];
        let img = RawImage {
            width: 2,
            height: 2,
            channels: 1,
            data: &data,
        };
        let out = prepare(img, 4, 1, Crop::Center, 0);
        let col = [0.0f32, 63.75, 191.25, 255.0]; // first row / column profile
                                                  // Row y of the result = (1 - a_y)·row0 + a_y·row1 with a = [0, .25, .75, 1].
        let a = [0.0f32, 0.25, 0.75, 1.0];
        let mut want = Vec::new();
        for &ay in &a {
            for &cx in &col {
                want.push(normalize((1.0 - ay) * cx + ay * 255.0));
            }
        }
        close(&out, &want);
    }

    #[test]
    fn shorter_side_resize_then_center_and_random_crop() {
        // 4×2 grey image whose columns are 0, 100, 200, 255 (both rows).
        // size 1: shorter side 2 → 1, so 4 → 2 wide: [71.43, 209.29];
        // centre crop takes column (2 - 1) / 2 = 0.
        let data = [0u8, 100, 200, 255, 0, 100, 200, 255];
        let img = RawImage {
            width: 4,
            height: 2,
            channels: 1,
            data: &data,
        };
        let o0 = (0.75 * 0.0 + 0.75 * 100.0 + 0.25 * 200.0) / 1.75;
        let o1 = (0.25 * 100.0 + 0.75 * 200.0 + 0.75 * 255.0) / 1.75;
        close(&prepare(img, 1, 1, Crop::Center, 0), &[normalize(o0)]);
        // Random crops pick either column, depending on the seed only.
        let mut seen = [false, false];
        for seed in 0..64 {
            let v = prepare(img, 1, 1, Crop::Random, seed)[0];
            assert_eq!(v, prepare(img, 1, 1, Crop::Random, seed)[0]);
            if (v - normalize(o0)).abs() < 1e-4 {
                seen[0] = true;
            } else if (v - normalize(o1)).abs() < 1e-4 {
                seen[1] = true;
            } else {
                panic!("unexpected crop value {v}");
            }
        }
        assert_eq!(seen, [true, true]);
        // Native-scale crops are windows of the original pixels: with a 1×1 window of a 4×2
        // image whose 8 pixels all differ, every value is one of them, and all 8 positions occur.
        let distinct = [0u8, 100, 200, 255, 30, 130, 230, 60];
        let img8 = RawImage {
            data: &distinct,
            ..img
        };
        let mut hits = std::collections::HashSet::new();
        for seed in 0..200 {
            let v = prepare(img8, 1, 1, Crop::RandomNative, seed)[0];
            assert_eq!(v, prepare(img8, 1, 1, Crop::RandomNative, seed)[0]);
            let p = distinct
                .iter()
                .position(|&d| (normalize(d as f32) - v).abs() < 1e-6)
                .expect("a native crop is an original pixel");
            hits.insert(p);
        }
        assert_eq!(hits.len(), 8, "every position reached: {hits:?}");
        // A 2×2 window keeps the pixels as they are (no resampling).
        let w = prepare(img, 2, 1, Crop::RandomNative, 5);
        let x0 = (0..3)
            .find(|&x| (normalize(data[x] as f32) - w[0]).abs() < 1e-6)
            .unwrap();
        let want: Vec<f32> = [data[x0], data[x0 + 1], data[4 + x0], data[5 + x0]]
            .iter()
            .map(|&d| normalize(d as f32))
            .collect();
        close(&w, &want);
        // Smaller than the window: resized up like `random`.
        assert_eq!(prepare(img, 3, 1, Crop::RandomNative, 1).len(), 9);
    }

    #[test]
    fn dims_and_channel_conversion() {
        // 50×30 RGB → 16: shorter side 30 → 16, 50 → 26, crop 16×16.
        assert_eq!(resized_dims(50, 30, 16), (26, 16));
        assert_eq!(resized_dims(30, 50, 16), (16, 26));
        let data: Vec<u8> = (0..50 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let img = RawImage {
            width: 50,
            height: 30,
            channels: 3,
            data: &data,
        };
        assert_eq!(prepare(img, 16, 3, Crop::Center, 0).len(), 3 * 16 * 16);
        assert_eq!(prepare(img, 16, 1, Crop::Random, 3).len(), 16 * 16);
        // A pure red pixel goes grey with luma .299; grey repeats to 3 planes.
        let red = [255u8, 0, 0];
        let one = RawImage {
            width: 1,
            height: 1,
            channels: 3,
            data: &red,
        };
        close(
            &prepare(one, 1, 1, Crop::Center, 0),
            &[normalize(255.0 * 0.299)],
        );
        let g = [51u8];
        let grey = RawImage {
            width: 1,
            height: 1,
            channels: 1,
            data: &g,
        };
        let v = normalize(51.0);
        close(&prepare(grey, 2, 3, Crop::Center, 0), &[v; 12]);
    }
}
