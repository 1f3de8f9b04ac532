//! Optimisers whose whole state can be saved and restored: Adam and RMSProp with PyTorch's
//! update rules (`torch.optim.Adam`, `torch.optim.RMSprop`, default options unless set).
//!
//! candle-nn's `AdamW` keeps its moments private (no resume) and decays weights by default;
//! neither fits a GAN recipe written for PyTorch's Adam, hence these.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// `[optim.<network>]` in a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimSpec {
    /// Adam (Kingma & Ba 2015).
    Adam(AdamConfig),
    /// RMSProp (Tieleman & Hinton 2012), as used by WGAN.
    Rmsprop(RmsPropConfig),
}

impl OptimSpec {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimSpec::Adam(c) => c.lr,
            OptimSpec::Rmsprop(c) => c.lr,
        }
    }
}

/// Adam options (PyTorch names and defaults; DCGAN uses lr 2e-4, β1 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    #[serde(default = "d::beta1")]
    pub beta1: f64,
    /// Decay of the second moment.
    #[serde(default = "d::beta2")]
    pub beta2: f64,
    /// Added to the denominator.
    #[serde(default = "d::eps")]
    pub eps: f64,
    /// L2 penalty added to the gradient (PyTorch `weight_decay`; 0 = none).
    #[serde(default)]
    pub weight_decay: f64,
}

/// RMSProp options (PyTorch names and defaults; WGAN uses lr 5e-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmsPropConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the running mean of squared gradients.
    #[serde(default = "d::alpha")]
    pub alpha: f64,
    /// Added to the denominator.
    #[serde(default = "d::eps")]
    pub eps: f64,
    /// Momentum (0 = none).
    #[serde(default)]
    pub momentum: f64,
    /// L2 penalty added to the gradient.
    #[serde(default)]
    pub weight_decay: f64,
}

mod d {
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.999
    }
    pub fn eps() -> f64 {
        1e-8
    }
    pub fn alpha() -> f64 {
        0.99
    }
}

struct ParamState {
    name: String,
    var: Var,
    /// Adam: [exp_avg, exp_avg_sq]; RMSProp: [square_avg] or [square_avg, momentum_buffer].
    buffers: Vec<Tensor>,
    /// Updates applied to this parameter (PyTorch keeps one per parameter).
    step: u64,
}

/// One optimiser over one network's trainable parameters.
pub struct Optimizer {
    spec: OptimSpec,
    params: Vec<ParamState>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Optimizer({:?}, {} params)",
            self.spec,
            self.params.len()
        )
    }
}

impl Optimizer {
    /// An optimiser over `params` (name, variable), with zeroed state.
    pub fn new(spec: OptimSpec, params: Vec<(String, Var)>) -> Result<Self> {
        let bad = |m: String| Err(TrainError::Run(format!("optimiser {spec:?}: {m}")));
        match &spec {
            OptimSpec::Adam(c) => {
                if c.lr.is_nan()
                    || c.lr <= 0.0
                    || !(0.0..1.0).contains(&c.beta1)
                    || !(0.0..1.0).contains(&c.beta2)
                    || c.eps.is_nan()
                    || c.eps <= 0.0
                {
                    return bad("need lr > 0, 0 ≤ beta1, beta2 < 1, eps > 0".into());
                }
            }
            OptimSpec::Rmsprop(c) => {
                if c.lr.is_nan()
                    || c.lr <= 0.0
                    || !(0.0..1.0).contains(&c.alpha)
                    || c.eps.is_nan()
                    || c.eps <= 0.0
                    || c.momentum < 0.0
                {
                    return bad("need lr > 0, 0 ≤ alpha < 1, eps > 0, momentum ≥ 0".into());
                }
            }
        }
        let n_buffers = match &spec {
            OptimSpec::Adam(_) => 2,
            OptimSpec::Rmsprop(c) if c.momentum > 0.0 => 2,
            OptimSpec::Rmsprop(_) => 1,
        };
        let params = params
            .into_iter()
            .map(|(name, var)| {
                let buffers = (0..n_buffers)
                    .map(|_| var.as_tensor().zeros_like())
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(ParamState {
                    name,
                    var,
                    buffers,
                    step: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { spec, params })
    }

    /// The options it was built with.
    pub fn spec(&self) -> &OptimSpec {
        &self.spec
    }

    /// Changes the learning rate (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        match &mut self.spec {
            OptimSpec::Adam(c) => c.lr = lr,
            OptimSpec::Rmsprop(c) => c.lr = lr,
        }
    }

    /// Applies one update from `grads`; parameters without a gradient are left alone (as PyTorch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for p in self.params.iter_mut() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            // A variable's gradient can still carry an autograd graph (candle detaches only the
            // gradients of intermediate nodes); state built from it would chain every step's graph
            // to the next and grow without bound. The optimiser's arithmetic is never differentiated.
            let g = &g.detach();
            let theta = &p.var.as_tensor().detach();
            p.step += 1;
            match &self.spec {
                OptimSpec::Adam(c) => {
                    let g = if c.weight_decay != 0.0 {
                        (g + (theta * c.weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let t = p.step as i32;
                    let bc1 = 1.0 - c.beta1.powi(t);
                    let bc2 = 1.0 - c.beta2.powi(t);
                    // CPU: the same arithmetic fused and in place (easel_nn::kernels::optim).
                    let fused = easel_nn::kernels::optim::AdamStep {
                        beta1: c.beta1,
                        beta2: c.beta2,
                        eps: c.eps,
                        step_size: c.lr / bc1,
                        bc2_sqrt: bc2.sqrt(),
                    };
                    let name = &p.name;
                    if easel_nn::kernels::optim::adam_update(
                        p.var.as_tensor(),
                        &p.buffers[0],
                        &p.buffers[1],
                        &g,
                        fused,
                    )
                    .map_err(|e| TrainError::Run(format!("{name}: {e}")))?
                    {
                        continue;
                    }
                    let m = ((&p.buffers[0] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    let v = ((&p.buffers[1] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    // The fused path's overflow check, as one reduction (a device sync per
                    // parameter; this path runs on GPUs, where the fused kernel does not).
                    let vmax = v.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    if vmax.is_infinite() {
                        return Err(TrainError::Run(format!(
                            "{name}: {}",
                            easel_nn::kernels::optim::overflow_error()
                        )));
                    }
                    // θ ← θ − (lr / bc1) · m / (√v / √bc2 + ε)
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let update = (m.div(&denom)? * (c.lr / bc1))?;
                    p.var.set(&theta.sub(&update)?)?;
                    p.buffers = vec![m, v];
                }
                OptimSpec::Rmsprop(c) => {
                    let g = if c.weight_decay != 0.0 {
                        (g + (theta * c.weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let sq = ((&p.buffers[0] * c.alpha)? + (g.sqr()? * (1.0 - c.alpha))?)?;
                    let scaled = g.div(&(sq.sqrt()? + c.eps)?)?;
                    if c.momentum > 0.0 {
                        let buf = ((&p.buffers[1] * c.momentum)? + scaled)?;
                        p.var.set(&theta.sub(&(&buf * c.lr)?)?)?;
                        p.buffers = vec![sq, buf];
                    } else {
                        p.var.set(&theta.sub(&(scaled * c.lr)?)?)?;
                        p.buffers = vec![sq];
                    }
                }
            }
        }
        Ok(())
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        match &self.spec {
            OptimSpec::Adam(_) => &["exp_avg", "exp_avg_sq"],
            OptimSpec::Rmsprop(c) if c.momentum > 0.0 => &["square_avg", "momentum_buffer"],
            OptimSpec::Rmsprop(_) => &["square_avg"],
        }
    }

    /// The state as named tensors: `{prefix}.{param}.{exp_avg|exp_avg_sq|square_avg|…|step}`.
    pub fn state_tensors(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let names = self.buffer_names();
        let mut out = Vec::new();
        for p in &self.params {
            for (b, n) in p.buffers.iter().zip(names) {
                out.push((format!("{prefix}.{}.{n}", p.name), b.clone()));
            }
            let step = Tensor::new(p.step as f64, &candle_core::Device::Cpu)?;
            out.push((format!("{prefix}.{}.step", p.name), step));
        }
        Ok(out)
    }

    /// Restores what [`Optimizer::state_tensors`] saved; every entry must be present with the right shape.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        let names = self.buffer_names();
        for p in self.params.iter_mut() {
            let mut buffers = Vec::with_capacity(names.len());
            for n in names {
                let key = format!("{prefix}.{}.{n}", p.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    TrainError::Run(format!("optimiser state has no tensor {key}"))
                })?;
                if t.dims() != p.var.dims() {
                    return Err(TrainError::Run(format!(
                        "optimiser state {key}: expected shape {:?}, found {:?}",
                        p.var.dims(),
                        t.dims()
                    )));
                }
                buffers.push(t.to_dtype(p.var.dtype())?.to_device(p.var.device())?);
            }
            let key = format!("{prefix}.{}.step", p.name);
            let step = tensors
                .get(&key)
                .ok_or_else(|| TrainError::Run(format!("optimiser state has no tensor {key}")))?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            p.buffers = buffers;
            p.step = step as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn adam(lr: f64) -> OptimSpec {
        OptimSpec::Adam(AdamConfig {
            lr,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        })
    }

    /// Minimises sum((θ − 3)²) for a few steps; returns θ after each.
    fn run(spec: OptimSpec, steps: usize) -> Vec<f64> {
        let v = Var::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(spec, vec![("w".into(), v.clone())]).unwrap();
        let mut out = vec![];
        for _ in 0..steps {
            let loss = (v.as_tensor() - 3.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            out.push(v.as_tensor().to_vec1::<f64>().unwrap()[0]);
        }
        out
    }

    #[test]
    fn adam_matches_pytorch_update_rule() {
        // Hand-evaluated torch.optim.Adam(lr=0.1, betas=(0.5, 0.999)) on θ = 0, grad = 2(θ − 3):
        // step 1: g = −6, m = −3, v = 0.036, m̂ = −6, v̂ = 36 → θ = 0.1·6/(6 + 1e-8) = 0.1
        // step 2: g = −5.8, m = −4.4, v = 0.069604, bc1 = 0.75, bc2 = 0.001999
        //         θ = 0.1 + 0.1·(4.4/0.75)/(√(0.069604/0.001999) + 1e-8)
        let got = run(adam(0.1), 2);
        assert!((got[0] - 0.1).abs() < 1e-9, "{got:?}");
        let bc2: f64 = 1.0 - 0.999f64.powi(2);
        let want = 0.1 + 0.1 * (4.4 / 0.75) / ((0.069604f64 / bc2).sqrt() + 1e-8);
        assert!((got[1] - want).abs() < 1e-9, "{} vs {want}", got[1]);
    }

    /// A gradient whose square overflows f32 would make Adam's update of that weight 0 from then
    /// on (m / √∞), silently; both paths stop with an error naming the parameter instead.
    #[test]
    fn adam_second_moment_overflow_is_an_error() {
        for fused in [true, false] {
            let v = Var::new(&[[0.5f32], [1.0]], &Device::Cpu).unwrap();
            let mut opt =
                Optimizer::new(adam(0.1), vec![("main.0.weight".into(), v.clone())]).unwrap();
            // ∂(c·θ)/∂θ = c = 1e22: (1 − β₂)·g² = 1e41 > f32::MAX (3.4e38).
            let scale = Tensor::new(&[[1e22f32], [1.0]], &Device::Cpu).unwrap();
            let loss = (v.as_tensor() * &scale).unwrap().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            if !fused {
                // The same gradient, non-contiguous (column 0 of [[1e22, 0], [1, 0]]): the fused
                // kernel declines it and the generic tensor-op path (GPUs') runs.
                let g = Tensor::new(&[[1e22f32, 0.0], [1.0, 0.0]], &Device::Cpu)
                    .unwrap()
                    .narrow(1, 0, 1)
                    .unwrap();
                assert!(!g.is_contiguous());
                grads.insert(v.as_tensor(), g);
            }
            let e = opt.step(&grads).unwrap_err().to_string();
            assert!(
                e.contains("main.0.weight") && e.contains("overflowed"),
                "fused {fused}: {e}"
            );
            // A large but representable gradient is fine.
            let v2 = Var::new(&[0.5f32], &Device::Cpu).unwrap();
            let mut opt2 = Optimizer::new(adam(0.1), vec![("w".into(), v2.clone())]).unwrap();
            let loss = (v2.as_tensor() * 1e18).unwrap().sum_all().unwrap();
            opt2.step(&loss.backward().unwrap()).unwrap();
        }
    }

    #[test]
    fn rmsprop_matches_pytorch_update_rule() {
        // torch.optim.RMSprop(lr=0.01, alpha=0.99): sq = 0.01·36 = 0.36, θ = 0 + 0.01·6/(0.6 + 1e-8)
        let spec = OptimSpec::Rmsprop(RmsPropConfig {
            lr: 0.01,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            weight_decay: 0.0,
        });
        let got = run(spec, 1);
        assert!(
            (got[0] - 0.01 * 6.0 / (0.6 + 1e-8)).abs() < 1e-12,
            "{got:?}"
        );
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let spec = adam(0.05);
        let straight = run(spec.clone(), 6);
        // 3 steps, save, rebuild a fresh optimiser on a fresh var, load, 3 more.
        let v = Var::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(spec.clone(), vec![("w".into(), v.clone())]).unwrap();
        let loss = |v: &Var| {
            (v.as_tensor() - 3.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        for _ in 0..3 {
            opt.step(&loss(&v).backward().unwrap()).unwrap();
        }
        let state: HashMap<String, Tensor> = opt.state_tensors("g").unwrap().into_iter().collect();
        assert!(state.contains_key("g.w.exp_avg") && state.contains_key("g.w.step"));
        let v2 = Var::new(
            v.as_tensor().to_vec1::<f64>().unwrap().as_slice(),
            &Device::Cpu,
        )
        .unwrap();
        let mut opt2 = Optimizer::new(spec, vec![("w".into(), v2.clone())]).unwrap();
        opt2.load_state(&state, "g").unwrap();
        let mut resumed = vec![];
        for _ in 0..3 {
            opt2.step(&loss(&v2).backward().unwrap()).unwrap();
            resumed.push(v2.as_tensor().to_vec1::<f64>().unwrap()[0]);
        }
        assert_eq!(&straight[3..], resumed.as_slice());
        // Missing state is an error naming the tensor.
        let mut opt3 = Optimizer::new(adam(0.1), vec![("q".into(), v2)]).unwrap();
        let e = opt3.load_state(&state, "g").unwrap_err().to_string();
        assert!(e.contains("g.q.exp_avg"), "{e}");
    }

    #[test]
    fn state_never_holds_an_autograd_graph() {
        // d/dw sum(w·u) = u, and because u is a variable candle returns that gradient with its
        // graph attached. Moments built from it must not keep it (or previous steps) alive.
        let w = Var::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let u = Var::new(&[3.0f64, 4.0], &Device::Cpu).unwrap();
        let specs = [
            adam(0.1),
            OptimSpec::Rmsprop(RmsPropConfig {
                lr: 0.1,
                alpha: 0.99,
                eps: 1e-8,
                momentum: 0.9,
                weight_decay: 0.1,
            }),
        ];
        for spec in specs {
            let mut opt = Optimizer::new(spec, vec![("w".into(), w.clone())]).unwrap();
            for _ in 0..3 {
                let loss = w.as_tensor().mul(u.as_tensor()).unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                assert!(
                    grads.get(w.as_tensor()).unwrap().track_op(),
                    "premise: the gradient carries a graph"
                );
                opt.step(&grads).unwrap();
            }
            for (name, t) in opt.state_tensors("x").unwrap() {
                assert!(!t.track_op(), "{name} keeps an autograd graph");
            }
        }
    }

    #[test]
    fn parameters_without_gradients_are_untouched() {
        let a = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(
            adam(0.1),
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        )
        .unwrap();
        let loss = a.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        assert_eq!(b.as_tensor().to_vec1::<f64>().unwrap(), [1.0]);
        assert!(a.as_tensor().to_vec1::<f64>().unwrap()[0] < 1.0);
    }
}
