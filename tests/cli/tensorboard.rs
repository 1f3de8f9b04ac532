//! A training run's event file reads back: our reader always, TensorBoard's own
//! EventAccumulator when Python has the `tensorboard` package (required when
//! EASEL_REQUIRE_TENSORBOARD=1, as CI sets it).

use crate::common::{easel_ok, s};

#[test]
fn run_events_read_back() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
        "--set",
        "train.histogram_every=2",
    ]);
    let ev: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .collect();
    assert_eq!(ev.len(), 1);
    let scalars = easel_tensorboard::read::scalars(&ev[0]).unwrap();
    let loss_d: Vec<(u64, f32)> = scalars
        .iter()
        .filter(|(t, _, _)| t == "train/loss_d")
        .map(|(_, s, v)| (*s, *v))
        .collect();
    let from_jsonl = crate::common::losses(&run);
    assert_eq!(loss_d.len(), 6);
    for ((s1, v1), (s2, v2, _)) in loss_d.iter().zip(&from_jsonl) {
        assert_eq!(s1, s2);
        assert_eq!(*v1, *v2 as f32);
    }
    // Preview images at steps 3 and 6 equal the PNG grids on disk, pixel for pixel.
    let images = easel_tensorboard::read::images(&ev[0]).unwrap();
    assert_eq!(images.iter().map(|i| i.1).collect::<Vec<_>>(), [3, 6]);
    for (_, step, w, h, png) in &images {
        let from_tb = image::load_from_memory(png).unwrap().to_rgb8();
        let on_disk = image::open(run.join(format!("samples/step-{step:08}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!((from_tb.width(), from_tb.height()), (*w, *h));
        assert_eq!(from_tb.into_raw(), on_disk.into_raw());
    }
    let hist = easel_tensorboard::read::histograms(&ev[0]).unwrap();
    assert!(hist
        .iter()
        .any(|(t, s, h)| t == "generator/main.0.weight" && *s == 2 && h.num > 0.0));

    // TensorBoard itself.
    let python = std::env::var("EASEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = crate::common::root().join("scripts/tensorboard_roundtrip.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&ev[0])
        .output();
    let required = std::env::var("EASEL_REQUIRE_TENSORBOARD").is_ok_and(|v| v == "1");
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let tb_loss = &v["scalars"]["train/loss_d"];
            assert_eq!(tb_loss.as_array().unwrap().len(), 6, "{v}");
            let img = &v["images"]["samples"][0];
            assert!(img.is_array(), "{v}");
        }
        // Only a missing package may skip: no python (the command cannot start) or no
        // `tensorboard` module (the script exits with 3). Any other failure of TensorBoard's
        // reader on our events fails the test.
        Ok(o) if o.status.code() != Some(3) => panic!(
            "TensorBoard could not read the events ({:?}):\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => format!("{python}: {e}"),
            };
            assert!(!required, "EASEL_REQUIRE_TENSORBOARD=1 but {python} cannot read the events with TensorBoard: {why}");
            println!("SKIPPED the TensorBoard half: tensorboard python package not available (pip install tensorboard): {why}");
        }
    }
}
