//! Prometheus native histograms (sparse exponential buckets), kept beside the classic buckets.
//!
//! Bucket `i` of schema `s` holds the values in `(2^((i-1)/2^s), 2^(i/2^s)]` of the exported
//! unit (seconds, connections per second). Observations start at schema [`START_SCHEMA`] (3:
//! neighbouring bounds 2^(1/8) ≈ 1.09 apart, a bucket about 9 % wide, so a quantile of a steady
//! backend is within about 4.5 % of the truth wherever it lies). Values at or below
//! [`ZERO_THRESHOLD`] (the idle 0/s rate windows, two connections in the same nanosecond) go to
//! the zero bucket.
//!
//! The buckets are kept as one contiguous run of counts from the lowest to the highest populated
//! bucket. When a new observation would make that run longer than [`BUCKET_LIMIT`], the schema is
//! lowered by one (every two neighbouring buckets merged, the bucket width roughly doubled) until
//! it fits: the memory of a histogram is bounded (8 bytes a bucket, at most 1,280 bytes of counts)
//! and its resolution adapts to the spread of what it observed, as Prometheus' own clients do.
//! The count and the sum are those of the classic histogram it is kept beside.

use crate::model::NativeHistogram;

/// Schema of a new histogram: 2^(2^-3) ≈ 1.0905 between bounds.
pub const START_SCHEMA: i8 = 3;

/// Lowest schema the resolution is reduced to (2^16 between bounds).
const MIN_SCHEMA: i8 = -4;

/// Most buckets (populated or not) between the lowest and the highest populated one.
pub const BUCKET_LIMIT: usize = 160;

/// Upper bound of the zero bucket: 2^-128, Prometheus' Go client's default. Everything this
/// daemon observes is a whole number of nanoseconds or of connections per window, so the zero
/// bucket only ever holds exact zeros.
pub const ZERO_THRESHOLD: f64 = 2.938735877055719e-39;

/// `2^(k/8) / 2` for `k` in `0..8`: where the schema-3 bounds fall in `[0.5, 1)`.
const BOUNDS_3: [f64; 8] = [
    0.5,
    0.5452538663326288,
    0.5946035575013605,
    0.6484197773255048,
    std::f64::consts::FRAC_1_SQRT_2,
    0.7711054127039704,
    0.8408964152537145,
    0.9170040432046712,
];

/// `v = frac * 2^exp` with `frac` in `[0.5, 1)`, for positive normal `v`.
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp)
}

/// The schema-3 bucket of `v` (positive, normal).
fn key3(v: f64) -> i32 {
    let (frac, exp) = frexp(v);
    BOUNDS_3.partition_point(|&b| b < frac) as i32 + (exp - 1) * 8
}

/// The bucket at schema `s` (at most 3) that contains schema-3 bucket `k`.
fn reduce(k: i32, s: i8) -> i32 {
    let shift = (START_SCHEMA - s) as u32;
    (k + (1 << shift) - 1) >> shift
}

/// The native buckets of one histogram (count and sum are the classic histogram's): one
/// pointer until the first observation, so a destination table at `--ebpf.max-destinations`
/// grows by 8 bytes a histogram.
#[derive(Debug, Clone, Default)]
pub struct NativeBuckets(Option<Box<Buckets>>);

#[derive(Debug, Clone)]
struct Buckets {
    schema: i8,
    /// Bucket index of `counts[0]`.
    offset: i32,
    zero: u64,
    counts: Vec<u64>,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            schema: START_SCHEMA,
            offset: 0,
            zero: 0,
            counts: Vec::new(),
        }
    }
}

impl NativeBuckets {
    /// Observes `v` (in the exported unit).
    #[inline]
    pub fn observe(&mut self, v: f64) {
        self.0.get_or_insert_default().observe(v);
    }

    /// Observes `n` zeros at once (idle rate windows).
    #[inline]
    pub fn observe_zeros(&mut self, n: u64) {
        self.0.get_or_insert_default().zero += n;
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |b| {
            std::mem::size_of::<Buckets>() + b.counts.capacity() * 8
        })
    }

    /// The exported form.
    pub fn snapshot(&self) -> NativeHistogram {
        match &self.0 {
            Some(b) => b.snapshot(),
            None => Buckets::default().snapshot(),
        }
    }
}

impl Buckets {
    fn observe(&mut self, v: f64) {
        if v.is_nan() || v <= ZERO_THRESHOLD || !v.is_normal() {
            // Zero, negative, NaN (never produced) and subnormal values.
            self.zero += 1;
            return;
        }
        let k3 = key3(v);
        loop {
            let k = reduce(k3, self.schema);
            if self.counts.is_empty() {
                self.offset = k;
                self.counts.push(1);
                return;
            }
            let end = self.offset + self.counts.len() as i32; // exclusive
            let (lo, hi) = (self.offset.min(k), end.max(k + 1));
            if (hi - lo) as usize > BUCKET_LIMIT && self.schema > MIN_SCHEMA {
                self.lower();
                continue;
            }
            if k < self.offset {
                let grow = (self.offset - k) as usize;
                self.counts.reserve_exact(grow);
                self.counts.splice(0..0, std::iter::repeat_n(0, grow));
                self.offset = k;
            } else if k >= end {
                self.counts.reserve_exact((k - end + 1) as usize);
                self.counts.resize((k - self.offset + 1) as usize, 0);
            }
            self.counts[(k - self.offset) as usize] += 1;
            return;
        }
    }

    /// Halves the resolution: buckets `2j-1` and `2j` become bucket `j`.
    fn lower(&mut self) {
        let first = (self.offset + 1) >> 1;
        let last = (self.offset + self.counts.len() as i32) >> 1; // ceil((end-1)/2)
        let mut merged = vec![0u64; (last - first + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let j = (self.offset + i as i32 + 1) >> 1;
            merged[(j - first) as usize] += c;
        }
        self.schema -= 1;
        self.offset = first;
        self.counts = merged;
    }

    fn snapshot(&self) -> NativeHistogram {
        NativeHistogram {
            schema: self.schema.into(),
            zero_threshold: ZERO_THRESHOLD,
            zero_count: self.zero,
            offset: self.offset,
            counts: self.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_powers_of_the_eighth_root_of_two() {
        for (k, b) in BOUNDS_3.iter().enumerate() {
            let want = 2f64.powf(k as f64 / 8.0) / 2.0;
            assert!((b - want).abs() < 1e-15, "{k}: {b} vs {want}");
        }
    }

    /// The bucket of `v` at the start schema: `(2^((i-1)/8), 2^(i/8)]`.
    #[test]
    fn buckets_are_upper_inclusive_exponential() {
        for v in [1e-9, 3.3e-6, 0.01, 0.05, 0.999, 1.0, 1.5, 2.0, 1234.5] {
            let k = key3(v);
            let (lo, hi) = (2f64.powf((k - 1) as f64 / 8.0), 2f64.powf(k as f64 / 8.0));
            assert!(
                lo < v * (1.0 + 1e-12) && v <= hi * (1.0 + 1e-12),
                "{v}: {k}"
            );
        }
        assert_eq!(key3(1.0), 0);
        assert_eq!(key3(2.0), 8);
        assert_eq!(key3(0.5), -8);
        assert_eq!(key3(1.0001), 1);
    }

    #[test]
    fn reducing_a_key_merges_pairs() {
        assert_eq!(reduce(8, 2), 4);
        assert_eq!(reduce(7, 2), 4);
        assert_eq!(reduce(-1, 2), 0);
        assert_eq!(reduce(-2, 2), -1);
        assert_eq!(reduce(-3, 2), -1);
        assert_eq!(reduce(8, 0), 1);
        assert_eq!(reduce(9, 0), 2);
    }

    #[test]
    fn zeros_and_spread() {
        let mut h = NativeBuckets::default();
        h.observe(0.0);
        h.observe_zeros(4);
        h.observe(0.01);
        h.observe(0.0101);
        h.observe(0.05);
        let s = h.snapshot();
        assert_eq!((s.schema, s.zero_count), (3, 5));
        assert_eq!(s.counts.iter().sum::<u64>(), 3);
        assert_eq!(s.offset, key3(0.01));
        assert_eq!(s.counts[0], 2);
        assert_eq!(*s.counts.last().unwrap(), 1);
        assert_eq!(s.offset + s.counts.len() as i32 - 1, key3(0.05));
    }

    /// A spread wider than the limit lowers the schema instead of growing the buckets; the
    /// counts are all kept, in the buckets that contain the old ones.
    #[test]
    fn the_bucket_limit_lowers_the_resolution() {
        let mut h = NativeBuckets::default();
        // 1 µs to 1000 s: 2^30 apart, 240 buckets at schema 3.
        let mut v = 1e-6;
        let mut n = 0;
        while v < 1000.0 {
            h.observe(v);
            v *= 1.3;
            n += 1;
        }
        let s = h.snapshot();
        assert!(s.counts.len() <= BUCKET_LIMIT, "{}", s.counts.len());
        assert_eq!(s.schema, 2);
        assert_eq!(s.counts.iter().sum::<u64>(), n);
        // Every observation is in its bucket at the final schema.
        let mut check = NativeBuckets(Some(Box::new(Buckets {
            schema: 2,
            ..Default::default()
        })));
        let mut v = 1e-6;
        while v < 1000.0 {
            check.observe(v);
            v *= 1.3;
        }
        assert_eq!(check.snapshot(), s);
        assert!(
            h.heap_bytes() <= BUCKET_LIMIT * 8 + 48,
            "{}",
            h.heap_bytes()
        );
    }
}
