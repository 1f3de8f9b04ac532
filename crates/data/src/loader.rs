//! Deterministic, resumable, prefetching batches.
//!
//! Batch `k` of a run (counting across epochs) is a pure function of
//! `(seed, k)`: it belongs to epoch `k / batches_per_epoch`, whose order is a
//! Fisher–Yates permutation keyed by `(seed, epoch)`, and takes the
//! `k % batches_per_epoch`-th run of `batch_size` indices from it (the
//! remainder of an epoch is dropped, like `drop_last=True`). Each sample's
//! augmentation seed is keyed by `(seed, k, slot)`. So a loader started at
//! `start_batch = k` yields exactly what a loader started at 0 yields from
//! its k-th batch on, whatever the number of workers.
//!
//! Workers claim batch numbers from a shared counter, at most a few ahead of
//! the consumer, build whole batches, and send them (or their error) through
//! a channel; the consumer puts them back in order. A panic in a dataset is
//! caught and becomes an error for that batch; dropping the loader stops and
//! joins the workers.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::rng;
use crate::{DataError, Dataset};

/// One batch on the host, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `[B, C, H, W]` row-major f32 in [-1, 1].
    pub pixels: Vec<f32>,
    /// `B` labels.
    pub labels: Vec<u32>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
    /// The batch's number in the run (0-based, across epochs).
    pub index: u64,
}

/// What every worker shares: the dataset and the batch plan.
struct Plan {
    ds: Arc<dyn Dataset>,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    per_epoch: u64,
    /// The last couple of epoch permutations (an epoch boundary may be in
    /// flight on two workers at once).
    perms: Mutex<Vec<(u64, Arc<Vec<usize>>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Plan {
    fn order(&self, epoch: u64) -> Arc<Vec<usize>> {
        let mut perms = lock(&self.perms);
        if let Some((_, p)) = perms.iter().find(|(e, _)| *e == epoch) {
            return p.clone();
        }
        let n = self.ds.len();
        let p = Arc::new(if self.shuffle {
            rng::permutation(n, &[self.seed, 0x0065_706F_6368, epoch]) // "epoch"
        } else {
            (0..n).collect()
        });
        perms.push((epoch, p.clone()));
        if perms.len() > 2 {
            perms.remove(0);
        }
        p
    }

    /// The dataset indices of batch `k`.
    fn indices(&self, k: u64) -> Vec<usize> {
        let order = self.order(k / self.per_epoch);
        let j = (k % self.per_epoch) as usize * self.batch_size;
        order[j..j + self.batch_size].to_vec()
    }

    fn build(&self, k: u64, stop: &AtomicBool) -> Result<HostBatch, DataError> {
        let [c, h, w] = self.ds.shape();
        let per = c * h * w;
        let b = self.batch_size;
        let mut pixels = Vec::with_capacity(b * per);
        let mut labels = Vec::with_capacity(b);
        for (slot, i) in self.indices(k).into_iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Err(DataError::Loader {
                    problem: "stopped".to_string(),
                    fix: "none needed: the loader was dropped".to_string(),
                });
            }
            let s = self.ds.get(i, rng::hash(&[self.seed, k, slot as u64]))?;
            if s.pixels.len() != per {
                return Err(DataError::Loader {
                    problem: format!(
                        "sample {i} has {} values but the dataset's shape {c}×{h}×{w} needs {per} ({})",
                        s.pixels.len(),
                        self.ds.describe()
                    ),
                    fix: "this is a bug in the dataset implementation".to_string(),
                });
            }
            pixels.extend_from_slice(&s.pixels);
            labels.push(s.label);
        }
        Ok(HostBatch {
            pixels,
            labels,
            shape: [b, c, h, w],
            index: k,
        })
    }

    /// `build`, with a panic turned into an error.
    fn build_caught(&self, k: u64, stop: &AtomicBool) -> Result<HostBatch, DataError> {
        catch_unwind(AssertUnwindSafe(|| self.build(k, stop))).unwrap_or_else(|payload| {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(DataError::Loader {
                problem: format!("a worker panicked while building batch {k}: {msg}"),
                fix: "this is a bug; run with data.workers = 0 to get a backtrace".to_string(),
            })
        })
    }
}

/// Claim window shared by the consumer and the workers.
struct Window {
    next_claim: u64,
    consumed: u64,
    stop: bool,
}

type Done = (u64, Result<HostBatch, DataError>);

struct Pool {
    rx: mpsc::Receiver<Done>,
    pending: BTreeMap<u64, Result<HostBatch, DataError>>,
    window: Arc<(Mutex<Window>, Condvar)>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

/// Makes batches of a dataset, deterministically, resumably, in the background.
///
/// * Batch `k` of a run (counting across epochs) is a pure function of
///   `(seed, k)`: epoch `k / batches_per_epoch()` is ordered by a permutation
///   keyed by `(seed, epoch)` (or in index order without `shuffle`), and the
///   batch takes the `k % batches_per_epoch()`-th run of `batch_size` indices
///   of it; the rest of an epoch is dropped (`drop_last = true`). Each
///   sample's `aug_seed` is keyed by `(seed, k, slot)`.
/// * So a loader created with `start_batch = k` returns exactly the batches a
///   loader created with 0 returns from its k-th on, whatever `workers` is.
///   Save [`Loader::position`] in a checkpoint and pass it back as `start_batch`.
/// * `workers` threads build whole batches a few ahead of the consumer
///   (`workers + 2` at most in flight). A dataset error, or a panic, becomes
///   the `Err` of that batch's `next_batch` (never a hang, never a dead
///   thread); the following call moves on to the next batch.
/// * Dropping the loader stops and joins its threads.
pub struct Loader {
    plan: Arc<Plan>,
    next: u64,
    pool: Option<Pool>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.plan.ds.describe())
            .field("batch_size", &self.plan.batch_size)
            .field("next", &self.next)
            .field(
                "workers",
                &self.pool.as_ref().map_or(0, |p| p.handles.len()),
            )
            .finish()
    }
}

impl Loader {
    /// A loader over `ds` whose first batch is batch number `start_batch` of
    /// the run. `workers` background threads decode ahead of the consumer
    /// (0: batches are built on the calling thread in `next_batch`).
    /// `shuffle = false` walks the dataset in order every epoch.
    pub fn new(
        ds: Arc<dyn Dataset>,
        batch_size: usize,
        seed: u64,
        shuffle: bool,
        start_batch: u64,
        workers: usize,
    ) -> Result<Self, DataError> {
        let n = ds.len();
        if batch_size == 0 {
            return Err(DataError::Loader {
                problem: "batch size 0".to_string(),
                fix: "use a batch size of at least 1".to_string(),
            });
        }
        if n < batch_size {
            return Err(DataError::Loader {
                problem: format!(
                    "the dataset has {n} samples, fewer than one batch of {batch_size} ({})",
                    ds.describe()
                ),
                fix: "lower the batch size or add data".to_string(),
            });
        }
        let plan = Arc::new(Plan {
            ds,
            batch_size,
            seed,
            shuffle,
            per_epoch: (n / batch_size) as u64,
            perms: Mutex::new(Vec::new()),
        });
        let pool = if workers == 0 {
            None
        } else {
            Some(Self::spawn(&plan, start_batch, workers)?)
        };
        Ok(Loader {
            plan,
            next: start_batch,
            pool,
        })
    }

    fn spawn(plan: &Arc<Plan>, start: u64, workers: usize) -> Result<Pool, DataError> {
        let ahead = workers as u64 + 2;
        let window = Arc::new((
            Mutex::new(Window {
                next_claim: start,
                consumed: start,
                stop: false,
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Done>();
        let mut pool = Pool {
            rx,
            pending: BTreeMap::new(),
            window,
            stop,
            handles: Vec::with_capacity(workers),
        };
        for w in 0..workers {
            let (plan, window, stop, tx) = (
                plan.clone(),
                pool.window.clone(),
                pool.stop.clone(),
                tx.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("easel-data-{w}"))
                .spawn(move || worker(&plan, &window, &stop, &tx, ahead))
                .map_err(|e| DataError::Loader {
                    problem: format!("cannot start a worker thread ({e})"),
                    fix: "set data.workers = 0 to decode on the training thread".to_string(),
                })?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    /// The next batch, in order. An error is for that batch only: the next
    /// call moves on to the following batch.
    pub fn next_batch(&mut self) -> Result<HostBatch, DataError> {
        let k = self.next;
        let Some(pool) = self.pool.as_mut() else {
            self.next += 1;
            return self.plan.build_caught(k, &AtomicBool::new(false));
        };
        loop {
            if let Some(result) = pool.pending.remove(&k) {
                self.next += 1;
                let (m, cv) = &*pool.window;
                lock(m).consumed = self.next;
                cv.notify_all();
                return result;
            }
            match pool.rx.recv() {
                Ok((i, result)) => {
                    pool.pending.insert(i, result);
                }
                Err(_) => return Err(DataError::Loader {
                    problem: "all background workers have stopped".to_string(),
                    fix: "set data.workers = 0 to decode on the training thread and see the error"
                        .to_string(),
                }),
            }
        }
    }

    /// Full batches per epoch (`len / batch_size`, the remainder is dropped).
    pub fn batches_per_epoch(&self) -> u64 {
        self.plan.per_epoch
    }

    /// The number of the batch the next `next_batch` returns; save it to
    /// resume with `start_batch`.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The dataset indices batch `k` is made of (for inspection and tests).
    pub fn batch_indices(&self, k: u64) -> Vec<usize> {
        self.plan.indices(k)
    }
}

fn worker(
    plan: &Plan,
    window: &(Mutex<Window>, Condvar),
    stop: &AtomicBool,
    tx: &mpsc::Sender<Done>,
    ahead: u64,
) {
    let (m, cv) = window;
    loop {
        let k = {
            let mut w = lock(m);
            loop {
                if w.stop {
                    return;
                }
                if w.next_claim < w.consumed + ahead {
                    break;
                }
                w = cv.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            w.next_claim += 1;
            w.next_claim - 1
        };
        let result = plan.build_caught(k, stop);
        if tx.send((k, result)).is_err() {
            return;
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.stop.store(true, Ordering::Relaxed);
            let (m, cv) = &*pool.window;
            lock(m).stop = true;
            cv.notify_all();
            drop(pool.rx);
            for h in pool.handles {
                let _ = h.join();
            }
        }
    }
}
