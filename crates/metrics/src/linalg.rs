//! Dense f64 linear algebra for the metrics: a host matrix type, products through candle's CPU
//! GEMM, and a symmetric eigensolver.
//!
//! The eigensolver is the classic two-phase method (Golub & Van Loan, *Matrix Computations*,
//! §8.3): Householder reduction to tridiagonal form, then the implicit QL iteration with Wilkinson
//! shifts of EISPACK's `tql2` (as in JAMA). Eigenvectors are accumulated by recording the Givens
//! rotations of the QL sweeps and applying them to column blocks of the Householder basis in
//! parallel, so a 2048×2048 covariance (Inception pool3) is decomposed in seconds. Its accuracy is
//! backward-stable: eigenvalues carry an absolute error of a small multiple of ε·‖A‖₂.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// A dense row-major f64 matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows · cols` values, row after row.
    pub data: Vec<f64>,
}

impl Mat {
    /// A matrix from row-major values; errors when the length is not `rows · cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != rows * cols {
            candle_core::bail!(
                "matrix {rows}×{cols} needs {} values, got {}",
                rows * cols,
                data.len()
            )
        }
        Ok(Self { rows, cols, data })
    }

    /// The `n×n` zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Features `[N, D]` (any float dtype, any device) as an f64 host matrix. `what` names the
    /// argument in errors; non-finite values are rejected.
    pub fn from_tensor(t: &Tensor, what: &str) -> Result<Self> {
        let (rows, cols) = match t.dims() {
            [r, c] => (*r, *c),
            d => candle_core::bail!("{what}: expected a matrix [N, D], got shape {d:?}"),
        };
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            candle_core::bail!(
                "{what}: non-finite value {} at row {}, column {} (shape [{rows}, {cols}])",
                data[i],
                i / cols.max(1),
                i % cols.max(1)
            )
        }
        Ok(Self { rows, cols, data })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The matrix made of rows `idx` (in that order).
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Self {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// Rows `start..start + len`.
    pub fn row_block(&self, start: usize, len: usize) -> Self {
        Self {
            rows: len,
            cols: self.cols,
            data: self.data[start * self.cols..(start + len) * self.cols].to_vec(),
        }
    }

    /// A CPU f64 tensor `[rows, cols]` holding a copy of the values.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.rows, self.cols), &Device::Cpu)
    }

    fn from_result(t: Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        Ok(Self {
            rows,
            cols,
            data: t.flatten_all()?.to_vec1::<f64>()?,
        })
    }

    /// `self · other` (GEMM on the CPU in f64).
    pub fn matmul(&self, other: &Mat) -> Result<Mat> {
        if self.cols != other.rows {
            candle_core::bail!(
                "matmul: [{}, {}] · [{}, {}]",
                self.rows,
                self.cols,
                other.rows,
                other.cols
            )
        }
        Self::from_result(self.to_tensor()?.matmul(&other.to_tensor()?)?)
    }

    /// `self · otherᵀ` (GEMM on the CPU in f64).
    pub fn matmul_t(&self, other: &Mat) -> Result<Mat> {
        if self.cols != other.cols {
            candle_core::bail!(
                "matmul_t: [{}, {}] · [{}, {}]ᵀ",
                self.rows,
                self.cols,
                other.rows,
                other.cols
            )
        }
        Self::from_result(self.to_tensor()?.matmul(&other.to_tensor()?.t()?)?)
    }

    /// The transpose.
    pub fn transpose(&self) -> Mat {
        let mut out = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        out
    }

    /// Squared Euclidean norm of every row.
    pub fn row_sq_norms(&self) -> Vec<f64> {
        (0..self.rows)
            .map(|i| self.row(i).iter().map(|v| v * v).sum())
            .collect()
    }

    /// Sum of the diagonal of a square matrix.
    pub fn trace(&self) -> f64 {
        (0..self.rows.min(self.cols))
            .map(|i| self.data[i * self.cols + i])
            .sum()
    }
}

/// Squared Euclidean distances `[a.rows, b.rows]` through the Gram matrix,
/// `‖a_i‖² + ‖b_j‖² − 2 a_i·b_j`, clamped at 0.
pub(crate) fn sq_distances(a: &Mat, b: &Mat, b_norms: &[f64]) -> Result<Mat> {
    let mut g = a.matmul_t(b)?;
    let a_norms = a.row_sq_norms();
    for (row, an) in g.data.chunks_mut(b.rows.max(1)).zip(&a_norms) {
        for (v, bn) in row.iter_mut().zip(b_norms) {
            *v = (an + bn - 2.0 * *v).max(0.0);
        }
    }
    Ok(g)
}

/// Rows per block when distance matrices are computed in pieces (bounds memory at
/// `BLOCK · N` values).
pub(crate) const BLOCK: usize = 1024;

/// Eigenvalues (ascending) and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone)]
pub struct SymmetricEigen {
    /// Eigenvalues in ascending order.
    pub values: Vec<f64>,
    /// Row `j` is the unit eigenvector of `values[j]` (i.e. the matrix `Vᵀ`).
    pub vectors_t: Mat,
}

fn check_symmetric_input(a: &Mat) -> Result<()> {
    if a.rows != a.cols {
        candle_core::bail!(
            "symmetric eigendecomposition needs a square matrix, got {}×{}",
            a.rows,
            a.cols
        )
    }
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        candle_core::bail!(
            "symmetric eigendecomposition: non-finite entry {} at ({}, {})",
            a.data[i],
            i / a.cols,
            i % a.cols
        )
    }
    Ok(())
}

/// Eigendecomposition `A = V diag(λ) Vᵀ` of the symmetric part `(A + Aᵀ)/2` of `a`.
pub fn symmetric_eigen(a: &Mat) -> Result<SymmetricEigen> {
    check_symmetric_input(a)?;
    let n = a.rows;
    let mut work = symmetrized(a);
    let (mut d, mut e, tau) = tridiagonalize(&mut work.data, n);
    let q = householder_basis(&work.data, &tau, n);
    // Rows of qt are the columns of Q; the QL rotations act on pairs of them.
    let mut qt = q.transpose();
    tql(&mut d, &mut e, Some(&mut qt))?;
    // Sort ascending, permuting the vectors with the values.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    let values = order.iter().map(|&i| d[i]).collect();
    let vectors_t = qt.select_rows(&order);
    Ok(SymmetricEigen { values, vectors_t })
}

/// Eigenvalues (ascending) of the symmetric part of `a`, without eigenvectors.
pub fn symmetric_eigenvalues(a: &Mat) -> Result<Vec<f64>> {
    check_symmetric_input(a)?;
    let n = a.rows;
    let mut work = symmetrized(a);
    let (mut d, mut e, _) = tridiagonalize(&mut work.data, n);
    tql(&mut d, &mut e, None)?;
    d.sort_by(f64::total_cmp);
    Ok(d)
}

fn symmetrized(a: &Mat) -> Mat {
    let n = a.rows;
    let mut s = a.clone();
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
            s.data[i * n + j] = v;
            s.data[j * n + i] = v;
        }
    }
    s
}

/// Below this trailing size the level-2 loops run on one thread.
const PAR_MIN: usize = 192;

/// Householder reduction of the symmetric `a` (`n×n`, row-major, overwritten) to the tridiagonal
/// `T = Qᵀ A Q`, `Q = H_0 ⋯ H_{n−3}`, `H_k = I − τ_k v_k v_kᵀ`.
///
/// Returns `(d, e, τ)`: `d[i] = T[i][i]`, `e[i] = T[i+1][i]` (`e[n−1] = 0`). The vector `v_k`
/// (entries `k+1..n`) is left in row `k` of `a`.
fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut tau = vec![0.0; n];
    if n == 0 {
        return (d, e, tau);
    }
    let mut p = vec![0.0; n];
    for k in 0..n.saturating_sub(2) {
        d[k] = a[k * n + k];
        let (head, trailing) = a.split_at_mut((k + 1) * n);
        let x = &mut head[k * n + k + 1..(k + 1) * n]; // row k right of the diagonal = column k
        if x[1..].iter().all(|&v| v == 0.0) {
            // Already tridiagonal in this column: H_k = I.
            e[k] = x[0];
            tau[k] = 0.0;
            continue;
        }
        // Work on x / max|x| (EISPACK's tred2 scales likewise): rounding residue of a
        // (near-)singular matrix can leave entries around 1e-161 here, whose squares underflow
        // and would make τ infinite. H = I − τ v vᵀ depends only on v's direction, so the scaled
        // v (with τ for it) gives the same reflector.
        let scale = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        x.iter_mut().for_each(|v| *v /= scale);
        let x0 = x[0];
        let sigma: f64 = x[1..].iter().map(|v| v * v).sum();
        let norm = (x0 * x0 + sigma).sqrt();
        let alpha = if x0 > 0.0 { -norm } else { norm };
        x[0] = x0 - alpha; // v = x − α e₁, so H x = α e₁
        let t = 2.0 / (x[0] * x[0] + sigma);
        e[k] = alpha * scale;
        tau[k] = t;
        let v: &[f64] = x;
        let m = n - k - 1;
        let off = k + 1;
        // p = τ B v over the trailing block B = A[k+1.., k+1..].
        let p = &mut p[..m];
        let row_dot = |i: usize| -> f64 {
            let row = &trailing[i * n + off..i * n + n];
            t * row.iter().zip(v).map(|(b, v)| b * v).sum::<f64>()
        };
        if m >= PAR_MIN {
            p.par_iter_mut()
                .enumerate()
                .for_each(|(i, pi)| *pi = row_dot(i));
        } else {
            for (i, pi) in p.iter_mut().enumerate() {
                *pi = row_dot(i);
            }
        }
        // w = p − (τ/2)(pᵀv) v;  B ← B − v wᵀ − w vᵀ.
        let kk = 0.5 * t * p.iter().zip(v).map(|(p, v)| p * v).sum::<f64>();
        for (pi, vi) in p.iter_mut().zip(v) {
            *pi -= kk * vi;
        }
        let w: &[f64] = p;
        let update = |(i, row): (usize, &mut [f64])| {
            let (vi, wi) = (v[i], w[i]);
            for ((b, vj), wj) in row[off..].iter_mut().zip(v).zip(w) {
                *b -= vi * wj + wi * vj;
            }
        };
        let rows = &mut trailing[..m * n];
        if m >= PAR_MIN {
            rows.par_chunks_mut(n).enumerate().for_each(update);
        } else {
            rows.chunks_mut(n).enumerate().for_each(update);
        }
    }
    if n >= 2 {
        d[n - 2] = a[(n - 2) * n + n - 2];
        e[n - 2] = a[(n - 2) * n + n - 1];
    }
    d[n - 1] = a[(n - 1) * n + n - 1];
    (d, e, tau)
}

/// `Q = H_0 H_1 ⋯ H_{n−3}` from the reflectors left by [`tridiagonalize`], by backward
/// accumulation (each `H_k` only touches rows and columns `k+1..n` of the partial product).
fn householder_basis(a: &[f64], tau: &[f64], n: usize) -> Mat {
    let mut q = Mat::zeros(n, n);
    for i in 0..n {
        q.data[i * n + i] = 1.0;
    }
    let mut w = vec![0.0; n];
    for k in (0..n.saturating_sub(2)).rev() {
        let t = tau[k];
        if t == 0.0 {
            continue;
        }
        let off = k + 1;
        let m = n - off;
        let v = &a[k * n + off..(k + 1) * n];
        // w = τ vᵀ Q_sub (a weighted sum of rows), then Q_sub −= v wᵀ.
        let w = &mut w[..m];
        w.iter_mut().for_each(|x| *x = 0.0);
        let rows = &mut q.data[off * n..];
        for (i, row) in rows.chunks(n).enumerate() {
            let vi = t * v[i];
            if vi != 0.0 {
                for (wj, qj) in w.iter_mut().zip(&row[off..]) {
                    *wj += vi * qj;
                }
            }
        }
        let w: &[f64] = w;
        let update = |(i, row): (usize, &mut [f64])| {
            let vi = v[i];
            for (qj, wj) in row[off..].iter_mut().zip(w) {
                *qj -= vi * wj;
            }
        };
        if m >= PAR_MIN {
            rows.par_chunks_mut(n).enumerate().for_each(update);
        } else {
            rows.chunks_mut(n).enumerate().for_each(update);
        }
    }
    q
}

/// Recorded Givens rotations: `(i, c, s)` acts on rows `i`, `i+1` of `Vᵀ` as
/// `r_{i+1} ← s·r_i + c·r_{i+1}`, `r_i ← c·r_i − s·r_{i+1}`.
#[derive(Default)]
struct Rotations {
    idx: Vec<u32>,
    cs: Vec<(f64, f64)>,
}

/// Rotations buffered before they are applied (bounds memory; each flush streams the buffer
/// once per column block).
const ROT_FLUSH: usize = 1 << 20;
/// Columns per block when applying rotations (a block of `n × 64` f64 stays in L2).
const ROT_COLS: usize = 64;

impl Rotations {
    fn flush(&mut self, vt: &mut Mat) {
        if self.idx.is_empty() {
            return;
        }
        let n = vt.cols;
        let (idx, cs) = (&self.idx, &self.cs);
        let nblocks = n.div_ceil(ROT_COLS);
        // Each block gathers its columns into a contiguous [rows × width] buffer, applies every
        // rotation, and scatters back; blocks are independent.
        let blocks: Vec<(usize, Vec<f64>)> = (0..nblocks)
            .into_par_iter()
            .map(|b| {
                let c0 = b * ROT_COLS;
                let width = ROT_COLS.min(n - c0);
                let mut buf = Vec::with_capacity(vt.rows * width);
                for r in 0..vt.rows {
                    buf.extend_from_slice(&vt.data[r * n + c0..r * n + c0 + width]);
                }
                for (&i, &(c, s)) in idx.iter().zip(cs) {
                    let i = i as usize;
                    let (lo, hi) = buf.split_at_mut((i + 1) * width);
                    let ri = &mut lo[i * width..];
                    let rj = &mut hi[..width];
                    for (a, b) in ri.iter_mut().zip(rj.iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                (c0, buf)
            })
            .collect();
        for (c0, buf) in blocks {
            let width = ROT_COLS.min(n - c0);
            for r in 0..vt.rows {
                vt.data[r * n + c0..r * n + c0 + width]
                    .copy_from_slice(&buf[r * width..(r + 1) * width]);
            }
        }
        self.idx.clear();
        self.cs.clear();
    }
}

/// Implicit QL with Wilkinson shifts on the tridiagonal `(d, e)` (`e[i]` couples `i` and `i+1`),
/// EISPACK `tql2`. On return `d` holds the eigenvalues (unsorted); when `vt` is given, its rows
/// are rotated along (start from the rows of `Qᵀ` to get the eigenvectors of `A`).
fn tql(d: &mut [f64], e: &mut [f64], mut vt: Option<&mut Mat>) -> Result<()> {
    let n = d.len();
    if n == 0 {
        return Ok(());
    }
    e[n - 1] = 0.0;
    let mut rot = Rotations::default();
    let mut f = 0.0;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 100 {
                    candle_core::bail!(
                        "symmetric eigensolver: no convergence for eigenvalue {l} of {n} after 100 QL iterations"
                    )
                }
                // Implicit shift.
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                // QL sweep.
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    if vt.is_some() {
                        rot.idx.push(i as u32);
                        rot.cs.push((c, s));
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if let Some(vt) = vt.as_deref_mut() {
                    if rot.idx.len() >= ROT_FLUSH {
                        rot.flush(vt);
                    }
                }
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    if let Some(vt) = vt {
        rot.flush(vt);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, m: usize, seed: u64) -> Mat {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Mat::new(
            n,
            m,
            (0..n * m).map(|_| rng.random_range(-1.0..1.0)).collect(),
        )
        .unwrap()
    }

    /// ‖A V − V Λ‖ and ‖VᵀV − I‖ are at rounding level, and the values match a known spectrum.
    fn check(n: usize, seed: u64) {
        // A = Q diag(λ) Qᵀ with Q from the eigenvectors of a random symmetric matrix.
        let r = random(n, n, seed);
        let s = symmetrized(&r);
        let eig = symmetric_eigen(&s).unwrap();
        let vt = &eig.vectors_t;
        // Orthonormality.
        let g = vt.matmul_t(vt).unwrap();
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (g.data[i * n + j] - want).abs() < 1e-12 * n as f64,
                    "VᵀV[{i}][{j}]"
                );
            }
        }
        // Residual: Vᵀ A = Λ Vᵀ.
        let va = vt.matmul(&s).unwrap();
        let mut worst = 0.0f64;
        for j in 0..n {
            for k in 0..n {
                let res = va.data[j * n + k] - eig.values[j] * vt.data[j * n + k];
                worst = worst.max(res.abs());
            }
        }
        assert!(worst < 1e-12 * n as f64, "n = {n}: residual {worst}");
        // Values-only agrees, and the trace is preserved.
        let vals = symmetric_eigenvalues(&s).unwrap();
        for (a, b) in vals.iter().zip(&eig.values) {
            assert!((a - b).abs() < 1e-12 * n as f64);
        }
        let tr: f64 = eig.values.iter().sum();
        assert!((tr - s.trace()).abs() < 1e-10 * n as f64);
        assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn random_symmetric_matrices() {
        for (n, seed) in [(1, 0), (2, 1), (3, 2), (7, 3), (40, 4), (300, 5)] {
            check(n, seed);
        }
    }

    #[test]
    fn known_spectra_including_singular_and_repeated() {
        // diag(3, 1, 1, 0, 0) rotated by an orthogonal matrix.
        let q = symmetric_eigen(&symmetrized(&random(5, 5, 9)))
            .unwrap()
            .vectors_t;
        let lam = [3.0, 1.0, 1.0, 0.0, 0.0];
        let mut a = Mat::zeros(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                a.data[i * 5 + j] = (0..5)
                    .map(|k| q.data[k * 5 + i] * lam[k] * q.data[k * 5 + j])
                    .sum();
            }
        }
        let vals = symmetric_eigenvalues(&a).unwrap();
        for (v, w) in vals.iter().zip([0.0, 0.0, 1.0, 1.0, 3.0]) {
            assert!((v - w).abs() < 1e-14, "{vals:?}");
        }
        // Already diagonal and already tridiagonal inputs.
        let diag = Mat::new(3, 3, vec![2.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0]).unwrap();
        assert_eq!(symmetric_eigenvalues(&diag).unwrap(), [-1.0, 2.0, 5.0]);
        let zero = Mat::zeros(4, 4);
        assert_eq!(symmetric_eigenvalues(&zero).unwrap(), [0.0; 4]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let err = symmetric_eigen(&Mat::zeros(2, 3)).unwrap_err().to_string();
        assert!(err.contains("2×3"), "{err}");
        let mut a = Mat::zeros(2, 2);
        a.data[3] = f64::NAN;
        let err = symmetric_eigenvalues(&a).unwrap_err().to_string();
        assert!(err.contains("NaN") && err.contains("(1, 1)"), "{err}");
    }

    /// Off-diagonal entries whose squares underflow (rounding residue in the covariance of
    /// pixel features with constant pixels): the reflector must not become infinite.
    #[test]
    fn tiny_off_diagonal_entries_do_not_underflow() {
        let t = 1e-161;
        let a = Mat::new(3, 3, vec![1.0, t, t, t, 2.0, 0.0, t, 0.0, 3.0]).unwrap();
        let eig = symmetric_eigen(&a).unwrap();
        for (got, want) in eig.values.iter().zip([1.0, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-15, "{:?}", eig.values);
        }
        // The eigenvectors are the unit vectors (up to sign).
        for (j, row) in eig.vectors_t.data.chunks(3).enumerate() {
            for (i, v) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v.abs() - want).abs() < 1e-15, "{:?}", eig.vectors_t);
            }
        }
        assert_eq!(symmetric_eigenvalues(&a).unwrap(), eig.values);
    }
}
