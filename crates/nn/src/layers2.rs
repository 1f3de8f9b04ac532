//! Layers of the feed-forward style and super-resolution networks that candle-nn lacks, with
//! PyTorch's semantics and `state_dict` names: instance normalisation (`nn.InstanceNorm2d`),
//! reflection padding (`nn.ReflectionPad2d`), pixel shuffle (`nn.PixelShuffle`) and PReLU
//! (`nn.PReLU`).
//!
//! Everything is written with candle's own differentiable ops (narrow, index-select, reshape,
//! reductions), so it runs on every device and its gradients come from candle's autograd; the
//! tests check the forward passes against the defining formulas and the gradients against
//! central finite differences in f64. Parameters pass through [`ops::param`], so
//! [`ops::with_frozen_params`] applies to them as to every other layer.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::ops;

/// Instance normalisation of `x` `[B, C, H, W]`: every (image, channel) plane is normalised by
/// its own mean and biased variance over `H·W`, `y = γ_c·(x − μ_bc)/√(σ²_bc + ε) + β_c`
/// (PyTorch `F.instance_norm` without running statistics). `gamma`/`beta` `[C]` are optional
/// (`affine=False` when `None`). Statistics are computed in f32 for f16/bf16 inputs.
pub fn instance_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h * w < 2 {
        candle_core::bail!(
            "instance norm needs more than one value per plane, got input of shape {:?}",
            x.dims()
        )
    }
    for t in [gamma, beta].into_iter().flatten() {
        if t.dims() != [c] {
            candle_core::bail!(
                "instance norm: input {:?} needs γ and β of shape [{c}], got {:?}",
                x.dims(),
                t.dims()
            )
        }
    }
    let sdt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let flat = x.to_dtype(sdt)?.reshape((b, c, h * w))?; // [B, C, M]
    let mean = flat.mean_keepdim(D::Minus1)?; // [B, C, 1]
    let centred = flat.broadcast_sub(&mean)?; // [B, C, M]
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // [B, C, 1], biased
    let y = centred.broadcast_div(&(var + eps)?.sqrt()?)?; // [B, C, M]
    let mut y = y.to_dtype(x.dtype())?.reshape((b, c, h, w))?;
    if let Some(g) = gamma {
        y = y.broadcast_mul(&ops::param(g).to_dtype(x.dtype())?.reshape((1, c, 1, 1))?)?;
    }
    if let Some(bt) = beta {
        y = y.broadcast_add(&ops::param(bt).to_dtype(x.dtype())?.reshape((1, c, 1, 1))?)?;
    }
    Ok(y)
}

/// `nn.InstanceNorm2d(c, affine=True)` (ε = 1e-5, no running statistics): parameters `weight`
/// (γ, starts at 1) and `bias` (β, starts at 0), as pytorch/examples' `fast_neural_style` uses it.
#[derive(Debug, Clone)]
pub struct InstanceNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl InstanceNorm2d {
    /// Creates the layer with `c` channels.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.))?,
            eps: 1e-5,
        })
    }
}

impl InstanceNorm2d {
    /// `act(instance_norm(x))`: on CPU one fused pass for the statistics and one for the
    /// normalisation and activation (see [`instance_norm_act`]).
    pub fn forward_act(&self, x: &Tensor, act: Option<ops::Activation>) -> Result<Tensor> {
        instance_norm_act(x, &self.weight, &self.bias, self.eps, act)
    }
}

impl Module for InstanceNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }
}

/// [`instance_norm`] with `γ`, `β` followed by `act`, as one training-mode batch norm of `x`
/// viewed as `[1, B·C, H, W]` (each image's channel is then a "channel" whose batch statistics
/// are the plane's statistics, and `γ`, `β` are repeated per image). On CPU that is easel's fused
/// batch-norm kernel (statistics in f64, the activation fused, a two-pass backward) instead of
/// about ten generic tensor ops; on other devices the same generic ops as [`instance_norm`].
pub fn instance_norm_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Option<ops::Activation>,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h * w < 2 {
        candle_core::bail!(
            "instance norm needs more than one value per plane, got input of shape {:?}",
            x.dims()
        )
    }
    for t in [gamma, beta] {
        if t.dims() != [c] {
            candle_core::bail!(
                "instance norm: input {:?} needs γ and β of shape [{c}], got {:?}",
                x.dims(),
                t.dims()
            )
        }
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        let y = instance_norm(x, Some(gamma), Some(beta), eps)?;
        return match act {
            None => Ok(y),
            Some(a) => ops::activation(&y, a),
        };
    }
    let planes = x.reshape((1, b * c, h, w))?; // [1, B·C, H, W]
    let per_plane = |t: &Tensor| ops::param(t).to_dtype(x.dtype())?.repeat(b); // [B·C]
    let out = ops::batch_norm_act_train(&planes, &per_plane(gamma)?, &per_plane(beta)?, eps, act)?;
    out.y.reshape((b, c, h, w))
}

/// Reflection padding of `x` `[B, C, H, W]` by `(left, right, top, bottom)` (PyTorch
/// `F.pad(x, (l, r, t, b), mode="reflect")`); see [`ops::reflection_pad2d`].
pub fn reflection_pad2d(x: &Tensor, pad: (usize, usize, usize, usize)) -> Result<Tensor> {
    ops::reflection_pad2d(x, pad)
}

/// `nn.ReflectionPad2d(p)`: the same padding `p` on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectionPad2d(pub usize);

impl Module for ReflectionPad2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.0;
        reflection_pad2d(x, (p, p, p, p))
    }
}

/// Pixel shuffle (PyTorch `F.pixel_shuffle`, Shi et al. 2016): `[B, C·r², H, W]` →
/// `[B, C, H·r, W·r]` with `out[b, c, h·r + i, w·r + j] = in[b, c·r² + i·r + j, h, w]`.
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, cr2, h, w) = x.dims4()?;
    if r == 0 || !cr2.is_multiple_of(r * r) {
        candle_core::bail!(
            "pixel shuffle by {r}: the input's channels must be a multiple of {}, got shape {:?}",
            r * r,
            x.dims()
        )
    }
    let c = cr2 / (r * r);
    x.reshape((b, c, r, r, h, w))? // [B, C, i, j, H, W]
        .permute((0, 1, 4, 2, 5, 3))? // [B, C, H, i, W, j]
        .reshape((b, c, h * r, w * r))
}

/// PReLU: `max(x, 0) + a·min(x, 0)` with `a` `[1]` (shared) or `[C]` (per channel), as PyTorch's
/// `F.prelu`.
pub fn prelu(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let n = a.elem_count();
    if n != 1 && n != c {
        candle_core::bail!(
            "PReLU: slope of shape {:?} does not fit input {:?} (1 or {c} values)",
            a.dims(),
            x.dims()
        )
    }
    let mut shape = vec![1; x.rank()];
    shape[1] = n;
    let a = ops::param(a).to_dtype(x.dtype())?.reshape(shape)?;
    let pos = x.relu()?;
    let neg = (x - &pos)?; // min(x, 0)
    pos + neg.broadcast_mul(&a)?
}

/// `nn.PReLU(num_parameters)`: parameter `weight` `[num_parameters]`, starting at 0.25.
#[derive(Debug, Clone)]
pub struct PReLU {
    weight: Tensor,
}

impl PReLU {
    /// Creates the layer with `n` slopes (1: one shared by every channel).
    pub fn new(n: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(n, "weight", Init::Const(0.25))?,
        })
    }
}

impl Module for PReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        prelu(x, &self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const CPU: Device = Device::Cpu;

    fn rand_t(dims: &[usize], seed: u64) -> Tensor {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| r.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, dims, &CPU).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Checks the gradients of `Σ w·f(inputs)` (w fixed, random) w.r.t. every input against
    /// central finite differences in f64.
    fn check_grads(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts);
        let w = rand_t(y.dims(), 99);
        let loss = |ts: &[Tensor]| -> f64 {
            (f(ts) * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let h = 1e-6;
        for (k, v) in vars.iter().enumerate() {
            let got = flat(g.get(v.as_tensor()).expect("gradient"));
            let base = flat(&inputs[k]);
            for i in 0..base.len() {
                let at = |d: f64| {
                    let mut p = base.clone();
                    p[i] += d;
                    let mut ts: Vec<Tensor> = inputs.to_vec();
                    ts[k] = Tensor::from_vec(p, inputs[k].dims(), &CPU).unwrap();
                    loss(&ts)
                };
                let num = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (num - got[i]).abs() <= 1e-5 * (1.0 + num.abs()),
                    "input {k} element {i}: analytic {} vs numeric {num}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn instance_norm_matches_the_formula_per_image_and_channel() {
        let x = rand_t(&[2, 3, 4, 5], 1);
        let gamma = Tensor::new(&[1.5f64, -0.5, 2.0], &CPU).unwrap();
        let beta = Tensor::new(&[0.1f64, 0.2, -0.3], &CPU).unwrap();
        let y = flat(&instance_norm(&x, Some(&gamma), Some(&beta), 1e-5).unwrap());
        let xv = flat(&x);
        let (g, bt) = (flat(&gamma), flat(&beta));
        for b in 0..2 {
            for c in 0..3 {
                let plane = &xv[(b * 3 + c) * 20..(b * 3 + c + 1) * 20];
                let m = plane.iter().sum::<f64>() / 20.0;
                let v = plane.iter().map(|p| (p - m).powi(2)).sum::<f64>() / 20.0;
                for (i, p) in plane.iter().enumerate() {
                    let want = g[c] * (p - m) / (v + 1e-5).sqrt() + bt[c];
                    let got = y[(b * 3 + c) * 20 + i];
                    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
                }
            }
        }
        // A constant plane maps to β (x − μ = 0), not NaN.
        let ones = Tensor::ones((1, 3, 2, 2), DType::F32, &CPU).unwrap();
        let y = instance_norm(&ones, None, Some(&beta.to_dtype(DType::F32).unwrap()), 1e-5);
        let y = flat(&y.unwrap());
        assert!(
            (y[0] - 0.1).abs() < 1e-6 && (y[11] + 0.3).abs() < 1e-6,
            "{y:?}"
        );
    }

    #[test]
    fn instance_norm_gradients_match_finite_differences() {
        let f = |t: &[Tensor]| instance_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5).unwrap();
        check_grads(
            &f,
            &[rand_t(&[2, 2, 3, 3], 2), rand_t(&[2], 3), rand_t(&[2], 4)],
        );
    }

    /// The fused path (easel's batch-norm kernel on `[1, B·C, H, W]`) against the generic one,
    /// forward and gradients of x, γ and β, with and without a fused ReLU; and its own finite
    /// differences.
    #[test]
    fn fused_instance_norm_matches_the_generic_ops() {
        let x = Var::from_tensor(&rand_t(&[3, 4, 5, 6], 11)).unwrap();
        let g = Var::from_tensor(&rand_t(&[4], 12)).unwrap();
        let bt = Var::from_tensor(&rand_t(&[4], 13)).unwrap();
        let proj = rand_t(&[3, 4, 5, 6], 14);
        for act in [None, Some(ops::Activation::Relu)] {
            let fused = instance_norm_act(&x, &g, &bt, 1e-5, act).unwrap();
            let plain = instance_norm(&x, Some(&g), Some(&bt), 1e-5).unwrap();
            let plain = match act {
                Some(a) => ops::activation(&plain, a).unwrap(),
                None => plain,
            };
            let (fv, pv) = (flat(&fused), flat(&plain));
            for (a, b) in fv.iter().zip(&pv) {
                assert!((a - b).abs() < 1e-10, "{act:?}: {a} vs {b}");
            }
            let gf = (&fused * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gp = (&plain * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &g, &bt] {
                let (a, b) = (
                    flat(gf.get(v.as_tensor()).unwrap()),
                    flat(gp.get(v.as_tensor()).unwrap()),
                );
                for (a, b) in a.iter().zip(&b) {
                    assert!((a - b).abs() < 1e-9, "{act:?} gradient: {a} vs {b}");
                }
            }
        }
        let f = |t: &[Tensor]| {
            instance_norm_act(&t[0], &t[1], &t[2], 1e-5, Some(ops::Activation::Relu)).unwrap()
        };
        check_grads(
            &f,
            &[rand_t(&[2, 2, 3, 3], 5), rand_t(&[2], 6), rand_t(&[2], 7)],
        );
        // f32 on the fused path too.
        let x32 = rand_t(&[2, 3, 4, 4], 8).to_dtype(DType::F32).unwrap();
        let (g32, b32) = (
            Tensor::ones(3, DType::F32, &CPU).unwrap(),
            Tensor::zeros(3, DType::F32, &CPU).unwrap(),
        );
        let a = flat(&instance_norm_act(&x32, &g32, &b32, 1e-5, None).unwrap());
        let b = flat(&instance_norm(&x32, Some(&g32), Some(&b32), 1e-5).unwrap());
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn instance_norm_layer_names_and_bad_input() {
        let store = ParamStore::new(&CPU, 0);
        let layer = InstanceNorm2d::new(4, store.var_builder().pp("in1")).unwrap();
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["in1.bias", "in1.weight"]);
        let e = layer
            .forward(&Tensor::zeros((1, 3, 4, 4), DType::F32, &CPU).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("[4]") && e.contains("[1, 3, 4, 4]"), "{e}");
        let e = layer
            .forward(&Tensor::zeros((1, 4, 1, 1), DType::F32, &CPU).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one value"), "{e}");
    }

    #[test]
    fn reflection_pad_matches_pytorch() {
        // torch: F.pad(torch.arange(1., 5.).view(1, 1, 1, 4), (2, 1, 0, 0), mode="reflect")
        //   → [3, 2, 1, 2, 3, 4, 3]
        let x = Tensor::new(&[[[[1f32, 2., 3., 4.]]]], &CPU).unwrap();
        let y = reflection_pad2d(&x, (2, 1, 0, 0)).unwrap();
        assert_eq!(flat(&y), [3., 2., 1., 2., 3., 4., 3.]);
        // 2-D: rows and columns both reflect; [[1,2,3],[4,5,6],[7,8,9]] padded by 1.
        let x = Tensor::arange(1f32, 10., &CPU)
            .unwrap()
            .reshape((1, 1, 3, 3))
            .unwrap();
        let y = ReflectionPad2d(1).forward(&x).unwrap();
        assert_eq!(y.dims(), [1, 1, 5, 5]);
        #[rustfmt::skip]
        let want = [
            5., 4., 5., 6., 5.,
            2., 1., 2., 3., 2.,
            5., 4., 5., 6., 5.,
            8., 7., 8., 9., 8.,
            5., 4., 5., 6., 5.,
        ];
        assert_eq!(flat(&y), want);
        let e = ReflectionPad2d(3).forward(&x).unwrap_err().to_string();
        assert!(e.contains("smaller than"), "{e}");
    }

    #[test]
    fn reflection_pad_gradient_accumulates_copies() {
        // Each source pixel receives the gradient of itself and of every reflected copy.
        let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 2., 3., 4.]]]], &CPU).unwrap()).unwrap();
        let y = reflection_pad2d(x.as_tensor(), (2, 2, 0, 0)).unwrap(); // [3 2 1 2 3 4 3 2]
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(x.as_tensor()).unwrap()), [1., 3., 3., 1.]);
        let f = |t: &[Tensor]| reflection_pad2d(&t[0], (2, 1, 1, 2)).unwrap();
        check_grads(&f, &[rand_t(&[1, 2, 3, 4], 5)]);
    }

    #[test]
    fn pixel_shuffle_matches_the_index_formula() {
        let (b, c, r, h, w) = (2, 2, 3, 2, 3);
        let x = rand_t(&[b, c * r * r, h, w], 6);
        let y = pixel_shuffle(&x, r).unwrap();
        assert_eq!(y.dims(), [b, c, h * r, w * r]);
        let (xv, yv) = (flat(&x), flat(&y));
        let xi = |b: usize, ch: usize, y: usize, x: usize| ((b * c * r * r + ch) * h + y) * w + x;
        for bb in 0..b {
            for cc in 0..c {
                for oy in 0..h * r {
                    for ox in 0..w * r {
                        let want = xv[xi(bb, cc * r * r + (oy % r) * r + ox % r, oy / r, ox / r)];
                        let got = yv[((bb * c + cc) * h * r + oy) * w * r + ox];
                        assert_eq!(got, want);
                    }
                }
            }
        }
        let e = pixel_shuffle(&rand_t(&[1, 5, 2, 2], 0), 2).unwrap_err();
        assert!(e.to_string().contains("multiple of 4"), "{e}");
        let f = |t: &[Tensor]| pixel_shuffle(&t[0], 2).unwrap();
        check_grads(&f, &[rand_t(&[1, 4, 2, 3], 7)]);
    }

    #[test]
    fn prelu_matches_the_formula_and_finite_differences() {
        let x = Tensor::new(&[[[[-2f64, 3.]], [[4., -1.]]]], &CPU).unwrap(); // [1, 2, 1, 2]
        let a = Tensor::new(&[0.1f64, 0.5], &CPU).unwrap();
        assert_eq!(flat(&prelu(&x, &a).unwrap()), [-0.2, 3., 4., -0.5]);
        let shared = Tensor::new(&[0.25f64], &CPU).unwrap();
        assert_eq!(flat(&prelu(&x, &shared).unwrap()), [-0.5, 3., 4., -0.25]);
        let f = |t: &[Tensor]| prelu(&t[0], &t[1]).unwrap();
        check_grads(&f, &[rand_t(&[2, 3, 2, 2], 8), rand_t(&[3], 9)]);
        assert!(prelu(&x, &rand_t(&[3], 0)).is_err());
    }
}
