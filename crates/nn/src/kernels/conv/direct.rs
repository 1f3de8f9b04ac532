//! Direct convolution for layers with very few output channels (`O ≤ 4`), stride 1, no
//! dilation and no zero padding — the style and super-resolution networks' last 9×9 layer
//! (`32 → 3` on a reflection-padded image).
//!
//! Through im2col + GEMM such a layer is the worst case of both: the column matrix is `KH·KW`
//! times the input (81× for 9×9: 680 M values for a 512² image), and a GEMM with 3 rows keeps
//! 3 of the micro-kernel's 16–64 rows busy. Computed directly, each output row segment of `TW`
//! pixels keeps its `O × TW` sums in registers over all `C·KH·KW` taps: per tap it loads `TW`
//! input values once and does `O·TW` fused multiply-adds with the tap's `O` weights
//! broadcast. Nothing is gathered or allocated besides the output.
//!
//! The loops are plain Rust written so the compiler vectorises them; they are compiled three
//! times (AVX-512F, AVX2 + FMA, baseline) and the widest the CPU supports is picked at run time,
//! like the GEMM's own micro-kernels. Summation order: per output value, channels outer, then
//! kernel rows, then kernel columns — the same terms as im2col + GEMM, in another order, so the
//! two agree to rounding (tests).

use rayon::prelude::*;

use super::{Elem, Geom, SharedMut, View};

/// Largest number of output channels computed directly.
pub(super) const MAX_O: usize = 4;
/// Narrowest output for which the direct kernel is used (narrower rows are mostly tail).
const MIN_OW: usize = 16;

/// Whether [`forward`] handles this convolution: few output channels, stride 1, no dilation or
/// zero padding, a kernel of at least 2×2 (a 1×1 kernel reads the input in place through the
/// GEMM already), rows stored contiguously.
pub(super) fn applies<T: Elem>(g: &Geom, x: &View<T>) -> bool {
    g.o <= MAX_O
        && g.s == 1
        && g.d == 1
        && g.pad == 0
        && g.kk() >= 4
        && g.ow >= MIN_OW
        && (x.st[3] == 1 || g.w <= 1)
}

/// `y = conv(x, w) [+ bias]`, contiguous `[N, O, OH, OW]`; `w` contiguous `[O, C·KH·KW]`,
/// `bias` `[O]` (the sums start from it).
pub(super) fn forward<T: Elem>(g: &Geom, x: View<T>, w: &[T], bias: Option<&[T]>) -> Vec<T> {
    forward_on(Isa::detect(), g, x, w, bias)
}

/// [`forward`] with the row kernel compiled for `isa` (which the CPU must support).
pub(super) fn forward_on<T: Elem>(
    isa: Isa,
    g: &Geom,
    x: View<T>,
    w: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    let (p, o) = (g.p(), g.o);
    let len = g.n * o * p;
    if len == 0 {
        return Vec::new();
    }
    let mut y: Vec<T> = Vec::with_capacity(len);
    let yp = SharedMut(y.spare_capacity_mut().as_mut_ptr().cast::<T>());
    let mut b0 = [T::zero(); MAX_O];
    if let Some(bias) = bias {
        b0[..o].copy_from_slice(&bias[..o]);
    }
    // One task per (image, output row); rayon splits the range over its threads.
    (0..g.n * g.oh)
        .into_par_iter()
        .with_min_len(4)
        .for_each(|t| {
            let (n, oh) = (t / g.oh, t % g.oh);
            // SAFETY: this task alone writes row oh of image n in each of the O output planes
            // (`n·O·P + oc·P + oh·OW ..+ OW` for every oc < O), all inside y's capacity.
            unsafe {
                let row0 = yp.get().add(n * o * p + oh * g.ow);
                match o {
                    1 => isa.row::<T, 1>(g, &x, (w, &b0), (n, oh), row0, p),
                    2 => isa.row::<T, 2>(g, &x, (w, &b0), (n, oh), row0, p),
                    3 => isa.row::<T, 3>(g, &x, (w, &b0), (n, oh), row0, p),
                    _ => isa.row::<T, 4>(g, &x, (w, &b0), (n, oh), row0, p),
                }
            }
        });
    // SAFETY: the tasks cover every (image, output row), and each writes all OW values of that
    // row in all O planes, so all `len` elements are initialised.
    unsafe { y.set_len(len) };
    y
}

/// The instruction set the row kernel was compiled for, chosen once per call.
///
/// The variants are listed widest first; every one the CPU supports is a valid choice
/// ([`Isa::available`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Plain,
}

impl Isa {
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma;
            }
        }
        Isa::Plain
    }

    /// Every variant this CPU can run, widest first.
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2Fma);
            }
        }
        v.push(Isa::Plain);
        v
    }

    /// Row `oh` of image `n`, all `O` output channels; `out` points at channel 0's row, the
    /// other channels' rows follow at `plane` strides.
    ///
    /// # Safety
    /// As [`row`].
    #[inline]
    unsafe fn row<T: Elem, const O: usize>(
        self,
        g: &Geom,
        x: &View<T>,
        w: (&[T], &[T; MAX_O]),
        at: (usize, usize),
        out: *mut T,
        plane: usize,
    ) {
        // SAFETY: the caller's contract; the target-feature variants are only called when
        // `detect` found the features on this CPU.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => row_avx512::<T, O>(g, x, w, at, out, plane),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => row_avx2::<T, O>(g, x, w, at, out, plane),
                Isa::Plain => row::<T, O, 16, false>(g, x, w, at, out, plane),
            }
        }
    }
}

/// [`row`] with 64-wide segments (four 16-lane registers per output channel, `O ≤ 4` → at most
/// 16 of the 32 vector registers hold sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row_avx512<T: Elem, const O: usize>(
    g: &Geom,
    x: &View<T>,
    w: (&[T], &[T; MAX_O]),
    at: (usize, usize),
    out: *mut T,
    plane: usize,
) {
    // SAFETY: forwarded.
    unsafe { row::<T, O, 64, true>(g, x, w, at, out, plane) }
}

/// [`row`] with 24-wide segments (three 8-lane registers per output channel: ≤ 12 of 16 hold
/// sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2<T: Elem, const O: usize>(
    g: &Geom,
    x: &View<T>,
    w: (&[T], &[T; MAX_O]),
    at: (usize, usize),
    out: *mut T,
    plane: usize,
) {
    // SAFETY: forwarded.
    unsafe { row::<T, O, 24, true>(g, x, w, at, out, plane) }
}

/// Output row `oh` of image `n` for all `O` channels (sums starting from `bias`), in segments of `TW` pixels (the last one
/// shorter). `FMA` selects fused multiply-adds (only where the caller enabled the feature;
/// otherwise `mul_add` would be a library call).
///
/// # Safety
/// `out + oc·plane + j` for `oc < O`, `j < OW` must be valid for writes and written by no one
/// else during the call.
#[inline(always)]
unsafe fn row<T: Elem, const O: usize, const TW: usize, const FMA: bool>(
    g: &Geom,
    x: &View<T>,
    (w, bias): (&[T], &[T; MAX_O]),
    (n, oh): (usize, usize),
    out: *mut T,
    plane: usize,
) {
    let (kk, kw) = (g.kk(), g.kw);
    let mut ow0 = 0;
    while ow0 < g.ow {
        let tw = (g.ow - ow0).min(TW);
        let mut acc = [[T::zero(); TW]; O];
        for (a, &b) in acc.iter_mut().zip(bias) {
            a.fill(b);
        }
        for c in 0..g.c {
            let base = x.plane(n, c) + oh * x.st[2] + ow0;
            let wc = c * kk;
            for ki in 0..g.kh {
                // Input row oh + ki from column ow0: `tw + KW − 1` values (stride 1).
                let src = &x.data[base + ki * x.st[2]..][..tw + kw - 1];
                for kj in 0..kw {
                    let tap = wc + ki * kw + kj;
                    let mut wv = [T::zero(); O];
                    for (oc, v) in wv.iter_mut().enumerate() {
                        *v = w[oc * g.k() + tap];
                    }
                    if tw == TW {
                        let s: &[T; TW] = src[kj..kj + TW].try_into().expect("TW inputs");
                        for (a, &wo) in acc.iter_mut().zip(&wv) {
                            for (ai, &si) in a.iter_mut().zip(s) {
                                *ai = if FMA {
                                    si.mul_add(wo, *ai)
                                } else {
                                    *ai + si * wo
                                };
                            }
                        }
                    } else {
                        let s = &src[kj..kj + tw];
                        for (a, &wo) in acc.iter_mut().zip(&wv) {
                            for (ai, &si) in a.iter_mut().zip(s) {
                                *ai = if FMA {
                                    si.mul_add(wo, *ai)
                                } else {
                                    *ai + si * wo
                                };
                            }
                        }
                    }
                }
            }
        }
        for (oc, a) in acc.iter().enumerate() {
            // SAFETY: columns ow0..ow0+tw of channel oc's row, inside the caller's range.
            unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), out.add(oc * plane + ow0), tw) };
        }
        ow0 += tw;
    }
}
