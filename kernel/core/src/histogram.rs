//! A wake-up latency histogram with bounded relative error and no allocation.
//!
//! Buckets are log-linear, as in HdrHistogram: each power of two from 1 ns up is split into
//! [`SUB_BUCKETS`] equal parts, so a recorded value is known to within 1/16 (6%) of itself,
//! whatever its size, in a fixed 2.5 KiB per vCPU. Percentiles report the upper edge of the
//! bucket that holds them (never below the true value); the maximum is kept exactly.
//! [`Histogram::log2_buckets`] exports the counts in the results' coarser log2 buckets.

use abi::control::{WAKE_LAT_BUCKETS, wake_lat_bucket};

/// Sub-buckets per power of two.
const SUB_BUCKETS: usize = 16;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Powers of two covered: values up to 2^40 ns (18 minutes); larger ones land in the last.
const POWERS: usize = 40;
const BUCKETS: usize = POWERS * SUB_BUCKETS;

/// Counts of latencies in nanoseconds.
///
/// `repr(C)`, the two figures first: a record touches them and one count, and a vCPU's
/// histogram follows the fields a switch touches (`domain::Vcpu` in the hypervisor), so the
/// counts of short latencies lie nearest those.
#[derive(Clone)]
#[repr(C)]
pub struct Histogram {
    total: u64,
    max: u64,
    counts: [u32; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS as u64 {
        return value as usize;
    }
    let power = 63 - value.leading_zeros(); // >= SUB_BITS
    let sub = (value >> (power - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    (((power - SUB_BITS + 1) as usize) * SUB_BUCKETS + sub).min(BUCKETS - 1)
}

/// The smallest value that falls in `bucket`.
fn bucket_lower(bucket: usize) -> u64 {
    if bucket < SUB_BUCKETS {
        return bucket as u64;
    }
    let power = (bucket / SUB_BUCKETS) as u32 - 1 + SUB_BITS;
    let sub = (bucket % SUB_BUCKETS) as u64;
    (1u64 << power) + sub * (1u64 << (power - SUB_BITS))
}

/// The largest value that falls in `bucket`.
fn bucket_upper(bucket: usize) -> u64 {
    if bucket < SUB_BUCKETS {
        return bucket as u64;
    }
    let power = (bucket / SUB_BUCKETS) as u32 - 1 + SUB_BITS;
    let sub = (bucket % SUB_BUCKETS) as u64;
    let width = 1u64 << (power - SUB_BITS);
    (1u64 << power) + (sub + 1) * width - 1
}

impl Histogram {
    /// Records one latency.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let b = bucket_of(ns);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Adds every latency recorded in `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Forgets every latency recorded: the histogram starts afresh.
    pub fn clear(&mut self) {
        if self.total != 0 {
            self.counts.fill(0);
            (self.total, self.max) = (0, 0);
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest latency recorded (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The counts in `abi::control`'s log2 buckets from 1 µs (`wake_lat_bucket`): exact,
    /// since no bucket here straddles a power of two (each lies within [2^p, 2^(p+1)), or
    /// holds one value below 16); the last, open-ended bucket goes to the last log2 one.
    pub fn log2_buckets(&self) -> [u32; WAKE_LAT_BUCKETS] {
        let mut out = [0u32; WAKE_LAT_BUCKETS];
        for (bucket, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let to = if bucket == BUCKETS - 1 {
                WAKE_LAT_BUCKETS - 1
            } else {
                wake_lat_bucket(bucket_lower(bucket))
            };
            out[to] = out[to].saturating_add(count);
        }
        out
    }

    /// The `pct`-th percentile (0..=100), as the upper edge of its bucket capped at the
    /// maximum; 0 if nothing was recorded.
    pub fn percentile(&self, pct: u32) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (self.total * u64::from(pct.min(100))).div_ceil(100).max(1);
        let mut seen = 0u64;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                // The last bucket is open-ended: only the maximum bounds it.
                if bucket == BUCKETS - 1 {
                    return self.max;
                }
                return bucket_upper(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::control::wake_lat_upper_ns;

    #[test]
    fn buckets_cover_values_with_bounded_error() {
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            100,
            999,
            1_000_000,
            123_456_789,
            1 << 39,
        ] {
            let upper = bucket_upper(bucket_of(v));
            assert!(upper >= v, "{v} above its bucket's top {upper}");
            assert!(
                upper - v <= v / 16 + 1,
                "{v} in a bucket up to {upper}: error too large"
            );
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 µs .. 1 ms
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), 1_000_000);
        let p50 = h.percentile(50);
        assert!(
            (500_000..=500_000 + 500_000 / 16).contains(&p50),
            "p50 {p50}"
        );
        let p99 = h.percentile(99);
        assert!((990_000..=1_000_000).contains(&p99), "p99 {p99}");
        assert_eq!(h.percentile(100), 1_000_000);
    }

    #[test]
    fn a_cleared_histogram_starts_afresh() {
        let mut h = Histogram::default();
        (1..=1000u64).for_each(|ns| h.record(ns * 1000));
        h.clear();
        assert_eq!((h.count(), h.max(), h.percentile(99)), (0, 0, 0));
        h.record(5000);
        assert_eq!((h.count(), h.max()), (1, 5000));
        assert_eq!(
            h.log2_buckets().iter().map(|&n| u64::from(n)).sum::<u64>(),
            1
        );
    }

    #[test]
    fn merged_histograms_hold_both() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        (0..90).for_each(|_| a.record(1000));
        (0..10).for_each(|_| b.record(1_000_000));
        a.merge(&b);
        assert_eq!((a.count(), a.max()), (100, 1_000_000));
        assert!(a.percentile(50) <= 1000 + 1000 / 16);
        assert!(a.percentile(99) >= 1_000_000 - 1_000_000 / 16);
    }

    #[test]
    fn bucket_edges_meet() {
        for b in 0..BUCKETS - 1 {
            assert!(bucket_lower(b) <= bucket_upper(b), "{b}");
            assert_eq!(bucket_upper(b) + 1, bucket_lower(b + 1), "{b}");
            assert_eq!(bucket_of(bucket_lower(b)), b);
            assert_eq!(bucket_of(bucket_upper(b)), b);
        }
    }

    #[test]
    fn log2_export_bounds_conserve_counts_and_skip_nothing() {
        let mut h = Histogram::default();
        // Values on both sides of every log2 bound from 1 µs up, and below it.
        let mut values = alloc_free_values();
        values.sort_unstable();
        for &v in &values {
            h.record(v);
        }
        let log2 = h.log2_buckets();
        let total: u64 = log2.iter().map(|&n| u64::from(n)).sum();
        assert_eq!(total, h.count(), "counts conserved");
        // Each value lands in the bucket whose bound is above it and whose half is not.
        let mut want = [0u32; WAKE_LAT_BUCKETS];
        for &v in &values {
            let i = (0..WAKE_LAT_BUCKETS)
                .find(|&i| v < wake_lat_upper_ns(i))
                .unwrap_or(WAKE_LAT_BUCKETS - 1);
            assert!(i == 0 || v >= wake_lat_upper_ns(i) / 2, "{v}");
            want[i] += 1;
        }
        assert_eq!(log2, want);
        // Empty buckets stay empty (none is left out or made up).
        assert_eq!(log2[20..].iter().filter(|&&n| n > 0).count(), 0);
        assert_eq!(Histogram::default().log2_buckets(), [0; WAKE_LAT_BUCKETS]);
        // The open-ended top bucket goes to the last log2 bucket.
        let mut big = Histogram::default();
        big.record(u64::MAX);
        assert_eq!(big.log2_buckets()[WAKE_LAT_BUCKETS - 1], 1);
    }

    /// 0, 1, 15, 16, 500, 1023, then 2^k - 1 and 2^k for k = 10..=20 (a fixed array, no
    /// allocator needed).
    fn alloc_free_values() -> [u64; 28] {
        let mut out = [0u64; 28];
        out[..6].copy_from_slice(&[0, 1, 15, 16, 500, 1023]);
        for (i, k) in (10..=20).enumerate() {
            out[6 + 2 * i] = (1u64 << k) - 1;
            out[7 + 2 * i] = 1u64 << k;
        }
        out
    }

    #[test]
    fn empty_histogram_reads_zero_and_outliers_keep_their_max() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(99), 0);
        h.record(u64::MAX);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(h.percentile(50), u64::MAX);
    }
}
