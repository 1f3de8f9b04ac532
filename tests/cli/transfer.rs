//! `easel transfer` end to end on a tiny random-weight VGG19 the tests write (both weight
//! layouts) and small generated images: style transfer with L-BFGS and Adam, texture synthesis,
//! feature inversion, blends, coarse-to-fine, original colours, intermediates, and the errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

use crate::common::{root, s};

/// A VGG19 with narrow blocks and seeded weights, in torchvision (`features.N`) or Keras/caffe
/// (`blockB_convC`) names, plus a classifier tensor the loader must ignore.
fn tiny_vgg(dir: &Path, torchvision: bool) -> PathBuf {
    let widths = [6usize, 8, 8, 8, 8];
    let per_block = [2usize, 2, 4, 4, 4];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut m = HashMap::new();
    let (mut c_in, mut index) = (3usize, 0usize);
    for (b, &n) in per_block.iter().enumerate() {
        for c in 1..=n {
            let o = widths[b];
            let k = (3.0 / (c_in * 9) as f64).sqrt();
            let w: Vec<f32> = (0..o * c_in * 9).map(|_| (next() * k) as f32).collect();
            let bias: Vec<f32> = (0..o).map(|_| (next() * 0.05) as f32).collect();
            let name = if torchvision {
                format!("features.{index}")
            } else {
                format!("block{}_conv{c}", b + 1)
            };
            index += 2;
            m.insert(
                format!("{name}.weight"),
                Tensor::from_vec(w, (o, c_in, 3, 3), &Device::Cpu).unwrap(),
            );
            m.insert(
                format!("{name}.bias"),
                Tensor::from_vec(bias, o, &Device::Cpu).unwrap(),
            );
            c_in = o;
        }
        index += 1; // the pooling's index in torchvision's Sequential
    }
    m.insert(
        "classifier.0.weight".into(),
        Tensor::zeros((4, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.join(if torchvision {
        "vgg-tv.safetensors"
    } else {
        "vgg-caffe.safetensors"
    });
    candle_core::safetensors::save(&m, &p).unwrap();
    p
}

fn png(dir: &Path, name: &str, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> PathBuf {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let p = dir.join(name);
    img.save(&p).unwrap();
    p
}

/// A smooth content picture: a colour gradient with a bright disc.
fn content(dir: &Path, w: u32, h: u32) -> PathBuf {
    png(dir, "content.png", w, h, |x, y| {
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        let disc = if d < h as f32 / 3.0 { 90 } else { 0 };
        [
            (40 + 150 * x / w) as u8 + disc,
            (60 + 120 * y / h) as u8 + disc / 2,
            (160 - 100 * x / w) as u8,
        ]
    })
}

/// A stripy style picture.
fn style(dir: &Path, name: &str, w: u32, h: u32, period: u32) -> PathBuf {
    png(dir, name, w, h, |x, y| {
        if ((x + 2 * y) / period).is_multiple_of(2) {
            [230, 200, 40]
        } else {
            [20, 40, 160]
        }
    })
}

fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_easel"));
    c.arg("transfer")
        .args(args)
        .args(["--device", "cpu"])
        .current_dir(root());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("easel runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "easel transfer {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn err(args: &[&str], env: &[(&str, &Path)]) -> String {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "easel transfer {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `(scale, iter, style, content)` per line of the loss log.
fn log(out: &Path) -> Vec<(u64, u64, f64, f64)> {
    let stem = out.file_stem().unwrap().to_string_lossy();
    let p = out.with_file_name(format!("{stem}.losses.jsonl"));
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["scale"].as_u64().unwrap(),
                v["iter"].as_u64().unwrap(),
                v["style"].as_f64().unwrap(),
                v["content"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn rgb(p: &Path) -> image::RgbImage {
    image::open(p).unwrap().to_rgb8()
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    10.0 * (255.0f64.powi(2) / (se / a.as_raw().len() as f64)).log10()
}

#[test]
fn style_transfer_with_lbfgs_and_adam_lowers_the_style_loss() {
    let d = tempfile::tempdir().unwrap();
    let vgg = tiny_vgg(d.path(), false);
    let c = content(d.path(), 48, 36);
    let st = style(d.path(), "style.png", 40, 40, 4);
    for (opt, extra) in [("lbfgs", vec![]), ("adam", vec!["--lr", "0.05"])] {
        let out = d.path().join(format!("out-{opt}.png"));
        let mut args = vec![
            "--content",
            s(&c),
            "--style",
            s(&st),
            "--out",
            s(&out),
            "--vgg",
            s(&vgg),
            "--optimizer",
            opt,
            "--iters",
            "30",
            "--style-weight",
            "100",
        ];
        args.extend(extra);
        let stdout = ok(&args);
        assert!(
            stdout.contains("style loss") && stdout.contains("lower"),
            "{stdout}"
        );
        // Any size: the output has the content's 48×36.
        assert_eq!(rgb(&out).dimensions(), (48, 36), "{opt}");
        let l = log(&out);
        assert_eq!(
            (l[0].1, l[0].3),
            (0, 0.0),
            "{opt}: starts at the content image"
        );
        let (first, last) = (l[0].2, l.last().unwrap().2);
        assert!(
            last < 0.2 * first,
            "{opt}: style loss {first} → {last} ({l:?})"
        );
    }
}

#[test]
fn texture_synthesis_and_feature_inversion() {
    let d = tempfile::tempdir().unwrap();
    let vgg = tiny_vgg(d.path(), true); // the torchvision layout this time
    let st = style(d.path(), "style.png", 36, 28, 3);
    // Texture: no content; the output takes the style image's size; from noise.
    let out = d.path().join("texture.png");
    ok(&[
        "--content",
        "none",
        "--style",
        s(&st),
        "--out",
        s(&out),
        "--vgg",
        s(&vgg),
        "--iters",
        "40",
    ]);
    assert_eq!(rgb(&out).dimensions(), (36, 28));
    let l = log(&out);
    assert!(l.iter().all(|r| r.3 == 0.0));
    assert!(
        l.last().unwrap().2 < 0.05 * l[0].2,
        "texture style loss {} → {}",
        l[0].2,
        l.last().unwrap().2
    );

    // Inversion: from noise back to the content image. conv1_1 (3 → 6 channels, linear) is
    // invertible, so the image must come back almost exactly; through relu1_2 part of the
    // information is lost, but the feature loss must still fall by orders of magnitude.
    let c = content(d.path(), 32, 24);
    for (layer, iters) in [("conv1_1", "150"), ("relu1_2", "100")] {
        let out = d.path().join(format!("inverted-{layer}.png"));
        let stdout = ok(&[
            "--content",
            s(&c),
            "--style",
            "none",
            "--layer",
            layer,
            "--out",
            s(&out),
            "--vgg",
            s(&vgg),
            "--iters",
            iters,
        ]);
        assert!(stdout.contains("PSNR to the content image"), "{stdout}");
        let l = log(&out);
        assert!(l.iter().all(|r| r.2 == 0.0));
        assert!(
            l.last().unwrap().3 < 1e-2 * l[0].3,
            "{layer}: {:?}",
            (l[0], l.last())
        );
        if layer == "conv1_1" {
            let p = psnr(&rgb(&out), &rgb(&c));
            assert!(p > 35.0, "inversion PSNR {p:.2} dB\n{stdout}");
        }
    }
}

#[test]
fn blends_scales_original_colours_and_intermediates() {
    let d = tempfile::tempdir().unwrap();
    let vgg = tiny_vgg(d.path(), false);
    let c = content(d.path(), 64, 48);
    let s1 = style(d.path(), "s1.png", 30, 30, 3);
    let s2 = style(d.path(), "s2.png", 20, 44, 5);
    let out = d.path().join("o.png");
    let stdout = ok(&[
        "--content",
        s(&c),
        "--style",
        s(&s1),
        "--style",
        s(&s2),
        "--style-blend",
        "0.7,0.3",
        "--scales",
        "32,64",
        "--max-size",
        "64",
        "--style-scale",
        "1.5",
        "--original-colors",
        "--save-every",
        "4",
        "--iters",
        "10",
        "--out",
        s(&out),
        "--vgg",
        s(&vgg),
        "--style-weight",
        "100",
    ]);
    assert!(
        stdout.contains("32 px") && stdout.contains("64 px"),
        "{stdout}"
    );
    for scale in [32, 64] {
        for it in [4, 8] {
            let p = d.path().join(format!("o-{scale}px-iter{it:04}.png"));
            assert!(p.is_file(), "missing {}", p.display());
        }
    }
    assert_eq!(
        rgb(&d.path().join("o-32px-iter0004.png")).dimensions(),
        (32, 24)
    );
    let l = log(&out);
    assert_eq!(l.iter().filter(|r| r.0 == 32).count(), 11);
    assert_eq!(l.iter().filter(|r| r.0 == 64).count(), 11);
    // Original colours: the output's chroma (YIQ I and Q) is the content's, up to 8-bit rounding
    // and clamping; only the luminance was optimised.
    let (a, b) = (rgb(&out), rgb(&c));
    assert_eq!(a.dimensions(), b.dimensions());
    let iq = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(|v| v as f64 / 255.0);
        (
            0.595716 * r - 0.274453 * g - 0.321263 * b,
            0.211456 * r - 0.522591 * g + 0.311135 * b,
        )
    };
    let (mut diff, mut luma) = (0.0, 0.0);
    for (p, q) in a.pixels().zip(b.pixels()) {
        let ((i1, q1), (i2, q2)) = (iq(p), iq(q));
        diff += (i1 - i2).abs() + (q1 - q2).abs();
        let y =
            |p: &image::Rgb<u8>| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        luma += (y(p) - y(q)).abs();
    }
    let n = (a.width() * a.height()) as f64;
    assert!(diff / n < 0.02, "mean chroma difference {}", diff / n);
    assert!(
        luma / n > 2.0,
        "the luminance should have changed: {}",
        luma / n
    );
}

#[test]
fn bad_inputs_and_missing_weights_give_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let vgg = tiny_vgg(d.path(), false);
    let c = content(d.path(), 32, 24);
    let st = style(d.path(), "style.png", 30, 30, 3);
    let out = d.path().join("o.png");
    let base = |content: &str, style: &str| {
        vec![
            "--content".to_string(),
            content.to_string(),
            "--style".to_string(),
            style.to_string(),
            "--out".to_string(),
            s(&out).to_string(),
            "--iters".to_string(),
            "2".to_string(),
        ]
    };
    let e_with = |args: Vec<String>, extra: &[&str], env: &[(&str, &Path)]| {
        let mut a: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
        a.extend(extra);
        err(&a, env)
    };
    let vgg_arg = ["--vgg", s(&vgg)];

    // A content path that does not exist.
    let e = e_with(base("nope/cat.png", s(&st)), &vgg_arg, &[]);
    assert!(
        e.contains("content image nope/cat.png: no such file") && e.contains("--content none"),
        "{e}"
    );
    // A style file that is not an image.
    let junk = d.path().join("junk.jpg");
    std::fs::write(&junk, b"not an image").unwrap();
    let e = e_with(base(s(&c), s(&junk)), &vgg_arg, &[]);
    assert!(e.contains("junk.jpg") && e.contains("cannot decode"), "{e}");
    // A --vgg path that does not exist.
    let e = e_with(
        base(s(&c), s(&st)),
        &["--vgg", "weights/none.safetensors"],
        &[],
    );
    assert!(
        e.contains("weights/none.safetensors")
            && e.contains("no such file")
            && e.contains("--vgg PATH"),
        "{e}"
    );
    // No --vgg, offline, empty cache: says what it looked for and how to do without it.
    let home = d.path().join("hf");
    let e = e_with(
        base(s(&c), s(&st)),
        &[],
        &[
            ("HF_HUB_OFFLINE", Path::new("1")),
            ("HF_HOME", &home),
            ("HF_HUB_CACHE", &home),
        ],
    );
    assert!(
        e.contains("timm/vgg19.tv_in1k") && e.contains("offline") && e.contains("--vgg PATH"),
        "{e}"
    );
    // A layer VGG19 does not have: the error lists those it has.
    let e = e_with(
        base(s(&c), s(&st)),
        &[&vgg_arg[..], &["--style-layers", "relu1_1,relu9_1"]].concat(),
        &[],
    );
    assert!(e.contains("relu9_1") && e.contains("relu4_2"), "{e}");
    let e = e_with(
        base(s(&c), s(&st)),
        &[&vgg_arg[..], &["--content-layers", "relu5_5"]].concat(),
        &[],
    );
    assert!(
        e.contains("VGG19 has no layer `relu5_5`") && e.contains("relu5_4"),
        "{e}"
    );
    // Option mistakes name the option and the fix.
    let e = e_with(
        base(s(&c), s(&st)),
        &[&vgg_arg[..], &["--style-blend", "0.5,0.5"]].concat(),
        &[],
    );
    assert!(
        e.contains("--style-blend has 2 weights for 1 style images"),
        "{e}"
    );
    let e = e_with(
        base(s(&c), s(&st)),
        &[&vgg_arg[..], &["--scales", "256,1024"]].concat(),
        &[],
    );
    assert!(
        e.contains("--max-size 512") && e.contains("raise --max-size"),
        "{e}"
    );
    let e = e_with(base("none", "none"), &vgg_arg, &[]);
    assert!(e.contains("no content and no style"), "{e}");
    let e = e_with(
        base("none", s(&st)),
        &[&vgg_arg[..], &["--original-colors"]].concat(),
        &[],
    );
    assert!(
        e.contains("--original-colors") && e.contains("no content image"),
        "{e}"
    );
    let mut a = base(s(&c), s(&st));
    a[5] = s(&d.path().join("o.bmp")).to_string();
    let e = e_with(a, &vgg_arg, &[]);
    assert!(e.contains("o.bmp") && e.contains(".png or .jpg"), "{e}");
    // Nothing was written by the failed runs.
    assert!(!out.exists());
}
