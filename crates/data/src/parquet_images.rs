//! Image datasets stored as parquet, the way the Hugging Face hub keeps
//! MNIST, Fashion-MNIST and CIFAR-10: one row per sample, an image column
//! that is a struct `{bytes: binary (PNG), path: string}` (called `image` or
//! `img`) and an integer `label` column.
//!
//! Read with the `parquet` crate's row API, without arrow: these files have
//! tens of thousands of tiny rows, so the row API is fast enough (well under a
//! second) and keeps the build ~25 crates lighter than arrow would.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use crate::config::CorruptPolicy;
use crate::folder::dynamic_to_raw;
use crate::memory::ImageArray;
use crate::transform::convert_channels;
use crate::DataError;

fn as_int(f: &Field) -> Option<i64> {
    Some(match f {
        Field::Byte(v) => *v as i64,
        Field::Short(v) => *v as i64,
        Field::Int(v) => *v as i64,
        Field::Long(v) => *v,
        Field::UByte(v) => *v as i64,
        Field::UShort(v) => *v as i64,
        Field::UInt(v) => *v as i64,
        Field::ULong(v) => i64::try_from(*v).ok()?,
        _ => return None,
    })
}

/// Finds the encoded image bytes and the label of one row.
fn extract(row: &Row) -> Result<(&[u8], i64), String> {
    let mut bytes = None;
    let mut label = None;
    let mut first_int = None;
    for (name, field) in row.get_column_iter() {
        match field {
            Field::Group(g) if bytes.is_none() => {
                for (n, f) in g.get_column_iter() {
                    if let (true, Field::Bytes(b)) = (n == "bytes", f) {
                        bytes = Some(b.data());
                    }
                }
            }
            Field::Bytes(b) if bytes.is_none() => bytes = Some(b.data()),
            f => {
                if let Some(v) = as_int(f) {
                    if name == "label" {
                        label = Some(v);
                    } else if first_int.is_none() {
                        first_int = Some(v);
                    }
                }
            }
        }
    }
    let names: Vec<&str> = row.get_column_iter().map(|(n, _)| n.as_str()).collect();
    let bytes = bytes.ok_or_else(|| {
        format!(
            "no image bytes (expected a struct column {{bytes, path}} or a binary column; columns are {names:?})"
        )
    })?;
    let label = label.or(first_int).ok_or_else(|| {
        format!("no integer label column (expected `label`; columns are {names:?})")
    })?;
    Ok((bytes, label))
}

/// Reads every row of `paths` (in order) into one array of `channels`-channel
/// images. Rows whose image does not decode follow `policy`; a file that is
/// not parquet, lacks the columns, or has an out-of-range label is an error.
pub(crate) fn read(
    paths: &[PathBuf],
    channels: usize,
    num_classes: usize,
    policy: CorruptPolicy,
    fix: &str,
) -> Result<(ImageArray, usize), DataError> {
    let mut out = ImageArray {
        width: 0,
        height: 0,
        channels,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    let mut skipped = 0usize;
    for path in paths {
        read_one(path, num_classes, policy, fix, &mut out, &mut skipped)?;
    }
    if out.len() == 0 {
        let path = paths.first().cloned().unwrap_or_default();
        return Err(DataError::Empty {
            path,
            problem: "the parquet file holds no usable images".to_string(),
            fix: fix.to_string(),
        });
    }
    Ok((out, skipped))
}

fn read_one(
    path: &Path,
    num_classes: usize,
    policy: CorruptPolicy,
    fix: &str,
    out: &mut ImageArray,
    skipped: &mut usize,
) -> Result<(), DataError> {
    let bad = |problem: String| DataError::corrupt(path, problem, format!("re-download it; {fix}"));
    let file = File::open(path).map_err(|e| DataError::io(path, e, fix))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable parquet file ({e})")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("cannot read its rows ({e})")))?;
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(format!("row {i} is unreadable ({e})")))?;
        let (bytes, label) = extract(&row).map_err(|p| bad(format!("row {i}: {p}")))?;
        if label < 0 || label as usize >= num_classes {
            return Err(bad(format!(
                "row {i} has label {label}, expected 0–{}",
                num_classes - 1
            )));
        }
        let decoded = image::load_from_memory(bytes)
            .map_err(|e| format!("its image does not decode ({e})"))
            .map(dynamic_to_raw)
            .and_then(|(w, h, c, data)| {
                if out.width != 0 && (w, h) != (out.width, out.height) {
                    Err(format!(
                        "its image is {w}×{h}, earlier rows are {}×{}",
                        out.width, out.height
                    ))
                } else {
                    Ok((w, h, convert_channels(&data, c, out.channels)))
                }
            });
        match decoded {
            Ok((w, h, data)) => {
                out.width = w;
                out.height = h;
                out.pixels.extend_from_slice(&data);
                out.labels.push(label as u8);
            }
            Err(problem) => {
                match policy {
                    CorruptPolicy::Error => return Err(DataError::corrupt(
                        path,
                        format!("row {i}: {problem}"),
                        "re-download the file, or set data.on_corrupt = \"skip\" to skip bad rows",
                    )),
                    CorruptPolicy::Skip => {
                        *skipped += 1;
                        if *skipped <= 20 {
                            eprintln!("warning: skipping row {i} of {}: {problem}", path.display());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parquet files of a split under `dir` (up to 3 levels deep, sorted):
/// those whose name starts with `train` / `test` (e.g. the hub's
/// `mnist/train-00000-of-00001.parquet`).
pub(crate) fn find_split_files(dir: &Path, split: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, split: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                if depth < 3 {
                    walk(&path, depth + 1, split, out);
                }
            } else if name.starts_with(split) && name.to_ascii_lowercase().ends_with(".parquet") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 0, split, &mut out);
    out.sort();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// PNG bytes of a `w × h` image, grey or RGB, filled with `v`.
    pub(crate) fn png_bytes(w: u32, h: u32, rgb: bool, v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cur = std::io::Cursor::new(&mut out);
        if rgb {
            image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
                .write_to(&mut cur, image::ImageFormat::Png)
                .unwrap();
        } else {
            image::GrayImage::from_pixel(w, h, image::Luma([v]))
                .write_to(&mut cur, image::ImageFormat::Png)
                .unwrap();
        }
        out
    }

    /// Writes a parquet file shaped like the hub's: `optional group <col>
    /// {optional binary bytes; optional binary path (STRING)}`, `optional
    /// int64 label`, snappy-compressed, `path` null as in the real files.
    pub(crate) fn write_hub_parquet(path: &Path, col: &str, images: &[Vec<u8>], labels: &[i64]) {
        let schema = format!(
            "message schema {{
                optional group {col} {{
                    optional binary bytes;
                    optional binary path (STRING);
                }}
                optional int64 label;
            }}"
        );
        let schema = Arc::new(parse_message_type(&schema).unwrap());
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = File::create(path).unwrap();
        let mut w = SerializedFileWriter::new(file, schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let n = images.len();
        // image.bytes: present (def level 2).
        let mut c = rg.next_column().unwrap().unwrap();
        let vals: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
        c.typed::<ByteArrayType>()
            .write_batch(&vals, Some(&vec![2i16; n]), None)
            .unwrap();
        c.close().unwrap();
        // image.path: null inside a present struct (def level 1).
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&[], Some(&vec![1i16; n]), None)
            .unwrap();
        c.close().unwrap();
        // label: present (def level 1).
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<Int64Type>()
            .write_batch(labels, Some(&vec![1i16; n]), None)
            .unwrap();
        c.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
    }

    #[test]
    fn reads_hub_shaped_parquet_and_converts_channels() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("train-00000-of-00001.parquet");
        let imgs: Vec<Vec<u8>> = (0..4).map(|i| png_bytes(28, 28, false, i * 60)).collect();
        write_hub_parquet(&p, "image", &imgs, &[3, 1, 4, 1]);
        let (a, skipped) =
            read(std::slice::from_ref(&p), 1, 10, CorruptPolicy::Error, "fix").unwrap();
        assert_eq!(
            (a.len(), a.width, a.height, a.channels, skipped),
            (4, 28, 28, 1, 0)
        );
        assert_eq!(a.labels, vec![3, 1, 4, 1]);
        assert_eq!(a.pixels[784 * 2], 120);
        // The same file read as RGB repeats the grey value.
        let (a, _) = read(&[p], 3, 10, CorruptPolicy::Error, "fix").unwrap();
        assert_eq!(&a.pixels[784 * 3..784 * 3 + 3], &[60, 60, 60]);
    }

    #[test]
    fn bad_rows_follow_the_policy_and_bad_labels_fail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("test.parquet");
        let imgs = vec![
            png_bytes(32, 32, true, 10),
            b"not a png".to_vec(),
            png_bytes(32, 32, true, 30),
        ];
        write_hub_parquet(&p, "img", &imgs, &[0, 1, 2]);
        let (a, skipped) =
            read(std::slice::from_ref(&p), 3, 10, CorruptPolicy::Skip, "fix").unwrap();
        assert_eq!((a.len(), skipped), (2, 1));
        let e = read(std::slice::from_ref(&p), 3, 10, CorruptPolicy::Error, "fix")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.parquet: row 1: its image does not decode"),
            "{e}"
        );
        write_hub_parquet(&p, "img", &imgs[..1], &[10]);
        let e = read(&[p], 3, 10, CorruptPolicy::Skip, "fix")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 0 has label 10, expected 0–9"), "{e}");
        // Not a parquet file at all.
        let q = d.path().join("junk.parquet");
        std::fs::write(&q, b"PAR1 nope").unwrap();
        let e = read(&[q], 3, 10, CorruptPolicy::Skip, "fix")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("junk.parquet: not a readable parquet file"),
            "{e}"
        );
    }
}
