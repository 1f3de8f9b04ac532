//! A PyTorch DCGAN's weights load unchanged and give the same outputs.
//!
//! The fixture is written by `tests/fixtures/make_dcgan_fixture.py` (PyTorch, the networks of
//! pytorch/examples `dcgan/main.py` at ngf = ndf = 8, nz = 16); see that script for its contents.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use easel_models::dcgan::{Config, Discriminator, Generator};
use easel_nn::{BnMode, ParamStore};

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/dcgan64_pytorch.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture present in the repository")
}

fn sub(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn dcgan_matches_pytorch_examples() {
    let t = fixture();
    let cfg = Config {
        image_size: 64,
        channels: 3,
        nz: 16,
        ngf: 8,
        ndf: 8,
        leaky_slope: 0.2,
        ..Config::default()
    };
    let gs = ParamStore::new(&Device::Cpu, 99);
    let g = Generator::new(&cfg, gs.var_builder()).unwrap();
    gs.load_tensors(&sub(&t, "netG.")).unwrap();
    let ds = ParamStore::new(&Device::Cpu, 99);
    let d = Discriminator::new(&cfg, ds.var_builder()).unwrap();
    ds.load_tensors(&sub(&t, "netD.")).unwrap();

    // Eval mode first (running statistics as saved), then train mode (batch statistics).
    let g_eval = g.forward_t(&t["z"], BnMode::Eval).unwrap();
    assert!(
        max_abs_diff(&g_eval, &t["g_eval"]) < 1e-5,
        "G eval: {}",
        max_abs_diff(&g_eval, &t["g_eval"])
    );
    let d_eval = d.forward_t(&t["x"], BnMode::Eval).unwrap();
    assert!(
        max_abs_diff(&d_eval, &t["d_eval"]) < 1e-4,
        "D eval: {}",
        max_abs_diff(&d_eval, &t["d_eval"])
    );
    let g_train = g.forward_t(&t["z"], BnMode::BatchStats).unwrap();
    assert!(
        max_abs_diff(&g_train, &t["g_train"]) < 1e-5,
        "G train: {}",
        max_abs_diff(&g_train, &t["g_train"])
    );
    let d_train = d.forward_t(&t["x"], BnMode::BatchStats).unwrap();
    assert!(
        max_abs_diff(&d_train, &t["d_train"]) < 1e-4,
        "D train: {}",
        max_abs_diff(&d_train, &t["d_train"])
    );
    // The outputs are not trivially equal to each other (the modes really differ).
    assert!(max_abs_diff(&g_eval, &g_train) > 1e-3);
}

#[test]
fn a_checkpoint_from_another_architecture_is_rejected_by_name() {
    let t = fixture();
    // Wider network: every weight has the wrong shape; the error names the tensor and both shapes.
    let cfg = Config {
        image_size: 64,
        channels: 3,
        nz: 16,
        ngf: 16,
        ndf: 8,
        leaky_slope: 0.2,
        ..Config::default()
    };
    let gs = ParamStore::new(&Device::Cpu, 0);
    Generator::new(&cfg, gs.var_builder()).unwrap();
    let err = gs.load_tensors(&sub(&t, "netG.")).unwrap_err().to_string();
    assert!(
        err.contains("main.") && err.contains("expected shape"),
        "{err}"
    );
}
