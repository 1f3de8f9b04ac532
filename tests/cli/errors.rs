//! Bad input gives a clear error naming the file, the key and the fix — never a panic.

use crate::common::{easel_err, easel_ok, s};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tiny() -> String {
    std::fs::read_to_string(crate::common::root().join("recipes/tiny/quickstart.toml")).unwrap()
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "bad.toml",
        &tiny().replace("batch_size = 8", "batch_size = 8\nbatchsize = 8"),
    );
    let e = easel_err(&[
        "train",
        s(&p),
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("r")),
    ]);
    assert!(
        e.contains("bad.toml") && e.contains("unknown field `batchsize`") && e.contains("train"),
        "{e}"
    );
    assert!(e.contains("line "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    // Nothing was created.
    assert!(!d.path().join("r").exists());
}

#[test]
fn wrong_type_says_what_was_expected() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "bad.toml",
        &tiny().replace("steps = 6", "steps = \"six\""),
    );
    let e = easel_err(&["train", s(&p), "--device", "cpu"]);
    assert!(
        e.contains("bad.toml") && e.contains("train.steps") && e.contains("expected u64"),
        "{e}"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--set",
        "train.batch_size=-3",
    ]);
    assert!(
        e.contains("--set train.batch_size=-3") && e.contains("train.batch_size"),
        "{e}"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--set",
        "model.kind=vae",
    ]);
    assert!(e.contains("vae") && e.contains("dcgan"), "{e}");
    let e = easel_err(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--set",
        "data.source=imagenet",
    ]);
    assert!(e.contains("imagenet") && e.contains("data.source"), "{e}");
}

#[test]
fn missing_files_are_named_with_the_fix() {
    let e = easel_err(&["train", "recipes/nope.toml"]);
    assert!(
        e.contains("recipes/nope.toml") && e.contains("not found") && e.contains("easel recipes"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-mnist-here");
    let e = easel_err(&[
        "train",
        "recipes/tiny/dcgan-mnist.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("r")),
        "--set",
        &format!("data.dir=\"{}\"", s(&missing)),
    ]);
    assert!(e.contains("no-mnist-here") && e.contains("data.dir"), "{e}");
    // Nothing was left on disk by the failed start.
    assert!(!d.path().join("r").exists());
    let e = easel_err(&[
        "train",
        "recipes/tiny/dcgan-images64.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("r2")),
    ]);
    assert!(e.contains("data.dir"), "{e}");
    let e = easel_err(&["sample", s(d.path())]);
    assert!(e.contains("no model here"), "{e}");
    let e = easel_err(&["train", "recipes/tiny/quickstart.toml", "--device", "tpu"]);
    assert!(e.contains("unknown device `tpu`"), "{e}");
}

#[test]
fn recipes_lists_every_recipe_with_its_description() {
    let out = easel_ok(&["recipes"]);
    for name in [
        "quickstart.toml",
        "dcgan-mnist.toml",
        "dcgan-images64.toml",
        "tiny/quickstart.toml",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
    assert!(out.contains("embedded shapes"), "{out}");
}

#[test]
fn every_recipe_parses() {
    // Folder recipes need a data.dir (validated at load time), so give them one.
    for entry in walk(&crate::common::root().join("recipes")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        let overrides: Vec<String> = if text.contains("source = \"folder\"") {
            vec!["data.dir=\"some/folder\"".into()]
        } else {
            vec![]
        };
        easel_train::recipe::Recipe::load(&entry, &overrides)
            .unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out
}

/// Writes minimal gzipped MNIST idx files (n images of 28×28) into `dir`.
pub fn write_mnist(dir: &std::path::Path, n: usize) {
    // A bright vertical bar whose position depends on the label.
    write_mnist_with(dir, n, |i, y, x| {
        if x / 3 == i % 9 && y > 3 && y < 24 {
            255
        } else {
            0
        }
    });
}

/// Gzipped MNIST training idx files of `n` 28×28 images, pixel `(y, x)` of image `i` being
/// `pixel(i, y, x)`, labels `i mod 10`.
pub fn write_mnist_with(
    dir: &std::path::Path,
    n: usize,
    pixel: impl Fn(usize, usize, usize) -> u8,
) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let gz = |name: &str, bytes: &[u8]| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    };
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        img.extend(d.to_be_bytes());
    }
    for i in 0..n {
        for y in 0..28 {
            for x in 0..28 {
                img.push(pixel(i, y, x));
            }
        }
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    lab.extend((0..n).map(|i| (i % 10) as u8));
    gz("train-images-idx3-ubyte.gz", &img);
    gz("train-labels-idx1-ubyte.gz", &lab);
}

#[test]
fn tiny_mnist_and_image_folder_recipes_run_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let mnist = d.path().join("mnist");
    write_mnist(&mnist, 40);
    let run = d.path().join("m");
    easel_ok(&[
        "train",
        "recipes/tiny/dcgan-mnist.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
        "--set",
        &format!("data.dir=\"{}\"", s(&mnist)),
    ]);
    assert!(run.join("final/generator.safetensors").exists());
    let out = easel_ok(&[
        "resume",
        s(&run),
        "--device",
        "cpu",
        "--set",
        "train.steps=8",
    ]);
    assert!(out.contains("resuming at step 6"), "{out}");

    // An image folder with a corrupt file: skipped with a warning naming it.
    let folder = d.path().join("imgs");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..12u8 {
        let img = image::RgbImage::from_fn(20 + i as u32, 24, |x, y| {
            image::Rgb([(x * 10 % 256) as u8, y as u8 * 10, i * 20])
        });
        img.save(folder.join(format!("{i:02}.png"))).unwrap();
    }
    std::fs::write(folder.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let run = d.path().join("f");
    let out = crate::common::easel(&[
        "train",
        "recipes/tiny/dcgan-images64.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
        "--set",
        &format!("data.dir=\"{}\"", s(&folder)),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("broken.png"), "{stderr}");
    // With on_corrupt = "error" the same folder is rejected, naming the file.
    let e = easel_err(&[
        "train",
        "recipes/tiny/dcgan-images64.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("f2")),
        "--set",
        &format!("data.dir=\"{}\"", s(&folder)),
        "--set",
        "data.on_corrupt=\"error\"",
    ]);
    assert!(e.contains("broken.png"), "{e}");
}
