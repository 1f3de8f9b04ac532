//! `easel export-data`: a recipe's training images as a folder of PNGs (ImageFolder layout).

use crate::common::{easel_err, easel_ok, s};

/// MNIST idx files whose pixels all differ: image `i`, row `y`, column `x` is
/// `(37·i + 9·y + 5·x) mod 256`; labels `i mod 10`.
fn write_ramp_mnist(dir: &std::path::Path, n: usize) {
    crate::errors::write_mnist_with(dir, n, |i, y, x| ((37 * i + 9 * y + 5 * x) % 256) as u8);
}

/// The entries of a folder, sorted by name.
fn sorted_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The padded MNIST recipe exports the idx bytes unchanged inside a 2-pixel black frame, each image
/// in its label's folder; an existing folder is refused and left as it was.
#[test]
fn mnist_export_is_the_idx_bytes_in_a_black_frame_by_label() {
    let d = tempfile::tempdir().unwrap();
    let mnist = d.path().join("mnist");
    write_ramp_mnist(&mnist, 25);
    let out = d.path().join("export");
    let set = format!("data.dir=\"{}\"", s(&mnist));
    let msg = easel_ok(&[
        "export-data",
        "recipes/tiny/dcgan-mnist.toml",
        "--set",
        &set,
        "--out",
        s(&out),
    ]);
    assert!(
        msg.contains("wrote 25 images") && msg.contains("10 class folders"),
        "{msg}"
    );
    let folders = sorted_names(&out);
    let want: Vec<String> = (0..10).map(|k| format!("{k:02}")).collect();
    assert_eq!(folders, want);
    for i in 0..25 {
        let p = out.join(format!("{:02}/{i:05}.png", i % 10));
        let img = image::open(&p).unwrap();
        assert_eq!(img.color(), image::ColorType::L8, "{}", p.display());
        let img = img.to_luma8();
        assert_eq!(img.dimensions(), (32, 32));
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside {
                    ((37 * i + 9 * (y - 2) + 5 * (x - 2)) % 256) as u8
                } else {
                    0
                };
                assert_eq!(
                    img.get_pixel(x as u32, y as u32)[0],
                    want,
                    "image {i} at ({x}, {y})"
                );
            }
        }
    }
    let e = easel_err(&[
        "export-data",
        "recipes/tiny/dcgan-mnist.toml",
        "--set",
        &set,
        "--out",
        s(&out),
        "--n",
        "3",
    ]);
    assert!(e.contains("not empty") && e.contains(s(&out)), "{e}");
    let files: usize = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read_dir(e.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, 25);
}

/// The generated shapes export into one folder per shape kind, in label order, and easel's
/// folder source reads the export back with those classes: a `folder` recipe trains on it.
#[test]
fn shapes_export_reads_back_as_a_labelled_folder() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("shapes");
    easel_ok(&[
        "export-data",
        "recipes/tiny/quickstart.toml",
        "--n",
        "24",
        "--out",
        s(&out),
        "-q",
    ]);
    let folders = sorted_names(&out);
    assert_eq!(folders.len(), 6, "{folders:?}");
    assert!(
        folders[0].starts_with("00-") && folders[5].starts_with("05-"),
        "{folders:?}"
    );
    let pngs: usize = folders
        .iter()
        .map(|f| std::fs::read_dir(out.join(f)).unwrap().count())
        .sum();
    assert_eq!(pngs, 24);
    let run = d.path().join("run");
    let set_dir = format!("data.dir=\"{}\"", s(&out));
    let msg = easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--set",
        "data.source=\"folder\"",
        "--set",
        &set_dir,
        "--set",
        "train.steps=2",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
    ]);
    assert!(msg.contains("24 images"), "{msg}");
    assert!(run.join("final/state.json").exists());
}
