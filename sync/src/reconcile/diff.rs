//! Pure comparison of one bucket's metric in cold (ClickHouse) and hot (Redis).

use hot::{repair::Stored, window::Agg};
use serde::Serialize;

use crate::verify::close;

/// How a hot bucket differs from cold storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// ClickHouse has readings in the bucket, Redis has nothing for the metric.
    MissingInRedis,
    /// Redis has the metric in a bucket where ClickHouse has no reading.
    ExtraInRedis,
    /// Both have it and count, sum, min, max, last or its ts differ (or the
    /// Redis fields are corrupt).
    ValuesDiffer,
}

impl Class {
    pub const ALL: [Class; 3] = [
        Class::MissingInRedis,
        Class::ExtraInRedis,
        Class::ValuesDiffer,
    ];

    /// The metric label and report key.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::MissingInRedis => "missing_in_redis",
            Class::ExtraInRedis => "extra_in_redis",
            Class::ValuesDiffer => "values_differ",
        }
    }
}

/// Whether two aggregates agree: count, min, max, last and its ts exactly
/// (Redis keeps the exact value the gateway sent), the sum within
/// [`crate::verify::REL_TOLERANCE`] (added in another order).
pub fn same(cold: &Agg, hot: &Agg) -> bool {
    cold.count == hot.count
        && close(cold.sum, hot.sum)
        && cold.min == hot.min
        && cold.max == hot.max
        && cold.last == hot.last
        && cold.last_ts_ms == hot.last_ts_ms
}

/// The difference between cold and hot for one bucket and metric, if any.
pub fn classify(cold: Option<&Agg>, hot: Option<&Stored>) -> Option<Class> {
    match (cold, hot) {
        (None, None) => None,
        (Some(_), None) => Some(Class::MissingInRedis),
        (None, Some(_)) => Some(Class::ExtraInRedis),
        (Some(_), Some(Stored::Corrupt)) => Some(Class::ValuesDiffer),
        (Some(c), Some(Stored::Agg(h))) => (!same(c, h)).then_some(Class::ValuesDiffer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(vals: &[(i64, f64)]) -> Agg {
        let mut a = Agg::one(vals[0].0, vals[0].1);
        for &(t, v) in &vals[1..] {
            a.observe(t, v);
        }
        a
    }

    #[test]
    fn classes() {
        let a = agg(&[(1, 1.0), (2, 2.0)]);
        assert_eq!(classify(None, None), None);
        assert_eq!(classify(Some(&a), None), Some(Class::MissingInRedis));
        assert_eq!(
            classify(None, Some(&Stored::Agg(a))),
            Some(Class::ExtraInRedis)
        );
        assert_eq!(classify(Some(&a), Some(&Stored::Agg(a))), None);
        assert_eq!(
            classify(Some(&a), Some(&Stored::Corrupt)),
            Some(Class::ValuesDiffer)
        );
    }

    #[test]
    fn a_reading_written_twice_differs() {
        let once = agg(&[(1, 1.0), (2, 2.0)]);
        let mut twice = once;
        twice.merge(&Agg::one(2, 2.0));
        assert_eq!(
            classify(Some(&once), Some(&Stored::Agg(twice))),
            Some(Class::ValuesDiffer)
        );
    }

    #[test]
    fn sum_rounding_is_not_a_difference_but_last_ts_is() {
        let a = agg(&[(1, 0.1), (2, 0.2), (3, 0.3)]);
        let mut b = a;
        b.sum = 0.1 + (0.2 + 0.3);
        assert_eq!(classify(Some(&a), Some(&Stored::Agg(b))), None);
        let mut c = a;
        c.last_ts_ms = 4;
        assert_eq!(
            classify(Some(&a), Some(&Stored::Agg(c))),
            Some(Class::ValuesDiffer)
        );
    }
}
