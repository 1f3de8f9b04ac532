//! PyTorch style and super-resolution networks' weights load unchanged and give the same outputs.
//!
//! The fixture is written by `tests/fixtures/make_style_sr_fixture.py`: pytorch/examples'
//! `TransformerNet` and leftthomas/SRGAN's `Generator` / `Discriminator` with small widths and
//! random weights (names unchanged), and easel's Johnson ×4 network in PyTorch; see the script.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use easel_models::sr::{Arch, Config as SrConfig, Discriminator, SrNet};
use easel_models::style::{Config as StyleConfig, TransformerNet};
use easel_nn::{BnMode, ParamStore};

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/style_sr_pytorch.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture present in the repository")
}

fn sub(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// max |a − b| / (1 + max |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let m = |t: Tensor| {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    m(a.sub(b).unwrap()) / (1.0 + m(b.clone()))
}

/// Loads `prefix.*` into a fresh store, which must hold exactly those names and shapes.
fn load(store: &ParamStore, t: &HashMap<String, Tensor>, prefix: &str) {
    store
        .load_tensors(&sub(t, prefix))
        .unwrap_or_else(|e| panic!("{prefix}: {e}"));
}

#[test]
fn transformer_net_matches_pytorch_examples_at_an_odd_size() {
    let t = fixture();
    let store = ParamStore::new(&Device::Cpu, 0);
    let cfg = StyleConfig {
        widths: [4, 8, 8],
        residual_blocks: 2,
    };
    let net = TransformerNet::new(&cfg, store.var_builder()).unwrap();
    load(&store, &t, "style.");
    let y = net.forward(&t["style_x"]).unwrap(); // 13×18 → 16×20, as PyTorch
    let d = rel_diff(&y, &t["style_y"]);
    assert!(d < 1e-5, "TransformerNet differs from PyTorch by {d}");
    // The full-size network has PyTorch's parameter count.
    let counts = t["counts"].to_vec1::<f64>().unwrap();
    let full = ParamStore::new(&Device::Cpu, 0);
    TransformerNet::new(&StyleConfig::johnson(), full.var_builder()).unwrap();
    assert_eq!(full.num_parameters() as f64, counts[0]);
}

#[test]
fn sr_networks_match_pytorch_in_eval_mode() {
    let t = fixture();
    for (arch, prefix, out) in [
        (Arch::Srresnet, "srresnet.", "srresnet_y"),
        (Arch::Johnson, "johnson.", "johnson_y"),
    ] {
        let store = ParamStore::new(&Device::Cpu, 0);
        let cfg = SrConfig {
            arch,
            scale: 4,
            width: 4,
            residual_blocks: 2,
            residual: false,
        };
        let net = SrNet::new(&cfg, store.var_builder()).unwrap();
        load(&store, &t, prefix);
        let y = net.forward(&t["sr_x"], BnMode::Eval).unwrap();
        let d = rel_diff(&y, &t[out]);
        assert!(d < 1e-5, "{arch:?} differs from PyTorch by {d}");
    }
    let store = ParamStore::new(&Device::Cpu, 0);
    let d = Discriminator::new(2, store.var_builder()).unwrap();
    load(&store, &t, "disc.");
    let y = d.forward(&t["disc_x"], BnMode::Eval).unwrap();
    let diff = rel_diff(&y, &t["disc_y"]);
    assert!(diff < 1e-5, "discriminator differs from PyTorch by {diff}");
    let counts = t["counts"].to_vec1::<f64>().unwrap();
    let full = ParamStore::new(&Device::Cpu, 0);
    SrNet::new(
        &SrConfig {
            residual_blocks: 5,
            ..SrConfig::srresnet_x4()
        },
        full.var_builder(),
    )
    .unwrap();
    assert_eq!(full.num_parameters() as f64, counts[1]);
    let full = ParamStore::new(&Device::Cpu, 0);
    Discriminator::new(64, full.var_builder()).unwrap();
    assert_eq!(full.num_parameters() as f64, counts[2]);
}
