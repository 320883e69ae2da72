//! `batches` in ClickHouse against the batch objects in S3: a batch in S3
//! whose `batches` row is missing (its insert never landed, or ClickHouse lost
//! it) is loaded from its Parquet object. Loading is idempotent (see
//! [`cold::clickhouse::ClickHouseSink::insert_batch`]), so a batch whose insert
//! is merely still in flight costs only wasted work.

use std::collections::HashSet;

use cold::{
    clickhouse::ClickHouseSink,
    row::{Batch, BatchId, HOUR_MS},
    s3::S3Sink,
};
use serde::Serialize;

use crate::{
    metrics::{observe, StoreMetrics, STORE_CLICKHOUSE, STORE_S3},
    Result,
};

#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    /// Batch objects listed in S3 for the hours of the range.
    pub s3_batches: u64,
    /// S3 keys of batches without a `batches` row in ClickHouse.
    pub missing_in_clickhouse: Vec<String>,
    /// Of those, loaded into ClickHouse by this run.
    pub reloaded: u64,
}

/// Compares the hours overlapping `[from_ms, to_ms)`; loads missing batches
/// when `reload`.
pub async fn check_batches(
    ch: &ClickHouseSink,
    s3: &S3Sink,
    metrics: Option<&StoreMetrics>,
    from_ms: i64,
    to_ms: i64,
    reload: bool,
) -> Result<BatchReport> {
    let lo = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let hi = (to_ms - 1).div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS;
    let keys = observe(metrics, STORE_S3, "list", s3.list_batches(lo..hi)).await?;
    let known: HashSet<String> = observe(
        metrics,
        STORE_CLICKHOUSE,
        "batch_ids",
        ch.batch_ids(lo, hi - 1),
    )
    .await?
    .into_iter()
    .collect();
    let mut report = BatchReport {
        s3_batches: keys.len() as u64,
        ..Default::default()
    };
    for key in keys {
        let Some((id, hour_start_ms)) = BatchId::from_s3_key(&key) else {
            tracing::warn!(
                key,
                "reconcile: S3 object is not named like a batch; skipped"
            );
            continue;
        };
        if known.contains(id.as_str()) {
            continue;
        }
        report.missing_in_clickhouse.push(key.clone());
        if !reload {
            continue;
        }
        let rows = observe(metrics, STORE_S3, "get", s3.get_batch(&key)).await?;
        let batch = Batch {
            id,
            hour_start_ms,
            rows,
        };
        observe(
            metrics,
            STORE_CLICKHOUSE,
            "insert_batch",
            ch.insert_batch(&batch, &key),
        )
        .await?;
        tracing::info!(
            key,
            rows = batch.rows.len(),
            "reconcile: batch reloaded from S3 into ClickHouse"
        );
        report.reloaded += 1;
    }
    Ok(report)
}
