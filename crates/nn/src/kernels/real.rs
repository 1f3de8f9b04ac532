//! Element types and buffer helpers shared by easel's activation, normalisation and pooling
//! kernels.
//!
//! The kernels are generic over [`Real`] (`f32` and `f64`): `f32` is what training runs in, `f64`
//! lets the tests check gradients against central finite differences to ~1e-8.

use candle_core::backend::BackendStorage;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};

/// Number of elements below which an element-wise kernel stays on the calling thread
/// (spawning rayon tasks costs more than the work).
pub(crate) const PAR_MIN: usize = 1 << 15;

/// A floating-point element type the CPU kernels run on.
pub trait Real: WithDType {
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// −∞ (the implicit padding value of max-pooling).
    const NEG_INF: Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// `e^self`.
    fn exp(self) -> Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// The elements of a contiguous tensor's storage, or an error naming the op and shape.
pub(crate) fn slice<'a, T: Real>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!(
            "{op}: expects a contiguous input, got shape {:?} with strides {:?}",
            l.dims(),
            l.stride()
        ),
    }
}

/// Fails unless the storage holds `f32` or `f64`, naming the op and shape.
pub(crate) fn float_dtype(s: &CpuStorage, l: &Layout, op: &str) -> Result<DType> {
    match s.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        d => candle_core::bail!(
            "{op}: CPU kernel supports f32 and f64, got {d:?} of shape {:?}",
            l.dims()
        ),
    }
}

/// Wraps a result buffer as candle storage.
pub(crate) fn storage<T: Real>(v: Vec<T>, shape: impl Into<Shape>) -> (CpuStorage, Shape) {
    (T::to_cpu_storage_owned(v), shape.into())
}

/// The dims of a 4-D layout, or an error naming the op.
pub(crate) fn dims4(l: &Layout, op: &str) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        ref d => candle_core::bail!("{op}: expects a 4-D input [B, C, H, W], got shape {d:?}"),
    }
}

/// A new vector of `n` elements written chunk by chunk, without zero-filling it first (for large
/// outputs the zero fill is a whole extra pass over memory). `f(i, out)` gets chunk `i`, the
/// elements `i·chunk .. min((i+1)·chunk, n)`; chunks run in parallel (at least `min_chunks` per
/// task) unless the whole vector is below [`PAR_MIN`].
///
/// # Safety
///
/// `f` must initialise every element of every chunk it is given (`MaybeUninit::write`).
pub(crate) unsafe fn build<T: Send>(
    n: usize,
    chunk: usize,
    min_chunks: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v: Vec<T> = Vec::with_capacity(n);
    let chunk = chunk.max(1);
    {
        let out = &mut v.spare_capacity_mut()[..n];
        if n < PAR_MIN {
            out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
        } else {
            out.par_chunks_mut(chunk)
                .enumerate()
                .with_min_len(min_chunks.max(1))
                .for_each(|(i, c)| f(i, c));
        }
    }
    // SAFETY: the capacity is at least `n`, and the caller's `f` initialised all `n` elements
    // (the chunks above cover 0..n exactly once). If `f` panics we never get here and the vector
    // is dropped with length 0.
    unsafe { v.set_len(n) };
    v
}

/// `f` applied to every element, in parallel chunks for large buffers.
pub(crate) fn map1<T: Real>(x: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    let c = PAR_MIN / 2;
    // SAFETY: chunk `i` of the output and `x.chunks(c)[i]` have the same length, and the zip
    // writes each output element once.
    unsafe {
        build(x.len(), c, 1, |i, o| {
            let x = &x[i * c..i * c + o.len()];
            for (o, &v) in o.iter_mut().zip(x) {
                o.write(f(v));
            }
        })
    }
}

/// `f` applied to every pair of elements of two buffers of equal length, in parallel chunks for
/// large buffers.
pub(crate) fn map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    let n = a.len().min(b.len());
    let c = PAR_MIN / 2;
    // SAFETY: as in `map1`; `n` is at most both lengths, so both input slices have `o.len()`
    // elements.
    unsafe {
        build(n, c, 1, |i, o| {
            let (a, b) = (&a[i * c..i * c + o.len()], &b[i * c..i * c + o.len()]);
            for ((o, &u), &v) in o.iter_mut().zip(a).zip(b) {
                o.write(f(u, v));
            }
        })
    }
}

/// The CPU storage behind a tensor, or an error naming the op.
pub(crate) fn cpu<'a>(s: &'a candle_core::Storage, op: &str) -> Result<&'a CpuStorage> {
    match s {
        candle_core::Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!(
            "{op}: CPU kernel called on a {:?} tensor",
            s.device().location()
        ),
    }
}
