//! Micro-benchmark of easel's CPU convolution kernels against candle's, on the DCGAN layer
//! shapes (pytorch/examples, ngf = ndf = 64, batch 64).
//!
//! ```text
//! cargo run --release -p easel-nn --example conv_bench -- [--size 64|32] [--channels 3]
//!     [--batch 64] [--reps 5] [--no-candle] [--only D2]
//! cargo run --release -p easel-nn --example conv_bench -- --sgemm
//! ```
//!
//! `--sgemm` instead measures the `gemm` crate's own rate (f32, GFLOP/s) on a large square product
//! and on products of DCGAN-layer shapes, on one thread and on rayon's pool: the peak the
//! convolution kernels are measured against. `bench/torch_reference.py --sgemm` gives PyTorch's
//! (MKL) rates on the same shapes.
//!
//! For every layer and pass (forward, input gradient, weight gradient) it prints the median time
//! of `reps` runs after one warm-up and the rate in GFLOP/s (2·N·O·C·KH·KW·OH·OW per pass).
//! Threads: rayon's global pool (`RAYON_NUM_THREADS`, default one per core). The machine may be
//! shared: compare medians of alternated runs and check `/proc/loadavg`.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use easel_nn::kernels::conv::{self, Conv2dParams, ConvTranspose2dParams};

struct Args {
    size: usize,
    channels: usize,
    batch: usize,
    reps: usize,
    candle: bool,
    only: Option<String>,
    sgemm: bool,
}

fn parse() -> Args {
    let mut a = Args {
        size: 64,
        channels: 3,
        batch: 64,
        reps: 5,
        candle: true,
        only: None,
        sgemm: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = || {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .expect("a number")
        };
        match argv[i].as_str() {
            "--size" => a.size = val(),
            "--channels" => a.channels = val(),
            "--batch" => a.batch = val(),
            "--reps" => a.reps = val(),
            "--only" => a.only = argv.get(i + 1).cloned(),
            "--no-candle" => {
                a.candle = false;
                i -= 1;
            }
            "--sgemm" => {
                a.sgemm = true;
                i -= 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// CPU time (seconds) used so far by all of this process's threads (`/proc/self/task/*/schedstat`,
/// nanoseconds), so that rates can also be given per CPU-second, which another job on a shared
/// machine disturbs much less than wall time.
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

/// (median wall seconds, mean CPU seconds) of `reps` runs of `f` after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<(f64, f64)> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    let cpu0 = cpu_seconds();
    for _ in 0..reps {
        let t = Instant::now();
        let out = f()?;
        v.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    let cpu = (cpu_seconds() - cpu0) / reps as f64;
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], cpu))
}

fn randn(dims: &[usize]) -> Result<Tensor> {
    Tensor::randn(0f32, 1f32, dims, &Device::Cpu)
}

/// One convolution as seen from its conv2d side: x [n, c, h, h] ⋆ w [o, c, k, k] → y.
struct Layer {
    name: String,
    transposed: bool,
    n: usize,
    c: usize,
    h: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Layer {
    fn oh(&self) -> usize {
        (self.h + 2 * self.p - self.k) / self.s + 1
    }
    fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.c * self.k * self.k * self.oh() * self.oh()) as f64
    }
}

/// `(m, n, k)` of the products `--sgemm` times: a large square one, then DCGAN-layer shapes
/// (forward `O × cols × K` of D2/D3 at 32×32, a data-gradient `K × cols × O`).
const SGEMM_SHAPES: [(usize, usize, usize); 4] = [
    (2048, 2048, 2048),
    (128, 256, 1024),
    (256, 256, 2048),
    (2048, 256, 256),
];

/// Prints the `gemm` crate's f32 rate on [`SGEMM_SHAPES`], one thread and rayon's pool.
fn sgemm(reps: usize) {
    let threads = rayon::current_num_threads();
    println!("sgemm | gemm crate f32, row-major | median of {reps} | GFLOP/s");
    for (m, n, k) in SGEMM_SHAPES {
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let mut rate = |par: gemm::Parallelism| {
            let mut run = || {
                // SAFETY: a, b, c are m×k, k×n and m×n row-major buffers of those sizes.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            };
            run();
            // Enough repetitions for ≈ 20 GFLOP per measurement.
            let inner = (1e10 / (m * n * k) as f64).ceil() as usize;
            let mut v: Vec<f64> = (0..reps.max(1))
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..inner {
                        run();
                    }
                    t.elapsed().as_secs_f64() / inner as f64
                })
                .collect();
            v.sort_by(f64::total_cmp);
            2.0 * (m * n * k) as f64 / v[v.len() / 2] / 1e9
        };
        let one = rate(gemm::Parallelism::None);
        let all = rate(gemm::Parallelism::Rayon(threads));
        println!("  {m:>4} × {n:>4} × {k:>4}   1 thread {one:6.1}   {threads} threads {all:6.1}");
    }
}

fn main() -> Result<()> {
    let a = parse();
    if a.sgemm {
        sgemm(a.reps);
        return Ok(());
    }
    let (n, nz, nf) = (a.batch, 100, 64);
    let stages = (a.size / 4).trailing_zeros() as usize; // 64 → 4, 32 → 3
    let mut layers = Vec::new();
    // Discriminator: C → nf (S → S/2), then doubling channels, halving size, then 1×1 logit.
    let (mut c, mut s) = (a.channels, a.size);
    let mut o = nf;
    for i in 0..stages {
        layers.push(Layer {
            name: format!("D{} conv {c}→{o} {s}²→{}²", i + 1, s / 2),
            transposed: false,
            n,
            c,
            h: s,
            o,
            k: 4,
            s: 2,
            p: 1,
        });
        c = o;
        o *= 2;
        s /= 2;
    }
    layers.push(Layer {
        name: format!("D{} conv {c}→1 4²→1²", stages + 1),
        transposed: false,
        n,
        c,
        h: 4,
        o: 1,
        k: 4,
        s: 1,
        p: 0,
    });
    // Generator: nz → nf·2^(stages−1) (1 → 4), then halving channels, doubling size, then → C.
    let mut ci = nf << (stages - 1);
    layers.push(Layer {
        name: format!("G1 convT {nz}→{ci} 1²→4²"),
        transposed: true,
        n,
        c: ci,
        h: 4,
        o: nz,
        k: 4,
        s: 1,
        p: 0,
    });
    let mut s = 4;
    for i in 1..=stages {
        let co = if i == stages { a.channels } else { ci / 2 };
        layers.push(Layer {
            name: format!("G{} convT {ci}→{co} {s}²→{}²", i + 1, s * 2),
            transposed: true,
            n,
            c: co,
            h: s * 2,
            o: ci,
            k: 4,
            s: 2,
            p: 1,
        });
        ci = co;
        s *= 2;
    }

    println!(
        "conv_bench | {}×{}×{} DCGAN, batch {n} | rayon threads {} | median of {} | loadavg {}",
        a.size,
        a.size,
        a.channels,
        rayon::current_num_threads(),
        a.reps,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<28} {:>7} | {:>9} {:>7} {:>8} | {:>9} {:>7} {:>8} | {:>6}",
        "layer",
        "GFLOP",
        "easel ms",
        "GFLOP/s",
        "/CPU-s",
        "candle ms",
        "GFLOP/s",
        "/CPU-s",
        "ratio"
    );
    // wall easel, wall candle, GFLOP, CPU easel, CPU candle
    let mut totals = [0.0f64; 5];
    for l in &layers {
        if a.only
            .as_ref()
            .is_some_and(|o| !l.name.starts_with(o.as_str()))
        {
            continue;
        }
        let oh = l.oh();
        // Conv2d side: x [n, c, h, h], w [o, c, k, k], y [n, o, oh, oh]. A transposed layer's
        // input is y-shaped, its weight w ([in = o, out = c, k, k], PyTorch's layout), its
        // output x-shaped.
        let x = randn(&[l.n, l.c, l.h, l.h])?;
        let w = (randn(&[l.o, l.c, l.k, l.k])? * 0.02)?;
        let y = randn(&[l.n, l.o, oh, oh])?;
        let cp = Conv2dParams::new(l.s, l.p);
        let tp = ConvTranspose2dParams::new(l.s, l.p);
        let op = l.h + 2 * l.p - ((oh - 1) * l.s + l.k); // output padding reproducing h
        type Pass<'a> = (
            &'a str,
            Box<dyn Fn() -> Result<Tensor> + 'a>,
            Box<dyn Fn() -> Result<Tensor> + 'a>,
        );
        let wgrad_candle = |x: &Tensor, gy: &Tensor| -> Result<Tensor> {
            // What candle's conv2d backward runs for the kernel gradient.
            let g = x
                .transpose(0, 1)?
                .conv2d(&gy.transpose(0, 1)?, l.p, 1, l.s, 1)?
                .transpose(0, 1)?;
            g.narrow(2, 0, l.k)?.narrow(3, 0, l.k)
        };
        let passes: Vec<Pass> = if !l.transposed {
            vec![
                (
                    "forward",
                    Box::new(|| conv::conv2d(&x, &w, cp)),
                    Box::new(|| x.conv2d(&w, l.p, l.s, 1, 1)),
                ),
                (
                    "input grad",
                    Box::new(|| conv::conv2d_input_grad(&y, &w, (l.h, l.h), cp)),
                    Box::new(|| y.conv_transpose2d(&w, l.p, op, l.s, 1)),
                ),
                (
                    "weight grad",
                    Box::new(|| conv::conv2d_weight_grad(&x, &y, (l.k, l.k), cp)),
                    Box::new(|| wgrad_candle(&x, &y)),
                ),
            ]
        } else {
            vec![
                (
                    "forward",
                    Box::new(|| conv::conv_transpose2d(&y, &w, tp)),
                    Box::new(|| y.conv_transpose2d(&w, l.p, 0, l.s, 1)),
                ),
                (
                    "input grad",
                    Box::new(|| conv::conv2d(&x, &w, cp)),
                    Box::new(|| x.conv2d(&w, l.p, l.s, 1, 1)),
                ),
                (
                    "weight grad",
                    // convT weight gradient = conv2d weight gradient with (x = ∂out, ȳ = input).
                    Box::new(|| conv::conv2d_weight_grad(&x, &y, (l.k, l.k), cp)),
                    Box::new(|| {
                        let g = x
                            .transpose(0, 1)?
                            .conv2d(&y.transpose(0, 1)?, l.p, 1, l.s, 1)?
                            .transpose(0, 1)?;
                        g.narrow(2, 0, l.k)?.narrow(3, 0, l.k)
                    }),
                ),
            ]
        };
        let gf = l.flops() / 1e9;
        for (pi, (pass, ours, theirs)) in passes.iter().enumerate() {
            if a.candle {
                // Same result (a guard against benchmarking the wrong thing).
                let (u, v) = (ours()?, theirs()?);
                let err = (u.to_dtype(DType::F64)? - v.to_dtype(DType::F64)?)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f64>()?;
                let scale = v
                    .abs()?
                    .max_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                assert!(
                    err <= 1e-3 * (1.0 + scale),
                    "{} {pass}: results differ by {err}",
                    l.name
                );
            }
            let (t_ours, cpu_ours) = time(a.reps, ours)?;
            totals[0] += t_ours;
            totals[2] += gf;
            totals[3] += cpu_ours;
            let (tc, rc, cc, ratio) = if a.candle {
                let (t, cpu) = time(a.reps.min(3), theirs)?;
                totals[1] += t;
                totals[4] += cpu;
                (
                    format!("{:9.2}", t * 1e3),
                    format!("{:7.1}", gf / t),
                    format!("{:8.1}", gf / cpu),
                    format!("{:5.1}×", t / t_ours),
                )
            } else {
                ("-".into(), "-".into(), "-".into(), "-".into())
            };
            if pi == 0 {
                println!("{}", l.name);
            }
            println!(
                "  {pass:<26} {gf:>7.3} | {:9.2} {:7.1} {:8.1} | {tc:>9} {rc:>7} {cc:>8} | {ratio:>6}",
                t_ours * 1e3,
                gf / t_ours,
                gf / cpu_ours,
            );
        }
    }
    println!(
        "all passes: {:.1} GFLOP | easel {:.1} ms = {:.1} GFLOP/s, {:.1} per CPU-s{}",
        totals[2],
        totals[0] * 1e3,
        totals[2] / totals[0],
        totals[2] / totals[3],
        if a.candle {
            format!(
                " | candle {:.1} ms = {:.1} GFLOP/s, {:.1} per CPU-s",
                totals[1] * 1e3,
                totals[2] / totals[1],
                totals[2] / totals[4]
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
