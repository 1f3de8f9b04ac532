//! The WGAN-GP penalty's parameter gradients (a gradient of a gradient) against central finite
//! differences, on a critic built from the real layer types (strided convolutions and LeakyReLU,
//! no batch norm, as WGAN-GP requires), in f64.

use candle_core::{DType, Device, Tensor};
use easel_models::dcgan::{Config, DNorm, Discriminator};
use easel_nn::ParamStore;
use easel_train::double_backward;
use easel_train::steps::gan::gradient_penalty;

fn critic() -> (Discriminator, ParamStore) {
    let cfg = Config {
        image_size: 16,
        channels: 2,
        nz: 4,
        ngf: 4,
        ndf: 3,
        d_norm: DNorm::None,
        ..Config::default()
    };
    let store = ParamStore::with_dtype(&Device::Cpu, DType::F64, 11);
    // Weights larger than DCGAN's N(0, 0.02) so that ‖∇D‖ is far from 1 and the penalty is not flat.
    let d = Discriminator::new(&cfg, store.var_builder()).unwrap();
    for (_, v) in store.trainable() {
        v.set(&(v.as_tensor() * 20.0).unwrap()).unwrap();
    }
    (d, store)
}

fn inputs() -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let real = (easel_nn::testing::uniform(&[3, 2, 16, 16], 1).unwrap() * 1.7).unwrap();
    let fake = (easel_nn::testing::uniform(&[3, 2, 16, 16], 2).unwrap() * 1.7).unwrap();
    let alpha = Tensor::new(&[0.2f64, 0.5, 0.9], &dev)
        .unwrap()
        .reshape((3, 1, 1, 1))
        .unwrap();
    (real, fake, alpha)
}

/// One test, run in order: `scope` briefly sets a process-wide variable, which a thread starting its
/// first backward at that moment would also see, so the refusal check must not run concurrently.
#[test]
fn penalty_gradients_match_finite_differences_and_refuse_without_second_order() {
    penalty_refuses_to_run_without_second_order_gradients();
    penalty_parameter_gradients_match_finite_differences();
}

fn penalty_parameter_gradients_match_finite_differences() {
    double_backward::scope(|| {
        let (d, store) = critic();
        let (real, fake, alpha) = inputs();
        let gp = gradient_penalty(&d, &real, &fake, &alpha).unwrap();
        let grads = gp.backward().unwrap();
        let f = |d: &Discriminator| {
            gradient_penalty(d, &real, &fake, &alpha)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let mut checked = 0;
        let mut worst: f64 = 0.0;
        for (name, var) in store.trainable() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            // A spread of entries of every tensor.
            for i in (0..base.len()).step_by((base.len() / 7).max(1)) {
                let h = 1e-5;
                let set = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                };
                set(h);
                let up = f(&d);
                set(-h);
                let down = f(&d);
                set(0.0);
                let fd = (up - down) / (2.0 * h);
                let rel = (g[i] - fd).abs() / (fd.abs().max(g[i].abs()).max(1e-8));
                worst = worst.max(rel);
                assert!(
                    rel < 1e-3,
                    "{name}[{i}]: autograd {} vs finite difference {fd} (rel {rel})",
                    g[i]
                );
                checked += 1;
            }
        }
        assert!(checked > 20);
        println!("checked {checked} parameter entries; worst relative error {worst:.2e}");
    });
}

fn penalty_refuses_to_run_without_second_order_gradients() {
    // A thread whose first backward ran with candle's default (detached) would get silently
    // wrong parameter gradients; the penalty errors instead.
    let r = std::thread::spawn(|| {
        let _ = double_backward::enabled();
        let (d, _) = critic();
        let (real, fake, alpha) = inputs();
        gradient_penalty(&d, &real, &fake, &alpha)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap();
    let e = r.unwrap_err();
    assert!(e.contains("second-order gradients are off"), "{e}");
}
