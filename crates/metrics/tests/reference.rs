//! The metrics match independent references on fixed inputs.
//!
//! `tests/fixtures/metrics/reference.safetensors` is written by `scripts/metrics_reference.py`
//! (numpy/scipy; pytorch-fid's and torch-fidelity's formulas; scikit-image for SSIM). Tolerances:
//! FID and KID 1e-6 relative (f64 throughout; the observed error is ~1e-12), IS 1e-9 relative,
//! precision/recall exact, Laplacian pyramid and descriptors 1e-12 absolute (f64), SWD 1e-5
//! relative and descriptor normalisation 1e-5 absolute (descriptors and projections are f32, as in
//! Karras et al.'s code), PSNR 1e-9 dB and SSIM 1e-9 absolute (the inputs are f64; SSIM is
//! computed in f64).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use easel_metrics::linalg::Mat;
use easel_metrics::swd::{
    descriptor_at, laplacian_pyramid, sliced_wasserstein, Descriptors, Planes,
};
use easel_metrics::*;

fn fixture() -> &'static HashMap<String, Tensor> {
    static F: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    F.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/metrics/reference.safetensors");
        candle_core::safetensors::load(&path, &Device::Cpu)
            .expect("fixture present in the repository")
    })
}

fn t(name: &str) -> Tensor {
    fixture()
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no {name}"))
        .clone()
}

fn vec_f64(name: &str) -> Vec<f64> {
    t(name).flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn scalar(name: &str) -> f64 {
    vec_f64(name)[0]
}

fn indices(name: &str) -> Vec<Vec<usize>> {
    t(name)
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|i| i as usize).collect())
        .collect()
}

fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= tol,
        "{what}: got {got}, want {want} (relative error {err:e} > {tol:e})"
    );
}

#[test]
fn fid_matches_pytorch_fid_and_the_exact_oracle() {
    for case in ["basic", "offset", "singular", "relu64"] {
        let x1 = t(&format!("fid.{case}.x1"));
        let x2 = t(&format!("fid.{case}.x2"));
        // Stream x1 in uneven batches; x2 in one.
        let n1 = x1.dim(0).unwrap();
        let mut acc = FidAccumulator::new(x1.dim(1).unwrap());
        let cut = [0, 1, n1 / 3, n1];
        for w in cut.windows(2) {
            acc.update(&x1.narrow(0, w[0], w[1] - w[0]).unwrap())
                .unwrap();
        }
        let s1 = acc.finish("test", case).unwrap();
        let s2 = FeatureStats::from_features(&x2, "test", case).unwrap();
        let fid = s1.frechet_distance(&s2).unwrap();
        assert_rel(fid, scalar(&format!("fid.{case}.exact")), 1e-6, case);
        if let Some(r) = fixture().get(&format!("fid.{case}.pytorch_fid")) {
            let r = r.to_vec1::<f64>().unwrap()[0];
            assert_rel(fid, r, 1e-6, &format!("{case} vs pytorch-fid"));
        }
        if let Some(cov) = fixture().get(&format!("fid.{case}.cov1")) {
            let cov = cov.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let scale = cov.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, b) in s1.cov.iter().zip(&cov) {
                assert!((a - b).abs() <= 1e-10 * scale, "{case} cov: {a} vs {b}");
            }
            for (a, b) in s1.mean.iter().zip(vec_f64(&format!("fid.{case}.mu1"))) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "{case} mean: {a} vs {b}"
                );
            }
        }
        // Symmetry and identity on the same data.
        assert_rel(s2.frechet_distance(&s1).unwrap(), fid, 1e-9, "symmetry");
        assert!(
            s1.frechet_distance(&s1).unwrap().abs() < 1e-9 * fid,
            "{case}: FID(x, x)"
        );
    }
}

#[test]
fn kid_matches_torch_fidelity_formula() {
    let x = Mat::from_tensor(&t("kid.x"), "x").unwrap();
    let y = Mat::from_tensor(&t("kid.y"), "y").unwrap();
    let subsets: Vec<(Vec<usize>, Vec<usize>)> = indices("kid.idx1")
        .into_iter()
        .zip(indices("kid.idx2"))
        .collect();
    let r = kid::kid_on_subsets(&x, &y, &subsets, &KidConfig::default()).unwrap();
    for (got, want) in r.per_subset.iter().zip(vec_f64("kid.mmd2")) {
        assert_rel(*got, want, 1e-6, "MMD² of a subset");
    }
    assert_rel(r.mean, scalar("kid.mean"), 1e-6, "KID mean");
    assert_rel(r.std, scalar("kid.std"), 1e-6, "KID std");
}

#[test]
fn inception_score_matches_torch_fidelity_formula() {
    let logits = t("is.logits");
    for splits in [1usize, 5, 10] {
        let s = inception_score(&logits, splits, None).unwrap();
        let want = vec_f64(&format!("is.splits{splits}"));
        assert_rel(s.mean, want[0], 1e-9, "IS mean");
        if splits > 1 {
            assert_rel(s.std, want[1], 1e-9, "IS std");
        } else {
            assert!(s.std.abs() < 1e-15);
        }
    }
    // f32 logits give the same score to f32 precision.
    let s = inception_score(&logits.to_dtype(DType::F32).unwrap(), 10, None).unwrap();
    assert_rel(
        s.mean,
        vec_f64("is.splits10")[0],
        1e-5,
        "IS from f32 logits",
    );
}

#[test]
fn precision_recall_matches_kynkaanniemi() {
    for k in [1usize, 3, 5] {
        let pr = precision_recall(&t("pr.real"), &t("pr.fake"), k).unwrap();
        let want = vec_f64(&format!("pr.k{k}"));
        assert_eq!([pr.precision, pr.recall], [want[0], want[1]], "k = {k}");
    }
}

#[test]
fn laplacian_pyramid_and_descriptors_match_scipy() {
    let images = Planes::from_tensor(&t("swd.images")).unwrap();
    let pyr = laplacian_pyramid(&images, 3);
    for (i, level) in pyr.iter().enumerate() {
        let want = t(&format!("swd.level{i}"));
        assert_eq!(level.dims.as_slice(), want.dims(), "level {i}");
        let want = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let worst = level
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(worst < 1e-12, "level {i}: {worst}");
    }
    let pos = t("swd.positions").to_vec2::<i64>().unwrap();
    let want = t("swd.descriptors");
    for (r, p) in pos.iter().enumerate() {
        let d = descriptor_at(&images, p[0] as usize, p[1] as usize, p[2] as usize, 7).unwrap();
        let w = want
            .get(r)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(d, w, "descriptor {r} at {p:?}");
    }
}

#[test]
fn descriptor_normalisation_and_sliced_wasserstein_match_numpy() {
    let raw = t("swd.raw");
    let (n, c, k, _) = raw.dims4().unwrap();
    let mut d = Descriptors {
        n,
        channels: c,
        dim: c * k * k,
        data: raw
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect(),
    };
    d.normalize();
    for (a, b) in d.data.iter().zip(vec_f64("swd.finalized")) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
    let desc = |name: &str| {
        let m = Mat::from_tensor(&t(name), name).unwrap();
        Descriptors {
            n: m.rows,
            channels: 1,
            dim: m.cols,
            data: m.data.iter().map(|&v| v as f32).collect(),
        }
    };
    let dirs = Mat::from_tensor(&t("swd.dirs"), "dirs").unwrap();
    let v = sliced_wasserstein(&desc("swd.a"), &desc("swd.b"), &dirs).unwrap();
    assert_rel(v, scalar("swd.value"), 1e-5, "sliced Wasserstein");
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let (x, y) = (t("quality.x"), t("quality.y"));
    for crop in [0usize, 2] {
        for y_channel in [false, true] {
            let cfg = QualityConfig {
                crop_border: crop,
                y_channel,
            };
            let tag = if y_channel { "y" } else { "rgb" };
            let p = psnr(&x, &y, &cfg).unwrap();
            let s = ssim(&x, &y, &cfg).unwrap();
            for (got, want) in p
                .iter()
                .zip(vec_f64(&format!("quality.crop{crop}.psnr_{tag}")))
            {
                assert!(
                    (got - want).abs() < 1e-9,
                    "PSNR {tag} crop {crop}: {got} vs {want}"
                );
            }
            for (got, want) in s
                .iter()
                .zip(vec_f64(&format!("quality.crop{crop}.ssim_{tag}")))
            {
                assert!(
                    (got - want).abs() < 1e-9,
                    "SSIM {tag} crop {crop}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn neighbours_diversity_and_modes_match_scipy() {
    let nn = nearest_neighbours(&t("nn.samples"), &t("nn.train")).unwrap();
    let idx = t("nn.index").to_vec1::<i64>().unwrap();
    for ((n, i), d) in nn.iter().zip(idx).zip(vec_f64("nn.distance")) {
        assert_eq!(n.index, i as usize);
        assert!((n.distance - d).abs() < 1e-12, "{} vs {d}", n.distance);
    }
    let div = mean_pairwise_distance(&t("nn.samples")).unwrap();
    assert_rel(div, scalar("diversity.value"), 1e-12, "diversity");
    let m = mode_coverage(&t("modes.logits")).unwrap();
    let hist: Vec<usize> = t("modes.histogram")
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(m.histogram, hist);
    assert_eq!(m.classes_hit, 3);
    assert_rel(m.kl_to_uniform, scalar("modes.kl"), 1e-12, "KL to uniform");
}
