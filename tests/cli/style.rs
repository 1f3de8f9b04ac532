//! Issue 8 end to end: the tiny style, fine-tuning and super-resolution recipes train, resume
//! exactly, and their `final/` folders alone drive `easel stylize` / `easel upscale`. A tiny
//! random-weight VGG16 (Keras/Caffe names, 4 channels per block) and a generated style image are
//! written by the tests, so nothing outside the repository is needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::common::{easel_err, easel_ok, s};

/// Writes a VGG16 in the Keras/Caffe layout with 4 channels per block and random weights.
fn write_tiny_vgg(path: &Path) {
    let mut t = HashMap::new();
    let mut c_in = 3;
    for (b, n) in [2, 2, 3, 3, 3].into_iter().enumerate() {
        for c in 1..=n {
            let name = format!("block{}_conv{c}", b + 1);
            let w = Tensor::randn(0f32, 0.4, (4, c_in, 3, 3), &Device::Cpu).unwrap();
            let bias = Tensor::randn(0f32, 0.1, 4, &Device::Cpu).unwrap();
            t.insert(format!("{name}.weight"), w);
            t.insert(format!("{name}.bias"), bias);
            c_in = 4;
        }
    }
    candle_core::safetensors::save(&t, path).unwrap();
}

/// A striped RGB image of `w × h`.
fn write_image(path: &Path, w: u32, h: u32, phase: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * 3 + y * 5 + phase) % 11) as u8 * 23;
        image::Rgb([v, 255 - v, (x * 17 % 255) as u8])
    });
    img.save(path).unwrap();
}

/// `(step, loss)` per training line of metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v.get("loss")?.as_f64()?))
        })
        .collect()
}

/// Trains `recipe` 6 steps straight and 3 + resume 3 with `sets`; asserts identical losses.
fn trains_and_resumes_exactly(d: &Path, name: &str, recipe: &str, sets: &[String]) -> PathBuf {
    let (a, b) = (
        d.join(format!("{name}-straight")),
        d.join(format!("{name}-split")),
    );
    let mut args: Vec<String> = vec![
        "train".into(),
        recipe.into(),
        "--device".into(),
        "cpu".into(),
    ];
    for e in sets {
        args.extend(["--set".into(), e.clone()]);
    }
    let run = |extra: &[&str]| {
        let mut v: Vec<&str> = args.iter().map(String::as_str).collect();
        v.extend_from_slice(extra);
        easel_ok(&v)
    };
    run(&["--run-dir", s(&a)]);
    run(&["--run-dir", s(&b), "--set", "train.steps=3"]);
    let out = easel_ok(&["resume", s(&b), "--device", "cpu", "--set", "train.steps=6"]);
    assert!(out.contains("resuming at step 3 of 6"), "{out}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 6, "{recipe}: {la:?}");
    assert!(la.iter().all(|(_, l)| l.is_finite()), "{la:?}");
    assert_eq!(la, lb, "{recipe}: resumed run diverged");
    assert!(a.join("final/state.json").exists());
    a
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn style_network_trains_resumes_stylizes_and_fine_tunes() {
    let d = tempfile::tempdir().unwrap();
    let vgg = d.path().join("vgg16-tiny.safetensors");
    write_tiny_vgg(&vgg);
    let style = d.path().join("style.png");
    write_image(&style, 24, 20, 0);
    let sets = [
        format!("model.vgg=\"{}\"", s(&vgg)),
        format!("model.style_image=\"{}\"", s(&style)),
    ];
    let run = trains_and_resumes_exactly(
        d.path(),
        "style",
        "recipes/tiny/style-starry-night.toml",
        &sets,
    );
    let m: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        m["content"].as_f64().unwrap() >= 0.0 && m["style"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    assert!(run.join("final/transformer.safetensors").exists());

    // stylize: a folder and a file, odd sizes, content scale and original colours.
    let inputs = d.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    write_image(&inputs.join("a.png"), 23, 17, 1);
    write_image(&inputs.join("b.png"), 9, 12, 2);
    let single = d.path().join("c.png");
    write_image(&single, 30, 22, 3);
    let out = d.path().join("styled");
    let text = easel_ok(&[
        "stylize",
        s(&run.join("final")),
        s(&inputs),
        s(&single),
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert!(text.contains("a.png") && text.contains("c.png"), "{text}");
    assert_eq!(
        image::open(out.join("a.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (23, 17)
    );
    assert_eq!(
        image::open(out.join("b.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (9, 12)
    );
    let out2 = d.path().join("styled2");
    easel_ok(&[
        "stylize",
        s(&run),
        s(&single),
        "--out",
        s(&out2),
        "--content-scale",
        "2",
        "--original-colors",
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert_eq!(
        image::open(out2.join("c.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (15, 11)
    );
    // The default output folder is RUN/stylized/.
    easel_ok(&["stylize", s(&run), s(&single), "--device", "cpu", "--quiet"]);
    assert!(run.join("stylized/c.png").exists());
    let e = easel_err(&[
        "stylize",
        s(&run),
        s(&d.path().join("nope.png")),
        "--device",
        "cpu",
    ]);
    assert!(e.contains("nope.png") && e.contains("no such file"), "{e}");
    let e = easel_err(&[
        "stylize",
        s(&run),
        s(&single),
        "--content-scale",
        "0",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("--content-scale"), "{e}");

    // Fine-tuning from that run onto another image, conv1/in1 frozen.
    let style2 = d.path().join("style2.png");
    write_image(&style2, 20, 20, 7);
    let ft = d.path().join("ft");
    let init = run.join("final");
    easel_ok(&[
        "train",
        "recipes/tiny/style-finetune.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&ft),
        "--set",
        &sets[0],
        "--set",
        &format!("model.style_image=\"{}\"", s(&style2)),
        "--set",
        &format!("model.init_from=\"{}\"", s(&init)),
    ]);
    let (a, b) = (
        load(&init.join("transformer.safetensors")),
        load(&ft.join("final/transformer.safetensors")),
    );
    for k in [
        "conv1.conv2d.weight",
        "conv1.conv2d.bias",
        "in1.weight",
        "in1.bias",
    ] {
        assert!(same(&a[k], &b[k]), "{k} was frozen but changed");
    }
    assert!(
        !same(&a["conv2.conv2d.weight"], &b["conv2.conv2d.weight"]),
        "conv2 did not train"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/style-finetune.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("x")),
        "--set",
        &sets[0],
        "--set",
        &sets[1],
        "--set",
        &format!("model.init_from=\"{}\"", s(&init)),
        "--set",
        "model.freeze=[\"conv9\"]",
    ]);
    assert!(
        e.contains("conv9") && e.contains("names no parameter"),
        "{e}"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/style-finetune.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("y")),
        "--set",
        &sets[0],
        "--set",
        &sets[1],
        "--set",
        "model.widths=[4, 8, 16]",
        "--set",
        &format!("model.init_from=\"{}\"", s(&init)),
    ]);
    assert!(
        e.contains("init_from") && e.contains("same architecture"),
        "{e}"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/style-starry-night.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("z")),
        "--set",
        &sets[0],
    ]);
    assert!(
        e.contains("style image") && e.contains("tests-write-this.png"),
        "{e}"
    );
}

#[test]
fn super_resolution_trains_resumes_and_upscales_in_tiles() {
    let d = tempfile::tempdir().unwrap();
    let vgg = d.path().join("vgg16-tiny.safetensors");
    write_tiny_vgg(&vgg);
    let run = trains_and_resumes_exactly(
        d.path(),
        "sr",
        "recipes/tiny/sr-x4.toml",
        &[format!("model.vgg=\"{}\"", s(&vgg))],
    );
    let line = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        line.contains("psnr_y_bicubic") && line.contains("perceptual"),
        "{line}"
    );
    let img = d.path().join("small.png");
    write_image(&img, 13, 11, 4);
    let out = d.path().join("up");
    easel_ok(&[
        "upscale",
        s(&run),
        s(&img),
        "--scale",
        "4",
        "--tile",
        "8",
        "--overlap",
        "2",
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert_eq!(
        image::open(out.join("small_x4.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (52, 44)
    );
    let big = d.path().join("big.png");
    write_image(&big, 44, 40, 5);
    let text = easel_ok(&[
        "upscale",
        s(&run),
        s(&big),
        "--scale",
        "4",
        "--evaluate",
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert!(
        text.contains("PSNR bicubic") && text.contains("mean"),
        "{text}"
    );
    let e = easel_err(&[
        "upscale",
        s(&run),
        s(&img),
        "--scale",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("×4"), "{e}");
    let e = easel_err(&[
        "upscale",
        s(&run),
        s(&img),
        "--scale",
        "4",
        "--tile",
        "4",
        "--overlap",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("--tile"), "{e}");
    // A style command on an sr run says what is wrong.
    let e = easel_err(&["stylize", s(&run), s(&img), "--device", "cpu"]);
    assert!(e.contains("not a style network"), "{e}");
}

#[test]
fn srgan_trains_a_discriminator_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(d.path(), "srgan", "recipes/tiny/sr-srgan-x4.toml", &[]);
    assert!(run.join("final/discriminator.safetensors").exists());
    let line = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        line.contains("loss_d") && line.contains("adversarial"),
        "{line}"
    );
    let e = easel_err(&[
        "train",
        "recipes/tiny/sr-srgan-x4.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("bad")),
        "--set",
        "data.image_size=18",
    ]);
    assert!(e.contains("multiple of model.scale"), "{e}");
}
