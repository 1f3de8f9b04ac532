//! MNIST and Fashion-MNIST from idx files (`{train,t10k}-{images-idx3,labels-idx1}-ubyte`,
//! gzipped or not), as distributed by their authors and as torchvision
//! leaves them under `MNIST/raw/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{Source, Split};
use crate::memory::ImageArray;
use crate::DataError;

/// Magic number of an idx3 file of unsigned bytes (images).
pub(crate) const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an idx1 file of unsigned bytes (labels).
pub(crate) const LABELS_MAGIC: u32 = 0x0000_0801;

/// Class names of Fashion-MNIST, in label order.
pub(crate) const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub(crate) fn class_names(source: Source) -> Vec<String> {
    match source {
        Source::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        _ => (0..10).map(|d| d.to_string()).collect(),
    }
}

pub(crate) fn fix_for(source: Source) -> String {
    format!(
        "set data.dir to a folder holding the four {source} idx files (gzipped or not), \
         or remove data.dir to download from the Hugging Face hub (see data/README.md)"
    )
}

/// Reads a whole file, un-gzipping it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path, fix: &str) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e, fix))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::corrupt(
                    path,
                    format!("the gzip stream is truncated or corrupt ({e})"),
                    format!("re-download the file; {fix}"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses an idx3 image file: returns (count, rows, cols, pixels).
pub(crate) fn parse_images(
    bytes: &[u8],
    path: &Path,
    fix: &str,
) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let bad = |problem: String| DataError::corrupt(path, problem, format!("re-download it; {fix}"));
    let magic = be_u32(bytes, 0).ok_or_else(|| {
        bad(format!(
            "only {} bytes, too short for an idx header",
            bytes.len()
        ))
    })?;
    if magic != IMAGES_MAGIC {
        let hint = if magic == LABELS_MAGIC {
            " (this is a labels file: are the file names swapped?)"
        } else {
            ""
        };
        return Err(bad(format!(
            "wrong magic number 0x{magic:08x}, an idx3 image file starts with 0x{IMAGES_MAGIC:08x}{hint}"
        )));
    }
    let (n, rows, cols) = match (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12)) {
        (Some(n), Some(r), Some(c)) => (n as usize, r as usize, c as usize),
        _ => {
            return Err(bad(format!(
                "the 16-byte header is truncated ({} bytes)",
                bytes.len()
            )))
        }
    };
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(bad(format!(
            "implausible image size {rows}×{cols} in the header"
        )));
    }
    let want = n
        .checked_mul(rows * cols)
        .ok_or_else(|| bad(format!("implausible image count {n} in the header")))?;
    let have = bytes.len() - 16;
    if have != want {
        let what = if have < want { "truncated" } else { "too long" };
        return Err(bad(format!(
            "{what}: the header says {n} images of {rows}×{cols} = {want} pixel bytes, the file has {have}"
        )));
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// Parses an idx1 label file.
pub(crate) fn parse_labels(bytes: &[u8], path: &Path, fix: &str) -> Result<Vec<u8>, DataError> {
    let bad = |problem: String| DataError::corrupt(path, problem, format!("re-download it; {fix}"));
    let magic = be_u32(bytes, 0).ok_or_else(|| {
        bad(format!(
            "only {} bytes, too short for an idx header",
            bytes.len()
        ))
    })?;
    if magic != LABELS_MAGIC {
        let hint = if magic == IMAGES_MAGIC {
            " (this is an images file: are the file names swapped?)"
        } else {
            ""
        };
        return Err(bad(format!(
            "wrong magic number 0x{magic:08x}, an idx1 label file starts with 0x{LABELS_MAGIC:08x}{hint}"
        )));
    }
    let n = be_u32(bytes, 4).ok_or_else(|| {
        bad(format!(
            "the 8-byte header is truncated ({} bytes)",
            bytes.len()
        ))
    })? as usize;
    let have = bytes.len() - 8;
    if have != n {
        let what = if have < n { "truncated" } else { "too long" };
        return Err(bad(format!(
            "{what}: the header says {n} labels, the file has {have}"
        )));
    }
    let labels = bytes[8..].to_vec();
    if let Some(pos) = labels.iter().position(|&l| l > 9) {
        return Err(bad(format!(
            "label #{pos} is {}, MNIST labels are 0–9",
            labels[pos]
        )));
    }
    Ok(labels)
}

/// The idx base name of a split, e.g. `t10k-labels-idx1-ubyte`.
pub(crate) fn base_name(split: Split, labels: bool) -> &'static str {
    match (split, labels) {
        (Split::Train, false) => "train-images-idx3-ubyte",
        (Split::Train, true) => "train-labels-idx1-ubyte",
        (Split::Test, false) => "t10k-images-idx3-ubyte",
        (Split::Test, true) => "t10k-labels-idx1-ubyte",
    }
}

/// Folders an idx file may be in: `dir`, `dir/raw`, and torchvision's
/// `dir/MNIST/raw` or `dir/FashionMNIST/raw`.
fn candidate_dirs(dir: &Path, source: Source) -> Vec<PathBuf> {
    let tv = match source {
        Source::FashionMnist => "FashionMNIST",
        _ => "MNIST",
    };
    vec![
        dir.to_path_buf(),
        dir.join("raw"),
        dir.join(tv).join("raw"),
        dir.join(tv),
    ]
}

/// Finds `base`, `base.gz`, or the dotted variant (`train-images.idx3-ubyte`).
pub(crate) fn find(dir: &Path, source: Source, base: &str) -> Option<PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    for d in candidate_dirs(dir, source) {
        for name in [
            base.to_string(),
            format!("{base}.gz"),
            dotted.clone(),
            format!("{dotted}.gz"),
        ] {
            let p = d.join(&name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Loads one split from idx files in `dir`. Returns the array and the two
/// paths it was read from.
pub(crate) fn load_idx(
    dir: &Path,
    source: Source,
    split: Split,
) -> Result<(ImageArray, PathBuf, PathBuf), DataError> {
    let fix = fix_for(source);
    let find_or_err = |labels: bool| {
        let base = base_name(split, labels);
        find(dir, source, base).ok_or_else(|| DataError::NotFound {
            what: format!("{source} file"),
            path: format!("{}(.gz)", dir.join(base).display()),
            fix: fix.clone(),
        })
    };
    let images_path = find_or_err(false)?;
    let labels_path = find_or_err(true)?;
    let (n, rows, cols, pixels) =
        parse_images(&read_maybe_gz(&images_path, &fix)?, &images_path, &fix)?;
    let labels = parse_labels(&read_maybe_gz(&labels_path, &fix)?, &labels_path, &fix)?;
    if labels.len() != n {
        return Err(DataError::corrupt(
            &labels_path,
            format!(
                "has {} labels but {} has {n} images",
                labels.len(),
                images_path.display()
            ),
            format!("the two files must come from the same split and release; {fix}"),
        ));
    }
    if n == 0 {
        return Err(DataError::Empty {
            path: images_path.clone(),
            problem: "holds 0 images".to_string(),
            fix,
        });
    }
    Ok((
        ImageArray {
            width: cols,
            height: rows,
            channels: 1,
            pixels,
            labels,
        },
        images_path,
        labels_path,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Writes an idx3 image file: image i is filled with value i*10.
    pub(crate) fn idx_images(n: usize, rows: usize, cols: usize) -> Vec<u8> {
        let mut v = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, rows, cols] {
            v.extend_from_slice(&(d as u32).to_be_bytes());
        }
        for i in 0..n {
            v.extend(std::iter::repeat_n((i * 10 % 256) as u8, rows * cols));
        }
        v
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = LABELS_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    pub(crate) fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn reads_raw_and_gz() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-images-idx3-ubyte", &idx_images(5, 28, 28));
        write(
            d.path(),
            "train-labels-idx1-ubyte.gz",
            &gz(&idx_labels(&[0, 1, 2, 3, 9])),
        );
        let (a, ip, lp) = load_idx(d.path(), Source::Mnist, Split::Train).unwrap();
        assert_eq!((a.len(), a.width, a.height, a.channels), (5, 28, 28, 1));
        assert_eq!(a.labels, vec![0, 1, 2, 3, 9]);
        assert_eq!(a.pixels[784 * 3], 30);
        assert!(ip.ends_with("train-images-idx3-ubyte"));
        assert!(lp.ends_with("train-labels-idx1-ubyte.gz"));
        // The test split is missing: the error names the file and the fix.
        let e = load_idx(d.path(), Source::Mnist, Split::Test)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MNIST file not found"), "{e}");
        assert!(e.contains("t10k-images-idx3-ubyte(.gz)"), "{e}");
        assert!(e.contains("data.dir"), "{e}");
    }

    #[test]
    fn torchvision_layout_is_found() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("FashionMNIST").join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        write(&raw, "t10k-images-idx3-ubyte.gz", &gz(&idx_images(2, 4, 4)));
        write(&raw, "t10k-labels-idx1-ubyte", &idx_labels(&[8, 9]));
        let (a, _, _) = load_idx(d.path(), Source::FashionMnist, Split::Test).unwrap();
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn wrong_magic_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-images-idx3-ubyte", &idx_labels(&[1, 2]));
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("wrong magic number 0x00000801"), "{e}");
        assert!(e.contains("swapped"), "{e}");
    }

    #[test]
    fn truncated_raw_and_gz_are_named() {
        let d = tempfile::tempdir().unwrap();
        let mut img = idx_images(3, 28, 28);
        img.truncate(img.len() - 100);
        write(d.path(), "train-images-idx3-ubyte", &img);
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-images-idx3-ubyte: truncated"), "{e}");
        assert!(e.contains("2352 pixel bytes, the file has 2252"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let z = gz(&idx_images(3, 28, 28));
        write(d.path(), "train-images-idx3-ubyte.gz", &z[..z.len() / 2]);
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-images-idx3-ubyte.gz"), "{e}");
        assert!(e.contains("gzip stream is truncated or corrupt"), "{e}");

        // A header cut short.
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "train-images-idx3-ubyte",
            &idx_images(3, 28, 28)[..10],
        );
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("header is truncated"), "{e}");
    }

    #[test]
    fn label_image_count_mismatch_names_both_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-images-idx3-ubyte", &idx_images(3, 28, 28));
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-labels-idx1-ubyte: has 2 labels"), "{e}");
        assert!(e.contains("train-images-idx3-ubyte has 3 images"), "{e}");
    }

    #[test]
    fn out_of_range_label_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train-images-idx3-ubyte", &idx_images(2, 2, 2));
        write(d.path(), "train-labels-idx1-ubyte", &idx_labels(&[1, 12]));
        let e = load_idx(d.path(), Source::Mnist, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label #1 is 12"), "{e}");
    }
}
