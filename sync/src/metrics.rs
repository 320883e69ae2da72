//! The reconciler's metrics: its runs and repairs, and its own requests to
//! ClickHouse and S3 ([`StoreMetrics`]).
//!
//! The reconciler has store clients of its own (the cold pipeline's stay
//! private to it), whose `thermocline_cold_*` metrics would collide with the
//! pipeline's on the gateway's registry; so its requests are counted here,
//! under `thermocline_sync_store_*`, one request per call to a store (the
//! sink's own retries included). Labels: `store` (`clickhouse`, `s3`) and
//! `op` (the fixed sets [`CLICKHOUSE_OPS`] and [`S3_OPS`]).

use std::{future::Future, time::Instant};

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Values of the `store` label.
pub const STORE_CLICKHOUSE: &str = "clickhouse";
pub const STORE_S3: &str = "s3";
/// Values of the `op` label for `store="clickhouse"`.
pub const CLICKHOUSE_OPS: [&str; 5] = [
    "ping",
    "batch_ids",
    "insert_batch",
    "devices_in_range",
    "bucket_aggregates",
];
/// Values of the `op` label for `store="s3"`.
pub const S3_OPS: [&str; 2] = ["list", "get"];

/// The reconciler's requests to ClickHouse and S3. Cheap to clone.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Requests (calls, retries included), by store and operation.
    pub requests: IntCounterVec,
    /// Requests that failed (after the sink's retries), by store and operation.
    pub errors: IntCounterVec,
    /// Time of one request, failed ones included, by store and operation.
    pub duration: HistogramVec,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["store", "op"];
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "thermocline_sync_store_requests_total",
                    "Requests of the reconciler to ClickHouse and S3 (one per call, retries included), by store and operation",
                ),
                labels,
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "thermocline_sync_store_errors_total",
                    "Requests of the reconciler to ClickHouse and S3 that failed, by store and operation",
                ),
                labels,
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "thermocline_sync_store_request_duration_seconds",
                    "Time of one request of the reconciler to ClickHouse or S3 (failed ones included), by store and operation",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                labels,
            )?,
        };
        for (store, ops) in [
            (STORE_CLICKHOUSE, &CLICKHOUSE_OPS[..]),
            (STORE_S3, &S3_OPS[..]),
        ] {
            for op in ops {
                m.requests.with_label_values(&[store, op]);
                m.errors.with_label_values(&[store, op]);
                m.duration.with_label_values(&[store, op]);
            }
        }
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }

    /// Requests of `store`/`op` so far.
    pub fn requests_of(&self, store: &str, op: &str) -> u64 {
        self.requests.with_label_values(&[store, op]).get()
    }

    /// Failed requests of `store`/`op` so far.
    pub fn errors_of(&self, store: &str, op: &str) -> u64 {
        self.errors.with_label_values(&[store, op]).get()
    }
}

/// Runs one store request, counting it (and its failure) and timing it when
/// `metrics` is given.
pub async fn observe<T, E>(
    metrics: Option<&StoreMetrics>,
    store: &'static str,
    op: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(m) = metrics else {
        return request.await;
    };
    let started = Instant::now();
    let out = request.await;
    m.requests.with_label_values(&[store, op]).inc();
    if out.is_err() {
        m.errors.with_label_values(&[store, op]).inc();
    }
    m.duration
        .with_label_values(&[store, op])
        .observe(started.elapsed().as_secs_f64());
    out
}

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
    /// Its requests to ClickHouse and S3.
    pub store: StoreMetrics,
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
            store: StoreMetrics::new(registry)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn observe_counts_requests_and_failures_by_store_and_op() {
        let r = Registry::new();
        let m = ReconcileMetrics::new(&r).unwrap();
        let s = &m.store;
        let ok: Result<u8, ()> = observe(Some(s), STORE_S3, "list", async { Ok(1) }).await;
        assert_eq!(ok, Ok(1));
        let err: Result<u8, &str> =
            observe(Some(s), STORE_CLICKHOUSE, "ping", async { Err("down") }).await;
        assert_eq!(err, Err("down"));
        let _: Result<u8, ()> = observe(None, STORE_S3, "list", async { Ok(1) }).await;
        assert_eq!(s.requests_of(STORE_S3, "list"), 1);
        assert_eq!(s.errors_of(STORE_S3, "list"), 0);
        assert_eq!(s.requests_of(STORE_CLICKHOUSE, "ping"), 1);
        assert_eq!(s.errors_of(STORE_CLICKHOUSE, "ping"), 1);
        assert_eq!(
            s.duration
                .with_label_values(&[STORE_S3, "list"])
                .get_sample_count(),
            1
        );
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        for n in [
            "thermocline_sync_store_requests_total",
            "thermocline_sync_store_errors_total",
            "thermocline_sync_store_request_duration_seconds",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        // Every (store, op) series exists from the start, at zero.
        let requests = r
            .gather()
            .into_iter()
            .find(|f| f.name() == "thermocline_sync_store_requests_total")
            .unwrap();
        assert_eq!(
            requests.get_metric().len(),
            CLICKHOUSE_OPS.len() + S3_OPS.len()
        );
    }
}
