//! Tests of every op's CPU kernel and generic path: forward and gradients against candle's
//! reference ops (where candle is right), against central finite differences in f64
//! (`h = 1e-6`, tolerance `1e-6·(1 + |g|)`), and against PyTorch numbers; plus tests showing
//! candle 0.11.1's `max_pool2d` and `upsample_nearest2d` gradient bugs.
//!
//! f32 comparisons between two implementations use `1e-5·(1 + |v|)` (different summation orders).

use super::*;
use crate::kernels::act::{activation_grad, ActivationGrad};
use crate::kernels::pool::{
    AvgPool2dGrad, AvgPool2dOp, UpsampleNearest2dGrad, UpsampleNearest2dOp,
};
use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CPU: Device = Device::Cpu;

fn rand_vec(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn rand_t(dims: &[usize], seed: u64, dt: DType) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(rand_vec(n, seed, -2.0, 2.0), dims, &CPU)
        .unwrap()
        .to_dtype(dt)
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[track_caller]
fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (flat(a), flat(b));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = (x - y).abs() <= tol * (1.0 + y.abs()) || (x.is_nan() && y.is_nan());
        assert!(ok, "{what}: element {i}: {x} vs {y} (tol {tol})");
    }
}

/// `⟨a, b⟩` of two f64 tensors of the same shape.
fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Gradients of `Σ w·f(inputs)` w.r.t. every input, with `w` a fixed random tensor.
fn grads(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], seed: u64) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let w = rand_t(y.dims(), seed, y.dtype());
    let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = ts
        .iter()
        .map(|t| g.get(t).cloned().unwrap_or_else(|| t.zeros_like().unwrap()))
        .collect();
    (y, gs)
}

/// Checks the gradients of `Σ w·f(inputs)` (f64) against central finite differences on every
/// coordinate of every input.
#[track_caller]
fn check_fd(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], seed: u64, what: &str) {
    let (y, gs) = grads(f, inputs, seed);
    let w = rand_t(y.dims(), seed, DType::F64);
    let loss = |ins: &[Tensor]| -> f64 {
        (f(ins) * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let base = flat(input);
        let g = flat(&gs[k]);
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let mut ins = inputs.to_vec();
                ins[k] = Tensor::from_vec(v, input.dims(), &CPU).unwrap();
                loss(&ins)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{what}: input {k} element {i}: analytic {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

const SHAPES: [[usize; 4]; 5] = [
    [2, 3, 5, 7],
    [1, 1, 1, 1],
    [3, 2, 1, 9],
    [1, 4, 6, 6],
    [2, 1, 3, 2],
];

const ACTS: [Activation; 5] = [
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::LeakyRelu(1.5),
    Activation::Tanh,
    Activation::Sigmoid,
];

/// Candle's own implementation of each activation.
fn candle_act(x: &Tensor, a: Activation) -> Tensor {
    match a {
        Activation::Relu => x.relu(),
        Activation::LeakyRelu(s) => candle_nn::ops::leaky_relu(x, s),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
    .unwrap()
}

fn kernel_act(x: &Tensor, a: Activation) -> Tensor {
    x.apply_op1(act::ActivationOp(a)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Activations

#[test]
fn leaky_relu_values_and_gradient() {
    let x = Var::new(&[-2.0f32, -0.5, 0.5, 3.0], &CPU).unwrap();
    let y = leaky_relu(x.as_tensor(), 0.2).unwrap();
    assert_eq!(y.to_vec1::<f32>().unwrap(), [-0.4, -0.1, 0.5, 3.0]);
    // d/dx sum(y) = slope for x < 0, 1 for x > 0.
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(gx, [0.2, 0.2, 1.0, 1.0]);
}

#[test]
fn activations_match_candle_f32() {
    // Includes a tensor above the parallel threshold and a non-contiguous input.
    let mut shapes: Vec<Vec<usize>> = SHAPES.iter().map(|s| s.to_vec()).collect();
    shapes.push(vec![3, 7, 41, 43]);
    for (si, dims) in shapes.iter().enumerate() {
        for (ai, &a) in ACTS.iter().enumerate() {
            let x = rand_t(dims, si as u64, DType::F32);
            let what = format!("{a:?} {dims:?}");
            let seed = 100 + ai as u64;
            let (y0, g0) = grads(&|t| candle_act(&t[0], a), std::slice::from_ref(&x), seed);
            let (y1, g1) = grads(
                &|t| activation(&t[0], a).unwrap(),
                std::slice::from_ref(&x),
                seed,
            );
            let (y2, g2) = grads(
                &|t| activation_generic(&t[0], a).unwrap(),
                std::slice::from_ref(&x),
                seed,
            );
            assert_close(&y1, &y0, 1e-6, &what);
            assert_close(&g1[0], &g0[0], 1e-6, &what);
            assert_close(&y2, &y0, 1e-6, &what);
            assert_close(&g2[0], &g0[0], 1e-6, &what);
        }
    }
    let x = rand_t(&[2, 3, 4, 5], 9, DType::F32);
    let xt = x.transpose(1, 3).unwrap();
    for a in ACTS {
        assert_close(
            &activation(&xt, a).unwrap(),
            &candle_act(&xt, a),
            1e-6,
            "strided",
        );
    }
}

#[test]
fn activations_match_finite_differences_f64() {
    for (si, dims) in SHAPES.iter().enumerate() {
        for a in ACTS {
            let x = rand_t(dims, 20 + si as u64, DType::F64);
            check_fd(
                &|t| kernel_act(&t[0], a),
                std::slice::from_ref(&x),
                3,
                &format!("kernel {a:?}"),
            );
            check_fd(
                &|t| activation_generic(&t[0], a).unwrap(),
                &[x],
                3,
                &format!("generic {a:?}"),
            );
        }
    }
}

#[test]
fn activation_backward_is_one_fused_op_and_differentiable() {
    // The backward op's own gradients (used for second-order derivatives): ∂/∂g = f'(s),
    // ∂/∂s from the chain rule; checked by finite differences.
    for a in ACTS {
        let g = rand_t(&[2, 3, 4, 5], 1, DType::F64);
        // For tanh/sigmoid s is a result in (−1, 1) / (0, 1).
        let s = match a {
            Activation::Tanh => rand_t(&[2, 3, 4, 5], 2, DType::F64)
                .affine(0.4, 0.)
                .unwrap(),
            Activation::Sigmoid => rand_t(&[2, 3, 4, 5], 2, DType::F64)
                .affine(0.2, 0.5)
                .unwrap(),
            _ => rand_t(&[2, 3, 4, 5], 2, DType::F64),
        };
        check_fd(
            &|t| activation_grad(a, &t[0], &t[1]).unwrap(),
            &[g, s],
            5,
            &format!("{a:?} grad op"),
        );
    }
    // And it computes what the op's backward should.
    let x = rand_t(&[3, 4, 5, 6], 4, DType::F32);
    let g = rand_t(&[3, 4, 5, 6], 5, DType::F32);
    let y = kernel_act(&x, Activation::Tanh);
    let want = (&g * (1.0 - y.sqr().unwrap()).unwrap()).unwrap();
    let got = g.apply_op2(&y, ActivationGrad(Activation::Tanh)).unwrap();
    assert_close(&got, &want, 1e-6, "tanh grad");
}

#[test]
fn activation_grad_rejects_mismatched_shapes() {
    let g = Tensor::zeros((2, 3), DType::F32, &CPU).unwrap();
    let s = Tensor::zeros((3, 2), DType::F32, &CPU).unwrap();
    let err = activation_grad(Activation::Relu, &g, &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Batch norm

fn bn(t: &[Tensor], generic: bool) -> Tensor {
    if generic {
        batch_norm_train_generic(&t[0], &t[1], &t[2], 1e-5)
            .unwrap()
            .y
    } else {
        norm::batch_norm_train(&t[0], &t[1], &t[2], 1e-5, None)
            .unwrap()
            .0
    }
}

#[test]
fn batch_norm_matches_formula() {
    for (si, d) in SHAPES.iter().enumerate() {
        let x = rand_t(d, si as u64, DType::F64).affine(3.0, 1.5).unwrap();
        let c = d[1];
        let g = rand_t(&[c], 50, DType::F64);
        let b = rand_t(&[c], 51, DType::F64);
        let (y, mean, var) = norm::batch_norm_train(&x, &g, &b, 1e-5, None).unwrap();
        // Reference straight from the definition, channel by channel.
        let xv = flat(&x);
        let (hw, n) = (d[2] * d[3], d[0] * d[2] * d[3]);
        let (gv, bv) = (flat(&g), flat(&b));
        let mut want = vec![0.0; xv.len()];
        for ch in 0..c {
            let idx: Vec<usize> = (0..d[0])
                .flat_map(|bi| (0..hw).map(move |k| (bi * c + ch) * hw + k))
                .collect();
            let m = idx.iter().map(|&i| xv[i]).sum::<f64>() / n as f64;
            let v = idx.iter().map(|&i| (xv[i] - m).powi(2)).sum::<f64>() / n as f64;
            assert!((flat(&mean)[ch] - m).abs() < 1e-12 && (flat(&var)[ch] - v).abs() < 1e-12);
            for &i in &idx {
                want[i] = gv[ch] * (xv[i] - m) / (v + 1e-5).sqrt() + bv[ch];
            }
        }
        let want = Tensor::from_vec(want, d, &CPU).unwrap();
        assert_close(&y, &want, 1e-12, &format!("bn {d:?}"));
    }
}

#[test]
fn batch_norm_matches_pytorch() {
    // From crates/nn/scripts/batch_norm_reference.py (torch 2.15, float64): nn.BatchNorm2d(3),
    // train mode,
    // weight [0.5, 1.5, -1], bias [0.1, -0.2, 0.3], loss Σ y·cos(0.3·i).
    let (b, c, h, w) = (2, 3, 2, 3);
    let n = b * c * h * w;
    let xs: Vec<f64> = (0..n)
        .map(|i| {
            let ch = (i / (h * w)) % c;
            (1.0 + i as f64 * 0.7).sin() * (ch + 1) as f64 + ch as f64
        })
        .collect();
    let x = Tensor::from_vec(xs, (b, c, h, w), &CPU).unwrap();
    let g = Tensor::new(&[0.5f64, 1.5, -1.0], &CPU).unwrap();
    let be = Tensor::new(&[0.1f64, -0.2, 0.3], &CPU).unwrap();
    let wv: Vec<f64> = (0..n).map(|i| (i as f64 * 0.3).cos()).collect();
    let wt = Tensor::from_vec(wv, (b, c, h, w), &CPU).unwrap();
    let y_torch = [
        5.600740436273e-01,
        6.605245257539e-01,
        4.490470829462e-01,
        2.510286098276e-02,
        -4.119205482358e-01,
        -6.564842066748e-01,
        -2.760635391478e+00,
        -1.624427504718e+00,
        -9.614845135462e-02,
        1.105428249795e+00,
        1.415182301027e+00,
        6.874315320069e-01,
        -6.278477330950e-01,
        7.483092740987e-01,
        1.501913754427e+00,
        1.278533745397e+00,
        1.832283556638e-01,
        -1.268863175362e+00,
        5.719057710633e-01,
        6.572521624898e-01,
        4.322096725571e-01,
        2.619300666500e-03,
        -4.294758887472e-01,
        -6.608547764291e-01,
        -2.724397186518e+00,
        -1.554423626752e+00,
        -2.530281803219e-02,
        1.143795830130e+00,
        1.403026955833e+00,
        6.304701100605e-01,
        -5.566375365985e-01,
        8.031391581330e-01,
        1.514575974797e+00,
        1.243073062010e+00,
        1.163224820055e-01,
        -1.335747361477e+00,
    ];
    let dx_torch = [
        7.722009116024e-02,
        2.807718819961e-02,
        -1.829562049798e-02,
        -7.321365512789e-02,
        -1.627588956263e-01,
        -3.108761827197e-01,
        -4.588064008903e-01,
        -4.770695890371e-01,
        -3.445488948292e-01,
        -2.223445001285e-01,
        -2.387270083283e-01,
        -4.224857824033e-01,
        3.262882772365e-01,
        6.514548423726e-02,
        -1.781843611925e-01,
        -3.526398707608e-01,
        -4.513299720864e-01,
        -5.080612402948e-01,
        -1.693693331007e-01,
        -5.196881746803e-02,
        7.511287463495e-02,
        1.840747297982e-01,
        2.337831677150e-01,
        1.882144530326e-01,
        4.820015490089e-01,
        4.901516202844e-01,
        5.558495118379e-01,
        5.238819119929e-01,
        2.829219780107e-01,
        -1.708243955180e-01,
        3.291599001752e-01,
        2.475184791263e-01,
        1.695327969478e-01,
        1.298536449709e-01,
        1.214602898688e-01,
        1.012565717716e-01,
    ];
    let dg_torch = [1.721151748833e+00, -4.138961984920e+00, 1.736338359790e+00];
    let db_torch = [9.030769304350e+00, -4.853523723881e+00, -6.825307790933e+00];
    let t = |v: &[f64], d: &[usize]| Tensor::from_vec(v.to_vec(), d, &CPU).unwrap();
    for generic in [false, true] {
        let vars: Vec<Var> = [&x, &g, &be]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = bn(&ts, generic);
        let gr = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let what = if generic { "generic" } else { "kernel" };
        assert_close(&y, &t(&y_torch, &[b, c, h, w]), 1e-10, what);
        assert_close(
            gr.get(&ts[0]).unwrap(),
            &t(&dx_torch, &[b, c, h, w]),
            1e-10,
            what,
        );
        assert_close(gr.get(&ts[1]).unwrap(), &t(&dg_torch, &[c]), 1e-10, what);
        assert_close(gr.get(&ts[2]).unwrap(), &t(&db_torch, &[c]), 1e-10, what);
    }
    // Running statistics after one training step (momentum 0.1, unbiased variance), through the
    // layer, as torch's running_mean / running_var.
    let store = crate::ParamStore::with_dtype(&CPU, DType::F64, 0);
    let layer =
        crate::BatchNorm2d::new(c, candle_nn::Init::Const(1.), store.var_builder()).unwrap();
    layer.forward_t(&x, crate::BnMode::Train).unwrap();
    let st = store.tensors();
    let rm = [1.535670621068e-02, 1.529929943762e-01, 7.598871452342e-02];
    let rv = [9.609706615130e-01, 1.097485128366e+00, 1.118934364127e+00];
    assert_close(&st["running_mean"], &t(&rm, &[c]), 1e-10, "running mean");
    assert_close(&st["running_var"], &t(&rv, &[c]), 1e-10, "running var");
}

#[test]
fn batch_norm_gradients_match_finite_differences_f64() {
    for (si, d) in SHAPES.iter().enumerate() {
        if d[0] * d[2] * d[3] < 2 {
            continue; // σ² = 0: the normalisation is flat and ε dominates
        }
        let x = rand_t(d, 30 + si as u64, DType::F64);
        let g = rand_t(&[d[1]], 40, DType::F64);
        let b = rand_t(&[d[1]], 41, DType::F64);
        for generic in [false, true] {
            check_fd(
                &|t| bn(t, generic),
                &[x.clone(), g.clone(), b.clone()],
                7,
                &format!("bn generic={generic} {d:?}"),
            );
        }
    }
}

#[test]
fn batch_norm_kernel_matches_generic_f32() {
    let mut shapes: Vec<Vec<usize>> = SHAPES.iter().map(|s| s.to_vec()).collect();
    shapes.push(vec![16, 64, 8, 8]);
    shapes.push(vec![5, 7, 13, 11]);
    for (si, d) in shapes.iter().enumerate() {
        let x = rand_t(d, 60 + si as u64, DType::F32)
            .affine(2.0, 0.7)
            .unwrap();
        let g = rand_t(&[d[1]], 61, DType::F32);
        let b = rand_t(&[d[1]], 62, DType::F32);
        let ins = [x.clone(), g.clone(), b.clone()];
        let (y0, g0) = grads(&|t| bn(t, true), &ins, 8);
        let (y1, g1) = grads(&|t| bn(t, false), &ins, 8);
        let what = format!("{d:?}");
        assert_close(&y1, &y0, 1e-5, &what);
        for k in 0..3 {
            // ∂x involves cancellations of sums over up to 4096 values: f32 round-off.
            assert_close(&g1[k], &g0[k], 2e-4, &format!("{what} grad {k}"));
        }
        // Batch statistics agree too.
        let k = batch_norm_train(&x, &g, &b, 1e-5).unwrap();
        let r = batch_norm_train_generic(&x, &g, &b, 1e-5).unwrap();
        assert_close(&k.mean, &r.mean, 1e-5, "mean");
        assert_close(&k.var, &r.var, 1e-5, "var");
    }
}

#[test]
fn batch_norm_statistics_are_accurate_for_large_means() {
    // μ = 1000, σ = 0.01 (σ²/μ² = 1e-10, beyond f32's E[x²] − μ²): the shifted f64 sums give the
    // variance of the f32 values to f32 precision.
    let d = [8, 2, 16, 16];
    let x32 = rand_t(&d, 3, DType::F64)
        .affine(0.01, 1000.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let stats = |x: &Tensor| {
        let dt = x.dtype();
        let one = Tensor::ones(2, dt, &CPU).unwrap();
        let zero = Tensor::zeros(2, dt, &CPU).unwrap();
        norm::batch_norm_train(x, &one, &zero, 1e-5, None).unwrap()
    };
    let (_, m32, v32) = stats(&x32);
    let (_, m64, v64) = stats(&x32.to_dtype(DType::F64).unwrap());
    assert_close(&v32, &v64, 1e-6, "variance");
    assert_close(&m32, &m64, 1e-7, "mean");
    assert!(
        flat(&v32).iter().all(|v| *v > 5e-5 && *v < 2e-4),
        "{:?}",
        flat(&v32)
    );
}

#[test]
fn batch_norm_with_fused_activation_matches_unfused() {
    let acts = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::LeakyRelu(0.0),
        Activation::LeakyRelu(-0.3), // not fusable: kernel batch norm, then the activation kernel
        Activation::Tanh,
        Activation::Sigmoid,
    ];
    for (si, d) in SHAPES.iter().chain(&[[16, 32, 9, 7]]).enumerate() {
        if d[0] * d[2] * d[3] < 2 {
            continue;
        }
        for a in acts {
            let what = format!("{a:?} {d:?}");
            // f64: finite differences through the fused op.
            let x = rand_t(d, 200 + si as u64, DType::F64);
            let g = rand_t(&[d[1]], 201, DType::F64);
            let b = rand_t(&[d[1]], 202, DType::F64);
            let fused = |t: &[Tensor]| {
                batch_norm_act_train(&t[0], &t[1], &t[2], 1e-5, Some(a))
                    .unwrap()
                    .y
            };
            if x.elem_count() < 1000 {
                check_fd(&fused, &[x.clone(), g.clone(), b.clone()], 9, &what);
            }
            // f32: against the generic batch norm followed by the generic activation.
            let ins: Vec<Tensor> = [x, g, b]
                .iter()
                .map(|t| t.to_dtype(DType::F32).unwrap())
                .collect();
            let unfused = |t: &[Tensor]| {
                activation_generic(
                    &batch_norm_train_generic(&t[0], &t[1], &t[2], 1e-5)
                        .unwrap()
                        .y,
                    a,
                )
                .unwrap()
            };
            let (y0, g0) = grads(&unfused, &ins, 10);
            let (y1, g1) = grads(&fused, &ins, 10);
            assert_close(&y1, &y0, 1e-5, &what);
            for k in 0..3 {
                assert_close(&g1[k], &g0[k], 2e-4, &format!("{what} grad {k}"));
            }
        }
    }
    assert!(norm::BatchNormTrain::with_activation(1e-5, Activation::LeakyRelu(-0.3)).is_err());
}

#[test]
fn batch_norm_rejects_bad_shapes() {
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &CPU).unwrap();
    let g = Tensor::ones(4, DType::F32, &CPU).unwrap();
    let err = batch_norm_train(&x, &g, &g, 1e-5).unwrap_err().to_string();
    assert!(err.contains("[2, 3, 4, 4]") && err.contains("[4]"), "{err}");
    let x3 = Tensor::zeros((2, 3, 4), DType::F32, &CPU).unwrap();
    assert!(batch_norm_train(&x3, &g, &g, 1e-5).is_err());
}

// ---------------------------------------------------------------------------------------------
// Pooling and upsampling

/// Reference max-pool / avg-pool straight from the definition (f64, −∞ / 0 padding).
fn reference_pool(x: &Tensor, g: Pool2d, max: bool) -> Tensor {
    let (b, c, h, w) = x.dims4().unwrap();
    let (ho, wo) = g.out_hw((b, c, h, w), "ref").unwrap();
    let xv = flat(x);
    let mut out = Vec::new();
    for pl in 0..b * c {
        for oh in 0..ho {
            for ow in 0..wo {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for i in 0..g.kernel {
                    for j in 0..g.kernel {
                        let (ih, iw) = (
                            (oh * g.stride + i) as isize - g.padding as isize,
                            (ow * g.stride + j) as isize - g.padding as isize,
                        );
                        if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                            continue;
                        }
                        let v = xv[pl * h * w + ih as usize * w + iw as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max {
                    acc
                } else {
                    acc / (g.kernel * g.kernel) as f64
                });
            }
        }
    }
    Tensor::from_vec(out, (b, c, ho, wo), &CPU).unwrap()
}

const GEOMS: [(usize, usize, usize); 7] = [
    (2, 2, 0),
    (3, 2, 1),
    (3, 3, 0),
    (2, 1, 0),
    (3, 1, 1),
    (5, 2, 2),
    (4, 3, 1),
];
const POOL_SHAPES: [[usize; 4]; 4] = [[2, 3, 7, 9], [1, 2, 8, 8], [1, 1, 5, 5], [3, 1, 6, 11]];

fn mp_kernel(x: &Tensor, g: Pool2d) -> Tensor {
    x.apply_op1(pool::MaxPool2dOp::new(g)).unwrap()
}

fn ap_kernel(x: &Tensor, g: Pool2d) -> Tensor {
    x.apply_op1(AvgPool2dOp(g)).unwrap()
}

#[test]
fn candle_max_pool_gradient_is_scaled_ours_is_right() {
    // [[1, 2], [3, 4]], k = 2: ∂max/∂x is 1 at the 4, 0 elsewhere.
    let x = Var::new(&[[[[1f32, 2.], [3., 4.]]]], &CPU).unwrap();
    let grad_at_max = |y: Tensor| {
        let g = y.sum_all().unwrap().backward().unwrap();
        g.get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    // candle 0.11.1 gives 0.25 = 1/k² (if this fails, candle fixed its bug).
    let candle = grad_at_max(x.as_tensor().max_pool2d(2).unwrap());
    assert_eq!(
        candle,
        [0., 0., 0., 0.25],
        "candle's max_pool2d backward changed"
    );
    let ours = grad_at_max(max_pool2d(x.as_tensor(), 2, 2, 0).unwrap());
    assert_eq!(ours, [0., 0., 0., 1.]);
    let generic = grad_at_max(
        max_pool2d_generic(
            x.as_tensor(),
            Pool2d {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        )
        .unwrap(),
    );
    assert_eq!(generic, [0., 0., 0., 1.]);
}

#[test]
fn candle_upsample_gradient_overwrites_ours_accumulates() {
    // x feeds both an upsample and a product: ∂/∂x (Σ u·up(x) + Σ v·x) = blocksum(u) + v.
    let x0 = rand_t(&[2, 3, 4, 5], 1, DType::F32);
    let u = rand_t(&[2, 3, 8, 10], 2, DType::F32);
    let v = rand_t(&[2, 3, 4, 5], 3, DType::F32);
    let want = (u
        .reshape((2, 3, 4, 2, 5, 2))
        .unwrap()
        .sum(5)
        .unwrap()
        .sum(3)
        .unwrap()
        + &v)
        .unwrap();
    let run = |up: &dyn Fn(&Tensor) -> Tensor| {
        let x = Var::from_tensor(&x0).unwrap();
        let a = (up(x.as_tensor()) * &u).unwrap().sum_all().unwrap();
        let b = (x.as_tensor() * &v).unwrap().sum_all().unwrap();
        let g = (a + b).unwrap().backward().unwrap();
        g.get(x.as_tensor()).unwrap().clone()
    };
    let rel_err = |g: &Tensor| {
        let d = (g - &want)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap();
        let n = want.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        (d / n).unwrap().to_scalar::<f32>().unwrap()
    };
    // candle 0.11.1 keeps only the upsample's contribution (if this fails, candle fixed its bug).
    let candle = run(&|x| x.upsample_nearest2d(8, 10).unwrap());
    assert!(
        rel_err(&candle) > 0.1,
        "candle's upsample backward changed: {}",
        rel_err(&candle)
    );
    let ours = run(&|x| upsample_nearest2d(x, 8, 10).unwrap());
    assert!(rel_err(&ours) < 1e-6, "{}", rel_err(&ours));
    let generic = run(&|x| upsample_nearest2d_generic(x, 2, 2).unwrap());
    assert!(rel_err(&generic) < 1e-6, "{}", rel_err(&generic));
}

#[test]
fn max_pool_forward_matches_definition_and_candle() {
    for (si, d) in POOL_SHAPES.iter().enumerate() {
        let x = rand_t(d, si as u64, DType::F32);
        for &(k, s, p) in &GEOMS {
            let g = Pool2d {
                kernel: k,
                stride: s,
                padding: p,
            };
            let want = reference_pool(&x, g, true);
            let what = format!("{d:?} k{k} s{s} p{p}");
            assert_close(&max_pool2d(&x, k, s, p).unwrap(), &want, 0.0, &what);
            assert_close(&max_pool2d_generic(&x, g).unwrap(), &want, 0.0, &what);
            if p == 0 {
                let c = x.max_pool2d_with_stride(k, s).unwrap();
                assert_close(&max_pool2d(&x, k, s, p).unwrap(), &c, 0.0, &what);
            }
        }
    }
}

/// Shapes whose height and width are multiples of `k` (where candle's pool backward is usable).
fn divisible_shapes(k: usize) -> [[usize; 4]; 3] {
    [[2, 3, 2 * k, 3 * k], [1, 2, 4 * k, k], [3, 1, k, 5 * k]]
}

#[test]
fn candle_pool_gradient_is_wrong_when_size_is_not_a_multiple_of_k() {
    // avg_pool2d(k = 2) of a 3×3 map has one window, the top-left 2×2: ∂/∂x = 1/4 there, 0 on
    // the dropped row and column. Candle 0.11.1 upsamples the gradient to 3×3 instead and gives
    // every element 1/4 (if this fails, candle fixed it).
    let x = Var::from_tensor(&rand_t(&[1, 1, 3, 3], 1, DType::F32)).unwrap();
    let grad_of = |y: Tensor| {
        let g = y.sum_all().unwrap().backward().unwrap();
        flat(g.get(x.as_tensor()).unwrap())
    };
    let want = [0.25, 0.25, 0., 0.25, 0.25, 0., 0., 0., 0.];
    assert_eq!(grad_of(x.as_tensor().avg_pool2d(2).unwrap()), [0.25; 9]);
    assert_eq!(grad_of(avg_pool2d(x.as_tensor(), 2, 2, 0).unwrap()), want);
    let g = Pool2d {
        kernel: 2,
        stride: 2,
        padding: 0,
    };
    assert_eq!(grad_of(avg_pool2d_generic(x.as_tensor(), g).unwrap()), want);
}

#[test]
fn max_pool_gradient_is_candles_times_k2_when_k_equals_s() {
    // Without ties, and for sizes divisible by k (see below), candle's gradient has the right
    // support and is off by exactly 1/k².
    for k in [2, 3] {
        for (si, d) in divisible_shapes(k).iter().enumerate() {
            let x = rand_t(d, 10 + si as u64, DType::F32);
            let (_, gc) = grads(
                &|t| t[0].max_pool2d(k).unwrap(),
                std::slice::from_ref(&x),
                1,
            );
            let (_, g1) = grads(
                &|t| max_pool2d(&t[0], k, k, 0).unwrap(),
                std::slice::from_ref(&x),
                1,
            );
            let scaled = (&gc[0] * (k * k) as f64).unwrap();
            assert_close(&g1[0], &scaled, 1e-6, &format!("{d:?} k{k}"));
        }
    }
}

#[test]
fn pool_gradients_match_finite_differences_f64() {
    for (si, d) in POOL_SHAPES.iter().enumerate() {
        let x = rand_t(d, 70 + si as u64, DType::F64);
        for &(k, s, p) in &GEOMS {
            let g = Pool2d {
                kernel: k,
                stride: s,
                padding: p,
            };
            let what = format!("{d:?} k{k} s{s} p{p}");
            check_fd(
                &|t| mp_kernel(&t[0], g),
                std::slice::from_ref(&x),
                2,
                &format!("max kernel {what}"),
            );
            check_fd(
                &|t| max_pool2d_generic(&t[0], g).unwrap(),
                std::slice::from_ref(&x),
                2,
                &format!("max generic {what}"),
            );
            check_fd(
                &|t| ap_kernel(&t[0], g),
                std::slice::from_ref(&x),
                2,
                &format!("avg kernel {what}"),
            );
            check_fd(
                &|t| avg_pool2d_generic(&t[0], g).unwrap(),
                std::slice::from_ref(&x),
                2,
                &format!("avg generic {what}"),
            );
        }
    }
}

#[test]
fn max_pool_gradient_goes_to_first_maximum() {
    // PyTorch's rule: ties go to the first maximum in row-major window order.
    // One 2×2 window (row 3 and column 3 are dropped), all four values tied.
    let x = Tensor::new(&[[[[5f32, 5., 1.], [5., 5., 1.], [0., 7., 7.]]]], &CPU).unwrap();
    let want = [1f32, 0., 0., 0., 0., 0., 0., 0., 0.];
    for generic in [false, true] {
        let v = Var::from_tensor(&x).unwrap();
        let g = Pool2d {
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        let y = if generic {
            max_pool2d_generic(v.as_tensor(), g).unwrap()
        } else {
            max_pool2d(v.as_tensor(), 2, 2, 0).unwrap()
        };
        let gr = y.sum_all().unwrap().backward().unwrap();
        let gx = gr
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, want, "generic={generic}");
    }
    // Overlapping windows (k3 s1 p1) that share a maximum add their gradients there.
    let x = Var::new(&[[[[0f32, 0., 0.], [0., 9., 0.], [0., 0., 0.]]]], &CPU).unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 1, 1).unwrap();
    let gr = y.sum_all().unwrap().backward().unwrap();
    let gx = gr
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(gx, [0., 0., 0., 0., 9., 0., 0., 0., 0.]);
}

#[test]
fn pool_kernels_match_generic_f32() {
    for (si, d) in POOL_SHAPES.iter().chain(&[[4, 64, 32, 32]]).enumerate() {
        let x = rand_t(d, 80 + si as u64, DType::F32);
        for &(k, s, p) in &GEOMS {
            let g = Pool2d {
                kernel: k,
                stride: s,
                padding: p,
            };
            let what = format!("{d:?} k{k} s{s} p{p}");
            let (y0, g0) = grads(
                &|t| max_pool2d_generic(&t[0], g).unwrap(),
                std::slice::from_ref(&x),
                4,
            );
            let (y1, g1) = grads(
                &|t| max_pool2d(&t[0], k, s, p).unwrap(),
                std::slice::from_ref(&x),
                4,
            );
            assert_close(&y1, &y0, 0.0, &what);
            assert_close(&g1[0], &g0[0], 1e-6, &what);
            let (y0, g0) = grads(
                &|t| avg_pool2d_generic(&t[0], g).unwrap(),
                std::slice::from_ref(&x),
                4,
            );
            let (y1, g1) = grads(
                &|t| avg_pool2d(&t[0], k, s, p).unwrap(),
                std::slice::from_ref(&x),
                4,
            );
            assert_close(&y1, &y0, 1e-6, &what);
            assert_close(&g1[0], &g0[0], 1e-6, &what);
        }
    }
}

#[test]
fn avg_pool_matches_candle_when_k_equals_s() {
    for k in [2, 3] {
        for (si, d) in divisible_shapes(k).iter().enumerate() {
            let x = rand_t(d, 90 + si as u64, DType::F32);
            let (y0, g0) = grads(
                &|t| t[0].avg_pool2d(k).unwrap(),
                std::slice::from_ref(&x),
                6,
            );
            let (y1, g1) = grads(
                &|t| avg_pool2d(&t[0], k, k, 0).unwrap(),
                std::slice::from_ref(&x),
                6,
            );
            let what = format!("{d:?} k{k}");
            assert_close(&y1, &y0, 1e-6, &what);
            assert_close(&g1[0], &g0[0], 1e-6, &what);
            assert_close(
                &y1,
                &reference_pool(
                    &x,
                    Pool2d {
                        kernel: k,
                        stride: k,
                        padding: 0,
                    },
                    false,
                ),
                1e-6,
                &what,
            );
        }
    }
}

#[test]
fn upsample_matches_candle_forward_and_finite_differences() {
    for (si, d) in POOL_SHAPES.iter().enumerate() {
        for (fh, fw) in [(2, 2), (3, 1), (1, 2), (4, 3)] {
            let (th, tw) = (d[2] * fh, d[3] * fw);
            let what = format!("{d:?} ×({fh}, {fw})");
            let x = rand_t(d, 100 + si as u64, DType::F32);
            let c = x.upsample_nearest2d(th, tw).unwrap();
            assert_close(&upsample_nearest2d(&x, th, tw).unwrap(), &c, 0.0, &what);
            assert_close(
                &upsample_nearest2d_generic(&x, fh, fw).unwrap(),
                &c,
                0.0,
                &what,
            );
            let (_, g0) = grads(
                &|t| upsample_nearest2d_generic(&t[0], fh, fw).unwrap(),
                std::slice::from_ref(&x),
                3,
            );
            let (_, g1) = grads(
                &|t| upsample_nearest2d(&t[0], th, tw).unwrap(),
                std::slice::from_ref(&x),
                3,
            );
            assert_close(&g1[0], &g0[0], 1e-6, &what);
            let x = x.to_dtype(DType::F64).unwrap();
            check_fd(
                &|t| t[0].apply_op1(UpsampleNearest2dOp { fh, fw }).unwrap(),
                std::slice::from_ref(&x),
                3,
                &what,
            );
            check_fd(
                &|t| upsample_nearest2d_generic(&t[0], fh, fw).unwrap(),
                &[x],
                3,
                &what,
            );
        }
    }
}

#[test]
fn linear_backward_ops_are_adjoints() {
    // ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for average pooling and upsampling: their backward ops (and the
    // backward ops' own backward, used for second-order gradients) are exact.
    let x = rand_t(&[2, 3, 7, 9], 1, DType::F64);
    for &(k, s, p) in &GEOMS {
        let g = Pool2d {
            kernel: k,
            stride: s,
            padding: p,
        };
        let ax = x.apply_op1(AvgPool2dOp(g)).unwrap();
        let y = rand_t(ax.dims(), 2, DType::F64);
        let aty = y
            .apply_op1(AvgPool2dGrad {
                geom: g,
                in_hw: (7, 9),
            })
            .unwrap();
        assert!(
            (dot(&ax, &y) - dot(&x, &aty)).abs() < 1e-10,
            "avg k{k} s{s} p{p}"
        );
        // The grad op's gradient is the forward op again.
        check_fd(
            &|t| {
                t[0].apply_op1(AvgPool2dGrad {
                    geom: g,
                    in_hw: (7, 9),
                })
                .unwrap()
            },
            &[y],
            3,
            "avg grad op",
        );
    }
    let ux = x.apply_op1(UpsampleNearest2dOp { fh: 2, fw: 3 }).unwrap();
    let y = rand_t(ux.dims(), 3, DType::F64);
    let uty = y.apply_op1(UpsampleNearest2dGrad { fh: 2, fw: 3 }).unwrap();
    assert!((dot(&ux, &y) - dot(&x, &uty)).abs() < 1e-10);
    check_fd(
        &|t| {
            t[0].apply_op1(UpsampleNearest2dGrad { fh: 2, fw: 3 })
                .unwrap()
        },
        &[y],
        3,
        "upsample grad op",
    );
}

#[test]
fn pooling_rejects_bad_geometry() {
    let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &CPU).unwrap();
    for generic in [false, true] {
        let mp = |k, s, p| {
            let g = Pool2d {
                kernel: k,
                stride: s,
                padding: p,
            };
            if generic {
                max_pool2d_generic(&x, g)
            } else {
                max_pool2d(&x, k, s, p)
            }
        };
        let e = mp(2, 2, 2).unwrap_err().to_string();
        assert!(e.contains("padding 2"), "{e}");
        let e = mp(7, 1, 0).unwrap_err().to_string();
        assert!(e.contains("[1, 2, 4, 4]"), "{e}");
        assert!(mp(2, 0, 0).is_err());
    }
    let e = upsample_nearest2d(&x, 6, 8).unwrap_err().to_string();
    assert!(e.contains("6×8") && e.contains("[1, 2, 4, 4]"), "{e}");
    assert!(max_pool2d(
        &Tensor::zeros((2, 4, 4), DType::F32, &CPU).unwrap(),
        2,
        2,
        0
    )
    .is_err());
}

#[test]
fn reflection_pad_kernel_matches_generic_and_finite_differences() {
    use crate::kernels::pad::{Pad4, ReflectionPad2dGrad, ReflectionPad2dOp};
    // (shape, (left, right, top, bottom)): odd sides, one-sided, asymmetric, the largest pads.
    type Case<'a> = (&'a [usize], (usize, usize, usize, usize));
    let cases: [Case; 5] = [
        (&[2, 3, 5, 7], (1, 1, 1, 1)),
        (&[1, 2, 6, 5], (4, 4, 5, 5)),
        (&[3, 1, 4, 9], (0, 3, 2, 0)),
        (&[1, 4, 2, 2], (1, 0, 0, 1)),
        (&[2, 2, 9, 3], (2, 1, 4, 3)),
    ];
    for (i, &(d, pad)) in cases.iter().enumerate() {
        let what = format!("{d:?} pad {pad:?}");
        let x = rand_t(d, 200 + i as u64, DType::F32);
        let want = reflection_pad2d_generic(&x, pad).unwrap();
        assert_close(&reflection_pad2d(&x, pad).unwrap(), &want, 0.0, &what);
        // A non-contiguous input gives the same result.
        let xt = x
            .transpose(2, 3)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        assert_close(&reflection_pad2d(&xt, pad).unwrap(), &want, 0.0, &what);
        let (_, g0) = grads(
            &|t| reflection_pad2d_generic(&t[0], pad).unwrap(),
            std::slice::from_ref(&x),
            7,
        );
        let (_, g1) = grads(
            &|t| reflection_pad2d(&t[0], pad).unwrap(),
            std::slice::from_ref(&x),
            7,
        );
        assert_close(&g1[0], &g0[0], 1e-6, &what);
        // f64: the op and its backward op against finite differences, and adjointness.
        let (left, right, top, bottom) = pad;
        let p = Pad4 {
            left,
            right,
            top,
            bottom,
        };
        let x = x.to_dtype(DType::F64).unwrap();
        check_fd(
            &|t| t[0].apply_op1(ReflectionPad2dOp(p)).unwrap(),
            std::slice::from_ref(&x),
            3,
            &what,
        );
        let px = x.apply_op1(ReflectionPad2dOp(p)).unwrap();
        let y = rand_t(px.dims(), 9, DType::F64);
        let pty = y.apply_op1(ReflectionPad2dGrad(p)).unwrap();
        assert!((dot(&px, &y) - dot(&x, &pty)).abs() < 1e-10, "{what}");
        check_fd(
            &|t| t[0].apply_op1(ReflectionPad2dGrad(p)).unwrap(),
            &[y],
            3,
            &what,
        );
    }
    // Pads as large as the side they reflect are refused on both paths, naming the shape.
    let x = rand_t(&[1, 1, 3, 4], 1, DType::F32);
    for e in [
        reflection_pad2d(&x, (4, 0, 0, 0)).unwrap_err().to_string(),
        reflection_pad2d(&x, (0, 0, 0, 3)).unwrap_err().to_string(),
    ] {
        assert!(
            e.contains("[1, 1, 3, 4]") && e.contains("smaller than"),
            "{e}"
        );
    }
}
