//! Tensor ops used by easel's layers, gathered in one place.
//!
//! Every function here is device-generic: it is written with candle's own ops, so CUDA and Metal
//! builds run it unchanged. Faster CPU kernels (a later issue) plug in here, dispatched on
//! `Tensor::device()`, without any change to model code.

use candle_core::{Result, Tensor};

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// `x` where `x ≥ 0`, `slope·x` elsewhere (PyTorch `nn.LeakyReLU(slope)`).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    // max(x, slope·x) equals LeakyReLU for 0 ≤ slope ≤ 1 and needs two ops instead of four.
    if (0.0..=1.0).contains(&slope) {
        x.maximum(&x.affine(slope, 0.)?)
    } else {
        candle_nn::ops::leaky_relu(x, slope)
    }
}

/// `tanh(x)`.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh()
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn leaky_relu_values_and_gradient() {
        let x = Var::new(&[-2.0f32, -0.5, 0.5, 3.0], &Device::Cpu).unwrap();
        let y = leaky_relu(x.as_tensor(), 0.2).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [-0.4, -0.1, 0.5, 3.0]);
        // d/dx sum(y) = slope for x < 0, 1 for x > 0.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gx, [0.2, 0.2, 1.0, 1.0]);
    }
}
