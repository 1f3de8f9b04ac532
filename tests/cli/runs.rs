//! Training runs: determinism, exact resume, extension, Ctrl-C, corrupt checkpoints, NaN.

use std::time::{Duration, Instant};

use crate::common::{easel_err, easel_ok, losses, root, s};

#[test]
fn same_seed_same_losses_and_different_seed_differs() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&a),
    ]);
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&b),
    ]);
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&c),
        "--set",
        "seed=2",
    ]);
    assert_eq!(losses(&a).len(), 6);
    assert_eq!(losses(&a), losses(&b));
    assert_ne!(losses(&a), losses(&c));
}

#[test]
fn stop_and_resume_gives_identical_losses() {
    let d = tempfile::tempdir().unwrap();
    let (straight, split) = (d.path().join("straight"), d.path().join("split"));
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&straight),
        "--set",
        "train.steps=8",
    ]);
    // N = 4 steps, then resume (extending the finished run) to 2N = 8.
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&split),
        "--set",
        "train.steps=4",
    ]);
    let out = easel_ok(&[
        "resume",
        s(&split),
        "--device",
        "cpu",
        "--set",
        "train.steps=8",
    ]);
    assert!(out.contains("resuming at step 4 of 8"), "{out}");
    let (a, b) = (losses(&straight), losses(&split));
    assert_eq!(a.len(), 8);
    assert_eq!(a, b, "resumed run diverged");
    // The final weights are bit-identical too.
    let fa = std::fs::read(straight.join("final/generator.safetensors")).unwrap();
    let fb = std::fs::read(split.join("final/generator.safetensors")).unwrap();
    assert!(fa == fb, "final generator weights differ");
    // The resolved recipe records the extension.
    let recipe = std::fs::read_to_string(split.join("recipe.toml")).unwrap();
    assert!(recipe.contains("steps = 8"), "{recipe}");
    // A finished run cannot be resumed without extending it; the message says how.
    let e = easel_err(&["resume", s(&split), "--device", "cpu"]);
    assert!(
        e.contains("already has 8 of 8 steps") && e.contains("--set train.steps="),
        "{e}"
    );
    // Resume may not change the network.
    let e = easel_err(&["resume", s(&split), "--set", "model.ngf=16"]);
    assert!(e.contains("only change train.*, optim.* and eval.*"), "{e}");
}

#[test]
fn linear_lr_decay_acts_late_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let dir = d.path().join(name);
        let mut args = vec![
            "train",
            "recipes/tiny/quickstart.toml",
            "--device",
            "cpu",
            "--run-dir",
            s(&dir),
        ];
        args.extend_from_slice(extra);
        easel_ok(&args);
        dir
    };
    let plain = run("plain", &["--set", "train.steps=8"]);
    let decay = run(
        "decay",
        &["--set", "train.steps=8", "--set", "train.lr_decay_from=4"],
    );
    let (a, b) = (losses(&plain), losses(&decay));
    assert_eq!((a.len(), b.len()), (8, 8));
    // Steps 1–5 run at the full rate (the 5th, after 4 done, has factor (8 − 4)/(8 − 4) = 1):
    // identical losses. From step 6 the rates are ¾, ½, ¼ of the recipe's: the losses move.
    assert_eq!(a[..5], b[..5], "decay acted before lr_decay_from");
    assert!(a[5..] != b[5..], "decay had no effect: {a:?}");
    // Resumed at step 6 of 8, a run decaying from 6 continues exactly: the resumed steps take
    // their factors (1, then ½) from the global step.
    let straight = run(
        "straight",
        &["--set", "train.steps=8", "--set", "train.lr_decay_from=6"],
    );
    let split2 = run(
        "split2",
        &["--set", "train.steps=6", "--set", "train.lr_decay_from=6"],
    );
    easel_ok(&[
        "resume",
        s(&split2),
        "--device",
        "cpu",
        "--set",
        "train.steps=8",
    ]);
    assert_eq!(
        losses(&straight),
        losses(&split2),
        "resumed decayed run diverged"
    );
    // A step that has no schedule refuses the key instead of ignoring it.
    let e = easel_err(&[
        "train",
        "recipes/tiny/classifier-shapes.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&d.path().join("cls")),
        "--set",
        "train.lr_decay_from=2",
    ]);
    assert!(
        e.contains("lr_decay_from is not supported by `classifier`"),
        "{e}"
    );
}

#[test]
fn resume_ignores_half_written_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
    ]);
    let ck = run.join("checkpoints");
    // What a crash mid-save leaves: a hidden temp dir with a truncated weights file…
    let tmp = ck.join(".step-00000008.tmp-4242");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("generator.safetensors"), b"\x10\x00\x00").unwrap();
    // …and a visible directory whose state.json is truncated.
    let bad = ck.join("step-00000009");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("state.json"), b"{\"step\": 9, \"bat").unwrap();
    let out = easel_ok(&[
        "resume",
        s(&run),
        "--device",
        "cpu",
        "--set",
        "train.steps=7",
    ]);
    assert!(out.contains("resuming at step 6 of 7"), "{out}");
    assert!(run.join("checkpoints/step-00000007/state.json").exists());
}

#[test]
fn nan_loss_stops_with_a_message_and_keeps_the_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    // Two good steps with a checkpoint, then an absurd learning rate from step 3 on.
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
        "--set",
        "train.steps=2",
    ]);
    let good = std::fs::read(run.join("checkpoints/step-00000002/generator.safetensors")).unwrap();
    let e = easel_err(&[
        "resume",
        s(&run),
        "--device",
        "cpu",
        "--set",
        "train.steps=50",
        "--set",
        "optim.generator.lr=1e38",
        "--set",
        "optim.discriminator.lr=1e38",
    ]);
    assert!(e.contains("NaN") || e.contains("inf"), "{e}");
    assert!(
        e.contains("last good checkpoint") && e.contains("easel resume"),
        "{e}"
    );
    // Nothing non-finite was saved: every checkpoint that exists loads and is finite, and the
    // step-2 checkpoint is byte-for-byte what it was.
    assert_eq!(
        std::fs::read(run.join("checkpoints/step-00000002/generator.safetensors")).unwrap(),
        good
    );
    let mut checkpoints: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    checkpoints.sort();
    assert!(!checkpoints.is_empty());
    for (i, ck) in checkpoints.iter().enumerate() {
        let mut files = 0;
        for f in std::fs::read_dir(ck).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|x| x == "safetensors") {
                files += 1;
                for (name, t) in candle_core::safetensors::load(&f, &candle_core::Device::Cpu)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                {
                    let v = t
                        .to_dtype(candle_core::DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap();
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "{}: {name} is not finite",
                        f.display()
                    );
                }
            }
        }
        assert!(files >= 2, "{}: {files} weight files", ck.display());
        let png = d.path().join(format!("x{i}.png"));
        let out = easel_ok(&[
            "sample",
            s(ck),
            "--n",
            "4",
            "--device",
            "cpu",
            "--out",
            s(&png),
        ]);
        assert!(out.contains("wrote") && png.exists(), "{out}");
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args([
            "train",
            "recipes/tiny/quickstart.toml",
            "--device",
            "cpu",
            "--run-dir",
            s(&run),
            "--set",
            "train.steps=1000000",
            "--set",
            "train.checkpoint_every=1000000",
            "--set",
            "train.sample_every=0",
        ])
        .current_dir(crate::common::root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has trained a few steps.
    let start = Instant::now();
    loop {
        let n = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "stdout {stdout}\nstderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("interrupted at step") && stdout.contains("easel resume"),
        "{stdout}"
    );
    let ck: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ck.len(), 1, "{ck:?}");
    let step: u64 = ck[0].trim_start_matches("step-").parse().unwrap();
    assert!(step >= 3);
    // The saved step matches the metrics (nothing after the checkpoint was logged).
    let last = crate::common::losses(&run).last().unwrap().0;
    assert_eq!(last, step);
    // And it resumes from there.
    let out = easel_ok(&[
        "resume",
        s(&run),
        "--device",
        "cpu",
        "--set",
        &format!("train.steps={}", step + 2),
    ]);
    assert!(out.contains(&format!("resuming at step {step}")), "{out}");
}

#[test]
fn inspect_describes_the_run() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
    ]);
    let out = easel_ok(&["inspect", s(&run)]);
    assert!(
        out.contains("dcgan") && out.contains("6 of 6 steps"),
        "{out}"
    );
    assert!(
        out.contains("step-00000006") && out.contains("final"),
        "{out}"
    );
    let e = easel_err(&["inspect", s(d.path())]);
    assert!(e.contains("not an easel run directory"), "{e}");
    // A second train into the same directory refuses and points at resume.
    let e = easel_err(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
    ]);
    assert!(
        e.contains("already exists") && e.contains("easel resume"),
        "{e}"
    );
    // `easel recipes` lists every recipe with the description its file gives.
    let out = easel_ok(&["recipes"]);
    for name in ["quickstart", "dcgan-mnist", "cgan-mnist"] {
        let text = std::fs::read_to_string(root().join(format!("recipes/{name}.toml"))).unwrap();
        let desc = text
            .lines()
            .find_map(|l| l.strip_prefix("description = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("{name}.toml")) && l.ends_with(desc)),
            "{name}: {desc}\n{out}"
        );
    }
}
