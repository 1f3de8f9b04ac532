//! Tests of the convolution kernels.
//!
//! Oracles:
//! - a direct-loop f64 convolution written from the definition (`naive_*`), the reference for
//!   every shape (incl. rectangular inputs and kernels, where candle's own conv2d backward picks
//!   the output padding from the height only);
//! - candle's `conv2d` / `conv_transpose2d` and their autograd gradients (square shapes);
//! - central finite differences in f64 (`h = 1e-6`, tolerance `1e-6·(1 + |g|)`).
//!
//! Gradients are those of `Σ R ⊙ f(…)` with a fixed random `R`, so every output element matters.
//! f32 results are compared with `1e-4·(1 + |v|)` (sums of up to a few hundred products).

use super::*;
use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CPU: Device = Device::Cpu;

/// One convolution shape: `x [n, c, h, w] ⋆ w [o, c, kh, kw]`.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    s: usize,
    p: usize,
    d: usize,
}

impl Case {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.s,
            padding: self.p,
            dilation: self.d,
        }
    }
    fn spec(&self) -> Spec {
        Spec::new(self.s, self.p, self.d, "test").unwrap()
    }
    fn out(&self) -> (usize, usize) {
        self.spec()
            .out_hw(self.h, self.w, self.kh, self.kw)
            .unwrap()
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }
    fn y_dims(&self) -> [usize; 4] {
        let (oh, ow) = self.out();
        [self.n, self.o, oh, ow]
    }
    /// Random valid case: odd sizes, rectangular kernels, strides 1–3, padding 0–2, dilation 1–2.
    fn random(r: &mut ChaCha8Rng, square: bool) -> Self {
        loop {
            let h = r.random_range(1..12);
            let kh = r.random_range(1..5);
            let c = Case {
                n: [1, 2, 3, 5][r.random_range(0..4)],
                c: r.random_range(1..6),
                o: r.random_range(1..6),
                h,
                w: if square { h } else { r.random_range(1..12) },
                kh,
                kw: if square { kh } else { r.random_range(1..5) },
                s: r.random_range(1..4),
                p: r.random_range(0..3),
                d: r.random_range(1..3),
            };
            if c.spec().out_hw(c.h, c.w, c.kh, c.kw).is_some() {
                return c;
            }
        }
    }
}

fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
}

fn rand_t(dims: &[usize], seed: u64, dt: DType) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(rand_vec(n, seed), dims, &CPU)
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
fn assert_close_v(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y} (tol {tol})"
        );
    }
}

#[track_caller]
fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    assert_close_v(&flat(a), &flat(b), tol, what);
}

// ---- direct-loop oracle -------------------------------------------------------------------

/// Calls `f(n, o, oh, ow, c, ki, kj, ih, iw)` for every (output, tap) pair that reads an input
/// pixel inside the image.
fn for_each_tap(k: &Case, (oh_n, ow_n): (usize, usize), mut f: impl FnMut([usize; 9])) {
    for n in 0..k.n {
        for o in 0..k.o {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    for c in 0..k.c {
                        for ki in 0..k.kh {
                            for kj in 0..k.kw {
                                let ih = (oh * k.s + ki * k.d) as isize - k.p as isize;
                                let iw = (ow * k.s + kj * k.d) as isize - k.p as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < k.h && (iw as usize) < k.w
                                {
                                    f([n, o, oh, ow, c, ki, kj, ih as usize, iw as usize]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn xi(k: &Case, n: usize, c: usize, h: usize, w: usize) -> usize {
    ((n * k.c + c) * k.h + h) * k.w + w
}
fn wi(k: &Case, o: usize, c: usize, i: usize, j: usize) -> usize {
    ((o * k.c + c) * k.kh + i) * k.kw + j
}
fn yi((oh, ow): (usize, usize), k: &Case, n: usize, o: usize, i: usize, j: usize) -> usize {
    ((n * k.o + o) * oh + i) * ow + j
}

/// y = conv(x, w) with output size `out`.
fn naive_fwd(k: &Case, x: &[f64], w: &[f64], out: (usize, usize)) -> Vec<f64> {
    let mut y = vec![0.0; k.n * k.o * out.0 * out.1];
    for_each_tap(k, out, |[n, o, oh, ow, c, ki, kj, ih, iw]| {
        y[yi(out, k, n, o, oh, ow)] += w[wi(k, o, c, ki, kj)] * x[xi(k, n, c, ih, iw)];
    });
    y
}

/// x̄ = convᵀ(ȳ, w): the adjoint of [`naive_fwd`] in x.
fn naive_dgrad(k: &Case, gy: &[f64], w: &[f64], out: (usize, usize)) -> Vec<f64> {
    let mut gx = vec![0.0; k.n * k.c * k.h * k.w];
    for_each_tap(k, out, |[n, o, oh, ow, c, ki, kj, ih, iw]| {
        gx[xi(k, n, c, ih, iw)] += w[wi(k, o, c, ki, kj)] * gy[yi(out, k, n, o, oh, ow)];
    });
    gx
}

/// w̄ = Σ ȳ ⋆ x: the adjoint of [`naive_fwd`] in w.
fn naive_wgrad(k: &Case, x: &[f64], gy: &[f64], out: (usize, usize)) -> Vec<f64> {
    let mut gw = vec![0.0; k.o * k.c * k.kh * k.kw];
    for_each_tap(k, out, |[n, o, oh, ow, c, ki, kj, ih, iw]| {
        gw[wi(k, o, c, ki, kj)] += x[xi(k, n, c, ih, iw)] * gy[yi(out, k, n, o, oh, ow)];
    });
    gw
}

/// Gradients of `Σ R ⊙ f(a, b)` w.r.t. `a` and `b` (both made variables), with `R` from `seed`.
fn grads2(
    f: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    a: &Tensor,
    b: &Tensor,
    seed: u64,
) -> (Tensor, Tensor, Tensor, Tensor) {
    let (va, vb) = (Var::from_tensor(a).unwrap(), Var::from_tensor(b).unwrap());
    let y = f(va.as_tensor(), vb.as_tensor());
    let r = rand_t(y.dims(), seed, y.dtype());
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let ga = g.get(va.as_tensor()).expect("no gradient for a").clone();
    let gb = g.get(vb.as_tensor()).expect("no gradient for b").clone();
    (y, r, ga, gb)
}

// ---- forward and gradients vs. the oracle and candle --------------------------------------

#[test]
fn conv2d_matches_direct_loops_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for i in 0..150 {
        let k = Case::random(&mut rng, false);
        let out = k.out();
        for dt in [DType::F32, DType::F64] {
            let x = rand_t(&k.x_dims(), 10 + i, dt);
            let w = rand_t(&k.w_dims(), 20 + i, dt);
            let (y, r, gx, gw) = grads2(&|x, w| conv2d(x, w, k.params()).unwrap(), &x, &w, i);
            let (xv, wv, rv) = (flat(&x), flat(&w), flat(&r));
            let tol = if dt == DType::F32 { 1e-4 } else { 1e-10 };
            assert_eq!(y.dims(), k.y_dims(), "{k:?}");
            assert_close_v(
                &flat(&y),
                &naive_fwd(&k, &xv, &wv, out),
                tol,
                &format!("y {k:?}"),
            );
            assert_close_v(
                &flat(&gx),
                &naive_dgrad(&k, &rv, &wv, out),
                tol,
                &format!("gx {k:?}"),
            );
            assert_close_v(
                &flat(&gw),
                &naive_wgrad(&k, &xv, &rv, out),
                tol,
                &format!("gw {k:?}"),
            );
        }
    }
}

#[test]
fn conv2d_matches_candle_forward_and_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for i in 0..80 {
        // Square shapes: candle's conv2d backward derives the output padding from the height.
        let k = Case::random(&mut rng, true);
        let x = rand_t(&k.x_dims(), 30 + i, DType::F32);
        let w = rand_t(&k.w_dims(), 40 + i, DType::F32);
        let ours = grads2(&|x, w| conv2d(x, w, k.params()).unwrap(), &x, &w, i);
        let theirs = grads2(&|x, w| x.conv2d(w, k.p, k.s, k.d, 1).unwrap(), &x, &w, i);
        assert_close(&ours.0, &theirs.0, 1e-4, &format!("y {k:?}"));
        assert_close(&ours.2, &theirs.2, 1e-4, &format!("gx {k:?}"));
        assert_close(&ours.3, &theirs.3, 1e-4, &format!("gw {k:?}"));
    }
}

/// A transposed-convolution case: input `[n, o, hi, wi]`, weight `[o, c, kh, kw]`.
/// Returns the case (with `h, w` the transposed conv's output size), the output padding and
/// the input size `(hi, wi)`.
fn random_transposed(rng: &mut ChaCha8Rng) -> (Case, usize, (usize, usize)) {
    loop {
        let square = rng.random_bool(0.5);
        let mut k = Case::random(rng, square);
        k.d = if rng.random_bool(0.7) { 1 } else { 2 };
        let (hi, wi) = (rng.random_range(1..12), rng.random_range(1..12));
        let op = rng.random_range(0..k.s.max(k.d));
        // Output size of the transposed conv = the conv's input size.
        let size =
            |i: usize, kk: usize| ((i - 1) * k.s + k.d * (kk - 1) + 1 + op).checked_sub(2 * k.p);
        if let (Some(h), Some(w)) = (size(hi, k.kh), size(wi, k.kw)) {
            if h > 0 && w > 0 {
                k.h = h;
                k.w = w;
                return (k, op, (hi, wi));
            }
        }
    }
}

#[test]
fn conv_transpose2d_matches_direct_loops_and_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in 0..150 {
        let (k, op, out) = random_transposed(&mut rng);
        let params = ConvTranspose2dParams {
            stride: k.s,
            padding: k.p,
            output_padding: op,
            dilation: k.d,
        };
        // The transposed conv's input lives on the conv's output side.
        let (hi, wi) = out;
        for dt in [DType::F32, DType::F64] {
            let u = rand_t(&[k.n, k.o, hi, wi], 50 + i, dt);
            let w = rand_t(&k.w_dims(), 60 + i, dt);
            let (v, r, gu, gw) = grads2(&|u, w| conv_transpose2d(u, w, params).unwrap(), &u, &w, i);
            let (uv, wv, rv) = (flat(&u), flat(&w), flat(&r));
            let tol = if dt == DType::F32 { 1e-4 } else { 1e-10 };
            assert_eq!(v.dims(), [k.n, k.c, k.h, k.w], "{k:?} op {op}");
            assert_close_v(
                &flat(&v),
                &naive_dgrad(&k, &uv, &wv, out),
                tol,
                &format!("v {k:?}"),
            );
            assert_close_v(
                &flat(&gu),
                &naive_fwd(&k, &rv, &wv, out),
                tol,
                &format!("gu {k:?}"),
            );
            assert_close_v(
                &flat(&gw),
                &naive_wgrad(&k, &rv, &uv, out),
                tol,
                &format!("gw {k:?}"),
            );
            if dt == DType::F32 && op < k.s {
                let theirs = grads2(
                    &|u, w| u.conv_transpose2d(w, k.p, op, k.s, k.d).unwrap(),
                    &u,
                    &w,
                    i,
                );
                assert_close(&v, &theirs.0, 1e-4, &format!("candle v {k:?} op {op}"));
                assert_close(&gu, &theirs.2, 1e-4, &format!("candle gu {k:?} op {op}"));
                assert_close(&gw, &theirs.3, 1e-4, &format!("candle gw {k:?} op {op}"));
            }
        }
    }
}

/// The DCGAN layer shapes (batch 4 instead of 64), both directions.
#[test]
fn dcgan_shapes_match_candle() {
    let down = |c, o, s| Case {
        n: 4,
        c,
        o,
        h: s,
        w: s,
        kh: 4,
        kw: 4,
        s: 2,
        p: 1,
        d: 1,
    };
    for k in [down(3, 16, 32), down(16, 32, 16), down(32, 64, 8)] {
        let x = rand_t(&k.x_dims(), 1, DType::F32);
        let w = rand_t(&k.w_dims(), 2, DType::F32);
        let ours = grads2(&|x, w| conv2d(x, w, k.params()).unwrap(), &x, &w, 3);
        let theirs = grads2(&|x, w| x.conv2d(w, 1, 2, 1, 1).unwrap(), &x, &w, 3);
        assert_close(&ours.0, &theirs.0, 1e-4, "conv y");
        assert_close(&ours.2, &theirs.2, 1e-4, "conv gx");
        assert_close(&ours.3, &theirs.3, 1e-4, "conv gw");
        // The generator's mirror image: [n, o, s/2, s/2] → [n, c, s, s].
        let u = rand_t(&k.y_dims(), 4, DType::F32);
        let p = ConvTranspose2dParams::new(2, 1);
        let ours = grads2(&|u, w| conv_transpose2d(u, w, p).unwrap(), &u, &w, 5);
        let theirs = grads2(
            &|u, w| u.conv_transpose2d(w, 1, 0, 2, 1).unwrap(),
            &u,
            &w,
            5,
        );
        assert_close(&ours.0, &theirs.0, 1e-4, "convT y");
        assert_close(&ours.2, &theirs.2, 1e-4, "convT gu");
        assert_close(&ours.3, &theirs.3, 1e-4, "convT gw");
    }
    // First generator layer (1×1 → 4×4, stride 1, no padding) and last discriminator layer.
    let z = rand_t(&[4, 10, 1, 1], 6, DType::F32);
    let w = rand_t(&[10, 32, 4, 4], 7, DType::F32);
    let p = ConvTranspose2dParams::new(1, 0);
    let ours = grads2(&|u, w| conv_transpose2d(u, w, p).unwrap(), &z, &w, 8);
    let theirs = grads2(
        &|u, w| u.conv_transpose2d(w, 0, 0, 1, 1).unwrap(),
        &z,
        &w,
        8,
    );
    assert_close(&ours.0, &theirs.0, 1e-4, "first y");
    assert_close(&ours.2, &theirs.2, 1e-4, "first gz");
    assert_close(&ours.3, &theirs.3, 1e-4, "first gw");
    let x = rand_t(&[4, 32, 4, 4], 9, DType::F32);
    let w = rand_t(&[1, 32, 4, 4], 10, DType::F32);
    let ours = grads2(
        &|x, w| conv2d(x, w, Conv2dParams::new(1, 0)).unwrap(),
        &x,
        &w,
        11,
    );
    let theirs = grads2(&|x, w| x.conv2d(w, 0, 1, 1, 1).unwrap(), &x, &w, 11);
    assert_close(&ours.0, &theirs.0, 1e-4, "last y");
    assert_close(&ours.2, &theirs.2, 1e-4, "last gx");
    assert_close(&ours.3, &theirs.3, 1e-4, "last gw");
}

/// Shapes large enough to take the split paths: position tiles of one image (forward and
/// weight-gradient), channel groups with sequential position tiles (data-gradient), batches
/// of small images packed side by side.
#[test]
fn tiled_and_batched_paths_match_direct_loops() {
    let cases = [
        // K·P = 576·4096 > COLS_BUDGET: one image in position tiles.
        Case {
            n: 1,
            c: 64,
            o: 3,
            h: 64,
            w: 64,
            kh: 3,
            kw: 3,
            s: 1,
            p: 1,
            d: 1,
        },
        // Stride 2 (the phase-split im2col) in position tiles that start mid-row:
        // K·P = 1280·961 > COLS_BUDGET, OW = 31.
        Case {
            n: 1,
            c: 80,
            o: 3,
            h: 63,
            w: 63,
            kh: 4,
            kw: 4,
            s: 2,
            p: 1,
            d: 1,
        },
        // P·KK = 16384·81 > COLS_BUDGET with one channel: sequential position tiles.
        Case {
            n: 1,
            c: 2,
            o: 2,
            h: 128,
            w: 128,
            kh: 9,
            kw: 9,
            s: 1,
            p: 4,
            d: 1,
        },
        // P = 4: 16 images per block.
        Case {
            n: 37,
            c: 5,
            o: 7,
            h: 4,
            w: 4,
            kh: 3,
            kw: 3,
            s: 2,
            p: 1,
            d: 1,
        },
        // P = 1, kernel = image: the tap matrix is a view of the input (no im2col/col2im).
        Case {
            n: 9,
            c: 3,
            o: 4,
            h: 3,
            w: 2,
            kh: 3,
            kw: 2,
            s: 1,
            p: 0,
            d: 1,
        },
        // 1×1 kernel, stride 1, no padding: also a view.
        Case {
            n: 3,
            c: 5,
            o: 4,
            h: 7,
            w: 9,
            kh: 1,
            kw: 1,
            s: 1,
            p: 0,
            d: 1,
        },
        // 1×1 kernel with stride 2: gathered.
        Case {
            n: 3,
            c: 5,
            o: 4,
            h: 7,
            w: 9,
            kh: 1,
            kw: 1,
            s: 2,
            p: 0,
            d: 1,
        },
    ];
    for (i, k) in cases.iter().enumerate() {
        let i = i as u64;
        let out = k.out();
        let x = rand_t(&k.x_dims(), 70 + i, DType::F32);
        let w = rand_t(&k.w_dims(), 80 + i, DType::F32);
        let (y, r, gx, gw) = grads2(&|x, w| conv2d(x, w, k.params()).unwrap(), &x, &w, i);
        let (xv, wv, rv) = (flat(&x), flat(&w), flat(&r));
        assert_close_v(
            &flat(&y),
            &naive_fwd(k, &xv, &wv, out),
            1e-4,
            &format!("y {k:?}"),
        );
        assert_close_v(
            &flat(&gx),
            &naive_dgrad(k, &rv, &wv, out),
            1e-4,
            &format!("gx {k:?}"),
        );
        assert_close_v(
            &flat(&gw),
            &naive_wgrad(k, &xv, &rv, out),
            1e-3,
            &format!("gw {k:?}"),
        );
    }
}

#[test]
fn non_contiguous_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for i in 0..40 {
        let k = Case::random(&mut rng, false);
        let out = k.out();
        // x stored as [n, c, w, h] and transposed; w stored as [c, o, kh, kw] and transposed;
        // a gradient stored as [o, n, oh, ow] and transposed.
        let x = rand_t(&[k.n, k.c, k.w, k.h], 90 + i, DType::F32)
            .transpose(2, 3)
            .unwrap();
        let w = rand_t(&[k.c, k.o, k.kh, k.kw], 100 + i, DType::F32)
            .transpose(0, 1)
            .unwrap();
        let gy = rand_t(&[k.o, k.n, out.0, out.1], 110 + i, DType::F32)
            .transpose(0, 1)
            .unwrap();
        // A narrowed view with an offset.
        let xn = rand_t(&[k.n, k.c + 2, k.h, k.w + 3], 120 + i, DType::F32)
            .narrow(1, 1, k.c)
            .unwrap()
            .narrow(3, 2, k.w)
            .unwrap();
        let (xv, wv, gv, xnv) = (flat(&x), flat(&w), flat(&gy), flat(&xn));
        let y = conv2d(&x, &w, k.params()).unwrap();
        assert_close_v(
            &flat(&y),
            &naive_fwd(&k, &xv, &wv, out),
            1e-4,
            &format!("y {k:?}"),
        );
        let y = conv2d(&xn, &w, k.params()).unwrap();
        assert_close_v(
            &flat(&y),
            &naive_fwd(&k, &xnv, &wv, out),
            1e-4,
            &format!("yn {k:?}"),
        );
        let gx = conv2d_input_grad(&gy, &w, (k.h, k.w), k.params()).unwrap();
        assert_close_v(
            &flat(&gx),
            &naive_dgrad(&k, &gv, &wv, out),
            1e-4,
            &format!("gx {k:?}"),
        );
        let gw = conv2d_weight_grad(&x, &gy, (k.kh, k.kw), k.params()).unwrap();
        assert_close_v(
            &flat(&gw),
            &naive_wgrad(&k, &xv, &gv, out),
            1e-4,
            &format!("gw {k:?}"),
        );
        // Broadcast (zero-stride) inputs.
        let xb = rand_t(&[k.n, 1, k.h, k.w], 130 + i, DType::F32)
            .broadcast_as(&k.x_dims()[..])
            .unwrap();
        let gb = rand_t(&[1, k.o, out.0, out.1], 140 + i, DType::F32)
            .broadcast_as(&k.y_dims()[..])
            .unwrap();
        let (xbv, gbv) = (flat(&xb), flat(&gb));
        let y = conv2d(&xb, &w, k.params()).unwrap();
        assert_close_v(
            &flat(&y),
            &naive_fwd(&k, &xbv, &wv, out),
            1e-4,
            &format!("yb {k:?}"),
        );
        let gx = conv2d_input_grad(&gb, &w, (k.h, k.w), k.params()).unwrap();
        assert_close_v(
            &flat(&gx),
            &naive_dgrad(&k, &gbv, &wv, out),
            1e-4,
            &format!("gxb {k:?}"),
        );
        let gw = conv2d_weight_grad(&xb, &gb, (k.kh, k.kw), k.params()).unwrap();
        assert_close_v(
            &flat(&gw),
            &naive_wgrad(&k, &xbv, &gbv, out),
            1e-4,
            &format!("gwb {k:?}"),
        );
    }
}

// ---- finite differences ---------------------------------------------------------------------

/// Checks the gradients of `Σ R ⊙ f(a, b)` (f64) against central differences on every
/// coordinate of `a` and `b`.
#[track_caller]
fn check_fd(f: &dyn Fn(&Tensor, &Tensor) -> Tensor, a: &Tensor, b: &Tensor, seed: u64, what: &str) {
    let (_, r, ga, gb) = grads2(f, a, b, seed);
    let loss = |t: &[Tensor]| -> f64 {
        (f(&t[0], &t[1]) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    check_fd_args(&loss, &[a.clone(), b.clone()], &[ga, gb], what);
}

/// Checks `grads[i]` against central differences (`h = 1e-6`, tolerance `1e-6·(1 + |g|)`) of the
/// scalar `loss` on every coordinate of `args[i]` (f64).
#[track_caller]
fn check_fd_args(loss: &dyn Fn(&[Tensor]) -> f64, args: &[Tensor], grads: &[Tensor], what: &str) {
    let h = 1e-6;
    for (which, (t, g)) in args.iter().zip(grads).enumerate() {
        let base = flat(t);
        let g = flat(g);
        for (i, &gi) in g.iter().enumerate() {
            let bump = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut a = args.to_vec();
                a[which] = Tensor::from_vec(v, t.dims(), &CPU).unwrap();
                loss(&a)
            };
            let fd = (bump(h) - bump(-h)) / (2.0 * h);
            assert!(
                (fd - gi).abs() <= 1e-6 * (1.0 + gi.abs()),
                "{what}: argument {which} element {i}: autograd {gi} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for i in 0..12 {
        let k = Case::random(&mut rng, false);
        let x = rand_t(&k.x_dims(), 130 + i, DType::F64);
        let w = rand_t(&k.w_dims(), 140 + i, DType::F64);
        check_fd(
            &|x, w| conv2d(x, w, k.params()).unwrap(),
            &x,
            &w,
            i,
            &format!("conv2d {k:?}"),
        );
    }
    for i in 0..12 {
        let (k, op, (hi, wi)) = random_transposed(&mut rng);
        let p = ConvTranspose2dParams {
            stride: k.s,
            padding: k.p,
            output_padding: op,
            dilation: k.d,
        };
        let u = rand_t(&[k.n, k.o, hi, wi], 150 + i, DType::F64);
        let w = rand_t(&k.w_dims(), 160 + i, DType::F64);
        check_fd(
            &|u, w| conv_transpose2d(u, w, p).unwrap(),
            &u,
            &w,
            i,
            &format!("conv_transpose2d {k:?} op {op}"),
        );
    }
}

/// The backward ops are themselves differentiable (second-order gradients, e.g. a gradient
/// penalty, with `CANDLE_GRAD_DO_NOT_DETACH=1`): their own gradients match finite differences.
#[test]
fn gradient_kernels_are_differentiable() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for i in 0..10 {
        let k = Case::random(&mut rng, false);
        let p = k.params();
        let x = rand_t(&k.x_dims(), 170 + i, DType::F64);
        let w = rand_t(&k.w_dims(), 180 + i, DType::F64);
        let gy = rand_t(&k.y_dims(), 190 + i, DType::F64);
        check_fd(
            &|x, gy| conv2d_weight_grad(x, gy, (k.kh, k.kw), p).unwrap(),
            &x,
            &gy,
            i,
            &format!("weight grad {k:?}"),
        );
        check_fd(
            &|gy, w| conv2d_input_grad(gy, w, (k.h, k.w), p).unwrap(),
            &gy,
            &w,
            i,
            &format!("input grad {k:?}"),
        );
    }
}

// ---- behaviour ------------------------------------------------------------------------------

#[test]
fn no_gradient_for_constant_arguments() {
    let k = Case {
        n: 2,
        c: 3,
        o: 4,
        h: 6,
        w: 6,
        kh: 3,
        kw: 3,
        s: 1,
        p: 1,
        d: 1,
    };
    let x = rand_t(&k.x_dims(), 1, DType::F32); // a constant, like a batch of real images
    let w = Var::from_tensor(&rand_t(&k.w_dims(), 2, DType::F32)).unwrap();
    let y = conv2d(&x, w.as_tensor(), k.params()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert!(g.get(w.as_tensor()).is_some());
    // The bwd itself returns None for the argument that needs nothing.
    let op = Conv2dOp {
        s: k.spec(),
        out: k.out(),
    };
    let (gx, gw) = op
        .bwd(&x, w.as_tensor(), &y, &y.ones_like().unwrap())
        .unwrap();
    assert!(gx.is_none() && gw.is_some());
    let (gx, gw) = op
        .bwd(&x, &w.as_tensor().detach(), &y, &y.ones_like().unwrap())
        .unwrap();
    assert!(gx.is_none() && gw.is_none());
}

#[test]
fn bad_shapes_are_errors() {
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &CPU).unwrap();
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &CPU).unwrap();
    let p = Conv2dParams::default();
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(conv2d(
        &x,
        &Tensor::zeros((4, 2, 3, 3), DType::F32, &CPU).unwrap(),
        p
    ))
    .contains("[4, 2, 3, 3]"));
    assert!(err(conv2d(
        &x,
        &Tensor::zeros((4, 3, 11, 3), DType::F32, &CPU).unwrap(),
        p
    ))
    .contains("does not fit"));
    assert!(err(conv2d(&x.flatten_all().unwrap(), &w, p)).contains("4-D"));
    assert!(err(conv2d(&x, &w, Conv2dParams { stride: 0, ..p })).contains("stride"));
    assert!(err(conv2d(&x, &w.to_dtype(DType::F64).unwrap(), p)).contains("F32"));
    let tp = ConvTranspose2dParams {
        stride: 2,
        output_padding: 2,
        ..Default::default()
    };
    assert!(err(conv_transpose2d(&w, &x, tp)).contains("output padding"));
    assert!(err(conv_transpose2d(&x, &w, ConvTranspose2dParams::default())).contains("channels"));
    let big_pad = ConvTranspose2dParams {
        padding: 5,
        ..Default::default()
    };
    let u = Tensor::zeros((1, 4, 1, 1), DType::F32, &CPU).unwrap();
    assert!(err(conv_transpose2d(&u, &w, big_pad)).contains("no output"));
    // Gradient kernels with inconsistent sizes.
    let gy = Tensor::zeros((2, 4, 6, 6), DType::F32, &CPU).unwrap();
    assert!(conv2d_input_grad(&gy, &w, (3, 3), p).is_err());
    assert!(conv2d_weight_grad(&x, &gy, (3, 9), p).is_err());
    assert!(conv2d_weight_grad(&x.narrow(0, 0, 1).unwrap(), &gy, (3, 3), p).is_err());
}

#[test]
fn empty_batch_and_channels() {
    let x = Tensor::zeros((0, 3, 5, 5), DType::F32, &CPU).unwrap();
    let w = rand_t(&[2, 3, 3, 3], 1, DType::F32);
    assert_eq!(
        conv2d(&x, &w, Conv2dParams::default()).unwrap().dims(),
        [0, 2, 3, 3]
    );
    let x = Tensor::zeros((2, 0, 5, 5), DType::F32, &CPU).unwrap();
    let w = Tensor::zeros((2, 0, 3, 3), DType::F32, &CPU).unwrap();
    let y = conv2d(&x, &w, Conv2dParams::default()).unwrap();
    assert_eq!(flat(&y), vec![0.0; 2 * 2 * 9]);
}

#[test]
fn tiles_cover_the_batch() {
    for threads in [1, 2, 3, 8] {
        for n in [1, 2, 5, 64] {
            for p in [1, 4, 16, 64, 1024, 100_000] {
                for rows in [1, 48, 4096] {
                    let t = Tiles::new(n, p, rows, threads);
                    let mut seen = vec![0u8; n * p];
                    for task in 0..t.tasks() {
                        let (n0, nb, p0, pn) = t.task(task, n, p);
                        assert!(nb >= 1 && pn >= 1 && (nb == 1 || pn == p), "{t:?}");
                        for b in n0..n0 + nb {
                            for q in p0..p0 + pn {
                                seen[b * p + q] += 1;
                            }
                        }
                    }
                    assert!(
                        seen.iter().all(|&s| s == 1),
                        "{n} {p} {rows} {threads}: {t:?}"
                    );
                }
            }
        }
    }
}

/// Per-thread partial sums and uneven splits: the same results in pools of 1, 3 and 4 threads.
#[test]
fn thread_count_does_not_change_results() {
    let k = Case {
        n: 24,
        c: 6,
        o: 8,
        h: 9,
        w: 7,
        kh: 3,
        kw: 3,
        s: 1,
        p: 1,
        d: 1,
    };
    let out = k.out();
    let x = rand_t(&k.x_dims(), 200, DType::F64);
    let w = rand_t(&k.w_dims(), 201, DType::F64);
    let gy = rand_t(&k.y_dims(), 202, DType::F64);
    let (xv, wv, gv) = (flat(&x), flat(&w), flat(&gy));
    for threads in [1, 3, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let what = |s: &str| format!("{s} with {threads} threads");
            let y = conv2d(&x, &w, k.params()).unwrap();
            assert_close_v(&flat(&y), &naive_fwd(&k, &xv, &wv, out), 1e-12, &what("y"));
            let gx = conv2d_input_grad(&gy, &w, (k.h, k.w), k.params()).unwrap();
            assert_close_v(
                &flat(&gx),
                &naive_dgrad(&k, &gv, &wv, out),
                1e-12,
                &what("gx"),
            );
            // Which threads pick up blocks varies between runs: repeat.
            let want = naive_wgrad(&k, &xv, &gv, out);
            for _ in 0..8 {
                let gw = conv2d_weight_grad(&x, &gy, (k.kh, k.kw), k.params()).unwrap();
                assert_close_v(&flat(&gw), &want, 1e-12, &what("gw"));
            }
        });
    }
}

#[test]
fn partial_sums_add_up() {
    let len = (1 << 14) * 3 + 5; // several chunks and a short one
    let parts: Vec<Vec<f64>> = (0..4).map(|i| rand_vec(len, 300 + i)).collect();
    let want: Vec<f64> = (0..len).map(|j| parts.iter().map(|p| p[j]).sum()).collect();
    for n in 1..=4 {
        let want_n: Vec<f64> = (0..len)
            .map(|j| parts[..n].iter().map(|p| p[j]).sum())
            .collect();
        assert_close_v(
            &sum_partials(parts[..n].to_vec(), len),
            &want_n,
            1e-12,
            "sum",
        );
    }
    assert_close_v(&sum_partials(parts, len), &want, 1e-12, "sum of 4");
    assert_eq!(sum_partials(Vec::<Vec<f32>>::new(), 3), vec![0.0; 3]);
}

#[test]
fn weight_gradient_is_bitwise_reproducible() {
    // Work stealing decides which worker runs which task; the sum must not depend on it.
    // Many small tasks (8 images × tiles) on 2 and 3 threads, repeated: every result identical.
    let k = Case {
        n: 16,
        c: 5,
        o: 7,
        h: 12,
        w: 11,
        kh: 3,
        kw: 3,
        s: 1,
        p: 1,
        d: 1,
    };
    let x = rand_t(&k.x_dims(), 300, DType::F32);
    let gy = rand_t(&k.y_dims(), 301, DType::F32);
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let first =
            pool.install(|| flat(&conv2d_weight_grad(&x, &gy, (k.kh, k.kw), k.params()).unwrap()));
        for _ in 0..20 {
            let again = pool
                .install(|| flat(&conv2d_weight_grad(&x, &gy, (k.kh, k.kw), k.params()).unwrap()));
            assert!(
                again
                    .iter()
                    .zip(&first)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads"
            );
        }
    }
}

#[test]
fn direct_kernel_matches_direct_loops_and_gemm_path() {
    // The direct kernel (O ≤ 4, stride 1, no padding): every instruction-set variant this CPU
    // has, rows with and without a tail segment (widths around the 24- and 64-wide segments),
    // rectangular kernels, f32 and f64; against the f64 loops and the im2col + GEMM path.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for i in 0..24u64 {
        let (kh, kw) = (rng.random_range(2..10), rng.random_range(2..10));
        let k = Case {
            n: rng.random_range(1..3),
            c: rng.random_range(1..5),
            o: 1 + (i as usize % direct::MAX_O),
            h: kh + rng.random_range(0..5),
            w: kw - 1 + [16, 23, 24, 25, 63, 64, 65, 90][i as usize % 8],
            kh,
            kw,
            s: 1,
            p: 0,
            d: 1,
        };
        let out = k.out();
        let g = Geom::new(
            "test",
            k.spec(),
            (k.n, k.c, k.h, k.w),
            (k.o, k.kh, k.kw),
            out,
        )
        .unwrap();
        for dt in [DType::F32, DType::F64] {
            let tol = if dt == DType::F32 { 1e-4 } else { 1e-10 };
            // A narrowed input: rows longer than the image (row stride ≠ width), an offset.
            let xs = rand_t(&[k.n, k.c, k.h, k.w + 3], 300 + i, dt)
                .narrow(3, 1, k.w)
                .unwrap();
            let w = rand_t(&k.w_dims(), 400 + i, dt);
            let want = naive_fwd(&k, &flat(&xs), &flat(&w), out);
            let what = format!("{k:?} {dt:?}");
            let y = conv2d(&xs, &w, k.params()).unwrap();
            assert_close_v(&flat(&y), &want, tol, &what);
            let (xstore, xl) = xs.storage_and_layout();
            let (wstore, _) = w.storage_and_layout();
            let (candle_core::Storage::Cpu(xc), candle_core::Storage::Cpu(wc)) =
                (&*xstore, &*wstore)
            else {
                panic!("CPU tensors")
            };
            macro_rules! each {
                ($t:ty) => {{
                    let view = View::new(xc.as_slice::<$t>().unwrap(), xl);
                    assert!(direct::applies(&g, &view), "{what}");
                    let wv = wc.as_slice::<$t>().unwrap();
                    let gemm: Vec<f64> = forward_gemm(&g, view, wv, None)
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    assert_close_v(&gemm, &want, tol, &what);
                    for isa in direct::Isa::available() {
                        let y: Vec<f64> = direct::forward_on(isa, &g, view, wv, None)
                            .iter()
                            .map(|&v| v as f64)
                            .collect();
                        assert_close_v(&y, &want, tol, &format!("{what} {isa:?}"));
                        // With a bias: every value of output channel oc shifted by bias[oc].
                        let bias: Vec<$t> = (0..k.o).map(|oc| 0.5 - oc as $t).collect();
                        let per = want.len() / (k.n * k.o);
                        let shifted: Vec<f64> = want
                            .iter()
                            .enumerate()
                            .map(|(j, v)| v + bias[(j / per) % k.o] as f64)
                            .collect();
                        let y: Vec<f64> = direct::forward_on(isa, &g, view, wv, Some(&bias))
                            .iter()
                            .map(|&v| v as f64)
                            .collect();
                        assert_close_v(&y, &shifted, tol, &format!("{what} {isa:?} bias"));
                    }
                }};
            }
            if dt == DType::F32 {
                each!(f32)
            } else {
                each!(f64)
            }
        }
    }
    // Column-strided inputs, five output channels, stride 2 or zero padding take the GEMM path.
    let view = |st: [usize; 4]| View {
        data: &[] as &[f32],
        off: 0,
        st,
    };
    let geom = |o, s, p| {
        Geom::new(
            "test",
            Spec::new(s, p, 1, "test").unwrap(),
            (1, 2, 20, 40),
            (o, 3, 3),
            {
                let sp = Spec::new(s, p, 1, "test").unwrap();
                sp.out_hw(20, 40, 3, 3).unwrap()
            },
        )
        .unwrap()
    };
    let rows = view([1600, 800, 40, 1]);
    assert!(direct::applies(&geom(3, 1, 0), &rows));
    assert!(!direct::applies(&geom(3, 1, 0), &view([1600, 800, 1, 20])));
    assert!(!direct::applies(&geom(5, 1, 0), &rows));
    assert!(!direct::applies(&geom(3, 2, 0), &rows));
    assert!(!direct::applies(&geom(3, 1, 1), &rows));
}

#[test]
fn fused_bias_matches_conv_plus_broadcast_add() {
    // conv2d_bias(x, w, b) = conv2d(x, w) + b[o] at every position; gradients of all three
    // against the unfused ops and (f64) finite differences. Shapes cover the GEMM path (direct
    // tiles, batched blocks, split images) and the direct kernel (O ≤ 4, stride 1, no padding).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut cases: Vec<Case> = (0..12).map(|_| Case::random(&mut rng, false)).collect();
    for (o, w) in [(3, 40), (1, 17), (4, 70)] {
        cases.push(Case {
            n: 2,
            c: 3,
            o,
            h: 6,
            w,
            kh: 3,
            kw: 5,
            s: 1,
            p: 0,
            d: 1,
        });
    }
    for (i, k) in cases.iter().enumerate() {
        let i = i as u64;
        for dt in [DType::F32, DType::F64] {
            let tol = if dt == DType::F32 { 1e-5 } else { 1e-12 };
            let x = rand_t(&k.x_dims(), 500 + i, dt);
            let w = rand_t(&k.w_dims(), 600 + i, dt);
            let b = rand_t(&[k.o], 700 + i, dt);
            let fused = |t: &[Tensor]| conv2d_bias(&t[0], &t[1], &t[2], k.params()).unwrap();
            let plain = |t: &[Tensor]| {
                conv2d(&t[0], &t[1], k.params())
                    .unwrap()
                    .broadcast_add(&t[2].reshape((1, k.o, 1, 1)).unwrap())
                    .unwrap()
            };
            let vars: Vec<Var> = [&x, &w, &b]
                .iter()
                .map(|t| Var::from_tensor(t).unwrap())
                .collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let (yf, yp) = (fused(&ts), plain(&ts));
            let what = format!("{k:?} {dt:?}");
            assert_close(&yf, &yp, tol, &what);
            let r = rand_t(yf.dims(), 800 + i, dt);
            let gf = (&yf * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (&yp * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (t, name) in ts.iter().zip(["x", "w", "b"]) {
                assert_close(
                    gf.get(t).unwrap(),
                    gp.get(t).unwrap(),
                    tol,
                    &format!("∂{name} {what}"),
                );
            }
            if dt == DType::F64 && i.is_multiple_of(4) {
                // The bias gradient against central differences (x and w share Conv2dOp's
                // backward, checked by `gradients_match_finite_differences`).
                let loss = |bb: &Tensor| {
                    (fused(&[x.clone(), w.clone(), bb.clone()]) * &r)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let gb = flat(gf.get(&ts[2]).unwrap());
                let bv = flat(&b);
                for j in 0..k.o {
                    let h = 1e-6;
                    let mut up = bv.clone();
                    up[j] += h;
                    let mut dn = bv.clone();
                    dn[j] -= h;
                    let t = |v: Vec<f64>| Tensor::from_vec(v, k.o, &CPU).unwrap();
                    let fd = (loss(&t(up)) - loss(&t(dn))) / (2.0 * h);
                    assert!(
                        (fd - gb[j]).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "∂b[{j}] {what}: {fd} vs {}",
                        gb[j]
                    );
                }
            }
        }
    }
    let x = rand_t(&[1, 2, 5, 5], 1, DType::F32);
    let w = rand_t(&[3, 2, 3, 3], 2, DType::F32);
    let e = conv2d_bias(
        &x,
        &w,
        &rand_t(&[4], 3, DType::F32),
        Conv2dParams::new(1, 0),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[4]") && e.contains("[3]"), "{e}");
}

// ---- fused convolution → batch norm → activation ----------------------------------------------

/// The layer in front of a fused block.
#[derive(Debug, Clone, Copy)]
enum FusedLin {
    Conv(Conv2dParams),
    ConvT(ConvTranspose2dParams),
}

const FUSABLE_ACTS: [Option<Activation>; 5] = [
    None,
    Some(Activation::Relu),
    Some(Activation::LeakyRelu(0.2)),
    Some(Activation::Tanh),
    Some(Activation::Sigmoid),
];

fn fused_block(
    lin: FusedLin,
    x: &Tensor,
    w: &Tensor,
    gb: Option<(&Tensor, &Tensor)>,
    act: Option<Activation>,
) -> Result<FusedOutput> {
    let bn = gb.map(|(gamma, beta)| FusedBatchNorm {
        gamma,
        beta,
        eps: 1e-5,
    });
    match lin {
        FusedLin::Conv(p) => conv2d_norm_act(x, w, p, bn, act),
        FusedLin::ConvT(p) => conv_transpose2d_norm_act(x, w, p, bn, act),
    }
}

/// The oracle: the separate ops — convolution, the batch-norm kernel without activation, then
/// the activation op — each its own graph node.
fn separate_block(
    lin: FusedLin,
    x: &Tensor,
    w: &Tensor,
    gb: Option<(&Tensor, &Tensor)>,
    act: Option<Activation>,
) -> (Tensor, Option<(Tensor, Tensor)>) {
    let y = match lin {
        FusedLin::Conv(p) => conv2d(x, w, p),
        FusedLin::ConvT(p) => conv_transpose2d(x, w, p),
    }
    .unwrap();
    let (y, stats) = match gb {
        Some((g, b)) => {
            let (y, m, v) = crate::kernels::norm::batch_norm_train(&y, g, b, 1e-5, None).unwrap();
            (y, Some((m, v)))
        }
        None => (y, None),
    };
    let y = match act {
        Some(a) => y.apply_op1(crate::kernels::act::ActivationOp(a)).unwrap(),
        None => y,
    };
    (y, stats)
}

/// Output, statistics and the gradients (x, w, γ, β) of `Σ R ⊙ block(…)` for a block function.
#[allow(clippy::type_complexity)]
fn block_grads(
    block: &dyn Fn(
        &Tensor,
        &Tensor,
        Option<(&Tensor, &Tensor)>,
    ) -> (Tensor, Option<(Tensor, Tensor)>),
    x: &Tensor,
    w: &Tensor,
    gb: Option<(&Tensor, &Tensor)>,
    seed: u64,
) -> (Tensor, Option<(Tensor, Tensor)>, Vec<Tensor>) {
    let vars: Vec<Var> = [Some(x), Some(w), gb.map(|p| p.0), gb.map(|p| p.1)]
        .into_iter()
        .flatten()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let p = (vars.len() == 4).then(|| (vars[2].as_tensor(), vars[3].as_tensor()));
    let (z, stats) = block(vars[0].as_tensor(), vars[1].as_tensor(), p);
    let r = rand_t(z.dims(), seed, z.dtype());
    let g = (&z * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| g.get(v.as_tensor()).expect("missing gradient").clone())
        .collect();
    (z, stats, grads)
}

#[test]
fn fused_blocks_match_separate_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let mut checked = 0;
    for i in 0..60u64 {
        // Alternate convolutions and transposed convolutions of random geometry.
        let (lin, x_dims, w_dims) = if i % 2 == 0 {
            let k = Case::random(&mut rng, i % 4 == 0);
            (FusedLin::Conv(k.params()), k.x_dims(), k.w_dims())
        } else {
            let (k, op, (hi, wi)) = random_transposed(&mut rng);
            let p = ConvTranspose2dParams {
                stride: k.s,
                padding: k.p,
                output_padding: op,
                dilation: k.d,
            };
            (FusedLin::ConvT(p), [k.n, k.o, hi, wi], k.w_dims())
        };
        let c_out = match lin {
            FusedLin::Conv(_) => w_dims[0],
            FusedLin::ConvT(_) => w_dims[1],
        };
        let x = rand_t(&x_dims, 300 + i, DType::F64);
        let w = rand_t(&w_dims, 400 + i, DType::F64);
        let gamma = (rand_t(&[c_out], 500 + i, DType::F64) + 1.5).unwrap();
        let beta = rand_t(&[c_out], 600 + i, DType::F64);
        for (j, act) in FUSABLE_ACTS.into_iter().enumerate() {
            for with_bn in [false, true] {
                let gb = with_bn.then_some((&gamma, &beta));
                let (z0, s0, g0) = block_grads(
                    &|x, w, p| separate_block(lin, x, w, p, act),
                    &x,
                    &w,
                    gb,
                    i * 10 + j as u64,
                );
                if with_bn {
                    // Per-channel values B·H·W: at least 2, else the variance is 0 and the
                    // normalised output is constant (both agree, but the gradient is degenerate).
                    let [n, _, h, wd] = z0.dims() else {
                        unreachable!()
                    };
                    if n * h * wd < 2 {
                        continue;
                    }
                }
                let (z1, s1, g1) = block_grads(
                    &|x, w, p| {
                        let out = fused_block(lin, x, w, p, act).unwrap();
                        let stats = out.stats.map(|s| {
                            let c = s.mean.len();
                            (
                                Tensor::from_vec(s.mean, c, &CPU).unwrap(),
                                Tensor::from_vec(s.var, c, &CPU).unwrap(),
                            )
                        });
                        (out.y, stats)
                    },
                    &x,
                    &w,
                    gb,
                    i * 10 + j as u64,
                );
                let what = format!("{lin:?} x {x_dims:?} w {w_dims:?} {act:?} bn {with_bn}");
                assert_close(&z1, &z0, 1e-10, &format!("{what}: output"));
                assert_eq!(s1.is_some(), with_bn, "{what}: statistics");
                if let (Some((m1, v1)), Some((m0, v0))) = (&s1, &s0) {
                    assert_close(m1, m0, 1e-10, &format!("{what}: mean"));
                    assert_close(v1, v0, 1e-10, &format!("{what}: variance"));
                }
                for (k, (a, b)) in g1.iter().zip(&g0).enumerate() {
                    assert_close(a, b, 1e-9, &format!("{what}: gradient {k}"));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} combinations checked");
}

#[test]
fn fused_blocks_match_finite_differences() {
    // DCGAN's blocks at toy size: conv ↓2 + BN + LeakyReLU, convᵀ ↑2 + BN + ReLU-free tanh, and
    // conv + LeakyReLU without BN. Loss Σ R ⊙ z; central differences on every coordinate of x,
    // w, γ and β.
    let down = FusedLin::Conv(Conv2dParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    });
    let up = FusedLin::ConvT(ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: 0,
        dilation: 1,
    });
    let cases = [
        (
            down,
            [2, 3, 6, 6],
            [4, 3, 4, 4],
            4,
            true,
            Activation::LeakyRelu(0.2),
        ),
        (up, [2, 4, 3, 3], [4, 3, 4, 4], 3, true, Activation::Tanh),
        (
            down,
            [3, 2, 5, 5],
            [3, 2, 4, 4],
            3,
            false,
            Activation::LeakyRelu(0.2),
        ),
    ];
    for (i, (lin, xd, wd, c, with_bn, act)) in cases.into_iter().enumerate() {
        let i = i as u64;
        let args = [
            rand_t(&xd, 700 + i, DType::F64),
            rand_t(&wd, 710 + i, DType::F64),
            (rand_t(&[c], 720 + i, DType::F64) + 1.2).unwrap(),
            rand_t(&[c], 730 + i, DType::F64),
        ];
        let run = |a: &[Tensor]| -> (Tensor, Option<(Tensor, Tensor)>) {
            let gb = with_bn.then(|| (&a[2], &a[3]));
            (
                fused_block(lin, &a[0], &a[1], gb, Some(act)).unwrap().y,
                None,
            )
        };
        let gb = with_bn.then(|| (&args[2], &args[3]));
        let (z, _, grads) = block_grads(
            &|x, w, p| {
                let gb = p;
                (fused_block(lin, x, w, gb, Some(act)).unwrap().y, None)
            },
            &args[0],
            &args[1],
            gb,
            800 + i,
        );
        let r = rand_t(z.dims(), 800 + i, DType::F64);
        let loss = |a: &[Tensor]| -> f64 {
            (run(a).0 * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let n = grads.len();
        check_fd_args(&loss, &args[..n], &grads, &format!("case {i}"));
    }
}

#[test]
fn fused_blocks_skip_constant_arguments_and_check_shapes() {
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    let x = rand_t(&[3, 2, 8, 8], 900, DType::F64);
    let w = rand_t(&[5, 2, 4, 4], 901, DType::F64);
    let gamma = (rand_t(&[5], 902, DType::F64) + 1.0).unwrap();
    let beta = rand_t(&[5], 903, DType::F64);
    let act = Some(Activation::LeakyRelu(0.2));
    let bn = |g, b| {
        Some(FusedBatchNorm {
            gamma: g,
            beta: b,
            eps: 1e-5,
        })
    };
    let r = rand_t(&[3, 5, 4, 4], 904, DType::F64);
    // All four differentiated: the reference gradients.
    let (vx, vw) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
    let (vg, vb) = (
        Var::from_tensor(&gamma).unwrap(),
        Var::from_tensor(&beta).unwrap(),
    );
    let z = conv2d_norm_act(&vx, &vw, p, bn(&vg, &vb), act).unwrap().y;
    let all = (z * &r).unwrap().sum_all().unwrap().backward().unwrap();
    // x constant (real images): no input gradient is computed, the others are unchanged.
    let z = conv2d_norm_act(&x, &vw, p, bn(&vg, &vb), act).unwrap().y;
    let g = (z * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert_close(
        g.get(&vw).unwrap(),
        all.get(&vw).unwrap(),
        1e-12,
        "w with x constant",
    );
    assert_close(
        g.get(&vg).unwrap(),
        all.get(&vg).unwrap(),
        1e-12,
        "γ with x constant",
    );
    // Frozen layer (parameters detached): only the input gradient.
    let (wd, gd, bd) = (w.detach(), gamma.detach(), beta.detach());
    let z = conv2d_norm_act(&vx, &wd, p, bn(&gd, &bd), act).unwrap().y;
    let g = (z * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&wd).is_none() && g.get(&gd).is_none() && g.get(&bd).is_none());
    assert_close(
        g.get(&vx).unwrap(),
        all.get(&vx).unwrap(),
        1e-12,
        "x with frozen layer",
    );
    // Errors name the shapes; an activation whose derivative needs its input is refused.
    let short = rand_t(&[4], 905, DType::F64);
    let err = conv2d_norm_act(&x, &w, p, bn(&short, &beta), act)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4]") && err.contains("5 channels"), "{err}");
    let err = conv2d_norm_act(&x, &w, p, None, Some(Activation::LeakyRelu(-0.5)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("LeakyRelu(-0.5)"), "{err}");
    let bad_w = rand_t(&[5, 3, 4, 4], 906, DType::F64);
    let err = conv2d_norm_act(&x, &bad_w, p, bn(&gamma, &beta), act)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[3, 2, 8, 8]") && err.contains("[5, 3, 4, 4]"),
        "{err}"
    );
}
