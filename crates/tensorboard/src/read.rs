//! A minimal reader for event files, for tests (ours and other crates').
//!
//! It reads a whole file, verifies both CRCs of every record and decodes the
//! summary values this crate writes. Every error names the file.

use crate::proto::{self, Field};
use crate::record;
use std::io;
use std::path::Path;

fn invalid(path: &Path, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {msg}", path.display()),
    )
}

/// Reads every record payload of the event file at `path`, verifying the
/// length CRC and the payload CRC of each one.
///
/// A CRC mismatch is an [`io::ErrorKind::InvalidData`] error, a file that
/// ends inside a record an [`io::ErrorKind::UnexpectedEof`] error.
pub fn read_records(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    record::unframe(&data).map_err(|e| {
        let kind = match e {
            record::FrameError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, format!("{}: {e}", path.display()))
    })
}

/// A decoded `HistogramProto`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Smallest value counted.
    pub min: f64,
    /// Largest value counted.
    pub max: f64,
    /// Number of values counted.
    pub num: f64,
    /// Sum of the values counted.
    pub sum: f64,
    /// Sum of the squares of the values counted.
    pub sum_squares: f64,
    /// Right edge of each bucket (bucket `i` spans
    /// `[bucket_limit[i-1], bucket_limit[i])`).
    pub bucket_limit: Vec<f64>,
    /// Count of each bucket.
    pub bucket: Vec<f64>,
}

/// One summary value of an event, as decoded.
enum Value<'a> {
    Simple(f32),
    Image {
        width: u32,
        height: u32,
        png: &'a [u8],
    },
    Histo(Histogram),
    Other,
}

/// Calls `f(tag, step, value)` for every summary value in the file.
fn for_each_value(
    path: &Path,
    mut f: impl FnMut(String, u64, Value<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let bad = |e: proto::DecodeError| invalid(path, e);
    for rec in read_records(path)? {
        let mut step = 0u64;
        let mut summaries = Vec::new();
        for (n, field) in proto::fields(&rec).map_err(bad)? {
            match (n, field) {
                (2, Field::Varint(s)) => step = s,
                (5, Field::Bytes(b)) => summaries.push(b),
                _ => {}
            }
        }
        for summary in summaries {
            for (n, field) in proto::fields(summary).map_err(bad)? {
                let (1, Field::Bytes(value)) = (n, field) else {
                    continue;
                };
                let mut tag = String::new();
                let mut val = Value::Other;
                for (n, field) in proto::fields(value).map_err(bad)? {
                    match (n, field) {
                        (1, Field::Bytes(b)) => {
                            tag = String::from_utf8(b.to_vec())
                                .map_err(|_| invalid(path, "tag is not UTF-8"))?;
                        }
                        (2, Field::Fixed32(bits)) => val = Value::Simple(f32::from_bits(bits)),
                        (4, Field::Bytes(b)) => val = decode_image(b).map_err(bad)?,
                        (5, Field::Bytes(b)) => val = Value::Histo(decode_histo(b).map_err(bad)?),
                        _ => {}
                    }
                }
                f(tag, step, val)?;
            }
        }
    }
    Ok(())
}

fn decode_image(buf: &[u8]) -> Result<Value<'_>, proto::DecodeError> {
    let (mut width, mut height, mut png) = (0u32, 0u32, &[][..]);
    for (n, field) in proto::fields(buf)? {
        match (n, field) {
            (1, Field::Varint(v)) => height = v as u32,
            (2, Field::Varint(v)) => width = v as u32,
            (4, Field::Bytes(b)) => png = b,
            _ => {}
        }
    }
    Ok(Value::Image { width, height, png })
}

fn decode_histo(buf: &[u8]) -> Result<Histogram, proto::DecodeError> {
    let mut h = Histogram {
        min: 0.0,
        max: 0.0,
        num: 0.0,
        sum: 0.0,
        sum_squares: 0.0,
        bucket_limit: Vec::new(),
        bucket: Vec::new(),
    };
    for (n, field) in proto::fields(buf)? {
        let double = || match field {
            Field::Fixed64(b) => Ok(f64::from_bits(b)),
            other => Err(proto::DecodeError(format!(
                "histogram field {n}: expected double, got {other:?}"
            ))),
        };
        match n {
            1 => h.min = double()?,
            2 => h.max = double()?,
            3 => h.num = double()?,
            4 => h.sum = double()?,
            5 => h.sum_squares = double()?,
            6 => h.bucket_limit.extend(proto::doubles(field)?),
            7 => h.bucket.extend(proto::doubles(field)?),
            _ => {}
        }
    }
    Ok(h)
}

/// Every scalar (`simple_value`) in the file, as `(tag, step, value)` in
/// file order.
pub fn scalars(path: &Path) -> io::Result<Vec<(String, u64, f32)>> {
    let mut out = Vec::new();
    for_each_value(path, |tag, step, v| {
        if let Value::Simple(x) = v {
            out.push((tag, step, x));
        }
        Ok(())
    })?;
    Ok(out)
}

/// One image as read back: `(tag, step, width, height, png bytes)`.
pub type ImageEntry = (String, u64, u32, u32, Vec<u8>);

/// Every image in the file, as `(tag, step, width, height, png bytes)` in
/// file order; width and height are those stored in the `Summary.Image`.
pub fn images(path: &Path) -> io::Result<Vec<ImageEntry>> {
    let mut out = Vec::new();
    for_each_value(path, |tag, step, v| {
        if let Value::Image { width, height, png } = v {
            out.push((tag, step, width, height, png.to_vec()));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every histogram in the file, as `(tag, step, histogram)` in file order.
pub fn histograms(path: &Path) -> io::Result<Vec<(String, u64, Histogram)>> {
    let mut out = Vec::new();
    for_each_value(path, |tag, step, v| {
        if let Value::Histo(h) = v {
            out.push((tag, step, h));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The `file_version` strings of the file's events, in file order (a file
/// written by [`crate::SummaryWriter`] has exactly one, `"brain.Event:2"`,
/// in its first record).
pub fn file_versions(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for rec in read_records(path)? {
        for (n, field) in proto::fields(&rec).map_err(|e| invalid(path, e))? {
            if let (3, Field::Bytes(b)) = (n, field) {
                out.push(String::from_utf8_lossy(b).into_owned());
            }
        }
    }
    Ok(out)
}
