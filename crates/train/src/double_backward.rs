//! Second-order gradients with candle, scoped to one thread.
//!
//! candle 0.11 detaches every gradient during `backward()` unless `CANDLE_GRAD_DO_NOT_DETACH=1`
//! (issue huggingface/candle#2462), so a gradient of a gradient — the WGAN-GP penalty's effect on
//! the critic's weights — comes out silently wrong (zero or partial). The switch is a
//! thread-local read from the environment the first time a thread calls `backward()`, and it
//! keeps graphs alive for as long as gradients are held.
//!
//! [`scope`] runs a closure on a fresh thread whose switch is on: the variable is set, the thread
//! is started and made to read it (one tiny backward), and the variable is removed again, all under
//! a process-wide lock. Threads that call `backward()` for the very first time during that
//! window (microseconds) would also see it; that only costs them memory, never correctness.
//! Gradients are dropped after every optimiser step, so the kept graphs do not accumulate.
//! [`ensure_enabled`] is the guard: code that needs second-order gradients calls it and gets an
//! error, not a silently wrong number, when the switch is off.

use std::sync::Mutex;

use candle_core::{Device, Tensor, Var};

use crate::error::{Result, TrainError};

const VAR: &str = "CANDLE_GRAD_DO_NOT_DETACH";

/// Whether `backward()` on this thread keeps the graph of gradients.
pub fn enabled() -> bool {
    // The gradient must pass through a non-variable node (u = 3x): candle detaches the gradients
    // of such nodes, while a variable's own gradient may keep ops through the variable itself.
    let probe = || -> candle_core::Result<bool> {
        let x = Var::new(&[2.0f64], &Device::Cpu)?;
        let y = x.as_tensor().affine(3.0, 0.0)?.sqr()?.sum_all()?;
        let g = y.backward()?;
        Ok(g.get(x.as_tensor()).is_some_and(Tensor::track_op))
    };
    probe().unwrap_or(false)
}

/// Errors unless this thread can take second-order gradients.
pub fn ensure_enabled() -> Result<()> {
    if enabled() {
        Ok(())
    } else {
        Err(TrainError::Run(format!(
            "second-order gradients are off on this thread (candle detaches gradients unless {VAR}=1 \
             was set before the thread's first backward); run this inside easel_train::double_backward::scope"
        )))
    }
}

/// Runs `f` on a new thread on which `backward()` keeps gradient graphs, and returns its result.
pub fn scope<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::env::var_os(VAR);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        // SAFETY of set_var/remove_var (edition 2021: not `unsafe`, but racy with concurrent
        // getenv in C code): easel reads no environment variables from other threads while
        // training, and the window is the lock above plus one tiny backward.
        std::env::set_var(VAR, "1");
        let handle = s.spawn(move || {
            let on = enabled(); // the first backward on this thread reads the variable
            let _ = tx.send(on);
            f()
        });
        let _ = rx.recv();
        match &previous {
            Some(v) => std::env::set_var(VAR, v),
            None => std::env::remove_var(VAR),
        }
        drop(guard);
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_turns_second_order_on_only_inside() {
        // d/dx (d/dx u³) with u = x·1 (a non-variable node): 6x = 12 at x = 2 inside the scope,
        // silently 0 outside it.
        let second = || -> f64 {
            let x = Var::new(&[2.0f64], &Device::Cpu).unwrap();
            let y = x
                .as_tensor()
                .affine(1.0, 0.0)
                .unwrap()
                .powf(3.0)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = y.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            match g.sum_all().unwrap().backward().unwrap().get(x.as_tensor()) {
                Some(gg) => gg.to_vec1::<f64>().unwrap()[0],
                None => 0.0,
            }
        };
        let inside = scope(|| (enabled(), second(), ensure_enabled().is_ok()));
        assert_eq!(inside, (true, 12.0, true));
        // A thread that already ran backward keeps the default (detached).
        let outside = std::thread::spawn(move || {
            let _ = enabled();
            (
                enabled(),
                ensure_enabled().map_err(|e| e.to_string()),
                second(),
            )
        })
        .join()
        .unwrap();
        assert!(!outside.0);
        assert_eq!(
            outside.2, 0.0,
            "the silent-wrong case this module guards against"
        );
        assert!(outside.1.unwrap_err().contains("double_backward::scope"));
        assert!(std::env::var_os(VAR).is_none());
    }
}
