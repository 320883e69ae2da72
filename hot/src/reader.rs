//! Reads windows back: the HTTP API and `verify --hot` go through here.

use std::collections::BTreeMap;

use devices::{DeviceId, MetricName};
use redis::AsyncCommands;

use crate::connect::Conn;
use serde::Serialize;

use crate::{keys::Keys, window::Agg, window::Resolution, Error, Result};

/// Most buckets one read may ask for.
pub const MAX_BUCKETS_PER_READ: usize = 10_000;

/// A device's latest view.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latest {
    pub device_id: String,
    /// Arrival time (ms) of the newest message.
    pub last_seen_ms: i64,
    pub metrics: BTreeMap<String, LatestValue>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatestValue {
    pub value: f64,
    pub ts_ms: i64,
}

/// One stored bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start_ms: i64,
    pub agg: Agg,
}

#[derive(Clone)]
pub struct Reader {
    conn: Conn,
    keys: Keys,
    resolutions: std::sync::Arc<[Resolution]>,
}

impl Reader {
    pub fn new(conn: Conn, keys: Keys, resolutions: &[Resolution]) -> Self {
        Self {
            conn,
            keys,
            resolutions: resolutions.into(),
        }
    }

    pub fn resolutions(&self) -> &[Resolution] {
        &self.resolutions
    }

    /// The resolution with this label (`10s`, `1m`, ...).
    pub fn resolution(&self, label: &str) -> Option<&Resolution> {
        self.resolutions.iter().find(|r| r.label == label)
    }

    /// The device's latest view, or `None` if Redis holds nothing for it.
    pub async fn latest(&self, device: &DeviceId) -> Result<Option<Latest>> {
        let key = self.keys.latest(device);
        let map: BTreeMap<String, String> = self.conn.clone().hgetall(&key).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let corrupt = |reason: &str| Error::Corrupt {
            key: key.clone(),
            reason: reason.into(),
        };
        let mut out = Latest {
            device_id: device.to_string(),
            last_seen_ms: 0,
            metrics: BTreeMap::new(),
        };
        for (field, raw) in &map {
            if field == "seen" {
                out.last_seen_ms = raw.parse().map_err(|_| corrupt("seen"))?;
            } else if let Some(metric) = field.strip_prefix("v:") {
                let ts = map
                    .get(&format!("t:{metric}"))
                    .ok_or_else(|| corrupt("value without ts"))?;
                out.metrics.insert(
                    metric.to_string(),
                    LatestValue {
                        value: raw.parse().map_err(|_| corrupt(field))?,
                        ts_ms: ts.parse().map_err(|_| corrupt(field))?,
                    },
                );
            }
        }
        Ok(Some(out))
    }

    /// The stored buckets of one resolution whose start lies in the bucket range
    /// covering `[from_ms, to_ms]`, oldest first. Missing buckets are left out.
    pub async fn buckets(
        &self,
        device: &DeviceId,
        metric: &MetricName,
        res: &Resolution,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bucket>> {
        if to_ms < from_ms {
            return Err(Error::BadRequest("range end is before its start".into()));
        }
        let n = ((res.bucket_start(to_ms) - res.bucket_start(from_ms)) / res.width_ms + 1) as usize;
        if n > MAX_BUCKETS_PER_READ {
            return Err(Error::BadRequest(format!(
                "{n} buckets of {} asked for; at most {MAX_BUCKETS_PER_READ}: use a coarser resolution or a shorter range",
                res.label
            )));
        }
        let starts: Vec<i64> = res.bucket_starts(from_ms, to_ms).collect();
        let fields = Keys::bucket_fields(metric);
        let mut pipe = redis::pipe();
        for s in &starts {
            pipe.cmd("HMGET")
                .arg(self.keys.bucket(device, &res.label, *s))
                .arg(&fields);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut out = Vec::new();
        for (start, row) in starts.into_iter().zip(rows) {
            if row.iter().all(Option::is_none) {
                continue;
            }
            let num = |i: usize| -> Result<f64> {
                row[i]
                    .as_deref()
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| Error::Corrupt {
                        key: self.keys.bucket(device, &res.label, start),
                        reason: format!("field {} missing or not a number", fields[i]),
                    })
            };
            out.push(Bucket {
                start_ms: start,
                agg: Agg {
                    count: num(0)? as u64,
                    sum: num(1)?,
                    min: num(2)?,
                    max: num(3)?,
                    last: num(4)?,
                    last_ts_ms: num(5)? as i64,
                },
            });
        }
        Ok(out)
    }

    /// Devices seen (by arrival time) at or after `since_ms`, most recent first.
    pub async fn active_devices(&self, since_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.device_index())
            .arg("+inf")
            .arg(since_ms)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(rows.into_iter().map(|(d, s)| (d, s as i64)).collect())
    }

    /// The oldest time the fleet index still holds: the writer trims devices
    /// unseen for longer than the longest resolution's width + retention.
    pub fn index_horizon_ms(&self, now_ms: i64) -> i64 {
        let longest = self
            .resolutions
            .iter()
            .map(|r| r.width_ms + r.retention_ms)
            .max()
            .unwrap_or(0);
        now_ms - longest
    }

    /// Devices last seen before `before_ms` and not before `not_before_ms`,
    /// oldest first (at most `limit`), with their last arrival (ms): devices
    /// gone quiet. One `ZRANGE … BYSCORE LIMIT`, never the whole index.
    pub async fn quiet_devices(
        &self,
        not_before_ms: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.device_index())
            .arg(not_before_ms)
            .arg(format!("({before_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(rows.into_iter().map(|(d, s)| (d, s as i64)).collect())
    }

    /// How many devices of the fleet index were last seen in
    /// `[not_before_ms, before_ms)` (one `ZCOUNT`, O(log n)).
    pub async fn count_seen_between(&self, not_before_ms: i64, before_ms: i64) -> Result<u64> {
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(self.keys.device_index())
            .arg(not_before_ms)
            .arg(format!("({before_ms}"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
