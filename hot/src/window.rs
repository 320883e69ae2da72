//! Window maths: aggregates, resolutions and bucket alignment.
//!
//! An [`Agg`] is what one bucket holds: count, sum, min, max and the last value
//! with its timestamp. Aggregates merge associatively and commutatively, so the
//! gateway can pre-aggregate readings in memory, several gateways can merge into
//! the same Redis bucket, and the result equals recomputing from raw readings
//! (up to floating-point rounding of the sum). The Redis script in
//! [`crate::writer`] applies exactly [`Agg::merge`].

use std::time::Duration;

/// One bucket's aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value with the greatest timestamp (on a tie, the greater value, so
    /// the result does not depend on arrival order).
    pub last: f64,
    pub last_ts_ms: i64,
}

impl Agg {
    /// The aggregate of a single reading.
    pub fn one(ts_ms: i64, value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
            last_ts_ms: ts_ms,
        }
    }

    /// Adds one reading.
    pub fn observe(&mut self, ts_ms: i64, value: f64) {
        self.merge(&Self::one(ts_ms, value));
    }

    /// Merges another aggregate into this one.
    pub fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if (other.last_ts_ms, other.last) > (self.last_ts_ms, self.last) {
            self.last = other.last;
            self.last_ts_ms = other.last_ts_ms;
        }
    }

    /// The aggregate of several, or `None` when there are none.
    pub fn merged<'a>(aggs: impl IntoIterator<Item = &'a Agg>) -> Option<Agg> {
        let mut it = aggs.into_iter();
        let mut acc = *it.next()?;
        for a in it {
            acc.merge(a);
        }
        Some(acc)
    }
}

/// One configured window size and how long its buckets are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Short label used in keys and the API, e.g. `10s`, `1m`, `1h`.
    pub label: String,
    pub width_ms: i64,
    pub retention_ms: i64,
}

impl Resolution {
    pub fn new(width: Duration, retention: Duration) -> Self {
        Self {
            label: label_for(width),
            width_ms: width.as_millis() as i64,
            retention_ms: retention.as_millis() as i64,
        }
    }

    /// Start of the bucket that holds `ts_ms` (floor, also for negative times).
    pub fn bucket_start(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.width_ms) * self.width_ms
    }

    /// When a bucket starting at `start_ms` expires: its end plus the retention.
    pub fn expires_at_ms(&self, start_ms: i64) -> i64 {
        start_ms + self.width_ms + self.retention_ms
    }

    /// Whether a bucket starting at `start_ms` is still kept at `now_ms`.
    pub fn retained(&self, start_ms: i64, now_ms: i64) -> bool {
        self.expires_at_ms(start_ms) > now_ms
    }

    /// Bucket starts covering `[from_ms, to_ms]`, oldest first.
    pub fn bucket_starts(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> + '_ {
        let first = self.bucket_start(from_ms);
        let last = self.bucket_start(to_ms);
        (0..)
            .map(move |i| first + i * self.width_ms)
            .take_while(move |s| *s <= last)
    }
}

/// `10s`, `1m`, `5m`, `1h`, `1d`: the largest whole unit.
pub fn label_for(width: Duration) -> String {
    let ms = width.as_millis() as u64;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(width_s: u64) -> Resolution {
        Resolution::new(Duration::from_secs(width_s), Duration::from_secs(3600))
    }

    #[test]
    fn labels() {
        assert_eq!(label_for(Duration::from_secs(10)), "10s");
        assert_eq!(label_for(Duration::from_secs(60)), "1m");
        assert_eq!(label_for(Duration::from_secs(300)), "5m");
        assert_eq!(label_for(Duration::from_secs(3600)), "1h");
        assert_eq!(label_for(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn bucket_alignment() {
        let r = res(10);
        assert_eq!(r.bucket_start(0), 0);
        assert_eq!(r.bucket_start(9_999), 0);
        assert_eq!(r.bucket_start(10_000), 10_000);
        assert_eq!(r.bucket_start(-1), -10_000);
        assert_eq!(
            r.bucket_starts(5_000, 25_000).collect::<Vec<_>>(),
            vec![0, 10_000, 20_000]
        );
        assert_eq!(r.expires_at_ms(10_000), 20_000 + 3_600_000);
        assert!(r.retained(10_000, 20_000 + 3_599_999));
        assert!(!r.retained(10_000, 20_000 + 3_600_000));
    }

    #[test]
    fn last_is_by_timestamp_not_arrival() {
        let mut a = Agg::one(200, 1.0);
        a.observe(100, 5.0);
        assert_eq!((a.last, a.last_ts_ms), (1.0, 200));
        assert_eq!((a.count, a.min, a.max, a.sum), (2, 1.0, 5.0, 6.0));
    }

    fn readings() -> impl Strategy<Value = Vec<(i64, f64)>> {
        prop::collection::vec((0i64..100_000, -1e6f64..1e6), 1..200)
    }

    proptest! {
        /// Pre-aggregating readings into groups, in any order and grouping, then
        /// merging the groups equals recomputing from the raw readings.
        #[test]
        fn merge_equals_recompute(rs in readings(), split in prop::collection::vec(0usize..8, 200), order_seed in any::<u64>()) {
            let r = res(10);
            // Recompute per bucket from raw readings, in order.
            let mut direct = std::collections::BTreeMap::<i64, Agg>::new();
            for &(ts, v) in &rs {
                direct.entry(r.bucket_start(ts)).and_modify(|a| a.observe(ts, v)).or_insert(Agg::one(ts, v));
            }
            // Pre-aggregate into up to 8 groups (like flushes or gateways), then merge
            // the groups' buckets in a shuffled order.
            let mut groups: Vec<std::collections::BTreeMap<i64, Agg>> = vec![Default::default(); 8];
            for (i, &(ts, v)) in rs.iter().enumerate() {
                groups[split[i % split.len()]].entry(r.bucket_start(ts)).and_modify(|a| a.observe(ts, v)).or_insert(Agg::one(ts, v));
            }
            let mut parts: Vec<(i64, Agg)> = groups.into_iter().flatten().collect();
            let n = parts.len();
            for i in 0..n {
                let j = (order_seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
                parts.swap(i, j);
            }
            let mut merged = std::collections::BTreeMap::<i64, Agg>::new();
            for (start, a) in parts {
                merged.entry(start).and_modify(|m| m.merge(&a)).or_insert(a);
            }
            prop_assert_eq!(merged.len(), direct.len());
            for (start, d) in &direct {
                let m = &merged[start];
                prop_assert_eq!(m.count, d.count);
                prop_assert_eq!(m.min, d.min);
                prop_assert_eq!(m.max, d.max);
                prop_assert_eq!((m.last, m.last_ts_ms), (d.last, d.last_ts_ms));
                let tol = 1e-9 * d.sum.abs().max(1.0) * d.count as f64;
                prop_assert!((m.sum - d.sum).abs() <= tol, "sum {} vs {}", m.sum, d.sum);
            }
        }

        /// Rolling buckets up over a range equals aggregating all its readings.
        #[test]
        fn rollup_of_buckets_equals_whole(rs in readings()) {
            let r = res(60);
            let mut buckets = std::collections::BTreeMap::<i64, Agg>::new();
            let mut whole: Option<Agg> = None;
            for &(ts, v) in &rs {
                buckets.entry(r.bucket_start(ts)).and_modify(|a| a.observe(ts, v)).or_insert(Agg::one(ts, v));
                match whole.as_mut() { Some(w) => w.observe(ts, v), None => whole = Some(Agg::one(ts, v)) }
            }
            let rolled = Agg::merged(buckets.values()).unwrap();
            let whole = whole.unwrap();
            prop_assert_eq!(rolled.count, whole.count);
            prop_assert_eq!((rolled.min, rolled.max, rolled.last, rolled.last_ts_ms), (whole.min, whole.max, whole.last, whole.last_ts_ms));
        }
    }
}
