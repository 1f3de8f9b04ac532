//! Helpers for tests across the workspace.

use candle_core::{Device, Result, Tensor};

/// Deterministic values in [-1, 1) of shape `dims` (f64, CPU), from an LCG keyed by `seed`.
/// candle's CPU RNG cannot be seeded, so finite-difference tests use this: the same inputs on
/// every run, and a ReLU kink is either always within the step or never.
pub fn uniform(dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uniform_is_deterministic_and_in_range() {
        let a = super::uniform(&[3, 50], 7).unwrap().flatten_all().unwrap();
        let a = a.to_vec1::<f64>().unwrap();
        let b = super::uniform(&[150], 7).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let c = super::uniform(&[150], 8).unwrap().to_vec1::<f64>().unwrap();
        assert_ne!(a, c);
        // Spread over the interval, not stuck in a corner.
        let mean = a.iter().sum::<f64>() / 150.0;
        assert!(mean.abs() < 0.2, "{mean}");
    }
}
