//! CIFAR-10, binary version: `data_batch_{1..5}.bin` (train) and
//! `test_batch.bin` (test), each a run of 3073-byte records (1 label byte,
//! then the 32×32 red plane, green plane and blue plane), as unpacked from
//! `cifar-10-binary.tar.gz`.

use std::path::{Path, PathBuf};

use crate::config::Split;
use crate::memory::ImageArray;
use crate::DataError;

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
/// Bytes of one record: the label and three 32×32 planes.
pub(crate) const RECORD: usize = 1 + 3 * PLANE;

/// The class names when `batches.meta.txt` is absent.
pub(crate) const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub(crate) const FIX: &str = "set data.dir to the folder unpacked from cifar-10-binary.tar.gz \
    (it holds data_batch_1.bin … data_batch_5.bin and test_batch.bin, possibly inside cifar-10-batches-bin/), \
    or remove data.dir to download from the Hugging Face hub (see data/README.md)";

/// What was read: the array, the folder, the batch files used and the class names.
pub(crate) struct CifarFiles {
    pub array: ImageArray,
    pub folder: PathBuf,
    pub files: Vec<String>,
    pub class_names: Vec<String>,
}

fn batch_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// Loads whichever batch files of the split are present in `dir` or
/// `dir/cifar-10-batches-bin`.
pub(crate) fn load(dir: &Path, split: Split) -> Result<CifarFiles, DataError> {
    let names = batch_names(split);
    let folders = [dir.to_path_buf(), dir.join("cifar-10-batches-bin")];
    let found = folders.iter().find_map(|f| {
        let present: Vec<String> = names
            .iter()
            .filter(|n| f.join(n).is_file())
            .cloned()
            .collect();
        (!present.is_empty()).then(|| (f.clone(), present))
    });
    let Some((folder, present)) = found else {
        // The Python (pickle) version has the same names without `.bin`.
        let pickle = [dir.to_path_buf(), dir.join("cifar-10-batches-py")]
            .iter()
            .any(|f| f.join(names[0].trim_end_matches(".bin")).is_file());
        let hint = if pickle {
            " (found the Python pickle version: easel reads the binary version, cifar-10-binary.tar.gz)"
        } else {
            ""
        };
        return Err(DataError::Empty {
            path: dir.to_path_buf(),
            problem: format!(
                "no CIFAR-10 {split} batch files ({}) here or in cifar-10-batches-bin/{hint}",
                names.join(", ")
            ),
            fix: FIX.to_string(),
        });
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in &present {
        let path = folder.join(name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e, FIX))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(DataError::corrupt(
                &path,
                format!(
                    "{} bytes is not a whole number of 3073-byte records (1 label + 3×32×32 pixels); the file is truncated or not the binary version",
                    bytes.len()
                ),
                format!("re-download it; {FIX}"),
            ));
        }
        pixels.reserve(bytes.len() / RECORD * 3 * PLANE);
        for (r, rec) in bytes.chunks_exact(RECORD).enumerate() {
            if rec[0] > 9 {
                return Err(DataError::corrupt(
                    &path,
                    format!("record {r} has label {}, CIFAR-10 labels are 0–9", rec[0]),
                    format!("re-download it; {FIX}"),
                ));
            }
            labels.push(rec[0]);
            let (red, rest) = rec[1..].split_at(PLANE);
            let (green, blue) = rest.split_at(PLANE);
            for i in 0..PLANE {
                pixels.extend_from_slice(&[red[i], green[i], blue[i]]);
            }
        }
    }
    let meta = folder.join("batches.meta.txt");
    let class_names = match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if names.len() == 10 {
                names
            } else {
                CLASSES.iter().map(|s| s.to_string()).collect()
            }
        }
        Err(_) => CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    Ok(CifarFiles {
        array: ImageArray {
            width: SIDE,
            height: SIDE,
            channels: 3,
            pixels,
            labels,
        },
        folder,
        files: present,
        class_names,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` records; record i has label i % 10 and red = i, green = 100, blue = 200.
    pub(crate) fn batch(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n * RECORD);
        for i in 0..n {
            v.push((i % 10) as u8);
            v.extend(std::iter::repeat_n(i as u8, PLANE));
            v.extend(std::iter::repeat_n(100u8, PLANE));
            v.extend(std::iter::repeat_n(200u8, PLANE));
        }
        v
    }

    #[test]
    fn partial_set_in_subfolder_with_meta() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("data_batch_1.bin"), batch(3)).unwrap();
        std::fs::write(sub.join("data_batch_4.bin"), batch(2)).unwrap();
        let names: String = (0..10).map(|i| format!("c{i}\n")).collect();
        std::fs::write(sub.join("batches.meta.txt"), names + "\n").unwrap();
        let c = load(d.path(), Split::Train).unwrap();
        assert_eq!(c.files, vec!["data_batch_1.bin", "data_batch_4.bin"]);
        assert_eq!(c.folder, sub);
        assert_eq!(c.array.labels, vec![0, 1, 2, 0, 1]);
        assert_eq!(c.class_names[3], "c3");
        // HWC interleaving of the planes.
        let px = &c.array.pixels[3 * PLANE * 2..3 * PLANE * 2 + 3];
        assert_eq!(px, &[2, 100, 200]);
        // The test split is absent.
        let e = load(d.path(), Split::Test).err().unwrap().to_string();
        assert!(
            e.contains("no CIFAR-10 test batch files (test_batch.bin)"),
            "{e}"
        );
    }

    #[test]
    fn bad_size_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("data_batch_1.bin"), batch(2)).unwrap();
        let mut b = batch(2);
        b.pop();
        std::fs::write(d.path().join("data_batch_2.bin"), b).unwrap();
        let e = load(d.path(), Split::Train).err().unwrap().to_string();
        assert!(
            e.contains("data_batch_2.bin: 6145 bytes is not a whole number"),
            "{e}"
        );
    }

    #[test]
    fn pickle_version_gets_a_hint() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("data_batch_1"), b"pickle").unwrap();
        let e = load(d.path(), Split::Train).err().unwrap().to_string();
        assert!(e.contains("Python pickle version"), "{e}");
        assert!(e.contains("cifar-10-binary.tar.gz"), "{e}");
    }
}
