//! `data.pad`: a dataset framed with black borders (torchvision's `Pad(p)` after `ToTensor`,
//! before `Normalize`): every sample of the inner dataset gets `pad` pixels of value 0 (−1 in
//! [-1, 1]) on each side.

use std::sync::Arc;

use crate::{DataError, Dataset, Sample};

/// The inner dataset's samples zero-padded by `pad` pixels per side.
pub(crate) struct Padded {
    inner: Arc<dyn Dataset>,
    pad: usize,
}

impl Padded {
    pub(crate) fn new(inner: Arc<dyn Dataset>, pad: usize) -> Self {
        Self { inner, pad }
    }
}

/// `pixels` (`[C, H, W]`) framed by `pad` pixels of −1 on every side.
fn frame(pixels: &[f32], [c, h, w]: [usize; 3], pad: usize) -> Vec<f32> {
    let (ow, oh) = (w + 2 * pad, h + 2 * pad);
    let mut out = vec![-1.0; c * oh * ow];
    for ch in 0..c {
        for y in 0..h {
            let src = &pixels[(ch * h + y) * w..][..w];
            out[(ch * oh + y + pad) * ow + pad..][..w].copy_from_slice(src);
        }
    }
    out
}

impl Dataset for Padded {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> [usize; 3] {
        let [c, h, w] = self.inner.shape();
        [c, h + 2 * self.pad, w + 2 * self.pad]
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }

    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }

    fn get(&self, index: usize, aug_seed: u64) -> Result<Sample, DataError> {
        let s = self.inner.get(index, aug_seed)?;
        Ok(Sample {
            pixels: frame(&s.pixels, self.inner.shape(), self.pad),
            label: s.label,
        })
    }

    fn describe(&self) -> String {
        let [_, h, w] = self.shape();
        format!(
            "{}, zero-padded by {} to {h}×{w}",
            self.inner.describe(),
            self.pad
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_matches_torch_pad() {
        // torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1) of x = [[[1, 2, 3], [4, 5, 6]]]:
        // [[-1 -1 -1 -1 -1], [-1 1 2 3 -1], [-1 4 5 6 -1], [-1 -1 -1 -1 -1]].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = frame(&x, [1, 2, 3], 1);
        #[rustfmt::skip]
        let want = [
            -1., -1., -1., -1., -1.,
            -1., 1., 2., 3., -1.,
            -1., 4., 5., 6., -1.,
            -1., -1., -1., -1., -1.,
        ];
        assert_eq!(y, want);
        // Two channels: each framed on its own.
        let y = frame(&[0.5, 0.25], [2, 1, 1], 2);
        assert_eq!(y.len(), 2 * 25);
        assert_eq!(y[12], 0.5);
        assert_eq!(y[25 + 12], 0.25);
        assert_eq!(y.iter().filter(|&&v| v == -1.0).count(), 48);
    }
}
