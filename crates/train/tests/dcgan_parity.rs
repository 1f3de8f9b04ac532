//! Two DCGAN training steps match PyTorch's: losses, D outputs and every weight afterwards.
//!
//! Oracle: `tests/fixtures/make_dcgan_fixture.py` runs pytorch/examples' loop (Adam 2e-4,
//! β = (0.5, 0.999), BCE) from saved weights on saved batches and noise.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use easel_train::fit::TrainStep;
use easel_train::recipe::{DcganRecipe, ModelRecipe, Recipe, TrainConfig};
use easel_train::steps::gan::{self, GanStep};

fn fixture() -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/dcgan64_pytorch.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn sub(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

#[test]
fn two_training_steps_match_pytorch() {
    let t = fixture();
    let m = DcganRecipe {
        nz: 16,
        ngf: 8,
        ndf: 8,
        ..DcganRecipe::default()
    };
    let recipe = Recipe {
        description: String::new(),
        seed: 0,
        data: easel_data::DataConfig {
            image_size: 64,
            channels: 3,
            ..Default::default()
        },
        model: ModelRecipe::Dcgan(m),
        optim: Default::default(), // DCGAN default: Adam(2e-4, β1 0.5)
        train: TrainConfig {
            steps: 2,
            batch_size: 4,
            checkpoint_every: 1,
            sample_every: 0,
            log_every: 1,
            histogram_every: 0,
            keep_last: 1,
            preview_count: 1,
            lr_decay_from: None,
        },
        eval: None,
    };
    let spec = gan::spec(&recipe).unwrap().unwrap();
    let mut step = GanStep::new(&recipe, spec, &Device::Cpu).unwrap();
    let nets = step.networks();
    nets[0].1.load_tensors(&sub(&t, "netG.")).unwrap();
    nets[1].1.load_tensors(&sub(&t, "netD.")).unwrap();
    let want = t["train_scalars"].to_vec2::<f32>().unwrap();
    for (i, want) in want.iter().enumerate() {
        let got = step
            .update(&t[&format!("train_x.{i}")], &t[&format!("train_z.{i}")])
            .unwrap();
        let got: Vec<f64> = ["loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2"]
            .iter()
            .map(|k| got.iter().find(|(n, _)| n == k).unwrap().1)
            .collect();
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - *w as f64).abs() < 1e-5 * (1.0 + w.abs() as f64),
                "step {i}: {got:?} vs {want:?}"
            );
        }
    }
    // Every weight and running statistic after two Adam steps (each moved ~lr = 2e-4 from the start).
    for (prefix, store) in [("trained.netG.", &nets[0].1), ("trained.netD.", &nets[1].1)] {
        let want = sub(&t, prefix);
        let ours = store.tensors();
        assert_eq!(ours.len(), want.len());
        for (k, w) in &want {
            let diff = ours[k]
                .sub(w)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 2e-6, "{prefix}{k}: max |Δ| = {diff}");
        }
    }
}
