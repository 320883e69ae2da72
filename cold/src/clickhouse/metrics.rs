//! The ClickHouse sink's Prometheus metrics. Labels come from small fixed
//! sets (`op`: the operation names in [`super::sink`]); never a device id.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ClickHouseMetrics {
    /// Rows of `readings` inserted (a replayed batch counts again).
    pub rows_inserted: IntCounter,
    /// Batches whose readings and `batches` row both landed.
    pub batches_inserted: IntCounter,
    /// Failed attempts, by operation.
    pub errors: IntCounterVec,
    /// Attempts repeated after a network error or timeout, by operation.
    pub retries: IntCounterVec,
    /// Time of one successful `insert_batch`, retries included.
    pub insert_duration: Histogram,
    /// 1 while the last round trip reached the server, else 0.
    pub up: IntGauge,
}

impl ClickHouseMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.rows_inserted.clone()))?;
        registry.register(Box::new(m.batches_inserted.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.insert_duration.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        Ok(m)
    }

    /// The same metrics, registered nowhere (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            rows_inserted: IntCounter::new(
                "thermocline_cold_clickhouse_rows_inserted_total",
                "Rows inserted into the ClickHouse readings table (replays count again).",
            )?,
            batches_inserted: IntCounter::new(
                "thermocline_cold_clickhouse_batches_inserted_total",
                "Batches whose readings and batches row were both written to ClickHouse.",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_clickhouse_errors_total",
                    "Failed ClickHouse attempts, by operation.",
                ),
                &["op"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_clickhouse_retries_total",
                    "ClickHouse attempts repeated after a network error or timeout, by operation.",
                ),
                &["op"],
            )?,
            insert_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "thermocline_cold_clickhouse_insert_duration_seconds",
                    "Time to insert one batch into ClickHouse (readings and batches row, retries included).",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
            )?,
            up: IntGauge::new(
                "thermocline_cold_clickhouse_up",
                "1 while the last ClickHouse round trip reached the server, else 0.",
            )?,
        })
    }

    /// Failed attempts of `op` so far.
    pub fn errors_of(&self, op: &str) -> u64 {
        self.errors.with_label_values(&[op]).get()
    }

    /// Retries of `op` so far.
    pub fn retries_of(&self, op: &str) -> u64 {
        self.retries.with_label_values(&[op]).get()
    }
}
