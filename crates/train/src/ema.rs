//! An exponential moving average of a network's weights (Polyak averaging of a GAN generator:
//! Yazici et al., "The Unusual Effectiveness of Averaging in GAN Training", ICLR 2019; Karras et
//! al., "Progressive Growing of GANs", ICLR 2018).
//!
//! After generator update `t` (counting from 0) every trainable tensor of the average moves
//! towards the trained one: `ema ← β·ema + (1 − β)·θ` with `β = min(decay, (1 + t) / (10 + t))`,
//! the warm-up of TensorFlow's `ExponentialMovingAverage(decay, num_updates)`, so the first
//! updates follow the fast-changing weights closely. Buffers (batch-norm running statistics) are
//! not averaged: they are recomputed for the averaged weights
//! ([`easel_nn::recompute_batch_norm_stats`]) before the average is used or saved.

use std::collections::HashMap;

use candle_core::Tensor;
use easel_nn::ParamStore;

use crate::error::{Result, TrainError};

/// β of update `t` (from 0) for a target `decay`.
pub fn beta(decay: f64, t: u64) -> f64 {
    decay.min((1.0 + t as f64) / (10.0 + t as f64))
}

/// `ema ← β·ema + (1 − β)·model` for every trainable tensor, matched by name.
pub fn update(ema: &ParamStore, model: &ParamStore, beta: f64) -> Result<()> {
    let src: HashMap<String, Tensor> = model
        .trainable()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    for (name, var) in ema.trainable() {
        let p = src.get(&name).ok_or_else(|| {
            TrainError::Run(format!(
                "weight average: the trained network has no tensor {name}"
            ))
        })?;
        let next = ((var.as_tensor() * beta)? + (p * (1.0 - beta))?)?;
        var.set(&next)?;
    }
    Ok(())
}

/// Copies every tensor of `src` (weights and buffers) into `dst`.
pub fn copy(dst: &ParamStore, src: &ParamStore) -> Result<()> {
    let t: HashMap<String, Tensor> = src
        .tensors()
        .into_iter()
        .map(|(n, t)| t.copy().map(|t| (n, t)))
        .collect::<candle_core::Result<_>>()?;
    Ok(dst.load_tensors(&t)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Init;

    #[test]
    fn warm_up_then_decay() {
        // (1 + t) / (10 + t): 0.1 at t = 0, 0.5 at t = 8, 0.9 at t = 80; capped by the decay.
        assert!((beta(0.999, 0) - 0.1).abs() < 1e-15);
        assert!((beta(0.999, 8) - 0.5).abs() < 1e-15);
        assert!((beta(0.999, 80) - 0.9).abs() < 1e-15);
        assert_eq!(beta(0.999, 100_000), 0.999);
        assert_eq!(beta(0.0, 5), 0.0);
    }

    #[test]
    fn update_is_the_weighted_mean_by_hand() {
        let dev = Device::Cpu;
        let (model, ema) = (ParamStore::new(&dev, 0), ParamStore::new(&dev, 1));
        let w = model
            .var_builder()
            .get_with_hints(2, "w", Init::Const(0.0))
            .unwrap();
        let _ = model
            .var_builder()
            .get_with_hints(2, "bn.running_mean", Init::Const(5.0))
            .unwrap();
        let we = ema
            .var_builder()
            .get_with_hints(2, "w", Init::Const(0.0))
            .unwrap();
        let rm = ema
            .var_builder()
            .get_with_hints(2, "bn.running_mean", Init::Const(-3.0))
            .unwrap();
        let set = |store: &ParamStore, v: [f32; 2]| {
            let var = store.trainable().remove(0).1;
            var.set(&Tensor::new(&v, &dev).unwrap()).unwrap();
        };
        set(&ema, [1.0, 2.0]);
        set(&model, [3.0, -2.0]);
        // Step t = 0: β = 0.1 → 0.1·[1, 2] + 0.9·[3, −2] = [2.8, −1.6].
        update(&ema, &model, beta(0.999, 0)).unwrap();
        let got = ema.tensors()["w"].to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 2.8).abs() < 1e-6 && (got[1] + 1.6).abs() < 1e-6,
            "{got:?}"
        );
        // t = 8: β = 0.5 with the model at [0, 0] → [1.4, −0.8].
        set(&model, [0.0, 0.0]);
        update(&ema, &model, beta(0.999, 8)).unwrap();
        let got = ema.tensors()["w"].to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 1.4).abs() < 1e-6 && (got[1] + 0.8).abs() < 1e-6,
            "{got:?}"
        );
        // Buffers are never averaged.
        assert_eq!(
            ema.tensors()["bn.running_mean"].to_vec1::<f32>().unwrap(),
            [-3.0, -3.0]
        );
        let _ = (w, we, rm);
        // copy() takes everything, buffers included.
        copy(&ema, &model).unwrap();
        assert_eq!(
            ema.tensors()["bn.running_mean"].to_vec1::<f32>().unwrap(),
            [5.0, 5.0]
        );
        assert_eq!(ema.tensors()["w"].to_vec1::<f32>().unwrap(), [0.0, 0.0]);
    }
}
