//! Image grids: tensors in [-1, 1] to PNG (like torchvision's `make_grid` + `save_image`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{IoContext, Result, TrainError};

/// A grid of images as 8-bit pixels, row-major HWC.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// `height × width × channels` bytes.
    pub pixels: Vec<u8>,
}

/// Lays out `images` `[N, C, H, W]` (values in [-1, 1], C = 1 or 3) in rows of `ncol` with
/// `pad` pixels of `pad_value` (0..255) between and around tiles.
pub fn make_grid(images: &Tensor, ncol: usize, pad: usize, pad_value: u8) -> Result<Grid> {
    let (n, c, h, w) = images.dims4()?;
    if c != 1 && c != 3 {
        return Err(TrainError::Run(format!(
            "image grid needs 1 or 3 channels, got shape {:?}",
            images.dims()
        )));
    }
    if n == 0 {
        return Err(TrainError::Run("image grid of zero images".into()));
    }
    let ncol = ncol.clamp(1, n);
    let nrow = n.div_ceil(ncol);
    let gw = ncol * (w + pad) + pad;
    let gh = nrow * (h + pad) + pad;
    // [-1, 1] → [0, 255], rounded as torchvision's save_image does (x·255 + 0.5, clamped).
    let data = images
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut pixels = vec![pad_value; gw * gh * c];
    for i in 0..n {
        let (gy, gx) = (pad + (i / ncol) * (h + pad), pad + (i % ncol) * (w + pad));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = data[((i * c + ch) * h + y) * w + x];
                    let v01 = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
                    let byte = (v01 * 255.0 + 0.5).floor().min(255.0) as u8;
                    pixels[((gy + y) * gw + gx + x) * c + ch] = byte;
                }
            }
        }
    }
    Ok(Grid {
        width: gw as u32,
        height: gh as u32,
        channels: c as u8,
        pixels,
    })
}

/// A sensible number of columns for `n` tiles (8 for 64, as torchvision's default nrow).
pub fn default_ncol(n: usize) -> usize {
    if n >= 64 {
        8
    } else {
        (n as f64).sqrt().ceil().max(1.0) as usize
    }
}

impl Grid {
    /// Writes the grid as PNG, atomically (temporary file, then rename).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let tmp = crate::checkpoint::temp_sibling(path);
        image::save_buffer_with_format(
            &tmp,
            &self.pixels,
            self.width,
            self.height,
            color,
            image::ImageFormat::Png,
        )
        .map_err(|e| TrainError::Run(format!("writing {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).ctx("renaming into", path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_value_mapping() {
        // Two 1×2×3 images (grey): tile 0 all −1 (black), tile 1 values ramp.
        let a = vec![-1.0f32; 6];
        let b = vec![-1.0f32, -0.5, 0.0, 0.5, 1.0, 2.0];
        let t = Tensor::from_vec([a, b].concat(), (2, 1, 2, 3), &Device::Cpu).unwrap();
        let g = make_grid(&t, 2, 1, 255).unwrap();
        // width = 2·(3+1)+1 = 9, height = 1·(2+1)+1 = 4
        assert_eq!((g.width, g.height, g.channels), (9, 4, 1));
        let px = |x: usize, y: usize| g.pixels[y * 9 + x];
        assert_eq!(px(0, 0), 255); // padding
        assert_eq!(px(1, 1), 0); // tile 0
                                 // tile 1 starts at x = 5: −0.5 → 0.25·255 + 0.5 = 64.25 → 64; 0 → 128; 1 and 2 → 255
        assert_eq!([px(5, 1), px(6, 1), px(7, 1)], [0, 64, 128]);
        assert_eq!([px(5, 2), px(6, 2), px(7, 2)], [191, 255, 255]);
    }

    #[test]
    fn png_round_trip_non_square() {
        let t = Tensor::rand(-1f32, 1., (3, 3, 5, 7), &Device::Cpu).unwrap();
        let g = make_grid(&t, 3, 2, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        g.save_png(&p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (g.width, g.height));
        assert_eq!(img.into_raw(), g.pixels);
    }
}
