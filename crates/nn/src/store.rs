//! A parameter store with seeded initialisation and PyTorch-compatible save/load.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Names that PyTorch stores in a `state_dict` but that are not trained (buffers).
/// (`weight_u`/`weight_v` are spectral-norm power-iteration vectors.)
const BUFFER_SUFFIXES: [&str; 5] = [
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "weight_u",
    "weight_v",
];

/// True when `name` is a buffer (e.g. `main.1.running_mean`), not a trainable parameter.
pub fn is_buffer_name(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    BUFFER_SUFFIXES.contains(&last)
}

struct Inner {
    vars: BTreeMap<String, Var>,
    rng: ChaCha8Rng,
}

/// The variables of one network, created on first request with a seeded initialiser.
///
/// Cloning is cheap and shares the same variables.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ParamStore({} tensors on {:?})",
            self.lock().vars.len(),
            self.device
        )
    }
}

impl ParamStore {
    /// An empty f32 store on `device` whose initialisers draw from a ChaCha8 stream seeded by `seed`.
    pub fn new(device: &Device, seed: u64) -> Self {
        Self::with_dtype(device, DType::F32, seed)
    }

    /// As [`ParamStore::new`] with an explicit dtype (f64 for finite-difference tests).
    pub fn with_dtype(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                vars: BTreeMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
            device: device.clone(),
            dtype,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the variables.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A `VarBuilder` that creates (or returns) this store's variables.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), self.dtype, self.device.clone())
    }

    /// Every variable, weights and buffers, sorted by name.
    pub fn all(&self) -> Vec<(String, Var)> {
        self.lock()
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The trainable variables (everything but buffers), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.lock()
            .vars
            .iter()
            .filter(|(k, _)| !is_buffer_name(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A snapshot of every tensor (detached copies are not made: tensors share storage with the vars).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.lock()
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Writes every tensor to a safetensors file (PyTorch `state_dict` names).
    ///
    /// This is a plain write; callers that need atomicity write to a temporary path and rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors(), path)
            .map_err(|e| candle_core::Error::Msg(format!("writing {}: {e}", path.display())))
    }

    /// Loads values from a safetensors file into the existing variables (see [`ParamStore::load_tensors`]).
    pub fn load(&self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", path.display())))?;
        self.load_tensors(&tensors)
            .map_err(|e| candle_core::Error::Msg(format!("loading {}: {e}", path.display())))
    }

    /// Copies `tensors` into the existing variables, converting dtypes.
    ///
    /// Every variable must be present with the same shape. Extra entries are ignored only when
    /// they are buffers PyTorch adds (`num_batches_tracked`); any other extra name is an error,
    /// since it means the checkpoint belongs to a different architecture.
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let inner = self.lock();
        let mut missing = Vec::new();
        for (name, var) in inner.vars.iter() {
            match tensors.get(name) {
                None => missing.push(name.clone()),
                Some(t) => {
                    if t.dims() != var.dims() {
                        candle_core::bail!(
                            "tensor {name}: expected shape {:?}, found {:?}",
                            var.dims(),
                            t.dims()
                        )
                    }
                    let t = t.to_dtype(self.dtype)?.to_device(&self.device)?;
                    // Loading a store from its own tensors (same storage) needs a copy.
                    if var.set(&t).is_err() {
                        var.set(&t.copy()?)?;
                    }
                }
            }
        }
        if !missing.is_empty() {
            candle_core::bail!(
                "{} tensor(s) missing: {}",
                missing.len(),
                missing.join(", ")
            )
        }
        let extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !inner.vars.contains_key(*k) && !k.ends_with("num_batches_tracked"))
            .collect();
        if !extra.is_empty() {
            let mut extra: Vec<String> = extra.into_iter().cloned().collect();
            extra.sort();
            candle_core::bail!(
                "unexpected tensor(s) (different architecture?): {}",
                extra.join(", ")
            )
        }
        Ok(())
    }

    /// Draws the initial values for `shape` from `init` using the store's RNG.
    fn init_values(rng: &mut ChaCha8Rng, shape: &Shape, init: &Init) -> Result<Vec<f64>> {
        let n = shape.elem_count();
        let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Result<Vec<f64>> {
            let d = Normal::new(mean, std).map_err(|e| {
                candle_core::Error::Msg(format!("normal init N({mean}, {std}): {e}"))
            })?;
            Ok((0..n).map(|_| d.sample(rng)).collect())
        };
        let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> {
            (0..n).map(|_| rng.random_range(lo..up)).collect()
        };
        Ok(match init {
            Init::Const(c) => vec![*c; n],
            Init::Randn { mean, stdev } => normal(rng, *mean, *stdev)?,
            Init::Uniform { lo, up } => uniform(rng, *lo, *up),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = fan.for_shape(shape);
                let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Normal => normal(rng, 0., std)?,
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        uniform(rng, -b, b)
                    }
                }
            }
        })
    }
}

impl SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut inner = self.lock();
        if let Some(v) = inner.vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "shape mismatch on {name}: requested {s:?}, stored {:?}",
                    v.shape()
                )
            }
            return Ok(v.as_tensor().clone());
        }
        let values = Self::init_values(&mut inner.rng, &s, &h)?;
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        inner.vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.lock().vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no tensor named {name} in the parameter store"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().vars.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_names_sorted() {
        let make = |seed| {
            let s = ParamStore::new(&Device::Cpu, seed);
            let vb = s.var_builder();
            vb.pp("b")
                .get_with_hints(
                    (3, 4),
                    "weight",
                    Init::Randn {
                        mean: 0.,
                        stdev: 0.02,
                    },
                )
                .unwrap();
            vb.pp("a")
                .get_with_hints(5, "running_mean", Init::Const(0.))
                .unwrap();
            s
        };
        let (s1, s2, s3) = (make(7), make(7), make(8));
        let names: Vec<String> = s1.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.running_mean", "b.weight"]);
        let trainable: Vec<String> = s1.trainable().into_iter().map(|(n, _)| n).collect();
        assert_eq!(trainable, ["b.weight"]);
        let w = |s: &ParamStore| {
            s.tensors()["b.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(w(&s1), w(&s2));
        assert_ne!(w(&s1), w(&s3));
    }

    #[test]
    fn normal_init_has_requested_moments() {
        let s = ParamStore::new(&Device::Cpu, 1);
        let t = s
            .var_builder()
            .get_with_hints(
                20_000,
                "w",
                Init::Randn {
                    mean: 1.0,
                    stdev: 0.02,
                },
            )
            .unwrap();
        let v = t.to_vec1::<f32>().unwrap();
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // Standard error of the mean is 0.02/sqrt(20000) ≈ 1.4e-4.
        assert!((mean - 1.0).abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "std {}", var.sqrt());
    }

    #[test]
    fn save_load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let s = ParamStore::new(&Device::Cpu, 3);
        s.var_builder()
            .get_with_hints(
                (2, 3),
                "x.weight",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        s.save(&path).unwrap();
        let t = ParamStore::new(&Device::Cpu, 4);
        t.var_builder()
            .get_with_hints((2, 3), "x.weight", Init::Const(0.))
            .unwrap();
        t.load(&path).unwrap();
        assert_eq!(
            s.tensors()["x.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            t.tensors()["x.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        // Wrong shape names the tensor and both shapes.
        let u = ParamStore::new(&Device::Cpu, 4);
        u.var_builder()
            .get_with_hints((3, 2), "x.weight", Init::Const(0.))
            .unwrap();
        let err = u.load(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.weight") && err.contains("[3, 2]") && err.contains("[2, 3]"),
            "{err}"
        );
        // Missing tensor is named.
        let m = ParamStore::new(&Device::Cpu, 4);
        m.var_builder()
            .get_with_hints(1, "y.bias", Init::Const(0.))
            .unwrap();
        let err = m.load(&path).unwrap_err().to_string();
        assert!(err.contains("y.bias") && err.contains("missing"), "{err}");
    }
}
