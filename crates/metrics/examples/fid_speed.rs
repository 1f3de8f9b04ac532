//! Times the FID pieces at Inception's dimension: statistics of 10 000 × 2048 features and the
//! Fréchet distance (two symmetric eigendecompositions of 2048 × 2048).
//!
//! `cargo run --release -p easel-metrics --example fid_speed [DIM] [N]`

use std::time::Instant;

use candle_core::{Device, Tensor};
use easel_metrics::FeatureStats;

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let dim = args.first().copied().unwrap_or(2048);
    let n = args.get(1).copied().unwrap_or(10_000);
    // Non-negative, correlated features like pool3: relu(z·A) for a random A.
    let dev = Device::Cpu;
    let a = (Tensor::randn(0f32, 1., (dim, dim), &dev)? / (dim as f64).sqrt())?;
    let x1 = Tensor::randn(0f32, 1., (n, dim), &dev)?
        .matmul(&a)?
        .relu()?;
    let x2 = (Tensor::randn(0f32, 1., (n, dim), &dev)?.matmul(&a)? + 0.05)?.relu()?;
    let t = Instant::now();
    let s1 = FeatureStats::from_features(&x1, "bench", "x1")?;
    let s2 = FeatureStats::from_features(&x2, "bench", "x2")?;
    println!(
        "statistics of 2 × {n} × {dim}: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let fid = s1.frechet_distance(&s2)?;
    println!(
        "Fréchet distance ({dim}-d): {fid:.6} in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
