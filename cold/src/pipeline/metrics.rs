//! The pipeline's own metrics (the spool and both sinks register theirs).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::spool::Store;

#[derive(Clone)]
pub struct PipelineMetrics {
    /// Batches held by both stores.
    pub batches_shipped: IntCounter,
    /// Batches cut and not yet held by both stores.
    pub batches_pending: IntGauge,
    /// Shipping attempts that failed and will be retried, by store.
    pub ship_retries: IntCounterVec,
    /// Batches a store refused for good, set aside in S3 (`rejected/`), by store.
    pub batches_rejected: IntCounterVec,
    /// Shipping tasks that panicked and were started again.
    pub ship_panics: IntCounter,
    /// Readings dropped as broker redeliveries (see `dedup`).
    pub redeliveries_dropped: IntCounter,
    /// Decoded bytes held in memory (open batch plus batches being shipped).
    pub pending_bytes: IntGauge,
}

impl PipelineMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            batches_shipped: IntCounter::new(
                "thermocline_cold_batches_shipped_total",
                "Batches held by both S3 and ClickHouse.",
            )?,
            batches_pending: IntGauge::new(
                "thermocline_cold_batches_pending",
                "Batches cut and not yet held by both stores.",
            )?,
            ship_retries: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_ship_retries_total",
                    "Failed attempts to ship a batch or dead letters, retried later, by store.",
                ),
                &["store"],
            )?,
            batches_rejected: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_batches_rejected_total",
                    "Batches a store refused for good (poison row, schema conflict), set aside \
                     under rejected/ in S3 and released from the spool, by store.",
                ),
                &["store"],
            )?,
            ship_panics: IntCounter::new(
                "thermocline_cold_ship_panics_total",
                "Shipping attempts that panicked; the job is retried, its range kept.",
            )?,
            redeliveries_dropped: IntCounter::new(
                "thermocline_cold_redeliveries_dropped_total",
                "Readings dropped from cold batches as broker redeliveries of spooled ones.",
            )?,
            pending_bytes: IntGauge::new(
                "thermocline_cold_pending_bytes",
                "Estimated bytes of decoded rows held in memory awaiting a cut or a store.",
            )?,
        };
        registry.register(Box::new(m.batches_shipped.clone()))?;
        registry.register(Box::new(m.batches_pending.clone()))?;
        registry.register(Box::new(m.ship_retries.clone()))?;
        registry.register(Box::new(m.batches_rejected.clone()))?;
        registry.register(Box::new(m.ship_panics.clone()))?;
        registry.register(Box::new(m.redeliveries_dropped.clone()))?;
        registry.register(Box::new(m.pending_bytes.clone()))?;
        for s in [Store::S3, Store::ClickHouse] {
            m.ship_retries.with_label_values(&[s.as_str()]);
            m.batches_rejected.with_label_values(&[s.as_str()]);
        }
        Ok(m)
    }
}
