//! A small TensorBoard event-file writer: scalars, images and histograms.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut w = easel_tensorboard::SummaryWriter::create(std::path::Path::new("runs/exp1"))?;
//! w.add_scalar("loss", 0.25, 100)?;
//! let pixels = vec![128u8; 40 * 24 * 3]; // row-major HWC
//! w.add_image("sample", &pixels, 40, 24, 3, 100)?;
//! w.add_histogram("weights", &[0.1, -0.3, 2.0], 100)?;
//! w.flush()?;
//! # Ok(()) }
//! ```
//!
//! # Why not `tensorboard-rs`
//!
//! `tensorboard-rs` 0.5.9 is stale: it depends on protobuf 2.28 (RUSTSEC-2024-0437)
//! and image 0.23, swaps width and height for non-square images, panics on
//! I/O errors, and two writers created in the same second share one file
//! name. The format is small enough to write by hand, so this crate does,
//! with only `crc32c` and `image` (PNG encoding) as dependencies.
//!
//! # Format
//!
//! An event file is a sequence of TFRecords: `u64 length (LE)`,
//! `masked_crc32c(length bytes)` (`u32 LE`), the payload, then
//! `masked_crc32c(payload)` (`u32 LE`), where
//! `masked_crc32c(x) = crc32c(x).rotate_right(15) + 0xa282ead8` over CRC-32C
//! (Castagnoli). TensorBoard silently ignores a file with a bad CRC. Each
//! payload is a protobuf `Event`; the first carries
//! `file_version = "brain.Event:2"`, the others one `Summary.Value` each. The
//! protobuf is encoded by hand (see the private `proto` module).
//!
//! # Errors
//!
//! Every method returns an [`std::io::Error`] whose message names the event
//! file; bad input (wrong pixel buffer size, unsupported channel count,
//! zero-sized image) is an [`std::io::ErrorKind::InvalidInput`] error. Nothing
//! panics on I/O errors or on bad input. After a failed write the file may
//! hold a partial record, so every later call on that writer fails too
//! instead of appending records TensorBoard would never reach.
//!
//! The [`read`] module is a minimal reader (CRC-checked) for tests.

mod histogram;
mod proto;
pub mod read;
mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `file_version` TensorBoard expects in the first event of a file.
const FILE_VERSION: &str = "brain.Event:2";

/// Per-process counter that makes file names unique within one second.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes one TensorBoard event file.
///
/// Records are buffered; they reach the file on [`SummaryWriter::flush`] and
/// when the writer is dropped (errors on drop are ignored: call `flush` to
/// see them).
#[derive(Debug)]
pub struct SummaryWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// Set after a failed write: the file may end in a partial record.
    failed: bool,
}

fn with_path(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name, made safe for a file name; `localhost` if unknown.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

impl SummaryWriter {
    /// Creates `dir` if needed and a new file
    /// `events.out.tfevents.{unix_secs}.{hostname}.{pid}.{n}` in it, whose
    /// name is unique even for two writers created in the same second in one
    /// process (`n` is a per-process counter, and the file is created with
    /// `create_new`, so an existing file is never overwritten); writes the
    /// `file_version` event.
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| with_path(dir, "creating directory", e))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = hostname();
        let pid = std::process::id();
        let mut tries = 0;
        let (path, file) = loop {
            let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("events.out.tfevents.{secs}.{host}.{pid}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                // Left over by an earlier process with the same pid: next n.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 1000 => {
                    tries += 1;
                }
                Err(e) => return Err(with_path(&path, "creating event file", e)),
            }
        };
        let mut w = SummaryWriter {
            path,
            out: BufWriter::new(file),
            failed: false,
        };
        w.write_event(&proto::encode_file_version_event(wall_time(), FILE_VERSION))?;
        Ok(w)
    }

    /// The path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(format!(
                "{}: an earlier write to this event file failed",
                self.path.display()
            )));
        }
        let rec = record::frame(payload);
        self.out.write_all(&rec).map_err(|e| {
            self.failed = true;
            with_path(&self.path, "writing", e)
        })
    }

    /// Adds a scalar (stored as a 32-bit float, as TensorBoard does).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: u64) -> io::Result<()> {
        let ev = proto::encode_summary_event(
            wall_time(),
            step,
            tag,
            &proto::ValueKind::Simple(value as f32),
        );
        self.write_event(&ev)
    }

    /// Adds an image. `pixels` is row-major HWC `u8`, `channels` 1 (gray),
    /// 3 (RGB) or 4 (RGBA), `width` × `height` as stated (a non-square image
    /// comes out the right way round in TensorBoard). The image is stored as
    /// PNG.
    ///
    /// A `pixels` length other than `width * height * channels`, another
    /// channel count or a zero width or height is an
    /// [`io::ErrorKind::InvalidInput`] error.
    pub fn add_image(
        &mut self,
        tag: &str,
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
        step: u64,
    ) -> io::Result<()> {
        let bad = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: image {tag:?}: {msg}", self.path.display()),
            )
        };
        let color = match channels {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            4 => image::ExtendedColorType::Rgba8,
            c => return Err(bad(format!("{c} channels; expected 1, 3 or 4"))),
        };
        if width == 0 || height == 0 {
            return Err(bad(format!("empty image {width}x{height}")));
        }
        // u128: the product of two u32 and a u8 cannot overflow it.
        let expected = u128::from(width) * u128::from(height) * u128::from(channels);
        if pixels.len() as u128 != expected {
            return Err(bad(format!(
                "pixel buffer has {} bytes, but width {width} * height {height} * channels \
                 {channels} = {expected}",
                pixels.len()
            )));
        }
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            pixels,
            width,
            height,
            color,
        )
        .map_err(|e| bad(format!("PNG encoding failed: {e}")))?;
        let ev = proto::encode_summary_event(
            wall_time(),
            step,
            tag,
            &proto::ValueKind::Image(proto::ImageProto {
                height,
                width,
                colorspace: u32::from(channels),
                png: &png,
            }),
        );
        self.write_event(&ev)
    }

    /// Adds a histogram of `values` with TensorFlow's default exponential
    /// bucket limits (`±1e-12 · 1.1^k` up to `1e20`, plus 0 and `±f64::MAX`,
    /// runs of empty buckets collapsed as TensorFlow does). Non-finite
    /// values are skipped and counted nowhere; with no finite value the
    /// histogram is empty (`num` 0, `min` = `max` = 0).
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: u64) -> io::Result<()> {
        let h = histogram::histogram(values);
        let ev = proto::encode_summary_event(wall_time(), step, tag, &proto::ValueKind::Histo(&h));
        self.write_event(&ev)
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(format!(
                "{}: an earlier write to this event file failed",
                self.path.display()
            )));
        }
        // A failed flush is safe to retry: `BufWriter` keeps what it could
        // not write, so it does not poison the writer.
        self.out
            .flush()
            .map_err(|e| with_path(&self.path, "flushing", e))
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}
