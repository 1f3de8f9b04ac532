//! Writer + reader tests that need no Python.

use easel_tensorboard::{read, SummaryWriter};
use std::io::ErrorKind;
use std::path::Path;

/// Row-major HWC gradient that differs along x and y, so a transposed or
/// width/height-swapped image cannot match it.
fn gradient(width: u32, height: u32, channels: u8) -> Vec<u8> {
    let mut p = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let px = [
                (x * 6) as u8,
                (y * 10) as u8,
                ((x * 3 + y * 7) % 256) as u8,
                (255 - x - y) as u8,
            ];
            match channels {
                1 => p.push(((x * 5 + y * 11) % 256) as u8),
                3 => p.extend_from_slice(&px[..3]),
                4 => p.extend_from_slice(&px),
                _ => unreachable!(),
            }
        }
    }
    p
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn unique_file_names_for_writers_created_back_to_back() {
    let dir = tempfile::tempdir().unwrap();
    let writers: Vec<SummaryWriter> = (0..4)
        .map(|_| SummaryWriter::create(dir.path()).unwrap())
        .collect();
    let mut names: Vec<String> = writers.iter().map(|w| file_name(w.path())).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "{names:?}");
    for w in &writers {
        assert_eq!(w.path().parent(), Some(dir.path()));
        let name = file_name(w.path());
        // events.out.tfevents.{secs}.{host}.{pid}.{n}
        let rest = name.strip_prefix("events.out.tfevents.").unwrap();
        let parts: Vec<&str> = rest.split('.').collect();
        assert!(parts.len() >= 4, "{name}");
        let secs: u64 = parts[0].parse().unwrap();
        assert!(secs > 1_600_000_000, "{name}");
        let pid: u32 = parts[parts.len() - 2].parse().unwrap();
        assert_eq!(pid, std::process::id());
        let _n: u64 = parts[parts.len() - 1].parse().unwrap();
    }
    drop(writers);
    // Each file exists on its own and starts with the file_version event.
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 4);
    for name in names {
        let path = dir.path().join(name);
        assert_eq!(read::read_records(&path).unwrap().len(), 1);
        assert_eq!(read::file_versions(&path).unwrap(), vec!["brain.Event:2"]);
    }
}

#[test]
fn create_makes_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    let w = SummaryWriter::create(&nested).unwrap();
    assert!(w.path().starts_with(&nested));
    assert!(w.path().exists());
}

#[test]
fn create_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not_a_dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SummaryWriter::create(&file).unwrap_err();
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
}

#[test]
fn scalars_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    let data: &[(&str, f64, u64)] = &[
        ("loss", 0.0, 0),
        ("loss", 1.5, 1),
        ("train/acc", -2.25, 2),
        ("loss", 0.1, 300),
        ("lr", 3e-4, 5_000_000_000),
        ("big", 1e30, u64::MAX),
    ];
    for &(tag, v, step) in data {
        w.add_scalar(tag, v, step).unwrap();
    }
    // flush() alone (writer still alive) makes everything readable.
    w.flush().unwrap();
    let got = read::scalars(w.path()).unwrap();
    let want: Vec<(String, u64, f32)> = data
        .iter()
        .map(|&(t, v, s)| (t.to_string(), s, v as f32))
        .collect();
    assert_eq!(got, want);
    assert_eq!(read::read_records(w.path()).unwrap().len(), data.len() + 1);
}

#[test]
fn drop_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    let path = w.path().to_path_buf();
    w.add_scalar("x", 2.0, 7).unwrap();
    drop(w);
    assert_eq!(
        read::scalars(&path).unwrap(),
        vec![("x".to_string(), 7, 2.0)]
    );
}

fn check_image(width: u32, height: u32, channels: u8) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    let pixels = gradient(width, height, channels);
    w.add_image("img", &pixels, width, height, channels, 9)
        .unwrap();
    w.flush().unwrap();
    let imgs = read::images(w.path()).unwrap();
    assert_eq!(imgs.len(), 1);
    let (tag, step, w_, h_, png) = &imgs[0];
    assert_eq!((tag.as_str(), *step, *w_, *h_), ("img", 9, width, height));
    let decoded = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (width, height));
    let raw = match channels {
        1 => decoded.to_luma8().into_raw(),
        3 => decoded.to_rgb8().into_raw(),
        4 => decoded.to_rgba8().into_raw(),
        _ => unreachable!(),
    };
    assert_eq!(decoded.color().channel_count(), channels);
    assert_eq!(raw, pixels);
}

#[test]
fn non_square_rgb_image_round_trips_exactly() {
    check_image(40, 24, 3);
    // And the orientation, spelled out: pixel (x=39, y=0) is (234, 0, 117).
    let p = gradient(40, 24, 3);
    assert_eq!(&p[39 * 3..39 * 3 + 3], &[234, 0, 117]);
}

#[test]
fn non_square_gray_and_rgba_images_round_trip_exactly() {
    check_image(7, 3, 1);
    check_image(3, 11, 4);
    check_image(1, 1, 3);
}

#[test]
fn bad_image_input_is_invalid_input_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    let err = w.add_image("img", &[0u8; 1000], 40, 24, 3, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    for needle in ["1000", "40", "24", "2880", &*w.path().to_string_lossy()] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    let err = w.add_image("img", &[0u8; 8], 2, 2, 2, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("2 channels"), "{err}");
    let err = w.add_image("img", &[], 0, 5, 3, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Dimensions whose product overflows 32 bits must not panic either.
    let err = w
        .add_image("img", &[0u8; 4], u32::MAX, u32::MAX, 4, 0)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Bad input writes nothing and leaves the writer usable.
    w.add_scalar("ok", 1.0, 1).unwrap();
    w.flush().unwrap();
    assert_eq!(read::read_records(w.path()).unwrap().len(), 2);
    assert!(read::images(w.path()).unwrap().is_empty());
}

#[test]
fn histogram_round_trips_through_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    let values = [
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
    w.add_histogram("h", &values, 4).unwrap();
    w.add_histogram("empty", &[f32::NAN, f32::NEG_INFINITY], 5)
        .unwrap();
    w.flush().unwrap();
    let hs = read::histograms(w.path()).unwrap();
    assert_eq!(hs.len(), 2);
    let (tag, step, h) = &hs[0];
    assert_eq!((tag.as_str(), *step), ("h", 4));
    assert_eq!(
        (h.min, h.max, h.num, h.sum, h.sum_squares),
        (-2.5, 3.0, 7.0, 1.0, 17.5)
    );
    assert_eq!(h.bucket.len(), h.bucket_limit.len());
    assert_eq!(h.bucket.iter().sum::<f64>(), 7.0);
    // Every value lies in its bucket [previous limit, limit).
    let finite: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    for (i, (&lim, &count)) in h.bucket_limit.iter().zip(&h.bucket).enumerate() {
        let lo = if i == 0 {
            f64::NEG_INFINITY
        } else {
            h.bucket_limit[i - 1]
        };
        let n = finite.iter().filter(|&&v| lo <= v && v < lim).count();
        assert_eq!(count, n as f64, "bucket [{lo}, {lim})");
    }
    let (tag, step, e) = &hs[1];
    assert_eq!((tag.as_str(), *step), ("empty", 5));
    assert_eq!((e.num, e.min, e.max), (0.0, 0.0, 0.0));
    assert_eq!(e.bucket, vec![0.0]);
}

#[test]
fn reader_detects_truncation_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SummaryWriter::create(dir.path()).unwrap();
    w.add_scalar("a", 1.0, 1).unwrap();
    w.add_scalar("b", 2.0, 2).unwrap();
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    let good = std::fs::read(&path).unwrap();
    assert_eq!(read::scalars(&path).unwrap().len(), 2);

    // Truncated by one byte: the last record is cut.
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &good[..good.len() - 1]).unwrap();
    let err = read::read_records(&cut).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains(&*cut.to_string_lossy()), "{err}");
    assert!(read::scalars(&cut).is_err());

    // One flipped bit in the last payload: payload CRC mismatch.
    let bad = dir.path().join("bad");
    let mut corrupt = good.clone();
    let i = corrupt.len() - 6;
    corrupt[i] ^= 0x01;
    std::fs::write(&bad, &corrupt).unwrap();
    let err = read::read_records(&bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("CRC"), "{err}");

    // A corrupted length: length CRC mismatch.
    let mut corrupt = good.clone();
    corrupt[0] ^= 0x01;
    std::fs::write(&bad, &corrupt).unwrap();
    let err = read::read_records(&bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);

    // Missing file: NotFound, naming the path.
    let missing = dir.path().join("missing");
    let err = read::read_records(&missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}
