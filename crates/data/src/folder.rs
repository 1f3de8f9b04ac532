//! Any folder of PNG/JPEG images, searched recursively, labelled by
//! first-level subfolder like torchvision's `ImageFolder` when there are
//! subfolders with images.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{CorruptPolicy, Crop};
use crate::transform::{self, RawImage};
use crate::{DataError, Dataset, Sample};

/// Warnings printed at open before the rest are summarised.
const MAX_WARNINGS: usize = 20;
/// Nesting below which folders are not searched (guards against symlink loops).
const MAX_DEPTH: usize = 32;

const FIX: &str = "set data.dir to a folder of .png/.jpg/.jpeg images (optionally one subfolder per class), see data/README.md";

/// Whether the file name has an image extension we decode (case-insensitive).
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            e == "png" || e == "jpg" || e == "jpeg"
        })
        .unwrap_or(false)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted image files under `dir` (recursive, hidden entries skipped).
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        DataError::io(
            dir,
            e,
            "check that the folder exists and is readable; ".to_string() + FIX,
        )
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e, "check the folder's permissions"))?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        // `metadata` follows symlinks, so linked folders and files count.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, depth + 1, out)?,
            Ok(m) if m.is_file() && is_image(&path) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// Checks the header (format and dimensions) without decoding pixels.
fn check_header(path: &Path) -> Result<(u32, u32), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w == 0 || h == 0 {
        return Err(format!("has zero size {w}×{h}"));
    }
    Ok((w, h))
}

/// Decodes an image to 8-bit grey (1 channel) or RGB (3 channels), keeping
/// grey images grey. Alpha is dropped, as PIL's `convert("RGB")` does.
pub(crate) fn decode(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    Ok(dynamic_to_raw(img))
}

/// (width, height, channels, HWC bytes) of a decoded image.
pub(crate) fn dynamic_to_raw(img: image::DynamicImage) -> (usize, usize, usize, Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        (w, h, 3, img.into_rgb8().into_raw())
    } else {
        (w, h, 1, img.into_luma8().into_raw())
    }
}

/// An image folder.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    files: Vec<(PathBuf, u32)>,
    class_names: Vec<String>,
    image_size: usize,
    channels: usize,
    crop: Crop,
    policy: CorruptPolicy,
    skipped_at_open: usize,
    ignored_root_files: usize,
    warned: Mutex<HashSet<PathBuf>>,
}

impl Folder {
    /// Scans `root`, checks every file's header, and applies `policy` to the
    /// unreadable ones.
    pub fn open(
        root: &Path,
        image_size: usize,
        channels: usize,
        crop: Crop,
        policy: CorruptPolicy,
    ) -> Result<Folder, DataError> {
        if !root.is_dir() {
            return Err(DataError::NotFound {
                what: "image folder".to_string(),
                path: root.display().to_string(),
                fix: FIX.to_string(),
            });
        }
        // First level: files directly in root, and one list per subfolder.
        let mut root_files = Vec::new();
        let mut classes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let entries = std::fs::read_dir(root)
            .map_err(|e| DataError::io(root, e, "check the folder's permissions"))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| DataError::io(root, e, "check the folder's permissions"))?;
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let mut files = Vec::new();
                    walk(&path, 1, &mut files)?;
                    if !files.is_empty() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        classes.insert(name, files);
                    }
                }
                Ok(m) if m.is_file() && is_image(&path) => root_files.push(path),
                _ => {}
            }
        }
        let (mut candidates, class_names, ignored_root_files) = if classes.is_empty() {
            let c: Vec<(PathBuf, u32)> = root_files.into_iter().map(|p| (p, 0)).collect();
            (c, Vec::new(), 0)
        } else {
            let ignored = root_files.len();
            if ignored > 0 {
                eprintln!(
                    "warning: {}: {ignored} image(s) directly in the folder are ignored, because its subfolders are used as classes (move them into a subfolder to use them)",
                    root.display()
                );
            }
            let names: Vec<String> = classes.keys().cloned().collect();
            let mut c = Vec::new();
            for (label, (_, files)) in classes.into_iter().enumerate() {
                c.extend(files.into_iter().map(|p| (p, label as u32)));
            }
            (c, names, ignored)
        };
        candidates.sort();
        if candidates.is_empty() {
            return Err(DataError::Empty {
                path: root.to_path_buf(),
                problem: "no .png, .jpg or .jpeg files in it or its subfolders".to_string(),
                fix: FIX.to_string(),
            });
        }
        let total = candidates.len();
        let mut files = Vec::with_capacity(total);
        let mut skipped = 0usize;
        for (path, label) in candidates {
            match check_header(&path) {
                Ok(_) => files.push((path, label)),
                Err(reason) => match policy {
                    CorruptPolicy::Error => {
                        return Err(DataError::corrupt(
                            &path,
                            format!("unreadable image ({reason})"),
                            "delete or replace the file, or set data.on_corrupt = \"skip\" to skip unreadable images",
                        ))
                    }
                    CorruptPolicy::Skip => {
                        skipped += 1;
                        if skipped <= MAX_WARNINGS {
                            eprintln!(
                                "warning: skipping unreadable image {}: {reason}",
                                path.display()
                            );
                        }
                    }
                },
            }
        }
        if skipped > MAX_WARNINGS {
            eprintln!(
                "warning: … and {} more unreadable images skipped in {}",
                skipped - MAX_WARNINGS,
                root.display()
            );
        }
        if files.is_empty() {
            return Err(DataError::Empty {
                path: root.to_path_buf(),
                problem: format!("none of the {total} image files could be read"),
                fix: "check the files (are they really PNG/JPEG?); ".to_string() + FIX,
            });
        }
        Ok(Folder {
            root: root.to_path_buf(),
            files,
            class_names,
            image_size,
            channels,
            crop,
            policy,
            skipped_at_open: skipped,
            ignored_root_files,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// The image files in use, sorted, with their labels.
    pub fn files(&self) -> &[(PathBuf, u32)] {
        &self.files
    }

    /// Number of files skipped at open because their header was unreadable.
    pub fn skipped_at_open(&self) -> usize {
        self.skipped_at_open
    }

    fn load(&self, index: usize, aug_seed: u64) -> Result<Sample, (PathBuf, String)> {
        let (path, label) = &self.files[index];
        let (w, h, c, data) = decode(path).map_err(|e| (path.clone(), e))?;
        let img = RawImage {
            width: w,
            height: h,
            channels: c,
            data: &data,
        };
        Ok(Sample {
            pixels: transform::prepare(img, self.image_size, self.channels, self.crop, aug_seed),
            label: *label,
        })
    }
}

impl Dataset for Folder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.image_size, self.image_size]
    }

    /// `Some(k)` when labelled by `k` subfolders, `None` when unlabelled
    /// (every label is 0).
    fn num_classes(&self) -> Option<usize> {
        (!self.class_names.is_empty()).then_some(self.class_names.len())
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    /// Decodes file `index`. An undecodable file is an error under
    /// `on_corrupt = "error"`; under `"skip"` it is reported once on stderr
    /// and the next index (wrapping) is used instead, deterministically.
    fn get(&self, index: usize, aug_seed: u64) -> Result<Sample, DataError> {
        let n = self.files.len();
        if index >= n {
            return Err(DataError::OutOfRange { index, len: n });
        }
        for attempt in 0..n {
            match self.load((index + attempt) % n, aug_seed) {
                Ok(s) => return Ok(s),
                Err((path, reason)) => match self.policy {
                    CorruptPolicy::Error => {
                        return Err(DataError::corrupt(
                            &path,
                            format!("cannot decode image ({reason})"),
                            "delete or replace the file, or set data.on_corrupt = \"skip\" to skip unreadable images",
                        ))
                    }
                    CorruptPolicy::Skip => {
                        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                        if warned.insert(path.clone()) {
                            eprintln!(
                                "warning: skipping undecodable image {} ({reason}); using the next file instead",
                                path.display()
                            );
                        }
                    }
                },
            }
        }
        Err(DataError::Empty {
            path: self.root.clone(),
            problem: format!("none of the {n} images could be decoded"),
            fix: "check the files (are they really PNG/JPEG?); ".to_string() + FIX,
        })
    }

    fn describe(&self) -> String {
        let labels = if self.class_names.is_empty() {
            "unlabelled".to_string()
        } else {
            let mut names = self
                .class_names
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if self.class_names.len() > 5 {
                names.push_str(", …");
            }
            format!("{} classes ({names})", self.class_names.len())
        };
        let mut s = format!(
            "folder {}, {} images, {labels} → {}×{}×{}, {} crop",
            self.root.display(),
            self.files.len(),
            self.channels,
            self.image_size,
            self.image_size,
            match self.crop {
                Crop::Center => "center",
                Crop::Random => "random",
                Crop::RandomNative => "random-native",
            }
        );
        if self.skipped_at_open > 0 {
            s.push_str(&format!("; {} unreadable skipped", self.skipped_at_open));
        }
        if self.ignored_root_files > 0 {
            s.push_str(&format!(
                "; {} top-level images ignored",
                self.ignored_root_files
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    fn jpg(path: &Path, w: u32, h: u32, v: u8) {
        image::GrayImage::from_pixel(w, h, image::Luma([v]))
            .save(path)
            .unwrap();
    }

    fn open(root: &Path, policy: CorruptPolicy) -> Result<Folder, DataError> {
        Folder::open(root, 16, 3, Crop::Center, policy)
    }

    #[test]
    fn subfolders_are_classes_and_formats_mix() {
        let d = tempfile::tempdir().unwrap();
        let (cats, dogs) = (d.path().join("cats"), d.path().join("dogs"));
        std::fs::create_dir_all(cats.join("nested")).unwrap();
        std::fs::create_dir(&dogs).unwrap();
        png(&cats.join("a.png"), 20, 30, [255, 0, 0]);
        jpg(&cats.join("nested").join("b.JPG"), 40, 20, 200);
        jpg(&dogs.join("c.jpeg"), 16, 16, 10);
        std::fs::write(dogs.join("notes.txt"), "not an image").unwrap();
        std::fs::write(dogs.join(".hidden.png"), "junk").unwrap();
        let f = open(d.path(), CorruptPolicy::Error).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f.class_names(), vec!["cats", "dogs"]);
        assert_eq!(f.num_classes(), Some(2));
        let labels: Vec<u32> = (0..3).map(|i| f.get(i, 0).unwrap().label).collect();
        assert_eq!(labels, vec![0, 0, 1]);
        // PNG red → R plane 1, G/B planes -1; grey JPEG repeats to 3 planes.
        let red = f.get(0, 0).unwrap().pixels;
        assert_eq!(red.len(), 3 * 16 * 16);
        assert!((red[0] - 1.0).abs() < 1e-6 && (red[256] + 1.0).abs() < 1e-6);
        let grey = f.get(1, 0).unwrap().pixels;
        assert!(grey.iter().all(|&v| (v - grey[0]).abs() < 0.05));
        assert!(f.describe().contains("2 classes (cats, dogs)"));
    }

    #[test]
    fn flat_folder_is_unlabelled() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("x.png"), 8, 8, [1, 2, 3]);
        let f = open(d.path(), CorruptPolicy::Skip).unwrap();
        assert_eq!(f.num_classes(), None);
        assert_eq!(f.get(0, 0).unwrap().label, 0);
    }

    #[test]
    fn corrupt_file_skip_and_error_policies() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("a.png"), 8, 8, [0, 0, 0]);
        std::fs::write(d.path().join("b.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
        png(&d.path().join("c.png"), 8, 8, [255, 255, 255]);
        let e = open(d.path(), CorruptPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.png: unreadable image"), "{e}");
        assert!(e.contains("on_corrupt"), "{e}");
        let f = open(d.path(), CorruptPolicy::Skip).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.skipped_at_open(), 1);
        assert!(f.describe().contains("1 unreadable skipped"));
    }

    #[test]
    fn decode_failure_after_open_skips_to_next_or_errors() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("a.png"), 8, 8, [0, 0, 0]);
        png(&d.path().join("c.png"), 8, 8, [255, 255, 255]);
        // A valid header with truncated pixel data passes the open-time check.
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(d.path().join("b.png"), &bytes).unwrap();
        let f = open(d.path(), CorruptPolicy::Skip).unwrap();
        assert_eq!(f.len(), 3);
        let s = f.get(1, 0).unwrap(); // b.png → falls through to c.png (white)
        assert!(s.pixels.iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert_eq!(f.get(1, 0).unwrap().pixels, s.pixels);
        let f = open(d.path(), CorruptPolicy::Error).unwrap();
        let e = f.get(1, 0).unwrap_err().to_string();
        assert!(e.contains("b.png: cannot decode image"), "{e}");
    }

    #[test]
    fn empty_and_missing_folders() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("readme.txt"), "x").unwrap();
        let e = open(d.path(), CorruptPolicy::Skip).unwrap_err().to_string();
        assert!(e.contains("no .png, .jpg or .jpeg files"), "{e}");
        let e = open(&d.path().join("nope"), CorruptPolicy::Skip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image folder not found"), "{e}");
    }

    #[test]
    fn random_crop_is_deterministic_per_seed() {
        let d = tempfile::tempdir().unwrap();
        // A horizontal ramp, wide: crops at different offsets differ.
        let img = image::GrayImage::from_fn(64, 16, |x, _| image::Luma([(x * 4) as u8]));
        img.save(d.path().join("ramp.png")).unwrap();
        let f = Folder::open(d.path(), 16, 1, Crop::Random, CorruptPolicy::Error).unwrap();
        let a = f.get(0, 1).unwrap().pixels;
        assert_eq!(a, f.get(0, 1).unwrap().pixels);
        let differs = (2..20).any(|s| f.get(0, s).unwrap().pixels != a);
        assert!(differs);
        let c = Folder::open(d.path(), 16, 1, Crop::Center, CorruptPolicy::Error).unwrap();
        // Centre crop of a 64-wide image at height 16: columns 24..40.
        let p = c.get(0, 0).unwrap().pixels;
        assert!((p[0] - transform::normalize(96.0)).abs() < 1e-5);
    }
}
