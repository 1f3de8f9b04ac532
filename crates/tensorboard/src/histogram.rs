//! Histograms with TensorFlow's default bucket limits.
//!
//! The limits are exactly those of TensorFlow's `InitDefaultBucketsInner()`
//! (`tensorflow/core/lib/histogram/histogram.cc`), which TensorBoard was built
//! around: `v = 1e-12; while v < 1e20 { push(v); v *= 1.1 }` mirrored to the
//! negative side, then `-f64::MAX`, the negatives, `0`, the positives and
//! `f64::MAX` — 1551 limits in all. Bucket `i` counts the values in
//! `[limit[i-1], limit[i])` (the first one everything below `limit[0]`).
//!
//! As TensorFlow's `EncodeToProto(.., preserve_zero_buckets = false)` does,
//! runs of empty buckets are collapsed into one empty bucket whose limit is
//! the last limit of the run, so a histogram of a few values stays a few
//! hundred bytes instead of ~25 KB, and TensorBoard reads it the same way.

use crate::proto::HistoProto;
use std::sync::OnceLock;

/// TensorFlow's default bucket limits (strictly increasing, 1551 of them).
pub(crate) fn default_bucket_limits() -> &'static [f64] {
    static LIMITS: OnceLock<Vec<f64>> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut pos = Vec::new();
        let mut v = 1.0e-12f64;
        while v < 1.0e20 {
            pos.push(v);
            v *= 1.1;
        }
        let mut limits = Vec::with_capacity(2 * pos.len() + 3);
        limits.push(-f64::MAX);
        limits.extend(pos.iter().rev().map(|v| -v));
        limits.push(0.0);
        limits.extend_from_slice(&pos);
        limits.push(f64::MAX);
        limits
    })
}

/// Builds the histogram proto of the finite values in `values` (non-finite
/// ones are skipped and counted nowhere). With no finite value, `min`,
/// `max`, `num`, `sum` and `sum_squares` are all 0 and there is a single
/// empty bucket with limit `f64::MAX`.
pub(crate) fn histogram(values: &[f32]) -> HistoProto {
    let limits = default_bucket_limits();
    let mut counts = vec![0u64; limits.len()];
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut num, mut sum, mut sum_squares) = (0u64, 0.0f64, 0.0f64);
    for &x in values {
        if !x.is_finite() {
            continue;
        }
        let x = f64::from(x);
        // upper_bound: the first limit strictly greater than x. A finite f32
        // is always < f64::MAX, so the index is in range.
        let b = limits.partition_point(|&l| l <= x);
        counts[b.min(limits.len() - 1)] += 1;
        min = min.min(x);
        max = max.max(x);
        num += 1;
        sum += x;
        sum_squares += x * x;
    }

    let mut bucket_limit = Vec::new();
    let mut bucket = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let mut end = limits[i];
        let count = counts[i];
        i += 1;
        if count == 0 {
            while i < counts.len() && counts[i] == 0 {
                end = limits[i];
                i += 1;
            }
        }
        bucket_limit.push(end);
        bucket.push(count as f64);
    }
    if num == 0 {
        min = 0.0;
        max = 0.0;
    }
    HistoProto {
        min,
        max,
        num: num as f64,
        sum,
        sum_squares,
        bucket_limit,
        bucket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_tensorflow() {
        let l = default_bucket_limits();
        // 774 positive limits below 1e20 (the Python port of the same loop in
        // tensorboardX gives 774 too), mirrored, plus 0 and +-f64::MAX.
        assert_eq!(l.len(), 1551);
        assert_eq!(l[0], -f64::MAX);
        assert_eq!(l[1550], f64::MAX);
        assert_eq!(l[775], 0.0);
        assert_eq!(l[776], 1e-12);
        assert_eq!(l[774], -1e-12);
        assert_eq!(l[777], 1.1000000000000002e-12);
        assert_eq!(l[1549], 9.920775621859783e19);
        assert!(l.windows(2).all(|w| w[0] < w[1]));
        for i in 0..775 {
            assert_eq!(l[i], -l[1550 - i]);
        }
    }

    /// Reference: the bucket a value falls in, by linear scan.
    fn bucket_of(x: f64) -> usize {
        let l = default_bucket_limits();
        (0..l.len()).find(|&i| x < l[i]).unwrap()
    }

    #[test]
    fn bucket_assignment_matches_linear_scan() {
        // Values and their buckets checked against Python's
        // bisect.bisect_right over the same limits.
        assert_eq!(bucket_of(-2.5), 475);
        assert_eq!(bucket_of(-1.0), 485);
        assert_eq!(bucket_of(0.0), 776);
        assert_eq!(bucket_of(0.5), 1059);
        assert_eq!(bucket_of(1.0), 1066);
        assert_eq!(bucket_of(3.0), 1078);

        let values = [-2.5f32, -1.0, 0.0, 0.0, 0.5, 1.0, 3.0];
        let h = histogram(&values);
        let l = default_bucket_limits();
        // Non-empty buckets appear with their exact limit and count.
        for (lim, count) in [(l[475], 1.0), (l[485], 1.0), (l[776], 2.0), (l[1078], 1.0)] {
            let j = h.bucket_limit.iter().position(|&x| x == lim).unwrap();
            assert_eq!(h.bucket[j], count, "limit {lim}");
        }
        assert_eq!(h.bucket.iter().sum::<f64>(), 7.0);
        assert_eq!(h.bucket_limit.len(), h.bucket.len());
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*h.bucket_limit.last().unwrap(), f64::MAX);
        // Empty runs are collapsed: 7 values in 6 distinct buckets make at
        // most 6 non-empty + 7 empty runs.
        assert!(h.bucket.len() <= 13, "{}", h.bucket.len());
        assert!(h.bucket.windows(2).all(|w| w[0] != 0.0 || w[1] != 0.0));
        assert_eq!((h.min, h.max, h.num), (-2.5, 3.0, 7.0));
        assert_eq!(h.sum, 1.0);
        assert_eq!(h.sum_squares, 17.5);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let h = histogram(&[f32::NAN, 1.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!(
            (h.min, h.max, h.num, h.sum, h.sum_squares),
            (1.0, 1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(h.bucket.iter().sum::<f64>(), 1.0);

        let e = histogram(&[f32::NAN]);
        assert_eq!((e.min, e.max, e.num, e.sum), (0.0, 0.0, 0.0, 0.0));
        assert_eq!(e.bucket_limit, vec![f64::MAX]);
        assert_eq!(e.bucket, vec![0.0]);
    }

    #[test]
    fn extreme_finite_values_have_a_bucket() {
        let h = histogram(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0]);
        assert_eq!(h.num, 4.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 4.0);
        // f32::MAX > 1e20 falls in the last bucket, [~9.9e19, f64::MAX).
        assert_eq!(h.bucket_limit.last(), Some(&f64::MAX));
        assert_eq!(h.bucket.last(), Some(&1.0));
    }
}
