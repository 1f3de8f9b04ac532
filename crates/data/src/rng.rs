//! Seed derivation. Everything random in this crate (shape attributes, epoch
//! permutations, random crops) comes from a ChaCha8 stream keyed by a hash of
//! the run seed and the item's coordinates, so any item is O(1) to reproduce
//! and nothing depends on thread timing. Integers and floats are drawn with
//! our own few lines rather than `rand`'s distributions so a `rand` upgrade
//! cannot silently change a dataset or a resumed run.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The splitmix64 finaliser: a fast, well-mixing bijection on u64.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a list of coordinates (seed, stream tag, index, …) into one u64.
pub(crate) fn hash(parts: &[u64]) -> u64 {
    let mut h = 0x6561_7365_6C64_6174; // "easeldat"
    for &p in parts {
        h = splitmix64(h ^ splitmix64(p));
    }
    h
}

/// A ChaCha8 generator keyed by the coordinates.
pub(crate) fn rng(parts: &[u64]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    let mut h = hash(parts);
    for chunk in key.chunks_exact_mut(8) {
        h = splitmix64(h);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Uniform in [0, 1) with 53 bits.
pub(crate) fn unit(r: &mut ChaCha8Rng) -> f64 {
    (r.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform integer in [0, n) (n > 0), by widening multiply (bias < n / 2^64).
pub(crate) fn below(r: &mut ChaCha8Rng, n: usize) -> usize {
    ((r.next_u64() as u128 * n as u128) >> 64) as usize
}

/// A Fisher–Yates permutation of 0..n.
pub(crate) fn permutation(n: usize, parts: &[u64]) -> Vec<usize> {
    let mut r = rng(parts);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(&mut r, i + 1);
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_stable() {
        let p = permutation(100, &[7, 1]);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(p, permutation(100, &[7, 1]));
        assert_ne!(p, permutation(100, &[7, 2]));
    }

    #[test]
    fn below_and_unit_ranges() {
        let mut r = rng(&[1]);
        for _ in 0..1000 {
            assert!(below(&mut r, 3) < 3);
            let u = unit(&mut r);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
