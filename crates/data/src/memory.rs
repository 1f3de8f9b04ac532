//! A dataset held in memory as one array of same-sized 8-bit images: what
//! MNIST, Fashion-MNIST and CIFAR-10 (idx, binary batches or hub parquet)
//! all become once read. Small enough (≤ 150 MB) to keep whole, and then
//! `get` is a slice plus resize.

use crate::config::Crop;
use crate::transform::{self, RawImage};
use crate::{DataError, Dataset, Sample};

/// Same-sized images in HWC byte order plus their labels.
#[derive(Debug, Clone)]
pub(crate) struct ImageArray {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageArray {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

#[derive(Debug)]
pub(crate) struct InMemory {
    pub array: ImageArray,
    pub class_names: Vec<String>,
    pub image_size: usize,
    pub channels: usize,
    /// e.g. "MNIST train"
    pub title: String,
    /// e.g. "from ../shared/data/mnist"
    pub origin: String,
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.array.len()
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.class_names.len())
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn get(&self, index: usize, aug_seed: u64) -> Result<Sample, DataError> {
        let a = &self.array;
        if index >= a.len() {
            return Err(DataError::OutOfRange {
                index,
                len: a.len(),
            });
        }
        let n = a.width * a.height * a.channels;
        let img = RawImage {
            width: a.width,
            height: a.height,
            channels: a.channels,
            data: &a.pixels[index * n..(index + 1) * n],
        };
        Ok(Sample {
            pixels: transform::prepare(img, self.image_size, self.channels, Crop::Center, aug_seed),
            label: a.labels[index] as u32,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}, {} images {}×{}×{} {}",
            self.title,
            self.len(),
            self.channels,
            self.image_size,
            self.image_size,
            self.origin
        )
    }
}
