//! The metric networks match their PyTorch references.
//!
//! Fixtures are written by `scripts/metrics_reference.py` into `tests/fixtures/metrics/`:
//! - `inception_state_dict.json`: names and shapes of pytorch-fid's Inception `state_dict`
//!   (torchvision `Inception3(num_classes=1008, aux_logits=False)` with the FID blocks);
//! - `inception_fid_random.safetensors`: an input, the pool3 features and `logits_unbiased` of
//!   pytorch-fid's own `InceptionV3([3])` with weights from the integer hash below (the real
//!   weights cannot be downloaded here), and `F.interpolate` results for the resize;
//! - `classifier_pytorch.safetensors`: the classifier module of `classifier.rs` at width 8.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use easel_models::{classifier, inception};
use easel_nn::{BnMode, ParamStore};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metrics")
        .join(name)
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_path(name), &Device::Cpu)
        .expect("fixture present in the repository")
}

/// max |a − b| / max(1, max |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// The script's `hash_uniform`: splitmix64 of (k, j), top 24 bits, mapped to [−1, 1).
fn hash_uniform(k: u64, n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|j| {
            let mut h = k
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(j.wrapping_mul(0xD1B5_4A32_D192_ED03));
            h ^= h >> 30;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 27;
            h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
            h ^= h >> 31;
            (h >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// The script's `formula_weight`.
fn formula_weight(k: usize, name: &str, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v = hash_uniform(k as u64, n);
    let vals: Vec<f32> = if name.ends_with("running_var") {
        v.iter().map(|x| (0.75 + 0.25 * x) as f32).collect()
    } else if name.ends_with("running_mean") || name.ends_with("bn.bias") || name == "fc.bias" {
        v.iter().map(|x| (0.1 * x) as f32).collect()
    } else if name.ends_with("bn.weight") {
        v.iter().map(|x| (1.0 + 0.2 * x) as f32).collect()
    } else {
        let a = (6.0 / (n / dims[0]) as f64).sqrt();
        v.iter().map(|x| (x * a) as f32).collect()
    };
    Tensor::from_vec(vals, dims, &Device::Cpu).unwrap()
}

#[test]
fn inception_names_and_shapes_are_pytorch_fids() {
    let text = std::fs::read_to_string(fixture_path("inception_state_dict.json")).unwrap();
    let torch: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    let store = ParamStore::new(&Device::Cpu, 0);
    inception::InceptionV3::new(&inception::Config::pytorch_fid(), store.var_builder()).unwrap();
    let ours: HashMap<String, Vec<usize>> = store
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dims().to_vec()))
        .collect();
    let torch: HashMap<String, Vec<usize>> = torch
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let mut missing: Vec<&String> = torch.keys().filter(|k| !ours.contains_key(*k)).collect();
    let mut extra: Vec<&String> = ours.keys().filter(|k| !torch.contains_key(*k)).collect();
    missing.sort();
    extra.sort();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, s) in &torch {
        assert_eq!(&ours[k], s, "{k}");
    }
    assert_eq!(ours.len(), 472);
}

#[test]
fn resize_matches_f_interpolate() {
    let t = load("inception_fid_random.safetensors");
    let x = &t["resize.in"];
    for (h, w) in [(13, 11), (3, 4), (7, 3), (40, 33)] {
        let got = inception::resize_bilinear(x, h, w).unwrap();
        let d = rel_diff(&got, &t[&format!("resize.{h}x{w}")]);
        assert!(d < 1e-6, "{h}×{w}: {d}");
    }
}

#[test]
fn inception_matches_pytorch_fid_with_generated_weights() {
    let t = load("inception_fid_random.safetensors");
    let store = ParamStore::new(&Device::Cpu, 0);
    let net = inception::InceptionV3::new(&inception::Config::pytorch_fid(), store.var_builder())
        .unwrap();
    // Sorted names (the store's order) index the hash, as in the script.
    let weights: HashMap<String, Tensor> = store
        .all()
        .into_iter()
        .enumerate()
        .map(|(k, (name, var))| {
            let w = formula_weight(k, &name, var.dims());
            (name, w)
        })
        .collect();
    store.load_tensors(&weights).unwrap();
    let pool3 = net.forward(&t["x"]).unwrap();
    assert_eq!(pool3.dims(), [2, 2048]);
    let d = rel_diff(&pool3, &t["pool3"]);
    assert!(d < 1e-4, "pool3: {d}");
    let logits = net.logits(&pool3).unwrap();
    let d = rel_diff(&logits, &t["logits_unbiased"]);
    assert!(d < 1e-4, "logits: {d}");
    // The two images differ by ~5 % in pool3, so a wrong block could not pass the 1e-4 bound.
    let rows = pool3.to_dtype(DType::F64).unwrap();
    let diff = (rows.get(0).unwrap() - rows.get(1).unwrap()).unwrap();
    let rel = diff
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
        / rows
            .get(0)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt();
    assert!(rel > 0.01, "{rel}");
}

#[test]
fn classifier_matches_pytorch() {
    let t = load("classifier_pytorch.safetensors");
    let cfg = classifier::Config {
        image_size: 28,
        channels: 1,
        num_classes: 10,
        width: 8,
        feature_dim: 16,
    };
    let store = ParamStore::new(&Device::Cpu, 1);
    let net = classifier::Classifier::new(&cfg, store.var_builder()).unwrap();
    let weights: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("net.").map(|k| (k.to_string(), v.clone())))
        .collect();
    store.load_tensors(&weights).unwrap();
    let (f, l) = net.forward_t(&t["x"], BnMode::Eval).unwrap();
    assert!(
        rel_diff(&f, &t["features"]) < 1e-5,
        "{}",
        rel_diff(&f, &t["features"])
    );
    assert!(
        rel_diff(&l, &t["logits"]) < 1e-5,
        "{}",
        rel_diff(&l, &t["logits"])
    );
}
