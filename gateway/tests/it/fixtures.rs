//! Cold data made by the tests themselves: rows of a fleet with their ledger,
//! batch objects put into a test's S3 bucket as the cold path writes them
//! (Parquet through `cold::parquet`, keys from `Batch::s3_key`), and exact
//! raw counts read from ClickHouse without `FINAL`.

use std::collections::BTreeMap;

use cold::{
    clickhouse::{ClickHouseMetrics, ClickHouseSink},
    row::{Batch, BatchId, ColdRow, SpoolPos, HOUR_MS},
    s3::{S3Metrics, S3Sink},
};
use devices::{ledger::Ledger, DeviceId, MetricName};
use tokio::task::JoinSet;

use crate::{backfill::database, cold::ColdStores};

/// The device id `i` of a fleet.
pub fn device(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i:06}")
}

/// `devices × per_device` readings of metric `temp`, device `i`'s `k`th at
/// `first_ts + k × step_ms + i` (interleaved in time across devices), with
/// deterministic values; returned in time order, with the ledger of them.
pub fn fleet(
    prefix: &str,
    devices: u32,
    per_device: u64,
    first_ts: i64,
    step_ms: i64,
) -> (Vec<ColdRow>, Ledger) {
    let mut ledger = Ledger {
        prefix: prefix.into(),
        ..Default::default()
    };
    let gateway = DeviceId::parse("gw-fixture").unwrap();
    let metric = MetricName::parse("temp").unwrap();
    let mut rows = Vec::with_capacity((u64::from(devices) * per_device) as usize);
    for k in 0..per_device {
        for i in 0..devices {
            let id = device(prefix, i);
            let ts = first_ts + k as i64 * step_ms + i64::from(i);
            let value = ((k * 31 + u64::from(i) * 7) % 1009) as f64 / 4.0 - 50.0;
            ledger.record(&id, "temp", ts, value);
            rows.push(ColdRow {
                device_id: DeviceId::parse(&id).unwrap(),
                metric: metric.clone(),
                ts_ms: ts,
                value,
                seq: k,
                gateway_id: gateway.clone(),
                received_at_ms: ts + 5,
            });
        }
    }
    (rows, ledger)
}

/// Both sinks of a test's stores, with the schema and the bucket created.
pub async fn sinks(stores: &ColdStores) -> (S3Sink, ClickHouseSink) {
    let cfg = stores.config();
    let registry = prometheus::Registry::new();
    let ch = ClickHouseSink::connect(cfg.clickhouse, ClickHouseMetrics::new(&registry).unwrap())
        .unwrap();
    ch.ensure_schema().await.unwrap();
    let s3 = S3Sink::connect(cfg.s3, S3Metrics::new(&registry).unwrap())
        .await
        .unwrap();
    s3.ensure_bucket().await.unwrap();
    (s3, ch)
}

/// Cuts `rows` into batches of at most `per_batch` rows of one event hour
/// each, as the batcher of gateway `gateway` does (ids differ by gateway).
pub fn batches(rows: &[ColdRow], per_batch: usize, gateway: &str) -> Vec<Batch> {
    let gateway = DeviceId::parse(gateway).unwrap();
    let mut hours: BTreeMap<i64, Vec<ColdRow>> = BTreeMap::new();
    for r in rows {
        hours
            .entry(r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)
            .or_default()
            .push(r.clone());
    }
    let mut out = Vec::new();
    for (hour_start_ms, rows) in hours {
        for chunk in rows.chunks(per_batch) {
            let n = out.len() as u64;
            out.push(Batch {
                id: BatchId::new(
                    &gateway,
                    SpoolPos {
                        segment: n,
                        offset: 0,
                    },
                    hour_start_ms,
                ),
                hour_start_ms,
                rows: chunk.to_vec(),
            });
        }
    }
    out
}

/// Puts the batches into S3 (16 at a time), as the cold path ships them.
pub async fn put_batches(s3: &S3Sink, batches: &[Batch]) {
    let mut tasks = JoinSet::new();
    for b in batches {
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (s3, b) = (s3.clone(), b.clone());
        tasks.spawn(async move { s3.put_batch(&b).await.unwrap() });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
}

/// One number from ClickHouse (`sql` may name `{db}`, the test's database).
pub async fn ch_count(stores: &ColdStores, sql: &str) -> u64 {
    let sql = sql.replace("{db}", &database(stores));
    let text = crate::backfill::clickhouse(&sql).await;
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {text:?}"))
}

/// Rows of `readings` (raw, no FINAL: a row inserted twice counts twice),
/// rows of `readings FINAL`, and rows of `batches` (raw).
pub async fn raw_counts(stores: &ColdStores) -> (u64, u64, u64) {
    (
        ch_count(stores, "SELECT count() FROM {db}.readings").await,
        ch_count(stores, "SELECT count() FROM {db}.readings FINAL").await,
        ch_count(stores, "SELECT count() FROM {db}.batches").await,
    )
}

/// Batch objects in the test's bucket over `[from, to)`.
pub async fn s3_objects(s3: &S3Sink, from_ms: i64, to_ms: i64) -> u64 {
    s3.list_batches(from_ms..to_ms).await.unwrap().len() as u64
}

/// Deletes every Redis key under `prefix` (never FLUSHALL: Redis is shared).
pub async fn delete_prefix(prefix: &str) -> usize {
    delete_matching(&format!("{prefix}:*")).await
}

/// Deletes the Redis keys matching `pattern` (a `KEYS` pattern); how many.
pub async fn delete_matching(pattern: &str) -> usize {
    let mut raw = hot::RawHotConfig::default();
    raw.redis.url = crate::support::redis_url();
    let cfg = raw.validate().unwrap();
    let mut conn = hot::connect::connect(&cfg.redis).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    keys.len()
}

/// A ledger of only these devices of `ledger`.
pub fn only(ledger: &Ledger, keep: impl Fn(&str) -> bool) -> Ledger {
    let mut l = ledger.clone();
    l.entries.retain(|d, _| keep(d));
    l
}
