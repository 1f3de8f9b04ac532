//! Stylising one image with pytorch/examples' `TransformerNet`: time per convolution layer (at
//! the shapes a 512×512 input gives) and for the whole forward, batch 1, no gradients.
//!
//! ```text
//! cargo run --release -p easel-models --example style_bench -- [--size 512] [--reps 5]
//!     [--whole-only]
//! ```
//!
//! Prints the median of `reps` runs after one warm-up and GFLOP/s (2·O·C·KH·KW·OH·OW). The
//! PyTorch counterpart is `bench/style_layers.py` (same layers, same shapes, `torch.no_grad()`).
//! Threads: rayon's global pool (`RAYON_NUM_THREADS`). Allocator: mimalloc, freed memory kept
//! mapped, as the `easel` binary runs it.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use easel_models::style::{Config, TransformerNet};
use easel_nn::kernels::conv::{self, Conv2dParams};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let out = f()?;
        v.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(median(v))
}

fn main() -> Result<()> {
    // SAFETY: sets mimalloc's purge delay (option 15) to "never", as `easel`'s main does.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: usize| -> usize {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (size, reps) = (arg("--size", 512), arg("--reps", 5));
    let dev = Device::Cpu;
    println!(
        "style_bench | {size}×{size} | rayon threads {} | median of {reps} | loadavg {}",
        rayon::current_num_threads(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // (name, in, out, kernel, stride, input side before padding)
    let layers = [
        ("conv1 9×9", 3, 32, 9, 1, size),
        ("conv2 3×3 s2", 32, 64, 3, 2, size),
        ("conv3 3×3 s2", 64, 128, 3, 2, size / 2),
        ("res conv 3×3 (×10)", 128, 128, 3, 1, size / 4),
        ("deconv1 3×3", 128, 64, 3, 1, size / 2),
        ("deconv2 3×3", 64, 32, 3, 1, size),
        ("deconv3 9×9", 32, 3, 9, 1, size),
    ];
    let whole_only = argv.iter().any(|a| a == "--whole-only");
    let mut total = 0.0;
    for (name, c, o, k, s, h) in layers {
        if whole_only {
            break;
        }
        // The layer sees the reflection-padded input (pad k/2) and no zero padding.
        let hp = h + 2 * (k / 2);
        let x = Tensor::randn(0f32, 1., (1, c, hp, hp), &dev)?;
        let w = Tensor::randn(0f32, 0.05, (o, c, k, k), &dev)?;
        let t = time(reps, || conv::conv2d(&x, &w, Conv2dParams::new(s, 0)))?;
        let oh = (hp - k) / s + 1;
        let flops = 2.0 * (o * c * k * k * oh * oh) as f64;
        let times = if name.starts_with("res") { 10.0 } else { 1.0 };
        total += t * times;
        println!(
            "{name:<20} {:8.1} ms {:7.1} GFLOP/s",
            t * 1e3,
            flops / t * 1e-9
        );
    }
    println!("{:<20} {:8.1} ms", "convolutions", total * 1e3);
    // Initialised weights as plain tensors (no `Var`s), as `easel stylize` loads them.
    let vm = VarMap::new();
    TransformerNet::new(
        &Config::johnson(),
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    let weights = vm
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let net = TransformerNet::new(
        &Config::johnson(),
        VarBuilder::from_tensors(weights, DType::F32, &dev),
    )?;
    let q = size / 4;
    let x = Tensor::randn(0f32, 1., (1, 128, q, q), &dev)?;
    let t = time(reps, || {
        easel_nn::layers2::reflection_pad2d(&x, (1, 1, 1, 1))
    })?;
    println!("{:<20} {:8.1} ms", "reflection pad 128ch", t * 1e3);
    let t = time(reps, || easel_nn::ops::upsample_nearest2d(&x, 2 * q, 2 * q))?;
    println!("{:<20} {:8.1} ms", "upsample ×2 128ch", t * 1e3);
    let inorm = easel_nn::InstanceNorm2d::new(
        128,
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev),
    )?;
    let t = time(reps, || {
        inorm.forward_act(&x, Some(easel_nn::ops::Activation::Relu))
    })?;
    println!("{:<20} {:8.1} ms", "inorm+relu 128ch", t * 1e3);
    let x = Tensor::rand(0f32, 255., (1, 3, size, size), &dev)?;
    let t = time(reps, || net.forward(&x))?;
    println!("{:<20} {:8.1} ms", "whole forward", t * 1e3);
    Ok(())
}
