//! The shared loop with a toy step whose behaviour is known exactly: NaN guard, checkpoint
//! cadence and pruning, interruption, resume of step/RNG/data position.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Tensor};
use candle_nn::Init;
use easel_nn::ParamStore;
use easel_train::checkpoint::{self, TrainState};
use easel_train::fit::{
    self, layout, Batch, BatchSource, FitOptions, FitOutcome, Scalars, StepContext, TrainStep,
};
use easel_train::optim::{AdamConfig, OptimSpec, Optimizer};
use easel_train::recipe::TrainConfig;
use easel_train::rng::StepRng;
use easel_train::TrainError;

/// Fits w to the mean of the batch values with Adam; reports NaN at `nan_at` (1-based step).
struct Toy {
    store: ParamStore,
    opt: Optimizer,
    nan_at: Option<u64>,
    stop_flag_at: Option<(u64, &'static AtomicBool)>,
    corrupt_weights_at: Option<u64>,
}

impl Toy {
    fn new(nan_at: Option<u64>) -> Self {
        let store = ParamStore::new(&Device::Cpu, 5);
        store
            .var_builder()
            .get_with_hints(3, "w", Init::Const(0.0))
            .unwrap();
        let spec = OptimSpec::Adam(AdamConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        });
        let opt = Optimizer::new(spec, store.trainable()).unwrap();
        Self {
            store,
            opt,
            nan_at,
            stop_flag_at: None,
            corrupt_weights_at: None,
        }
    }
    fn w(&self) -> Vec<f32> {
        self.store.tensors()["w"].to_vec1::<f32>().unwrap()
    }
}

impl TrainStep for Toy {
    fn kind(&self) -> &'static str {
        "toy"
    }
    fn networks(&self) -> Vec<(&'static str, ParamStore)> {
        vec![("net", self.store.clone())]
    }
    fn state(&self) -> easel_train::Result<Vec<(String, Tensor)>> {
        self.opt.state_tensors("net")
    }
    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> easel_train::Result<()> {
        self.opt.load_state(t, "net")
    }
    fn step(
        &mut self,
        data: &mut dyn BatchSource,
        ctx: &mut StepContext,
    ) -> easel_train::Result<Scalars> {
        let x = data.next_batch()?.images; // [B, 3]
        let noise = ctx.rng.randn(3, ctx.device)?;
        let w = self.store.trainable()[0].1.clone();
        let target = (x.mean(0)? + (noise * 0.01)?)?;
        let loss = w.as_tensor().sub(&target)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        let n = ctx.step + 1;
        if let Some((at, flag)) = self.stop_flag_at {
            if n == at {
                flag.store(true, Ordering::SeqCst);
            }
        }
        if self.corrupt_weights_at == Some(n) {
            w.set(&Tensor::new(&[f32::NAN, 0.0, 0.0], &Device::Cpu)?)?;
        }
        let l = loss.to_scalar::<f32>()? as f64;
        let l = if self.nan_at == Some(n) { f64::NAN } else { l };
        Ok(vec![("loss", l), ("batch_size", 2.0)])
    }
    fn preview(&mut self) -> easel_train::Result<Tensor> {
        Ok(Tensor::zeros(
            (1, 1, 2, 2),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)
    }
}

/// Batch k is [[k, k+1, k+2], [k+1, k+2, k+3]]: a deterministic function of the position.
struct Counter(u64);
impl BatchSource for Counter {
    fn next_batch(&mut self) -> easel_train::Result<Batch> {
        let k = self.0 as f32;
        self.0 += 1;
        let v: Vec<f32> = (0..6)
            .map(|i| k + (i % 3) as f32 + (i / 3) as f32)
            .collect();
        Ok(Batch {
            images: Tensor::from_vec(v, (2, 3), &Device::Cpu)?,
            labels: Tensor::zeros(2, candle_core::DType::U32, &Device::Cpu)?,
        })
    }
    fn position(&self) -> u64 {
        self.0
    }
}

fn cfg(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 2,
        checkpoint_every: 2,
        sample_every: 0,
        log_every: 1,
        histogram_every: 0,
        keep_last: 2,
        preview_count: 1,
        lr_decay_from: None,
    }
}

fn fresh_state() -> TrainState {
    TrainState {
        step: 0,
        batches: 0,
        rng: StepRng::new(1, "step"),
        train_seconds: 0.0,
        kind: "toy".into(),
        networks: vec![],
        easel_version: "test".into(),
    }
}

fn run(
    toy: &mut Toy,
    run_dir: &Path,
    steps: u64,
    state: &mut TrainState,
    flag: &AtomicBool,
) -> easel_train::Result<FitOutcome> {
    run_with(toy, run_dir, steps, state, flag, None)
}

fn run_with(
    toy: &mut Toy,
    run_dir: &Path,
    steps: u64,
    state: &mut TrainState,
    flag: &AtomicBool,
    evaluator: Option<&dyn fit::Evaluator>,
) -> easel_train::Result<FitOutcome> {
    let c = cfg(steps);
    let opts = FitOptions {
        run_dir,
        train: &c,
        recipe_toml: "# toy\n",
        interrupt: flag,
        quiet: true,
        evaluator,
    };
    let mut data = Counter(state.batches);
    fit::fit(toy, &mut data, state, &opts)
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(layout::metrics(run_dir))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let flag = AtomicBool::new(false);
    let mut toy = Toy::new(Some(5));
    let mut state = fresh_state();
    let err = run(&mut toy, dir.path(), 10, &mut state, &flag).unwrap_err();
    match &err {
        TrainError::NonFinite {
            step,
            name,
            value,
            checkpoint,
        } => {
            assert_eq!(*step, 5);
            assert_eq!(name, "loss");
            assert!(value.is_nan());
            assert!(
                checkpoint.contains("step 4") && checkpoint.contains("intact"),
                "{checkpoint}"
            );
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("loss is NaN at step 5") && msg.contains("easel resume"),
        "{msg}"
    );
    let saved: Vec<u64> = checkpoint::list(&layout::checkpoints(dir.path()))
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(saved, [2, 4]);
    assert!(!layout::final_dir(dir.path()).exists());
    // The step-4 checkpoint loads and its weights are finite.
    let mut again = Toy::new(None);
    let st = fit::load_checkpoint(
        &mut again,
        &layout::checkpoints(dir.path()).join("step-00000004"),
    )
    .unwrap();
    assert_eq!((st.step, st.batches), (4, 4));
    assert!(again.w().iter().all(|v| v.is_finite()));
}

#[test]
fn non_finite_weights_are_never_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let flag = AtomicBool::new(false);
    let mut toy = Toy::new(None);
    toy.corrupt_weights_at = Some(4); // the loss of step 4 is finite, its update is not
    let err = run(&mut toy, dir.path(), 10, &mut state_ref(), &flag)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("net weight w") && err.contains("Nothing was saved"),
        "{err}"
    );
    let saved: Vec<u64> = checkpoint::list(&layout::checkpoints(dir.path()))
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(saved, [2]);
}

fn state_ref() -> TrainState {
    fresh_state()
}

#[test]
fn resume_continues_exactly_and_interrupt_saves() {
    static FLAG: AtomicBool = AtomicBool::new(false);
    // Straight: 7 steps.
    let straight = tempfile::tempdir().unwrap();
    let mut toy = Toy::new(None);
    let no = AtomicBool::new(false);
    let out = run(&mut toy, straight.path(), 7, &mut fresh_state(), &no).unwrap();
    assert_eq!(out, FitOutcome::Finished { step: 7 });
    let w_straight = toy.w();

    // Interrupted after step 3 (flag raised inside step 3, honoured before step 4), then resumed.
    let split = tempfile::tempdir().unwrap();
    let mut toy = Toy::new(None);
    toy.stop_flag_at = Some((3, &FLAG));
    let out = run(&mut toy, split.path(), 7, &mut fresh_state(), &FLAG).unwrap();
    let FitOutcome::Interrupted { step, checkpoint } = out else {
        panic!("not interrupted: {out:?}")
    };
    assert_eq!(step, 3);
    assert!(checkpoint.ends_with("step-00000003"));
    FLAG.store(false, Ordering::SeqCst);
    let mut resumed = Toy::new(None);
    let mut state = fit::load_checkpoint(&mut resumed, &checkpoint).unwrap();
    assert_eq!((state.step, state.batches), (3, 3));
    run(&mut resumed, split.path(), 7, &mut state, &FLAG).unwrap();

    assert_eq!(losses(straight.path()), losses(split.path()));
    assert_eq!(w_straight, resumed.w());
    // keep_last = 2 (plus final/).
    let saved: Vec<u64> = checkpoint::list(&layout::checkpoints(split.path()))
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(saved, [6, 7]);
    assert_eq!(
        checkpoint::read_state(&layout::final_dir(split.path()))
            .unwrap()
            .step,
        7
    );
}

#[test]
fn a_crash_after_a_checkpoint_does_not_duplicate_metrics() {
    // Run 5 steps (checkpoints at 2, 4, 5), then pretend the process died at step 5 before saving
    // by resuming from step 4: lines for step 5 must not appear twice.
    let dir = tempfile::tempdir().unwrap();
    let no = AtomicBool::new(false);
    let mut toy = Toy::new(None);
    run(&mut toy, dir.path(), 5, &mut fresh_state(), &no).unwrap();
    let before = losses(dir.path());
    let mut again = Toy::new(None);
    let mut st = fit::load_checkpoint(
        &mut again,
        &layout::checkpoints(dir.path()).join("step-00000004"),
    )
    .unwrap();
    run(&mut again, dir.path(), 5, &mut st, &no).unwrap();
    assert_eq!(losses(dir.path()), before);
}
