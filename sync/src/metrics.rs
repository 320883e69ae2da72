//! The reconciler's metrics.

use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};

/// Registered once per process (per gateway registry).
#[derive(Clone)]
pub struct ReconcileMetrics {
    /// Bucket × metric pairs compared.
    pub buckets_checked: IntCounter,
    /// Repaired, by class (`missing_in_redis`, `extra_in_redis`, `values_differ`).
    pub buckets_repaired: IntCounterVec,
    /// Repairs skipped because the hot path wrote the bucket meanwhile.
    pub repair_conflicts: IntCounter,
    /// Batches found in S3 but not in ClickHouse, loaded from their Parquet.
    pub batches_reloaded: IntCounter,
    /// Runs, by outcome (`ok`, `error`, `not_leader`, `skipped`).
    pub runs: IntCounterVec,
    pub last_run_timestamp: Gauge,
    pub last_run_duration: Gauge,
}

impl ReconcileMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            buckets_checked: IntCounter::new(
                "thermocline_reconcile_buckets_checked_total",
                "Hot buckets (per metric) the reconciler compared with ClickHouse",
            )?,
            buckets_repaired: IntCounterVec::new(
                Opts::new(
                    "thermocline_reconcile_buckets_repaired_total",
                    "Hot buckets (per metric) rewritten from ClickHouse, by class of difference",
                ),
                &["class"],
            )?,
            repair_conflicts: IntCounter::new(
                "thermocline_reconcile_repair_conflicts_total",
                "Repairs left for the next run because the hot path wrote the bucket meanwhile",
            )?,
            batches_reloaded: IntCounter::new(
                "thermocline_reconcile_batches_reloaded_total",
                "Batches present in S3 but missing in ClickHouse, loaded from their Parquet object",
            )?,
            runs: IntCounterVec::new(
                Opts::new(
                    "thermocline_reconcile_runs_total",
                    "Reconciler runs by outcome (ok, error, not_leader, skipped)",
                ),
                &["outcome"],
            )?,
            last_run_timestamp: Gauge::new(
                "thermocline_reconcile_last_run_timestamp_seconds",
                "When the last reconciler run finished (Unix time)",
            )?,
            last_run_duration: Gauge::new(
                "thermocline_reconcile_last_run_duration_seconds",
                "How long the last reconciler run took",
            )?,
        };
        for c in ["missing_in_redis", "extra_in_redis", "values_differ"] {
            m.buckets_repaired.with_label_values(&[c]);
        }
        for o in ["ok", "error", "not_leader", "skipped"] {
            m.runs.with_label_values(&[o]);
        }
        registry.register(Box::new(m.buckets_checked.clone()))?;
        registry.register(Box::new(m.buckets_repaired.clone()))?;
        registry.register(Box::new(m.repair_conflicts.clone()))?;
        registry.register(Box::new(m.batches_reloaded.clone()))?;
        registry.register(Box::new(m.runs.clone()))?;
        registry.register(Box::new(m.last_run_timestamp.clone()))?;
        registry.register(Box::new(m.last_run_duration.clone()))?;
        Ok(m)
    }
}
