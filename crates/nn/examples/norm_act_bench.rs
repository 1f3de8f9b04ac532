//! Times training-mode batch norm + activation (forward and backward) on the DCGAN 64×64 layer
//! shapes through `easel_nn::ops`, i.e. the CPU kernels, or candle's generic ops with
//! `EASEL_NN_GENERIC_OPS=act,norm`. Each layer is timed as forward + loss + backward minus the loss
//! alone (min of REPS runs), unfused and with the activation fused into the batch norm. Benchmark,
//! not a test:
//!
//!     cargo run --release -p easel-nn --example norm_act_bench [-- REPS]
//!     EASEL_NN_GENERIC_OPS=act,norm cargo run --release -p easel-nn --example norm_act_bench

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use easel_nn::ops;

fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?; // warm-up
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok((v[0], v[v.len() / 2]))
}

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    let generic = std::env::var("EASEL_NN_GENERIC_OPS").unwrap_or_default();
    println!(
        "batch norm + activation, forward + backward, {} | {} threads | min of {reps}",
        if generic.is_empty() || generic == "0" {
            "easel CPU kernels".to_string()
        } else {
            format!("EASEL_NN_GENERIC_OPS={generic}")
        },
        candle_core::utils::get_num_threads()
    );
    // (shape, activation, uses batch norm)
    let cases: [(&str, [usize; 4], ops::Activation, bool); 9] = [
        ("G bn+relu", [64, 512, 4, 4], ops::Activation::Relu, true),
        ("G bn+relu", [64, 256, 8, 8], ops::Activation::Relu, true),
        ("G bn+relu", [64, 128, 16, 16], ops::Activation::Relu, true),
        ("G bn+relu", [64, 64, 32, 32], ops::Activation::Relu, true),
        ("G tanh", [64, 3, 64, 64], ops::Activation::Tanh, false),
        (
            "D leaky",
            [64, 64, 32, 32],
            ops::Activation::LeakyRelu(0.2),
            false,
        ),
        (
            "D bn+leaky",
            [64, 128, 16, 16],
            ops::Activation::LeakyRelu(0.2),
            true,
        ),
        (
            "D bn+leaky",
            [64, 256, 8, 8],
            ops::Activation::LeakyRelu(0.2),
            true,
        ),
        (
            "D bn+leaky",
            [64, 512, 4, 4],
            ops::Activation::LeakyRelu(0.2),
            true,
        ),
    ];
    let (mut tf, mut tb) = (0.0, 0.0);
    for (name, d, act, bn) in cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., &d[..], &dev)?)?;
        let g = Var::from_tensor(&Tensor::ones(d[1], DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(d[1], DType::F32, &dev)?)?;
        let w = Tensor::randn(0f32, 1., &d[..], &dev)?;
        // fused = false: batch norm, then the activation; true: `batch_norm_act_train`.
        let fwd = |fused: bool| -> Result<Tensor> {
            let (x, g, b) = (x.as_tensor(), g.as_tensor(), b.as_tensor());
            match (bn, fused) {
                (false, _) => ops::activation(x, act),
                (true, false) => ops::activation(&ops::batch_norm_train(x, g, b, 1e-5)?.y, act),
                (true, true) => Ok(ops::batch_norm_act_train(x, g, b, 1e-5, Some(act))?.y),
            }
        };
        // Each variant: forward, loss Σ w·y, backward; the minimum over `reps` runs (the least
        // disturbed by other processes). The harness row (y = x) is the loss and its backward
        // alone, common to every variant.
        let run = |v: Option<bool>| -> Result<f64> {
            let (min, _) = time(reps, || {
                let y = match v {
                    None => x.as_tensor().clone(),
                    Some(fused) => fwd(fused)?,
                };
                (y * &w)?.sum_all()?.backward().map(|_| ())
            })?;
            Ok(min)
        };
        let h = run(None)?;
        let mut row = format!(
            "  {name:<11} {:<18} harness {:6.2} ms",
            format!("{d:?}"),
            h * 1e3
        );
        for fused in if bn { vec![false, true] } else { vec![false] } {
            let t = run(Some(fused))? - h;
            row += &format!(
                "  {} {:6.2} ms",
                if fused { "fused" } else { "layer" },
                t * 1e3
            );
            if fused || !bn {
                tf += t;
            }
            if !fused {
                tb += t;
            }
        }
        println!("{row}");
    }
    println!(
        "  total forward+backward beyond the harness: unfused {:7.2} ms, fused where possible {:7.2} ms",
        tb * 1e3,
        tf * 1e3
    );
    Ok(())
}
