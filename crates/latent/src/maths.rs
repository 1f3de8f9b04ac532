//! Vector maths on latent vectors held on the host (`&[f32]`), accumulated in f64.
//!
//! - [`lerp`] / [`slerp`] and [`interpolate`]: straight line or great circle between two z
//!   (slerp as in White, "Sampling Generative Networks", 2016: under a Gaussian prior most mass
//!   lies near a sphere, and a straight line cuts through its low-density interior — the
//!   midpoint of two independent z has norm ≈ |z|/√2).
//! - [`mean`] and [`signed_sum`]: concept vectors (the DCGAN paper averages 3 exemplars per
//!   concept, single vectors being unstable) and expressions `A − B + C`.
//! - [`jitter`]: the paper's 3×3 figure — the result Y plus 8 neighbours Y + U(−s, s) per
//!   coordinate, from a seeded ChaCha8 stream.
//! - [`direction`] and [`walk`]: mean(P) − mean(N) and `z + t·d` for `t` in a span.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{invalid, Result};

/// How to go from one latent vector to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Straight line `(1 − t)·a + t·b`.
    Lerp,
    /// Great circle (spherical linear interpolation).
    Slerp,
}

fn same_len(a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        return invalid(format!(
            "latent vectors of different sizes: {} and {}",
            a.len(),
            b.len()
        ));
    }
    if a.is_empty() {
        return invalid("empty latent vector");
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Euclidean norm (f64).
pub fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// `(1 − t)·a + t·b`; exactly `a` at `t = 0` and `b` at `t = 1`.
pub fn lerp(a: &[f32], b: &[f32], t: f64) -> Result<Vec<f32>> {
    same_len(a, b)?;
    if t == 0.0 {
        return Ok(a.to_vec());
    }
    if t == 1.0 {
        return Ok(b.to_vec());
    }
    Ok(a.iter()
        .zip(b)
        .map(|(&x, &y)| ((1.0 - t) * x as f64 + t * y as f64) as f32)
        .collect())
}

/// Spherical interpolation: `sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b` with Ω the angle between
/// `a` and `b`. Exactly `a` at `t = 0` and `b` at `t = 1`; for vectors of equal norm every point
/// keeps that norm. Falls back to [`lerp`] when the angle is degenerate (parallel, opposite or a
/// zero vector), where the great circle is undefined.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Result<Vec<f32>> {
    same_len(a, b)?;
    if t == 0.0 {
        return Ok(a.to_vec());
    }
    if t == 1.0 {
        return Ok(b.to_vec());
    }
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let cos = (dot(a, b) / (na * nb)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let so = omega.sin();
    if so < 1e-6 {
        return lerp(a, b, t);
    }
    let (ca, cb) = (((1.0 - t) * omega).sin() / so, (t * omega).sin() / so);
    Ok(a.iter()
        .zip(b)
        .map(|(&x, &y)| (ca * x as f64 + cb * y as f64) as f32)
        .collect())
}

/// `steps` vectors from `a` to `b` inclusive (`t = i / (steps − 1)`); `steps ≥ 2`.
pub fn interpolate(a: &[f32], b: &[f32], steps: usize, how: Interp) -> Result<Vec<Vec<f32>>> {
    if steps < 2 {
        return invalid(format!(
            "--steps {steps}: an interpolation needs at least 2 steps (both ends), e.g. 9"
        ));
    }
    (0..steps)
        .map(|i| {
            let t = i as f64 / (steps - 1) as f64;
            match how {
                Interp::Lerp => lerp(a, b, t),
                Interp::Slerp => slerp(a, b, t),
            }
        })
        .collect()
}

/// The mean of one or more vectors of the same size.
pub fn mean(vectors: &[&[f32]]) -> Result<Vec<f32>> {
    let Some(first) = vectors.first() else {
        return invalid("a concept needs at least one vector");
    };
    let mut acc = vec![0f64; first.len()];
    for v in vectors {
        same_len(first, v)?;
        for (a, &x) in acc.iter_mut().zip(v.iter()) {
            *a += x as f64;
        }
    }
    let n = vectors.len() as f64;
    Ok(acc.into_iter().map(|a| (a / n) as f32).collect())
}

/// `Σ wᵢ·vᵢ` — e.g. weights `[1, −1, 1]` for `A − B + C`.
pub fn signed_sum(terms: &[(f64, &[f32])]) -> Result<Vec<f32>> {
    let Some((_, first)) = terms.first() else {
        return invalid("an expression needs at least one term");
    };
    let mut acc = vec![0f64; first.len()];
    for (w, v) in terms {
        same_len(first, v)?;
        for (a, &x) in acc.iter_mut().zip(v.iter()) {
            *a += w * x as f64;
        }
    }
    Ok(acc.into_iter().map(|a| a as f32).collect())
}

/// `count` neighbours of `y`: `y + u` with every coordinate of `u` uniform in `[−scale, scale)`,
/// from a ChaCha8 stream keyed by `seed` (same seed, same neighbours on every machine).
pub fn jitter(y: &[f32], count: usize, scale: f32, seed: u64) -> Result<Vec<Vec<f32>>> {
    if !(scale.is_finite() && scale >= 0.0) {
        return invalid(format!(
            "--jitter {scale}: the noise scale must be a finite number ≥ 0, e.g. 0.25"
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok((0..count)
        .map(|_| {
            y.iter()
                .map(|&v| {
                    let u: f64 = rng.random();
                    (v as f64 + scale as f64 * (2.0 * u - 1.0)) as f32
                })
                .collect()
        })
        .collect())
}

/// An attribute direction: mean(`pos`) − mean(`neg`).
pub fn direction(pos: &[&[f32]], neg: &[&[f32]]) -> Result<Vec<f32>> {
    let p = mean(pos)?;
    let n = mean(neg)?;
    signed_sum(&[(1.0, &p), (-1.0, &n)])
}

/// `steps` points `z + t·d` with `t` evenly spaced from `span.0` to `span.1` inclusive.
pub fn walk(z: &[f32], d: &[f32], steps: usize, span: (f64, f64)) -> Result<Vec<Vec<f32>>> {
    same_len(z, d)?;
    if steps < 2 {
        return invalid(format!(
            "--steps {steps}: a walk needs at least 2 steps, e.g. 9"
        ));
    }
    if !(span.0.is_finite() && span.1.is_finite()) {
        return invalid(format!("--span {},{}: not finite", span.0, span.1));
    }
    Ok((0..steps)
        .map(|i| {
            let t = span.0 + (span.1 - span.0) * i as f64 / (steps - 1) as f64;
            z.iter()
                .zip(d)
                .map(|(&x, &dx)| (x as f64 + t * dx as f64) as f32)
                .collect()
        })
        .collect())
}

/// `n` standard-normal vectors of size `dim` from a ChaCha8 stream keyed by `seed`.
pub fn normal(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn angle(a: &[f32], b: &[f32]) -> f64 {
        (dot(a, b) / (norm(a) * norm(b))).clamp(-1.0, 1.0).acos()
    }

    #[test]
    fn endpoints_are_exact() {
        let [a, b]: [Vec<f32>; 2] = normal(2, 64, 1).try_into().unwrap();
        for how in [Interp::Lerp, Interp::Slerp] {
            let p = interpolate(&a, &b, 9, how).unwrap();
            assert_eq!(p.len(), 9);
            assert_eq!(p[0], a, "{how:?}");
            assert_eq!(p[8], b, "{how:?}");
        }
        assert!(interpolate(&a, &b, 1, Interp::Lerp)
            .unwrap_err()
            .to_string()
            .contains("at least 2"));
        assert!(lerp(&a, &b[..10], 0.5).is_err());
    }

    #[test]
    fn slerp_keeps_equal_norms_and_moves_along_the_great_circle() {
        let [a, b]: [Vec<f32>; 2] = normal(2, 64, 2).try_into().unwrap();
        // Give b the norm of a.
        let k = (norm(&a) / norm(&b)) as f32;
        let b: Vec<f32> = b.iter().map(|v| v * k).collect();
        let r = norm(&a);
        let omega = angle(&a, &b);
        for i in 0..=10 {
            let t = i as f64 / 10.0;
            let s = slerp(&a, &b, t).unwrap();
            assert!(
                (norm(&s) - r).abs() < 1e-4 * r,
                "t {t}: {} vs {r}",
                norm(&s)
            );
            // The angle from a grows linearly: t·Ω.
            assert!((angle(&a, &s) - t * omega).abs() < 1e-4, "t {t}");
        }
        // The straight line cuts inside: |lerp(½)| = r·cos(Ω/2) < r.
        let m = lerp(&a, &b, 0.5).unwrap();
        assert!((norm(&m) - r * (omega / 2.0).cos()).abs() < 1e-4 * r);
        // Independent 64-d Gaussians are nearly orthogonal, so that is about r/√2.
        assert!(norm(&m) < 0.85 * r, "{} vs {r}", norm(&m));
    }

    #[test]
    fn slerp_of_parallel_vectors_falls_back_to_lerp() {
        let a = vec![1.0f32, 2.0, 3.0];
        let b = vec![2.0f32, 4.0, 6.0];
        assert_eq!(slerp(&a, &b, 0.5).unwrap(), lerp(&a, &b, 0.5).unwrap());
        let z = vec![0.0f32; 3];
        assert_eq!(slerp(&z, &a, 0.25).unwrap(), lerp(&z, &a, 0.25).unwrap());
    }

    #[test]
    fn means_and_signed_sums() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [3.0f32, 0.0, -3.0];
        let c = [2.0f32, 4.0, 0.0];
        assert_eq!(mean(&[&a, &b, &c]).unwrap(), vec![2.0, 2.0, 0.0]);
        assert_eq!(mean(&[&a]).unwrap(), a.to_vec());
        assert!(mean(&[]).is_err());
        assert!(mean(&[&a, &[1.0, 2.0]]).is_err());
        // a − b + c
        assert_eq!(
            signed_sum(&[(1.0, &a), (-1.0, &b), (1.0, &c)]).unwrap(),
            vec![0.0, 6.0, 6.0]
        );
        assert_eq!(
            direction(&[&a, &c], &[&b]).unwrap(),
            vec![1.5 - 3.0, 3.0, 1.5 + 3.0]
        );
        // Order of terms does not matter; weights scale.
        assert_eq!(
            signed_sum(&[(2.0, &a), (-0.5, &c)]).unwrap(),
            vec![1.0, 2.0, 6.0]
        );
    }

    #[test]
    fn jitter_is_bounded_seeded_and_not_degenerate() {
        let y = normal(1, 100, 3).remove(0);
        let n = jitter(&y, 8, 0.25, 7).unwrap();
        assert_eq!(n.len(), 8);
        let mut max = 0f32;
        for v in &n {
            for (a, b) in v.iter().zip(&y) {
                let d = (a - b).abs();
                assert!(d <= 0.25 + 1e-6, "{d}");
                max = max.max(d);
            }
        }
        // The noise fills the interval (800 uniform draws: max |u| > 0.24 almost surely).
        assert!(max > 0.24, "{max}");
        // Neighbours differ from each other; same seed repeats, another seed does not.
        assert_ne!(n[0], n[1]);
        assert_eq!(n, jitter(&y, 8, 0.25, 7).unwrap());
        assert_ne!(n, jitter(&y, 8, 0.25, 8).unwrap());
        assert_eq!(jitter(&y, 2, 0.0, 1).unwrap(), vec![y.clone(), y.clone()]);
        assert!(jitter(&y, 2, -1.0, 1).is_err());
        assert!(jitter(&y, 2, f32::NAN, 1).is_err());
    }

    #[test]
    fn walks_are_evenly_spaced() {
        let z = [1.0f32, 0.0];
        let d = [0.0f32, 2.0];
        let w = walk(&z, &d, 5, (-1.0, 1.0)).unwrap();
        let ys: Vec<f32> = w.iter().map(|v| v[1]).collect();
        assert_eq!(ys, vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert!(w.iter().all(|v| v[0] == 1.0));
        assert!(walk(&z, &d, 1, (0.0, 1.0)).is_err());
    }

    #[test]
    fn normal_draws_are_seeded() {
        let a = normal(3, 16, 5);
        assert_eq!(a, normal(3, 16, 5));
        assert_ne!(a, normal(3, 16, 6));
        let all: Vec<f32> = normal(200, 50, 1).into_iter().flatten().collect();
        let m = all.iter().map(|&v| v as f64).sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / all.len() as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    }
}
