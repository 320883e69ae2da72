//! The hot path's Prometheus metrics. No device id is ever a label.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct HotMetrics {
    /// Readings whose aggregates reached Redis.
    pub readings_written: IntCounter,
    /// Readings whose aggregates could not be written (Redis down or erroring);
    /// the reconciler repairs their buckets from cold storage.
    pub readings_failed: IntCounter,
    /// Device flushes (one device's script in one flush) by outcome: `ok`,
    /// `failed` (that device's script failed or its pipeline got no answer).
    pub device_writes: IntCounterVec,
    /// Readings not aggregated, by reason: `duplicate` (a redelivered seq),
    /// `expired` (older than every resolution's retention).
    pub readings_skipped: IntCounterVec,
    /// Devices whose seq went far back (taken as a restart).
    pub seq_resets: IntCounter,
    pub flush_duration: Histogram,
    pub flushes: IntCounterVec,
    pub redis_errors: IntCounter,
    /// 1 while the last Redis round trip succeeded.
    pub redis_up: IntGauge,
    /// Messages queued between ingest and the aggregator (inc on send, dec on receive).
    pub channel_depth: IntGauge,
    pub pending_buckets: IntGauge,
    pub dedup_devices: IntGauge,
}

impl HotMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            readings_written: IntCounter::new(
                "thermocline_hot_readings_written_total",
                "Readings whose window aggregates were written to Redis.",
            )?,
            readings_failed: IntCounter::new(
                "thermocline_hot_readings_failed_total",
                "Readings whose window aggregates could not be written to Redis.",
            )?,
            device_writes: IntCounterVec::new(
                Opts::new(
                    "thermocline_hot_device_writes_total",
                    "Per-device window merges sent to Redis, by outcome (ok, failed).",
                ),
                &["outcome"],
            )?,
            readings_skipped: IntCounterVec::new(
                Opts::new(
                    "thermocline_hot_readings_skipped_total",
                    "Readings not aggregated into windows, by reason (duplicate, expired).",
                ),
                &["reason"],
            )?,
            seq_resets: IntCounter::new(
                "thermocline_hot_seq_resets_total",
                "Messages whose seq fell far below the device's dedup horizon (device restart).",
            )?,
            flush_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "thermocline_hot_flush_duration_seconds",
                    "Time to write one flush of pre-aggregated windows to Redis.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            flushes: IntCounterVec::new(
                Opts::new(
                    "thermocline_hot_flushes_total",
                    "Flushes to Redis by outcome (ok, error).",
                ),
                &["outcome"],
            )?,
            redis_errors: IntCounter::new(
                "thermocline_hot_redis_errors_total",
                "Failed Redis round trips.",
            )?,
            redis_up: IntGauge::new("thermocline_hot_redis_up", "1 while Redis answers, else 0.")?,
            channel_depth: IntGauge::new(
                "thermocline_hot_channel_depth",
                "Messages queued between MQTT ingest and the hot-path aggregator.",
            )?,
            pending_buckets: IntGauge::new(
                "thermocline_hot_pending_buckets",
                "Window buckets pre-aggregated in memory, waiting for the next flush.",
            )?,
            dedup_devices: IntGauge::new(
                "thermocline_hot_dedup_devices",
                "Devices whose recent sequence numbers are remembered for dedup.",
            )?,
        };
        registry.register(Box::new(m.readings_written.clone()))?;
        registry.register(Box::new(m.readings_failed.clone()))?;
        registry.register(Box::new(m.device_writes.clone()))?;
        registry.register(Box::new(m.readings_skipped.clone()))?;
        registry.register(Box::new(m.seq_resets.clone()))?;
        registry.register(Box::new(m.flush_duration.clone()))?;
        registry.register(Box::new(m.flushes.clone()))?;
        registry.register(Box::new(m.redis_errors.clone()))?;
        registry.register(Box::new(m.redis_up.clone()))?;
        registry.register(Box::new(m.channel_depth.clone()))?;
        registry.register(Box::new(m.pending_buckets.clone()))?;
        registry.register(Box::new(m.dedup_devices.clone()))?;
        for reason in ["duplicate", "expired"] {
            m.readings_skipped.with_label_values(&[reason]);
        }
        for outcome in ["ok", "failed"] {
            m.device_writes.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "error"] {
            m.flushes.with_label_values(&[outcome]);
        }
        Ok(m)
    }
}
