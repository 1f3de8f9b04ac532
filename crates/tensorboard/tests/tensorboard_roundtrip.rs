//! Round trip through TensorBoard itself: write an event file, load it with
//! `scripts/tensorboard_roundtrip.py` (TensorBoard's `EventAccumulator`) and
//! compare every value.
//!
//! The interpreter is `$EASEL_PYTHON` (default `python3`). Without it or
//! without the `tensorboard` package the test prints a SKIPPED line and
//! passes, unless `EASEL_REQUIRE_TENSORBOARD=1`, in which case it fails.

use easel_tensorboard::{read, SummaryWriter};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const SKIP: &str = "SKIPPED: tensorboard python package not available (pip install tensorboard)";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tensorboard_roundtrip.py")
}

fn python() -> String {
    std::env::var("EASEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn require() -> bool {
    std::env::var("EASEL_REQUIRE_TENSORBOARD").as_deref() == Ok("1")
}

/// Returns false (after printing the SKIPPED line) when TensorBoard is not
/// usable and not required; panics when it is required.
fn tensorboard_available(python: &str) -> bool {
    let why = match Command::new(python)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .output()
    {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "`{python}` cannot import tensorboard: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("cannot run `{python}`: {e}"),
    };
    if require() {
        panic!("EASEL_REQUIRE_TENSORBOARD=1 but {why}");
    }
    println!("{SKIP}");
    eprintln!("{SKIP}\n  ({why})");
    false
}

fn gradient_rgb(width: u32, height: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for y in 0..height {
        for x in 0..width {
            p.extend_from_slice(&[(x * 6) as u8, (y * 10) as u8, ((x * 3 + y * 7) % 256) as u8]);
        }
    }
    p
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

#[test]
fn tensorboard_reads_what_we_write() {
    let python = python();
    if !tensorboard_available(&python) {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();

    let scalars: &[(&str, f64, u64)] = &[
        ("loss", 0.0, 0), // a zero simple_value must still be a scalar
        ("loss", 1.5, 1),
        ("loss", -2.25, 2),
        ("loss", 0.1, 10),
        ("train/lr", 3e-4, 5_000_000_000),
    ];
    for &(tag, v, step) in scalars {
        w.add_scalar(tag, v, step).unwrap();
    }

    // (tag, width, height, channels, pixels)
    let gray: Vec<u8> = (0..7 * 3).map(|i| (i * 12) as u8).collect();
    let rgba: Vec<u8> = (0..3 * 5 * 4).map(|i| (i * 4 + 1) as u8).collect();
    let images: Vec<(&str, u32, u32, u8, Vec<u8>)> = vec![
        ("sample", 40, 24, 3, gradient_rgb(40, 24)),
        ("gray", 7, 3, 1, gray),
        ("rgba", 3, 5, 4, rgba),
    ];
    for (i, (tag, width, height, ch, px)) in images.iter().enumerate() {
        w.add_image(tag, px, *width, *height, *ch, 100 + i as u64)
            .unwrap();
    }

    let h_values = [
        -2.5f32,
        -1.0,
        0.0,
        0.0,
        0.5,
        1.0,
        3.0,
        f32::NAN,
        f32::INFINITY,
    ];
    let big: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.01)
        .collect();
    let histos: Vec<(&str, u64, &[f32])> = vec![
        ("h", 3, &h_values),
        ("big", 4, &big),
        ("empty", 5, &[f32::NAN]),
    ];
    for (tag, step, vals) in &histos {
        w.add_histogram(tag, vals, *step).unwrap();
    }
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    drop(w);

    let out = Command::new(&python)
        .arg(script())
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) && !require() {
        println!("{SKIP}");
        eprintln!("{stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "script failed: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    println!(
        "tensorboard_roundtrip.py printed {} bytes of JSON",
        stdout.len()
    );
    let json: Value = serde_json::from_str(&stdout).unwrap();

    // Scalars: every (step, value), per tag, in order; values are f32.
    let got = json["scalars"].as_object().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    for tag in ["loss", "train/lr"] {
        let want: Vec<(u64, f64)> = scalars
            .iter()
            .filter(|s| s.0 == tag)
            .map(|s| (s.2, f64::from(s.1 as f32)))
            .collect();
        let rows: Vec<(u64, f64)> = got[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (u(&r[0]), f(&r[1])))
            .collect();
        assert_eq!(rows, want, "scalars {tag}");
    }

    // Images: TensorBoard's width/height and the decoded PNG's exact pixels.
    let got = json["images"].as_object().unwrap();
    assert_eq!(got.len(), images.len(), "{got:?}");
    for (i, (tag, width, height, ch, px)) in images.iter().enumerate() {
        let rows = got[*tag].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(u(&r[0]), 100 + i as u64, "{tag} step");
        assert_eq!(
            (u(&r[1]), u(&r[2])),
            (u64::from(*width), u64::from(*height)),
            "{tag} w/h"
        );
        let d = &r[3];
        assert_eq!(
            (u(&d["width"]), u(&d["height"]), u(&d["channels"])),
            (u64::from(*width), u64::from(*height), u64::from(*ch)),
            "{tag} decoded dims"
        );
        let pixels: Vec<u8> = d["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u8::try_from(u(v)).unwrap())
            .collect();
        assert_eq!(&pixels, px, "{tag} pixels");
    }

    // Histograms: min, max, num, sum, sum_squares from an independent f64
    // computation; buckets exactly as our reader decodes them; TensorBoard's
    // compression of the histogram worked.
    let ours = read::histograms(&path).unwrap();
    let got = json["histograms"].as_object().unwrap();
    assert_eq!(got.len(), histos.len(), "{got:?}");
    for (k, (tag, step, vals)) in histos.iter().enumerate() {
        let finite: Vec<f64> = vals
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| f64::from(v))
            .collect();
        let (min, max) = if finite.is_empty() {
            (0.0, 0.0)
        } else {
            (
                finite.iter().copied().fold(f64::INFINITY, f64::min),
                finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        let sum: f64 = finite.iter().sum();
        let sum_sq: f64 = finite.iter().map(|v| v * v).sum();
        let rows = got[*tag].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(u(&r[0]), *step, "{tag} step");
        assert_eq!(f(&r[1]), min, "{tag} min");
        assert_eq!(f(&r[2]), max, "{tag} max");
        assert_eq!(f(&r[3]), finite.len() as f64, "{tag} num");
        assert!(
            (f(&r[4]) - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{tag} sum"
        );
        assert!(
            (f(&r[5]) - sum_sq).abs() <= 1e-9 * sum_sq.max(1.0),
            "{tag} sum_squares"
        );
        let limits: Vec<f64> = r[6].as_array().unwrap().iter().map(f).collect();
        let counts: Vec<f64> = r[7].as_array().unwrap().iter().map(f).collect();
        assert_eq!(
            counts.iter().sum::<f64>(),
            finite.len() as f64,
            "{tag} bucket total"
        );
        assert_eq!(ours[k].0, *tag);
        assert_eq!(limits, ours[k].2.bucket_limit, "{tag} limits");
        assert_eq!(counts, ours[k].2.bucket, "{tag} counts");
        assert!(
            u(&r[8]) > 0,
            "{tag}: TensorBoard produced no compressed histogram"
        );
    }
    println!(
        "tensorboard round trip OK: {} scalars, {} images, {} histograms",
        scalars.len(),
        images.len(),
        histos.len()
    );
}
