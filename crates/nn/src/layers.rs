//! Layers with PyTorch semantics and `state_dict` names.

use candle_core::{DType, Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::ops;

/// Hyper-parameters of a 2-D convolution (PyTorch `nn.Conv2d` arguments other than channels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dConfig {
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// A `kernel`×`kernel` convolution with the given stride and padding, with bias.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            dilation: 1,
            bias: true,
        }
    }
    /// The same without bias (the layer is followed by batch norm).
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
}

/// 2-D convolution; weight `[out, in, k, k]` named `weight`, optional `bias` `[out]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// Creates the layer; `init` draws the weight, the bias starts at 0.
    pub fn new(
        c_in: usize,
        c_out: usize,
        cfg: Conv2dConfig,
        init: Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, cfg.kernel, cfg.kernel), "weight", init)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(c_out, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }

    /// The weight tensor.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Conv2d {
    fn params(&self) -> ops::Conv2dParams {
        ops::Conv2dParams {
            stride: self.cfg.stride,
            padding: self.cfg.padding,
            dilation: self.cfg.dilation,
        }
    }

    /// `act(self(x))`: one fused op on the CPU kernels when the layer has no bias (see
    /// [`ops::conv2d_norm_act`]).
    pub fn forward_act(&self, x: &Tensor, act: Option<ops::Activation>) -> Result<Tensor> {
        fused_act(
            self.bias.is_some(),
            act,
            || self.forward(x),
            || ops::conv2d_norm_act(x, &self.weight, self.params(), None, act),
        )
    }

    /// `act(bn(self(x)))` with `bn` in `mode` — DCGAN's block. In the training modes a layer
    /// without bias runs as one fused op on the CPU kernels ([`ops::conv2d_norm_act`]); the
    /// running statistics are updated as by [`BatchNorm2d::forward_act`].
    pub fn forward_bn_act(
        &self,
        x: &Tensor,
        bn: &BatchNorm2d,
        mode: BnMode,
        act: Option<ops::Activation>,
    ) -> Result<Tensor> {
        fused_bn_act(
            self.bias.is_some(),
            (bn, mode, act),
            || self.forward(x),
            |b| ops::conv2d_norm_act(x, &self.weight, self.params(), Some(b), act),
        )
    }
}

/// `act(linear())` for a layer with a bias (`plain`: the layer's forward, then the activation),
/// else through the fused op `fused`.
fn fused_act(
    has_bias: bool,
    act: Option<ops::Activation>,
    plain: impl FnOnce() -> Result<Tensor>,
    fused: impl FnOnce() -> Result<ops::LayerOutput>,
) -> Result<Tensor> {
    if !has_bias {
        return Ok(fused()?.y);
    }
    let y = plain()?;
    match act {
        Some(a) => ops::activation(&y, a),
        None => Ok(y),
    }
}

/// `act(bn(linear()))`: through the fused op `fused` unless the layer has a bias.
fn fused_bn_act(
    has_bias: bool,
    (bn, mode, act): (&BatchNorm2d, BnMode, Option<ops::Activation>),
    plain: impl FnOnce() -> Result<Tensor>,
    fused: impl FnOnce(ops::FusedBatchNorm<'_>) -> Result<ops::LayerOutput>,
) -> Result<Tensor> {
    if has_bias {
        return bn.forward_act(&plain()?, mode, act);
    }
    bn.forward_after(mode, act, fused, plain)
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.params();
        match &self.bias {
            None => ops::conv2d(x, &self.weight, p),
            Some(b) => ops::conv2d_bias(x, &self.weight, b, p),
        }
    }
}

/// Hyper-parameters of a transposed convolution (PyTorch `nn.ConvTranspose2d`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTranspose2dConfig {
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding removed from every side of the full output.
    pub padding: usize,
    /// Extra rows/columns added to one side of the output.
    pub output_padding: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl ConvTranspose2dConfig {
    /// A transposed convolution with the given kernel, stride and padding, with bias.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            output_padding: 0,
            bias: true,
        }
    }
    /// The same without bias.
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
}

/// Transposed 2-D convolution; weight `[in, out, k, k]` (PyTorch's layout) named `weight`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// Creates the layer; `init` draws the weight, the bias starts at 0.
    pub fn new(
        c_in: usize,
        c_out: usize,
        cfg: ConvTranspose2dConfig,
        init: Init,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_in, c_out, cfg.kernel, cfg.kernel), "weight", init)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(c_out, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }
}

impl ConvTranspose2d {
    fn params(&self) -> ops::ConvTranspose2dParams {
        ops::ConvTranspose2dParams {
            stride: self.cfg.stride,
            padding: self.cfg.padding,
            output_padding: self.cfg.output_padding,
            dilation: 1,
        }
    }

    /// `act(self(x))`: one fused op on the CPU kernels when the layer has no bias (see
    /// [`ops::conv_transpose2d_norm_act`]).
    pub fn forward_act(&self, x: &Tensor, act: Option<ops::Activation>) -> Result<Tensor> {
        fused_act(
            self.bias.is_some(),
            act,
            || self.forward(x),
            || ops::conv_transpose2d_norm_act(x, &self.weight, self.params(), None, act),
        )
    }

    /// `act(bn(self(x)))` with `bn` in `mode`, fused like [`Conv2d::forward_bn_act`].
    pub fn forward_bn_act(
        &self,
        x: &Tensor,
        bn: &BatchNorm2d,
        mode: BnMode,
        act: Option<ops::Activation>,
    ) -> Result<Tensor> {
        fused_bn_act(
            self.bias.is_some(),
            (bn, mode, act),
            || self.forward(x),
            |b| ops::conv_transpose2d_norm_act(x, &self.weight, self.params(), Some(b), act),
        )
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::conv_transpose2d(x, &self.weight, self.params())?;
        match &self.bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&ops::param(b).reshape((1, b.dim(0)?, 1, 1))?),
        }
    }
}

/// How a batch-norm layer normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Training: normalise with the batch's statistics and update the running statistics
    /// (PyTorch `train()`).
    Train,
    /// Normalise with the batch's statistics but leave the running statistics alone
    /// (sampling the way pytorch/examples' DCGAN previews do, without side effects).
    BatchStats,
    /// Inference: normalise with the running statistics (PyTorch `eval()`).
    Eval,
}

/// `nn.BatchNorm2d` with affine parameters `weight`/`bias` and buffers `running_mean`/`running_var`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// The running-statistics momentum (PyTorch's default): `running = 0.9·running + 0.1·stat`.
    pub const MOMENTUM: f64 = 0.1;

    /// Creates the layer (eps 1e-5, momentum 0.1 as PyTorch); `weight_init` draws γ, β starts at 0.
    pub fn new(c: usize, weight_init: Init, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", weight_init)?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.))?;
        // The store hands back the Var's own tensor; wrapping it again shares the storage, so
        // `set` below updates the stored buffer in place.
        let running_mean =
            Var::from_tensor(&vb.get_with_hints(c, "running_mean", Init::Const(0.))?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(c, "running_var", Init::Const(1.))?)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            eps: 1e-5,
            momentum: Self::MOMENTUM,
        })
    }

    /// Folds a training batch's statistics (mean and biased variance of `n` values per channel)
    /// into the running ones, as PyTorch: `running = (1 − m)·running + m·stat`, with the
    /// unbiased variance.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let dt = self.running_mean.dtype();
        let unbiased = (var.to_dtype(DType::F64)? * (n as f64 / (n - 1) as f64))?;
        let rm = ((self.running_mean.as_tensor() * (1. - m))? + (mean.to_dtype(dt)? * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1. - m))? + (unbiased.to_dtype(dt)? * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// Checks the input channels; the values per channel `B·H·W` (more than one in training).
    fn check(&self, dims: &[usize], mode: BnMode) -> Result<usize> {
        let &[b, c, h, w] = dims else {
            candle_core::bail!("batch norm expects a [B, C, H, W] input, got shape {dims:?}")
        };
        if c != self.weight.dim(0)? {
            candle_core::bail!(
                "batch norm expects {} channels, got input of shape {dims:?}",
                self.weight.dim(0)?
            )
        }
        let n = b * h * w;
        if mode == BnMode::Train && n < 2 {
            candle_core::bail!("batch norm in training mode needs more than one value per channel, got input of shape {dims:?}")
        }
        Ok(n)
    }

    /// `act(self(y))` for the output `y` of a convolution that the caller runs through `fused`
    /// (which takes the convolution's input and this layer's `γ`, `β`, `ε` and `act`) in the
    /// training modes; `unfused` gives `y` itself otherwise (inference).
    fn forward_after(
        &self,
        mode: BnMode,
        act: Option<ops::Activation>,
        fused: impl FnOnce(ops::FusedBatchNorm<'_>) -> Result<ops::LayerOutput>,
        unfused: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        if mode == BnMode::Eval {
            return self.forward_act(&unfused()?, mode, act);
        }
        let out = fused(ops::FusedBatchNorm {
            gamma: &self.weight,
            beta: &self.bias,
            eps: self.eps,
        })?;
        let n = self.check(out.y.dims(), mode)?;
        if mode == BnMode::Train {
            let (mean, var) = out.stats.as_ref().ok_or_else(|| {
                candle_core::Error::Msg("batch norm: the fused layer returned no statistics".into())
            })?;
            self.update_running(mean, var, n)?;
        }
        Ok(out.y)
    }

    /// Normalises `x` `[B, C, H, W]` per channel.
    pub fn forward_t(&self, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        self.forward_act(x, mode, None)
    }

    /// `act(forward_t(x, mode))`. In the training modes on CPU the activation is fused into the
    /// batch-norm kernel ([`ops::batch_norm_act_train`]): one op instead of two, with no
    /// intermediate tensor in the forward or the backward.
    pub fn forward_act(
        &self,
        x: &Tensor,
        mode: BnMode,
        act: Option<ops::Activation>,
    ) -> Result<Tensor> {
        let n = self.check(x.dims(), mode)?;
        let c = self.weight.dim(0)?;
        match mode {
            BnMode::Eval => {
                let param = |t: &Tensor| ops::param(t).reshape((1, c, 1, 1))?.to_dtype(x.dtype());
                let mean = param(self.running_mean.as_tensor())?;
                let var = param(self.running_var.as_tensor())?;
                let inv_std = (var + self.eps)?.sqrt()?.recip()?; // [1, C, 1, 1]
                let scale = inv_std.broadcast_mul(&param(&self.weight)?)?;
                let shift = param(&self.bias)?.broadcast_sub(&mean.broadcast_mul(&scale)?)?;
                let y = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
                match act {
                    None => Ok(y),
                    Some(a) => ops::activation(&y, a),
                }
            }
            BnMode::Train | BnMode::BatchStats => {
                let out = ops::batch_norm_act_train(x, &self.weight, &self.bias, self.eps, act)?;
                if mode == BnMode::Train {
                    self.update_running(&out.mean, &out.var, n)?;
                }
                Ok(out.y)
            }
        }
    }
}

/// Recomputes the batch-norm running statistics of the network in `store` as the plain average
/// of `batches` training-mode forward passes (`forward(k)` runs batch `k` with
/// [`BnMode::Train`]), like `torch.optim.swa_utils.update_bn` (momentum `None`: cumulative
/// average of each batch's mean and unbiased variance). Used where the weights were not trained
/// as they are (an exponential moving average of them, Polyak averaging), so the statistics
/// tracked during training do not belong to them. The result depends only on the weights and
/// the batches: every buffer is zeroed before each pass and the pass's statistic read back.
pub fn recompute_batch_norm_stats(
    store: &crate::ParamStore,
    batches: usize,
    mut forward: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    let stats: Vec<(String, Var)> = store
        .all()
        .into_iter()
        .filter(|(n, _)| matches!(n.rsplit('.').next(), Some("running_mean" | "running_var")))
        .collect();
    if stats.is_empty() || batches == 0 {
        return Ok(());
    }
    let mut sums: Vec<Tensor> = stats
        .iter()
        .map(|(_, v)| v.as_tensor().zeros_like()?.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    for k in 0..batches {
        for (_, v) in &stats {
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        forward(k)?;
        // Each buffer now holds 0·(1 − m) + m·stat.
        for ((_, v), sum) in stats.iter().zip(sums.iter_mut()) {
            let stat = (v.as_tensor().to_dtype(DType::F64)? / BatchNorm2d::MOMENTUM)?;
            *sum = (&*sum + stat)?;
        }
    }
    for ((_, v), sum) in stats.iter().zip(sums) {
        v.set(&(sum / batches as f64)?.to_dtype(v.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::Device;

    fn vec4(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn batch_norm_matches_formula_and_updates_running_stats() {
        let store = ParamStore::new(&Device::Cpu, 0);
        let bn = BatchNorm2d::new(2, Init::Const(1.), store.var_builder()).unwrap();
        // Channel 0 holds 1..4, channel 1 holds 10, 10, 10, 14 (B = 2, H = 1, W = 2).
        let x = Tensor::new(
            &[[[[1f32, 2.]], [[10., 10.]]], [[[3., 4.]], [[10., 14.]]]],
            &Device::Cpu,
        )
        .unwrap();
        let y = bn.forward_t(&x, BnMode::Train).unwrap();
        // torch: mean0 = 2.5, var0 (biased) = 1.25; mean1 = 11, var1 = 3.
        let e = |v: f32, m: f32, s2: f32| (v - m) / (s2 + 1e-5).sqrt();
        let want = [
            e(1., 2.5, 1.25),
            e(2., 2.5, 1.25),
            e(10., 11., 3.),
            e(10., 11., 3.),
            e(3., 2.5, 1.25),
            e(4., 2.5, 1.25),
            e(10., 11., 3.),
            e(14., 11., 3.),
        ];
        for (a, b) in vec4(&y).iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Running stats: 0.9·0 + 0.1·mean and 0.9·1 + 0.1·unbiased var (n/(n-1) = 4/3).
        let t = store.tensors();
        let rm = vec4(&t["running_mean"]);
        let rv = vec4(&t["running_var"]);
        assert!(
            (rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 1.1).abs() < 1e-6,
            "{rm:?}"
        );
        assert!(
            (rv[0] - (0.9 + 0.1 * 1.25 * 4. / 3.)).abs() < 1e-6,
            "{rv:?}"
        );
        assert!((rv[1] - (0.9 + 0.1 * 4.)).abs() < 1e-6, "{rv:?}");
        // BatchStats leaves the running stats unchanged; Eval uses them.
        bn.forward_t(&x, BnMode::BatchStats).unwrap();
        assert_eq!(vec4(&store.tensors()["running_mean"]), rm);
        let ye = bn.forward_t(&x, BnMode::Eval).unwrap();
        let first = (1. - rm[0]) / (rv[0] + 1e-5).sqrt();
        assert!((vec4(&ye)[0] - first).abs() < 1e-5);
    }

    #[test]
    fn batch_norm_with_activation_equals_activation_of_batch_norm() {
        let x = Tensor::randn(0f32, 2., (4, 3, 5, 5), &Device::Cpu).unwrap();
        for act in [
            ops::Activation::Relu,
            ops::Activation::LeakyRelu(0.2),
            ops::Activation::Tanh,
        ] {
            for mode in [BnMode::Train, BnMode::BatchStats, BnMode::Eval] {
                let mk = || {
                    let store = ParamStore::new(&Device::Cpu, 0);
                    let bn = BatchNorm2d::new(3, Init::Const(1.5), store.var_builder()).unwrap();
                    (store, bn)
                };
                let (s0, bn0) = mk();
                let (s1, bn1) = mk();
                // Make the running statistics non-trivial before Eval.
                bn0.forward_t(&(&x * 3.).unwrap(), BnMode::Train).unwrap();
                bn1.forward_t(&(&x * 3.).unwrap(), BnMode::Train).unwrap();
                let want = ops::activation(&bn0.forward_t(&x, mode).unwrap(), act).unwrap();
                let got = bn1.forward_act(&x, mode, Some(act)).unwrap();
                let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{act:?} {mode:?}");
                assert_eq!(
                    vec4(&s0.tensors()["running_var"]),
                    vec4(&s1.tensors()["running_var"])
                );
            }
        }
    }

    #[test]
    fn fused_conv_batch_norm_blocks_equal_the_separate_layers() {
        // DCGAN's blocks through `forward_bn_act` / `forward_act` (one fused op in the training
        // modes) against conv → `BatchNorm2d::forward_act` (separate ops): outputs, running
        // statistics and the gradients of every parameter and the input, in every mode.
        let init = Init::Randn {
            mean: 0.,
            stdev: 0.2,
        };
        let x = Tensor::randn(0f32, 1., (4, 3, 8, 8), &Device::Cpu).unwrap();
        let u = Tensor::randn(0f32, 1., (4, 6, 4, 4), &Device::Cpu).unwrap();
        for mode in [BnMode::Train, BnMode::BatchStats, BnMode::Eval] {
            let run = |fused: bool| {
                let store = ParamStore::new(&Device::Cpu, 7);
                let vb = store.var_builder();
                let conv =
                    Conv2d::new(3, 6, Conv2dConfig::new(4, 2, 1).no_bias(), init, vb.pp("c"))
                        .unwrap();
                let bn = BatchNorm2d::new(6, Init::Const(1.3), vb.pp("bn")).unwrap();
                let convt = ConvTranspose2d::new(
                    6,
                    2,
                    ConvTranspose2dConfig::new(4, 2, 1).no_bias(),
                    init,
                    vb.pp("t"),
                )
                .unwrap();
                let bnt = BatchNorm2d::new(2, Init::Const(0.7), vb.pp("bnt")).unwrap();
                // Non-trivial running statistics before Eval.
                bn.forward_t(&conv.forward(&(&x * 2.).unwrap()).unwrap(), BnMode::Train)
                    .unwrap();
                bnt.forward_t(&convt.forward(&u).unwrap(), BnMode::Train)
                    .unwrap();
                let xv = Var::from_tensor(&x).unwrap();
                let uv = Var::from_tensor(&u).unwrap();
                let lrelu = Some(ops::Activation::LeakyRelu(0.2));
                let relu = Some(ops::Activation::Relu);
                let (a, b, c) = if fused {
                    (
                        conv.forward_bn_act(xv.as_tensor(), &bn, mode, lrelu)
                            .unwrap(),
                        convt
                            .forward_bn_act(uv.as_tensor(), &bnt, mode, relu)
                            .unwrap(),
                        conv.forward_act(xv.as_tensor(), Some(ops::Activation::Tanh))
                            .unwrap(),
                    )
                } else {
                    (
                        bn.forward_act(&conv.forward(xv.as_tensor()).unwrap(), mode, lrelu)
                            .unwrap(),
                        bnt.forward_act(&convt.forward(uv.as_tensor()).unwrap(), mode, relu)
                            .unwrap(),
                        ops::tanh(&conv.forward(xv.as_tensor()).unwrap()).unwrap(),
                    )
                };
                let r = |t: &Tensor, s: u64| {
                    crate::testing::uniform(t.dims(), s)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                };
                let loss = ((&a * r(&a, 1)).unwrap().sum_all().unwrap()
                    + (&b * r(&b, 2)).unwrap().sum_all().unwrap()
                    + (&c * r(&c, 3)).unwrap().sum_all().unwrap())
                .unwrap();
                let g = loss.backward().unwrap();
                let mut grads: Vec<(String, Vec<f32>)> = store
                    .all()
                    .into_iter()
                    .filter_map(|(n, v)| g.get(v.as_tensor()).map(|t| (n, vec4(t))))
                    .collect();
                grads.push(("x".into(), vec4(g.get(xv.as_tensor()).unwrap())));
                grads.push(("u".into(), vec4(g.get(uv.as_tensor()).unwrap())));
                let mut bufs: Vec<(String, Vec<f32>)> = store
                    .tensors()
                    .into_iter()
                    .map(|(n, t)| (n, vec4(&t)))
                    .collect();
                bufs.sort_by(|p, q| p.0.cmp(&q.0));
                ([vec4(&a), vec4(&b), vec4(&c)], grads, bufs)
            };
            let (y0, g0, b0) = run(false);
            let (y1, g1, b1) = run(true);
            let close = |p: &[f32], q: &[f32], what: &str| {
                assert_eq!(p.len(), q.len(), "{what}");
                for (i, (a, b)) in p.iter().zip(q).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1. + b.abs()),
                        "{mode:?} {what}[{i}]: {a} vs {b}"
                    );
                }
            };
            for (k, (p, q)) in y1.iter().zip(&y0).enumerate() {
                close(p, q, &format!("output {k}"));
            }
            assert_eq!(
                g1.iter().map(|g| &g.0).collect::<Vec<_>>(),
                g0.iter().map(|g| &g.0).collect::<Vec<_>>()
            );
            // γ/β/weights have gradients in every mode except Eval's γ/β path (also separate).
            assert!(
                g1.len() >= 5,
                "{mode:?}: {:?}",
                g1.iter().map(|g| &g.0).collect::<Vec<_>>()
            );
            for ((n, p), (_, q)) in g1.iter().zip(&g0) {
                close(p, q, &format!("gradient of {n}"));
            }
            for ((n, p), (m, q)) in b1.iter().zip(&b0) {
                assert_eq!(n, m);
                close(p, q, &format!("buffer {n}"));
            }
        }
    }

    #[test]
    fn conv_shapes_follow_pytorch() {
        let store = ParamStore::new(&Device::Cpu, 0);
        let vb = store.var_builder();
        let conv = Conv2d::new(
            3,
            8,
            Conv2dConfig::new(4, 2, 1).no_bias(),
            Init::Randn {
                mean: 0.,
                stdev: 0.02,
            },
            vb.pp("c"),
        )
        .unwrap();
        let convt = ConvTranspose2d::new(
            8,
            3,
            ConvTranspose2dConfig::new(4, 2, 1),
            Init::Randn {
                mean: 0.,
                stdev: 0.02,
            },
            vb.pp("t"),
        )
        .unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims(), [2, 8, 16, 16]);
        assert_eq!(convt.forward(&y).unwrap().dims(), [2, 3, 32, 32]);
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["c.weight", "t.bias", "t.weight"]);
        assert_eq!(store.tensors()["t.weight"].dims(), [8, 3, 4, 4]);
    }

    #[test]
    fn recomputed_stats_are_the_average_of_each_batch_statistic() {
        // torch.optim.swa_utils.update_bn (momentum None): running_mean = mean over batches of
        // each batch's per-channel mean; running_var = mean of each batch's unbiased variance.
        let store = ParamStore::new(&Device::Cpu, 0);
        let bn = BatchNorm2d::new(1, Init::Const(1.), store.var_builder()).unwrap();
        // Batch 0: 1, 2, 3, 6 (mean 3, unbiased var 14/3); batch 1: 0, 0, 4, 4 (mean 2, var 16/3).
        let batches = [[1f32, 2., 3., 6.], [0., 0., 4., 4.]];
        // Start from stale statistics: they must not leak into the result.
        bn.running_mean
            .set(&Tensor::new(&[7f32], &Device::Cpu).unwrap())
            .unwrap();
        recompute_batch_norm_stats(&store, 2, |k| {
            let x = Tensor::new(&batches[k], &Device::Cpu)?.reshape((4, 1, 1, 1))?;
            bn.forward_t(&x, BnMode::Train).map(|_| ())
        })
        .unwrap();
        let t = store.tensors();
        let mean = vec4(&t["running_mean"])[0];
        let var = vec4(&t["running_var"])[0];
        assert!((mean - 2.5).abs() < 1e-6, "{mean}");
        assert!((var - 5.0).abs() < 1e-5, "{var}");
    }
}
