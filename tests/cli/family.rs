//! The GAN family (cGAN, WGAN, WGAN-GP, SNGAN) on the shared loop: each tiny recipe trains,
//! checkpoints, resumes exactly and samples through the same CLI.

use crate::common::{easel_err, easel_ok, losses, root, s};

fn mnist_dir(d: &std::path::Path) -> String {
    let dir = d.join("mnist");
    crate::errors::write_mnist(&dir, 48);
    format!("data.dir=\"{}\"", s(&dir))
}

/// Trains `recipe` for 6 steps straight and for 3 + resume 3; asserts identical logs.
fn trains_and_resumes_exactly(
    d: &std::path::Path,
    recipe: &str,
    extra: &[String],
) -> std::path::PathBuf {
    let (a, b) = (d.join("straight"), d.join("split"));
    let mut args_a: Vec<String> = vec![
        "train".into(),
        recipe.into(),
        "--device".into(),
        "cpu".into(),
        "--run-dir".into(),
        s(&a).into(),
    ];
    for e in extra {
        args_a.push("--set".into());
        args_a.push(e.clone());
    }
    let mut args_b = args_a.clone();
    args_b[5] = s(&b).into();
    args_b.extend(["--set".into(), "train.steps=3".into()]);
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    easel_ok(&refs(&args_a));
    easel_ok(&refs(&args_b));
    let out = easel_ok(&["resume", s(&b), "--device", "cpu", "--set", "train.steps=6"]);
    assert!(out.contains("resuming at step 3 of 6"), "{out}");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 6, "{recipe}");
    assert_eq!(la, lb, "{recipe}: resumed run diverged");
    assert!(a.join("final/state.json").exists());
    a
}

#[test]
fn cgan_trains_resumes_and_samples_by_class() {
    let d = tempfile::tempdir().unwrap();
    let data = mnist_dir(d.path());
    let run = trains_and_resumes_exactly(d.path(), "recipes/tiny/cgan-mnist.toml", &[data]);
    // The resolved recipe records the class count read from the data.
    let recipe = std::fs::read_to_string(run.join("final/recipe.toml")).unwrap();
    assert!(recipe.contains("num_classes = 10"), "{recipe}");
    // Preview: a class grid of 10 rows × 8 columns of 32×32 tiles (padding 2).
    let grid = image::open(run.join("samples/step-00000006.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (8 * 34 + 2, 10 * 34 + 2));
    // --class 3: every saved label is 3.
    let png = d.path().join("threes.png");
    easel_ok(&[
        "sample",
        s(&run),
        "--class",
        "3",
        "--n",
        "5",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
    let z = candle_core::safetensors::load(
        png.with_extension("z.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(z["labels"].to_vec1::<u32>().unwrap(), [3, 3, 3, 3, 3]);
    // Default: a class grid with the same z in every row of a column.
    let png = d.path().join("grid.png");
    easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "20",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
    let z = candle_core::safetensors::load(
        png.with_extension("z.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let labels = z["labels"].to_vec1::<u32>().unwrap();
    assert_eq!(labels.len(), 20); // 10 classes × 2 columns
    assert_eq!(&labels[..4], [0, 0, 1, 1]);
    let zz = z["z"].to_vec2::<f32>().unwrap();
    assert_eq!(zz[0], zz[2]);
    assert_ne!(zz[0], zz[1]);
    let e = easel_err(&[
        "sample",
        s(&run),
        "--class",
        "10",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
    assert!(e.contains("--class 10") && e.contains("0..9"), "{e}");
}

#[test]
fn cgan_shapes_with_projection_discriminator() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(d.path(), "recipes/tiny/cgan-shapes.toml", &[]);
    let names = candle_core::safetensors::load(
        run.join("final/discriminator.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(names["embed.weight"].dims()[0], 6);
}

#[test]
fn wgan_clip_trains_resumes_and_logs_the_wasserstein_estimate() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(
        d.path(),
        "recipes/tiny/wgan-mnist.toml",
        &[mnist_dir(d.path())],
    );
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["critic_iters"].as_f64(), Some(100.0)); // Arjovsky's warm-up
    assert!(first["wasserstein"].is_number());
    // Every critic weight is within the clipping bound.
    let dd = candle_core::safetensors::load(
        run.join("final/discriminator.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for (name, t) in dd {
        if name.ends_with("weight") || name.ends_with("bias") {
            let m = t
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(m <= 0.01 + 1e-7, "{name}: {m}");
        }
    }
}

#[test]
fn wgan_gp_trains_and_resumes_on_its_second_order_thread() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(
        d.path(),
        "recipes/tiny/wgan-gp-mnist.toml",
        &[mnist_dir(d.path())],
    );
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        v["gp"].as_f64().is_some_and(|g| g.is_finite() && g >= 0.0),
        "{v}"
    );
    assert_eq!(v["critic_iters"].as_f64(), Some(5.0));
}

#[test]
fn sngan_saves_its_power_iteration_vectors() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(
        d.path(),
        "recipes/tiny/sngan-mnist.toml",
        &[mnist_dir(d.path())],
    );
    let dd = candle_core::safetensors::load(
        run.join("final/discriminator.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        dd.contains_key("main.0.weight_orig")
            && dd.contains_key("main.0.weight_u")
            && dd.contains_key("main.0.weight_v")
    );
    assert!(
        !dd.keys().any(|k| k.contains("running_mean")),
        "no batch norm in the SN discriminator"
    );
}

#[test]
fn lapgan_trains_resumes_and_samples_each_level_side_by_side() {
    let d = tempfile::tempdir().unwrap();
    let run = trains_and_resumes_exactly(
        d.path(),
        "recipes/tiny/lapgan-mnist.toml",
        &[mnist_dir(d.path())],
    );
    for name in [
        "base_generator",
        "level1_generator",
        "level2_generator",
        "base_discriminator",
        "level2_discriminator",
    ] {
        assert!(
            run.join(format!("final/{name}.safetensors")).exists(),
            "{name}"
        );
    }
    // The 8×8 base is the recipe's MLP pair, saved under nn.Sequential names (C·8·8 = 64 pixels,
    // hidden widths 32 / 16), and the resolved recipe records the choice.
    let dev = candle_core::Device::Cpu;
    let bg =
        candle_core::safetensors::load(run.join("final/base_generator.safetensors"), &dev).unwrap();
    assert_eq!(bg["main.0.weight"].dims(), [32, 16]);
    assert_eq!(bg["main.1.running_var"].dims(), [32]); // BatchNorm1d after the first Linear
    assert_eq!(bg["main.6.weight"].dims(), [64, 32]);
    let bd = candle_core::safetensors::load(run.join("final/base_discriminator.safetensors"), &dev)
        .unwrap();
    assert_eq!(bd["main.0.weight"].dims(), [16, 64]);
    assert_eq!(bd["main.6.weight"].dims(), [1, 16]);
    // The level discriminators see the paper's l + h (one channel), with dropout 0.5.
    let ld =
        candle_core::safetensors::load(run.join("final/level1_discriminator.safetensors"), &dev)
            .unwrap();
    assert_eq!(ld["conv1.weight"].dims(), [8, 1, 4, 4]);
    let recipe = std::fs::read_to_string(run.join("final/recipe.toml")).unwrap();
    assert!(recipe.contains("base = \"mlp\""), "{recipe}");
    assert!(recipe.contains("level_d_input = \"sum\""), "{recipe}");
    assert!(recipe.contains("level_d_dropout = 0.5"), "{recipe}");
    // Preview: 4 samples × 3 levels (8, 16, 32 shown at 32×32), padding 2.
    let grid = image::open(run.join("samples/step-00000006.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (3 * 34 + 2, 4 * 34 + 2));
    let png = d.path().join("lap.png");
    easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "5",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
    let g = image::open(&png).unwrap();
    assert_eq!((g.width(), g.height()), (3 * 34 + 2, 5 * 34 + 2));
    // z holds the base latent (16) and both noise planes (16² + 32²).
    let z = candle_core::safetensors::load(
        png.with_extension("z.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(z["z"].dims(), [5, 16 + 256 + 1024]);
}

/// A run trained before `model.level_d_input` / `level_d_dropout` existed (its level
/// discriminators saw `[h, l]` stacked, without dropout, and its resolved recipe lacks the keys)
/// still resumes exactly: a run's recipe.toml without them means the old networks.
#[test]
fn lapgan_run_from_before_the_level_d_keys_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let old = [
        mnist_dir(d.path()),
        "model.level_d_input=\"concat\"".into(),
        "model.level_d_dropout=0.0".into(),
    ];
    let (a, b) = (d.path().join("straight"), d.path().join("split"));
    for (run, steps) in [(&a, "6"), (&b, "3")] {
        let mut args = vec![
            "train",
            "recipes/tiny/lapgan-mnist.toml",
            "--device",
            "cpu",
            "--run-dir",
            s(run),
            "-q",
        ];
        for o in &old {
            args.extend(["--set", o]);
        }
        let steps = format!("train.steps={steps}");
        args.extend(["--set", &steps]);
        easel_ok(&args);
    }
    // Strip the keys, as in a recipe.toml written before they existed.
    let path = b.join("recipe.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("level_d_input = \"concat\""), "{text}");
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("level_d_"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, stripped).unwrap();
    easel_ok(&["resume", s(&b), "--device", "cpu", "--set", "train.steps=6"]);
    assert_eq!(
        losses(&a),
        losses(&b),
        "the old run resumed on other networks"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("level_d_input = \"concat\""), "{text}");
    assert!(text.contains("level_d_dropout = 0.0"), "{text}");
    let dev = candle_core::Device::Cpu;
    let d1 = candle_core::safetensors::load(b.join("final/level1_discriminator.safetensors"), &dev)
        .unwrap();
    assert_eq!(d1["conv1.weight"].dims(), [8, 2, 4, 4], "[h, l] stacked");
}

#[test]
fn class_conditional_lapgan_on_an_image_folder() {
    let d = tempfile::tempdir().unwrap();
    let folder = d.path().join("imgs");
    for (c, colour) in [("red", [220u8, 30, 30]), ("blue", [30, 30, 220])] {
        std::fs::create_dir_all(folder.join(c)).unwrap();
        for i in 0..8u32 {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                if (x + y + i) % 5 < 2 {
                    image::Rgb(colour)
                } else {
                    image::Rgb([0, 0, 0])
                }
            });
            img.save(folder.join(c).join(format!("{i}.png"))).unwrap();
        }
    }
    let run = trains_and_resumes_exactly(
        d.path(),
        "recipes/tiny/lapgan-images.toml",
        &[format!("data.dir=\"{}\"", s(&folder))],
    );
    let recipe = std::fs::read_to_string(run.join("final/recipe.toml")).unwrap();
    assert!(recipe.contains("num_classes = 2"), "{recipe}");
    let png = d.path().join("blue.png");
    easel_ok(&[
        "sample",
        s(&run),
        "--class",
        "1",
        "--n",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
}

/// `easel bench RECIPE` times every family's step on a random batch; the printed throughput is
/// consistent with the printed median step time (images/s = batch / median).
#[test]
fn bench_times_any_recipe_step() {
    for recipe in [
        "recipes/tiny/cgan-mnist.toml",
        "recipes/tiny/wgan-gp-mnist.toml",
        "recipes/tiny/lapgan-mnist.toml",
    ] {
        let path = root().join(recipe);
        let out = easel_ok(&[
            "bench",
            s(&path),
            "--steps",
            "2",
            "--device",
            "cpu",
            "--set",
            "train.batch_size=4",
        ]);
        let median: f64 = out
            .split("median ")
            .nth(1)
            .and_then(|t| t.split(" s").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no median in {out}"));
        let ips: f64 = out
            .split("steps/s  ")
            .nth(1)
            .and_then(|t| t.split(" images/s").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no images/s in {out}"));
        assert!(
            out.contains("batch 4") && out.contains("(2 steps)"),
            "{out}"
        );
        assert!(median > 0.0, "{out}");
        // Both are rounded when printed: the median to 0.0005 s, images/s to 0.05.
        let slack = 0.05 + 4.0 * 0.0005 / (median - 0.0005).max(1e-4).powi(2);
        assert!((ips - 4.0 / median).abs() <= slack, "{out}");
    }
    let e = easel_err(&["bench", "nonsense"]);
    assert!(
        e.contains("unknown benchmark `nonsense`") && e.contains("recipe file"),
        "{e}"
    );
    let e = easel_err(&["bench", "recipes/missing.toml"]);
    assert!(e.contains("recipes/missing.toml"), "{e}");
}

/// Every tensor of a safetensors file.
fn tensors(path: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

fn same_tensors(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (ta, tb) = (tensors(a), tensors(b));
    ta.len() == tb.len()
        && ta.iter().all(|(k, t)| {
            let u = &tb[k];
            t.dims() == u.dims()
                && t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    == u.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
}

#[test]
fn ema_generator_resumes_exactly_and_is_what_sample_and_eval_use() {
    let d = tempfile::tempdir().unwrap();
    let data = mnist_dir(d.path());
    // recipes/tiny/dcgan-mnist.toml keeps a weight average (ema_decay = 0.999).
    let run = trains_and_resumes_exactly(d.path(), "recipes/tiny/dcgan-mnist.toml", &[data]);
    let split = d.path().join("split");
    // Resume continues the average exactly: 3 + 3 steps give the 6-step run's averaged weights
    // and their recomputed batch-norm statistics, bit for bit.
    let ema = |r: &std::path::Path| r.join("final/generator_ema.safetensors");
    assert!(
        same_tensors(&ema(&run), &ema(&split)),
        "averaged generator diverged on resume"
    );
    // The average is not the trained generator, and its running statistics are its own.
    let (avg, raw) = (
        tensors(&ema(&run)),
        tensors(&run.join("final/generator.safetensors")),
    );
    assert_eq!(avg.len(), raw.len());
    let vec = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(vec(&avg["main.0.weight"]), vec(&raw["main.0.weight"]));
    assert_ne!(
        vec(&avg["main.1.running_var"]),
        vec(&raw["main.1.running_var"])
    );
    // `easel sample` draws with the average: a copy of final/ whose generator.safetensors *is*
    // the average (and that keeps no other) samples the same PNG; `--raw` differs.
    let copy = d.path().join("avg-as-generator");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["recipe.toml", "state.json", "optimizer.safetensors"] {
        std::fs::copy(run.join("final").join(f), copy.join(f)).unwrap();
    }
    std::fs::copy(ema(&run), copy.join("generator.safetensors")).unwrap();
    let png = |model: &std::path::Path, name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        let mut args = vec![
            "sample",
            s(model),
            "--n",
            "6",
            "--seed",
            "5",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        args.extend(["--out", s(&out)]);
        easel_ok(&args);
        std::fs::read(out).unwrap()
    };
    let default = png(&run, "default.png", &[]);
    assert_eq!(default, png(&copy, "copy.png", &[]));
    assert_ne!(default, png(&run, "raw.png", &["--raw"]));
    assert_eq!(
        png(&run, "raw2.png", &["--raw"]),
        png(&copy_with_generator(d.path(), &run), "raw-copy.png", &[])
    );
    // `easel eval` measures the average by default and the trained weights with --raw.
    let fid = |extra: &[&str]| {
        let out = d.path().join(format!("eval{}.json", extra.len()));
        let mut args = vec![
            "eval",
            s(&run),
            "--extractor",
            "pixels",
            "--metrics",
            "fid",
            "--n",
            "16",
            "--device",
            "cpu",
            "-q",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        easel_ok(&args);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        v["values"]["fid"].as_f64().unwrap()
    };
    let (f_avg, f_raw) = (fid(&[]), fid(&["--raw"]));
    assert!(f_avg.is_finite() && f_raw.is_finite());
    assert_ne!(f_avg, f_raw);
    // `easel inspect` says which weights are sampled.
    let out = easel_ok(&["inspect", s(&run)]);
    assert!(
        out.contains("generator, discriminator, generator_ema") && out.contains("--raw"),
        "{out}"
    );
}

/// A copy of `run`'s final/ without its averaged generator (an older run's layout).
fn copy_with_generator(d: &std::path::Path, run: &std::path::Path) -> std::path::PathBuf {
    let copy = d.join("trained-only");
    std::fs::create_dir_all(&copy).unwrap();
    for f in [
        "recipe.toml",
        "state.json",
        "optimizer.safetensors",
        "generator.safetensors",
    ] {
        std::fs::copy(run.join("final").join(f), copy.join(f)).unwrap();
    }
    copy
}
