//! The spool's Prometheus metrics. No device id is ever a label.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct SpoolMetrics {
    /// Segment bytes on disk plus bytes buffered for the next write.
    pub bytes: IntGauge,
    /// The bound `cold.spool.max_size` (set at open), so alerts can take a ratio.
    pub max_bytes: IntGauge,
    /// Age of the oldest message record not yet released (0 when none).
    pub oldest_unshipped_age: Gauge,
    /// Torn tails cut at open (a crash mid-write).
    pub torn_tails: IntCounter,
    pub fsync_duration: Histogram,
    /// Appends currently blocked because the spool is full (inc on block, dec on unblock).
    pub appends_waiting: IntGauge,
}

impl SpoolMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            bytes: IntGauge::new(
                "thermocline_cold_spool_bytes",
                "Bytes in the spool: segment files plus the buffer awaiting the next fsync.",
            )?,
            max_bytes: IntGauge::new(
                "thermocline_cold_spool_max_bytes",
                "The spool's size bound (cold.spool.max_size): at it, ingest waits.",
            )?,
            oldest_unshipped_age: Gauge::new(
                "thermocline_cold_spool_oldest_unshipped_age_seconds",
                "Age of the oldest spooled message not yet held by every store (0 when none).",
            )?,
            torn_tails: IntCounter::new(
                "thermocline_cold_spool_torn_tail_total",
                "Torn spool tails (a crash mid-write) cut at the last valid record on open.",
            )?,
            fsync_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "thermocline_cold_spool_fsync_duration_seconds",
                    "Time to write and fsync one group commit of spool records.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            appends_waiting: IntGauge::new(
                "thermocline_cold_spool_appends_waiting",
                "Spool appends blocked because the spool is at its size bound (backpressure).",
            )?,
        };
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.max_bytes.clone()))?;
        registry.register(Box::new(m.oldest_unshipped_age.clone()))?;
        registry.register(Box::new(m.torn_tails.clone()))?;
        registry.register(Box::new(m.fsync_duration.clone()))?;
        registry.register(Box::new(m.appends_waiting.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_once() {
        let registry = Registry::new();
        let m = SpoolMetrics::new(&registry).unwrap();
        m.fsync_duration.observe(0.001);
        let names: Vec<_> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(names.len(), 6);
        assert!(names
            .iter()
            .all(|n| n.starts_with("thermocline_cold_spool_")));
        assert!(SpoolMetrics::new(&registry).is_err(), "double registration");
    }
}
