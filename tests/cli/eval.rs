//! `easel eval` and `[eval]` during training, on tiny runs over generated MNIST-format files.

use std::path::{Path, PathBuf};

use crate::common::{easel_err, easel_ok, s};

/// A 28×28 digit stand-in: a vertical bar whose column depends on `i`, a second bar (row
/// position from `i`) in the test split so that test images differ from training images.
fn digit(i: usize, test: bool) -> Vec<u8> {
    let mut px = vec![0u8; 28 * 28];
    for y in 0..28 {
        for x in 0..28 {
            let bar = x / 3 == i % 9 && y > 3 && y < 24;
            let cross = test && y == 6 + (i % 5) * 3 && x > 4 && x < 22;
            if bar || cross {
                px[y * 28 + x] = 200 + (i % 50) as u8;
            }
        }
    }
    px
}

/// Gzipped MNIST idx files with `n_train` training and `n_test` test images in `dir`.
fn write_mnist_splits(dir: &Path, n_train: usize, n_test: usize) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let gz = |name: &str, bytes: &[u8]| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    };
    for (prefix, n, test) in [("train", n_train, false), ("t10k", n_test, true)] {
        let mut img = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            img.extend(d.to_be_bytes());
        }
        for i in 0..n {
            img.extend(digit(i, test));
        }
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        gz(&format!("{prefix}-images-idx3-ubyte.gz"), &img);
        gz(&format!("{prefix}-labels-idx1-ubyte.gz"), &lab);
    }
}

/// Fake MNIST, a tiny DCGAN run and a tiny classifier run on it.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data_set: String,
    gan: PathBuf,
    classifier: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mnist = dir.join("mnist");
    write_mnist_splits(&mnist, 60, 30);
    let data_set = format!("data.dir=\"{}\"", s(&mnist));
    let gan = dir.join("gan");
    let classifier = dir.join("clf");
    for (recipe, run) in [
        ("recipes/tiny/dcgan-mnist.toml", &gan),
        ("recipes/tiny/classifier-mnist.toml", &classifier),
    ] {
        easel_ok(&[
            "train",
            recipe,
            "--device",
            "cpu",
            "--run-dir",
            s(run),
            "--set",
            &data_set,
            "-q",
        ]);
    }
    Fixture {
        _tmp: tmp,
        dir,
        data_set,
        gan,
        classifier,
    }
}

/// A VGG19 with two channels per block in torchvision's tensor names (`features.N.weight`).
fn write_tiny_vgg19(path: &Path) {
    use candle_core::{Device, Tensor};
    let convs = [
        [0, 2].as_slice(),
        &[5, 7],
        &[10, 12, 14, 16],
        &[19, 21, 23, 25],
        &[28, 30, 32, 34],
    ];
    let mut t = std::collections::HashMap::new();
    let mut c_in = 3;
    for (b, idx) in convs.iter().enumerate() {
        for &i in *idx {
            let n = 2 * c_in * 9;
            let w: Vec<f32> = (0..n)
                .map(|k| ((k * 7 + b) % 11) as f32 / 11.0 - 0.4)
                .collect();
            t.insert(
                format!("features.{i}.weight"),
                Tensor::from_vec(w, (2, c_in, 3, 3), &Device::Cpu).unwrap(),
            );
            t.insert(
                format!("features.{i}.bias"),
                Tensor::from_vec(vec![0.01f32, 0.02], 2, &Device::Cpu).unwrap(),
            );
            c_in = 2;
        }
    }
    candle_core::safetensors::save(&t, path).unwrap();
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn eval_of_a_run_prints_the_table_and_writes_the_json() {
    let f = fixture();
    let extractor = format!("classifier:{}", s(&f.classifier));
    let out = f.dir.join("report.json");
    let args = [
        "eval",
        s(&f.gan),
        "--extractor",
        &extractor,
        "--metrics",
        "fid,kid,is,pr,swd,nn,div,modes",
        "--n",
        "40",
        "--device",
        "cpu",
        "--out",
        s(&out),
        "-q",
    ];
    let stdout = easel_ok(&args);
    let v = read_json(&out);
    let names = [
        "fid",
        "kid",
        "kid_std",
        "is",
        "is_std",
        "precision",
        "recall",
        "swd",
        "nn_median_ratio",
        "nn_below_test_p01",
        "div",
        "div_ref",
        "modes",
        "modes_kl",
    ];
    let values = v["values"].as_object().unwrap();
    let keys: std::collections::BTreeSet<&str> = values.keys().map(String::as_str).collect();
    assert_eq!(keys, names.into_iter().collect(), "{v}");
    // Every value appears in the table, rounded as printed, and is a number in its range.
    for name in names {
        let x = values[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {v}"));
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` row in\n{stdout}"));
        let shown: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            (shown - x).abs() <= 1e-4 * x.abs().max(1.0),
            "{name}: {shown} vs {x}"
        );
        assert!(x.is_finite(), "{name} = {x}");
    }
    for name in ["precision", "recall", "nn_below_test_p01"] {
        let x = values[name].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{name} = {x}");
    }
    assert!(values["fid"].as_f64().unwrap() >= 0.0);
    // Mode coverage: the histogram counts the 40 samples and `modes` its non-empty classes.
    let hist: Vec<u64> = v["details"]["modes"]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(hist.len(), 10);
    assert_eq!(hist.iter().sum::<u64>(), 40);
    assert_eq!(
        values["modes"].as_f64().unwrap(),
        hist.iter().filter(|&&c| c > 0).count() as f64
    );
    assert_eq!(v["n"], 40);
    assert_eq!(v["n_ref"], 60); // the run's own data: all 60 training images
    assert_eq!(v["step"], 6);
    assert!(v["cache"].as_str().unwrap().starts_with("miss"), "{v}");
    assert!(stdout.contains(s(&out)), "{stdout}");
    // The nearest-neighbour picture: 32 samples, each beside its nearest training image.
    let png = out.with_extension("nn.png");
    assert!(stdout.contains(s(&png)), "{stdout}");
    let pic = image::open(&png).unwrap();
    // (32×32 tiles: the tiny recipe pads the 28×28 digits by 2, as the MNIST recipes do.)
    assert_eq!((pic.width(), pic.height()), (16 * 34 + 2, 4 * 34 + 2));

    // Again: the reference comes from the cache and every number is the same.
    easel_ok(&args);
    let again = read_json(&out);
    assert!(
        again["cache"].as_str().unwrap().starts_with("hit"),
        "{again}"
    );
    assert_eq!(again["values"], v["values"]);

    // VGG features (a narrow VGG19 in torchvision's names): 2-d relu5_4 means at 224×224.
    let vgg = f.dir.join("vgg19.safetensors");
    write_tiny_vgg19(&vgg);
    let vgg_out = f.dir.join("vgg.json");
    easel_ok(&[
        "eval",
        s(&f.gan),
        "--extractor",
        &format!("vgg:{}", s(&vgg)),
        "--metrics",
        "fid,pr",
        "--n",
        "20",
        "--device",
        "cpu",
        "--out",
        s(&vgg_out),
        "-q",
    ]);
    let w = read_json(&vgg_out);
    assert!(
        w["extractor"]
            .as_str()
            .unwrap()
            .starts_with("vgg19-relu5_4-224:"),
        "{w}"
    );
    assert!(w["values"]["fid"].as_f64().unwrap().is_finite(), "{w}");

    // A classifier run reports its accuracy on the test split of its data (30 images).
    let stdout = easel_ok(&["eval", s(&f.classifier), "--device", "cpu", "-q"]);
    assert!(
        stdout.contains("accuracy") && stdout.contains("MNIST test"),
        "{stdout}"
    );
}

#[test]
fn a_folder_against_its_own_images_is_at_distance_zero() {
    let f = fixture();
    // The 60 training images as PNG files: the same pixels the dataset reader gives.
    let folder = f.dir.join("train-png");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..60 {
        image::GrayImage::from_raw(28, 28, digit(i, false))
            .unwrap()
            .save(folder.join(format!("{i:03}.png")))
            .unwrap();
    }
    let out = f.dir.join("self.json");
    let common = |against_split: &str, out: &Path| {
        let stdout = easel_ok(&[
            "eval",
            s(&folder),
            "--against",
            "recipes/tiny/dcgan-mnist.toml",
            "--set",
            &f.data_set,
            "--set",
            &format!("data.split={against_split}"),
            // The PNGs are the native 28×28 digits, not the recipe's zero-padded 32×32.
            "--set",
            "data.image_size=28",
            "--set",
            "data.pad=0",
            "--extractor",
            "pixels",
            "--metrics",
            "fid,pr,swd",
            "--device",
            "cpu",
            "--cache-dir",
            s(&f.dir.join("cache")),
            "--out",
            s(out),
            "-q",
        ]);
        (stdout, read_json(out))
    };
    let (stdout, v) = common("\"train\"", &out);
    assert!(stdout.contains("fid"), "{stdout}");
    let fid = v["values"]["fid"].as_f64().unwrap();
    assert!(fid.abs() < 1e-6, "FID of a set against itself: {fid}");
    assert_eq!(v["values"]["precision"].as_f64().unwrap(), 1.0, "{v}");
    assert_eq!(v["values"]["recall"].as_f64().unwrap(), 1.0, "{v}");
    assert!(v["values"]["swd"].as_f64().unwrap().abs() < 1e-9, "{v}");
    // Against the test images (another bar added) the distance is clearly positive.
    let (_, w) = common("\"test\"", &f.dir.join("test.json"));
    assert!(w["values"]["fid"].as_f64().unwrap() > 1.0, "{w}");
    assert!(w["values"]["swd"].as_f64().unwrap() > 1.0, "{w}");
}

#[test]
fn eval_errors_name_the_problem_and_the_fix() {
    let f = fixture();
    let gan = s(&f.gan);
    let e = easel_err(&["eval", gan, "--metrics", "fid,fdi", "--extractor", "pixels"]);
    assert!(
        e.contains("fdi") && e.contains("available: fid, kid"),
        "{e}"
    );
    let missing = f.dir.join("no-such-run");
    let e = easel_err(&["eval", s(&missing), "--extractor", "pixels"]);
    assert!(e.contains(s(&missing)) && e.contains("no such"), "{e}");
    let weights = f.dir.join("nowhere/pt_inception.safetensors");
    let e = easel_err(&[
        "eval",
        gan,
        "--extractor",
        &format!("inception:{}", s(&weights)),
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains(s(&weights)) && e.contains("fid_weights") && e.contains("classifier:RUN"),
        "{e}"
    );
    let e = easel_err(&[
        "eval",
        gan,
        "--extractor",
        &format!("vgg:{}", s(&weights)),
        "--device",
        "cpu",
    ]);
    assert!(e.contains(s(&weights)) && e.contains("torchvision"), "{e}");
    let e = easel_err(&[
        "eval",
        gan,
        "--extractor",
        &format!("classifier:{}", s(&missing)),
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains(s(&missing)) && e.contains("recipes/classifier-mnist.toml"),
        "{e}"
    );
    // A generator run is not a classifier.
    let e = easel_err(&["eval", gan, "--extractor", &format!("classifier:{gan}")]);
    assert!(e.contains("not a classifier"), "{e}");
    let e = easel_err(&["eval", gan, "--extractor", "pixels", "--metrics", "modes"]);
    assert!(
        e.contains("needs class logits") && e.contains("classifier:RUN"),
        "{e}"
    );
    // A folder needs something to compare with.
    let e = easel_err(&["eval", s(&f.dir.join("mnist")), "--extractor", "pixels"]);
    assert!(e.contains("--against"), "{e}");
    // Reference overrides are data.* keys only.
    let e = easel_err(&[
        "eval",
        gan,
        "--extractor",
        "pixels",
        "--set",
        "train.steps=3",
    ]);
    assert!(e.contains("data."), "{e}");
}

/// The `eval/…` lines of metrics.jsonl as (step, object).
fn eval_lines(run: &Path) -> Vec<(u64, serde_json::Map<String, serde_json::Value>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval/fid").is_some())
        .map(|v| {
            let mut obj = v.as_object().unwrap().clone();
            obj.retain(|k, _| k.starts_with("eval/")); // not eval_seconds
            (v["step"].as_u64().unwrap(), obj)
        })
        .collect()
}

/// (step, loss_d, loss_g) of the training lines of metrics.jsonl.
fn train_lines(run: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss_d").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss_d"].as_f64().unwrap(),
                v["loss_g"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn training_with_eval_logs_metrics_keeps_best_and_resumes_exactly() {
    let f = fixture();
    let eval_sets = [
        f.data_set.clone(),
        "eval.every=3".into(),
        format!("eval.extractor=\"classifier:{}\"", s(&f.classifier)),
        "eval.metrics=[\"fid\",\"kid\",\"modes\"]".into(),
        "eval.n=24".into(),
        "train.checkpoint_every=3".into(),
    ];
    let train = |run: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "recipes/tiny/dcgan-mnist.toml",
            "--device",
            "cpu",
            "--run-dir",
            s(run),
            "-q",
        ];
        for e in eval_sets
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            args.extend(["--set", e]);
        }
        easel_ok(&args);
    };
    let (a, b) = (f.dir.join("straight"), f.dir.join("split"));
    train(&a, &[]);
    train(&b, &["train.steps=3"]);
    easel_ok(&[
        "resume",
        s(&b),
        "--device",
        "cpu",
        "-q",
        "--set",
        "train.steps=6",
    ]);

    // Evaluation at steps 3 and 6, with every metric asked for.
    let ea = eval_lines(&a);
    assert_eq!(ea.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 6]);
    for (_, obj) in &ea {
        for k in [
            "eval/fid",
            "eval/kid",
            "eval/kid_std",
            "eval/modes",
            "eval/modes_kl",
        ] {
            assert!(obj[k].as_f64().unwrap().is_finite(), "{k}: {obj:?}");
        }
    }
    // Resume is exact with evaluation on: same losses, same metrics.
    assert_eq!(train_lines(&a), train_lines(&b));
    assert_eq!(train_lines(&a).len(), 6);
    assert_eq!(ea, eval_lines(&b));

    // best/ holds the step with the lowest FID, and best.json says so.
    let (best_step, best_fid) = ea
        .iter()
        .map(|(s, o)| (*s, o["eval/fid"].as_f64().unwrap()))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap();
    assert_eq!(
        ea.last().unwrap().1["eval/best_step"].as_u64().unwrap(),
        best_step
    );
    for run in [&a, &b] {
        let rec = read_json(&run.join("best/best.json"));
        assert_eq!(rec["metric"]["name"], "fid");
        assert_eq!(rec["metric"]["lower_is_better"], true);
        assert_eq!(rec["step"].as_u64().unwrap(), best_step);
        assert_eq!(rec["value"].as_f64().unwrap(), best_fid);
        let state = read_json(&run.join("best/state.json"));
        assert_eq!(state["step"].as_u64().unwrap(), best_step);
        assert_eq!(
            std::fs::read(run.join("best/generator.safetensors")).unwrap(),
            std::fs::read(run.join(format!(
                "checkpoints/step-{best_step:08}/generator.safetensors"
            )))
            .unwrap(),
            "best/ is not the weights of step {best_step}"
        );
    }
    // `easel eval RUN/best` measures that model.
    let out = easel_ok(&[
        "eval",
        s(&a.join("best")),
        "--extractor",
        "pixels",
        "--metrics",
        "fid",
        "--n",
        "24",
        "--device",
        "cpu",
        "-q",
    ]);
    assert!(out.contains(&format!("(step {best_step}")), "{out}");

    // TensorBoard has the same eval/ scalars as metrics.jsonl.
    let ev = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .unwrap();
    let scalars = easel_tensorboard::read::scalars(&ev).unwrap();
    for tag in ["eval/fid", "eval/kid", "eval/modes"] {
        let tb: Vec<(u64, f32)> = scalars
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|(_, s, v)| (*s, *v))
            .collect();
        let jl: Vec<(u64, f32)> = ea
            .iter()
            .map(|(s, o)| (*s, o[tag].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(tb, jl, "{tag}");
    }
}
