//! Which buckets of which resolution a run compares.

use hot::window::Resolution;
use serde::Serialize;

use crate::{Error, Result};

/// Most buckets of one resolution one device may be compared over in a run.
pub const MAX_BUCKETS_PER_SPAN: i64 = 100_000;

/// The buckets of one resolution to compare: starts in `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub resolution: String,
    #[serde(skip)]
    pub res: Resolution,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Span {
    pub fn starts(&self) -> Vec<i64> {
        (self.start_ms..self.end_ms)
            .step_by(self.res.width_ms as usize)
            .collect()
    }

    pub fn buckets(&self) -> i64 {
        (self.end_ms - self.start_ms) / self.res.width_ms
    }
}

/// The spans of every resolution for a run over `[from_ms, to_ms)` at `now_ms`.
///
/// A bucket is compared when it overlaps the range, is still retained in
/// Redis, and is sealed: its end is at least `seal_delay` old. With a zero
/// seal delay every bucket that began by now counts, the open one too (a
/// rebuild with ingestion paused). Resolutions with no such bucket are
/// returned by label in the second list.
pub fn plan(
    resolutions: &[Resolution],
    from_ms: i64,
    to_ms: i64,
    seal_delay_ms: i64,
    now_ms: i64,
) -> Result<(Vec<Span>, Vec<String>)> {
    let mut spans = Vec::new();
    let mut skipped = Vec::new();
    for res in resolutions {
        let w = res.width_ms;
        let by_range = res.bucket_start(to_ms - 1) + w;
        let by_seal = if seal_delay_ms == 0 {
            res.bucket_start(now_ms) + w
        } else {
            res.bucket_start(now_ms - seal_delay_ms)
        };
        let first_retained = res.bucket_start(now_ms - w - res.retention_ms) + w;
        let start = res.bucket_start(from_ms).max(first_retained);
        let end = by_range.min(by_seal);
        if start >= end {
            skipped.push(res.label.clone());
            continue;
        }
        let span = Span {
            resolution: res.label.clone(),
            res: res.clone(),
            start_ms: start,
            end_ms: end,
        };
        if span.buckets() > MAX_BUCKETS_PER_SPAN {
            return Err(Error::Arg(format!(
                "the range holds {} buckets of {} per device; at most {MAX_BUCKETS_PER_SPAN}: use a shorter range",
                span.buckets(),
                res.label
            )));
        }
        spans.push(span);
    }
    Ok((spans, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn res(w: u64, r: u64) -> Resolution {
        Resolution::new(Duration::from_secs(w), Duration::from_secs(r))
    }

    const NOW: i64 = 1_000_000_000_000 + 65_000; // 1 min 5 s past a whole hour... of sorts

    #[test]
    fn only_sealed_retained_buckets_in_range() {
        let rs = [res(10, 3600), res(60, 86_400), res(3600, 86_400)];
        // Last 2 min, sealed after 10 s.
        let (spans, skipped) = plan(&rs, NOW - 120_000, NOW, 10_000, NOW).unwrap();
        // 10 s: buckets ending by NOW - 10 s = ...055_000: starts < ...050_000.
        let s = &spans[0];
        assert_eq!(s.resolution, "10s");
        assert_eq!(s.start_ms, rs[0].bucket_start(NOW - 120_000));
        assert_eq!(s.end_ms, rs[0].bucket_start(NOW - 10_000));
        assert!(s.start_ms + 10_000 <= NOW - 10_000 || s.buckets() == 0);
        // 1 m: only buckets that ended 10 s ago.
        assert_eq!(spans[1].end_ms, rs[1].bucket_start(NOW - 10_000));
        // 1 h: the open hour is not sealed.
        assert_eq!(skipped.len() + spans.len(), 3);
    }

    #[test]
    fn zero_seal_delay_takes_the_open_buckets() {
        let rs = [res(10, 3600), res(3600, 86_400)];
        let (spans, skipped) = plan(&rs, NOW - 120_000, NOW, 0, NOW).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(spans[0].end_ms, rs[0].bucket_start(NOW) + 10_000);
        assert_eq!(spans[1].end_ms, rs[1].bucket_start(NOW) + 3_600_000);
        assert_eq!(
            spans[1].buckets(),
            1 + (spans[1].end_ms - spans[1].start_ms - 3_600_000) / 3_600_000
        );
    }

    #[test]
    fn expired_buckets_are_left_out() {
        let rs = [res(10, 60)];
        let (spans, _) = plan(&rs, NOW - 3_600_000, NOW, 0, NOW).unwrap();
        // Kept: start + 10 s + 60 s > NOW.
        assert!(spans[0].start_ms + 70_000 > NOW);
        assert!(spans[0].start_ms - 10_000 + 70_000 <= NOW);
        let (spans, skipped) = plan(&rs, NOW - 3_600_000, NOW - 1_800_000, 0, NOW).unwrap();
        assert!(spans.is_empty());
        assert_eq!(skipped, ["10s"]);
    }

    #[test]
    fn too_long_a_range_is_an_error() {
        let rs = [res(1, 86_400 * 30)];
        let e = plan(&rs, NOW - 86_400_000 * 2, NOW, 0, NOW).unwrap_err();
        assert!(e.to_string().contains("shorter range"), "{e}");
    }
}
