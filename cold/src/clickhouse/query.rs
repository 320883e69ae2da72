//! Exact read-backs from `readings FINAL`: per device and metric (verify
//! --cold) and per time bucket (the reconciler's repair of hot windows).
//!
//! `FINAL` collapses duplicates that background merges have not reached yet,
//! so the answers count each reading once however often it was delivered.

use serde::Deserialize;

use super::sink::ClickHouseSink;
use crate::{Error, Result};

/// Which devices to aggregate.
#[derive(Debug, Clone, Copy)]
pub enum DeviceFilter<'a> {
    All,
    /// Device ids starting with this (a simulator run's prefix).
    Prefix(&'a str),
    /// Exactly these device ids.
    Devices(&'a [&'a str]),
}

/// Aggregates of one device and metric.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct Agg {
    pub device_id: String,
    pub metric: String,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
}

/// Aggregates of one time bucket of one device and metric, shaped like a hot
/// window bucket.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct BucketAgg {
    /// `floor(ts_ms / width) * width`.
    pub bucket_start_ms: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value at the latest ts; on a tie the largest value (as the hot
    /// path merges buckets).
    pub last: f64,
    pub last_ts_ms: i64,
}

/// [`BucketAgg`] with its device and metric (the reconciler's fleet query).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct DeviceBucketAgg {
    pub device_id: String,
    pub metric: String,
    pub bucket_start_ms: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub last_ts_ms: i64,
}

impl ClickHouseSink {
    /// Per device and metric: count, sum, min, max (and the ts range) of the
    /// readings with `from_ms <= ts_ms < to_ms`, from `readings FINAL`,
    /// ordered by device and metric.
    pub async fn aggregates_final(
        &self,
        devices: DeviceFilter<'_>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Agg>> {
        let filter = match devices {
            DeviceFilter::All => "1",
            DeviceFilter::Prefix(_) => "startsWith(device_id, ?)",
            DeviceFilter::Devices([]) => return Ok(Vec::new()),
            // `IN [array]` is a type error on 18.16; a subquery keeps the
            // primary-key index usable.
            DeviceFilter::Devices(_) => "device_id IN (SELECT arrayJoin(?))",
        };
        let sql = format!(
            "SELECT device_id, metric, toUInt64(count()), toFloat64(sum(value)), \
             toFloat64(min(value)), toFloat64(max(value)), toInt64(min(ts_ms)), toInt64(max(ts_ms)) \
             FROM {}.readings FINAL \
             WHERE ts_ms >= ? AND ts_ms < ? AND {filter} \
             GROUP BY device_id, metric ORDER BY device_id, metric",
            self.cfg.database
        );
        self.run("query", || async {
            let q = self.client.query(&sql).bind(from_ms).bind(to_ms);
            let q = match devices {
                DeviceFilter::All => q,
                DeviceFilter::Prefix(p) => q.bind(p),
                DeviceFilter::Devices(list) => q.bind(list),
            };
            self.timed(q.fetch_all::<Agg>()).await
        })
        .await
    }

    /// One device and metric in buckets of `width_ms`: count, sum, min, max,
    /// last and its ts, for readings with `from_ms <= ts_ms < to_ms`, from
    /// `readings FINAL`, ordered by bucket; empty buckets are absent.
    pub async fn bucket_aggregates(
        &self,
        device_id: &str,
        metric: &str,
        width_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<BucketAgg>> {
        if width_ms <= 0 {
            return Err(Error::InvalidData {
                what: "bucket_aggregates width_ms".into(),
                reason: format!("{width_ms} is not above zero"),
            });
        }
        // intDiv truncates towards zero; the correction floors negative ts.
        let sql = format!(
            "WITH toInt64(?) AS w \
             SELECT toInt64((intDiv(ts_ms, w) - (ts_ms % w < 0)) * w) AS bucket, \
             toUInt64(count()), toFloat64(sum(value)), toFloat64(min(value)), \
             toFloat64(max(value)), toFloat64(argMax(value, (ts_ms, value))), toInt64(max(ts_ms)) \
             FROM {}.readings FINAL \
             WHERE device_id = ? AND metric = ? AND ts_ms >= ? AND ts_ms < ? \
             GROUP BY bucket ORDER BY bucket",
            self.cfg.database
        );
        self.run("query", || async {
            let q = self
                .client
                .query(&sql)
                .bind(width_ms)
                .bind(device_id)
                .bind(metric)
                .bind(from_ms)
                .bind(to_ms);
            self.timed(q.fetch_all::<BucketAgg>()).await
        })
        .await
    }

    /// Like [`Self::bucket_aggregates`] for many devices and every metric at
    /// once: one query per resolution and chunk of devices for the
    /// reconciler, ordered by device, metric and bucket.
    pub async fn fleet_bucket_aggregates(
        &self,
        devices: DeviceFilter<'_>,
        width_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DeviceBucketAgg>> {
        if width_ms <= 0 {
            return Err(Error::InvalidData {
                what: "fleet_bucket_aggregates width_ms".into(),
                reason: format!("{width_ms} is not above zero"),
            });
        }
        let filter = match devices {
            DeviceFilter::All => "1",
            DeviceFilter::Prefix(_) => "startsWith(device_id, ?)",
            DeviceFilter::Devices([]) => return Ok(Vec::new()),
            DeviceFilter::Devices(_) => "device_id IN (SELECT arrayJoin(?))",
        };
        let sql = format!(
            "WITH toInt64(?) AS w \
             SELECT device_id, metric, toInt64((intDiv(ts_ms, w) - (ts_ms % w < 0)) * w) AS bucket, \
             toUInt64(count()), toFloat64(sum(value)), toFloat64(min(value)), \
             toFloat64(max(value)), toFloat64(argMax(value, (ts_ms, value))), toInt64(max(ts_ms)) \
             FROM {}.readings FINAL \
             WHERE ts_ms >= ? AND ts_ms < ? AND {filter} \
             GROUP BY device_id, metric, bucket ORDER BY device_id, metric, bucket",
            self.cfg.database
        );
        self.run("query", || async {
            let q = self
                .client
                .query(&sql)
                .bind(width_ms)
                .bind(from_ms)
                .bind(to_ms);
            let q = match devices {
                DeviceFilter::All => q,
                DeviceFilter::Prefix(p) => q.bind(p),
                DeviceFilter::Devices(list) => q.bind(list),
            };
            self.timed(q.fetch_all::<DeviceBucketAgg>()).await
        })
        .await
    }

    /// Devices with readings in `from_ms <= ts_ms < to_ms`, sorted.
    pub async fn devices_in_range(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT device_id FROM {}.readings \
             WHERE ts_ms >= ? AND ts_ms < ? ORDER BY device_id",
            self.cfg.database
        );
        self.run("query", || async {
            self.timed(
                self.client
                    .query(&sql)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all::<String>(),
            )
            .await
        })
        .await
    }

    /// Rows in `readings` before collapsing (`FINAL`-free `count()`), for
    /// tests and diagnostics.
    pub async fn raw_row_count(&self) -> Result<u64> {
        let sql = format!(
            "SELECT toUInt64(count()) FROM {}.readings",
            self.cfg.database
        );
        self.run("query", || async {
            self.timed(self.client.query(&sql).fetch_one::<u64>()).await
        })
        .await
    }
}
