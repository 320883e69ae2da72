//! `verify --cold`: do ClickHouse and the Parquet objects in S3 hold exactly
//! what was published?
//!
//! For every device and metric in the ledger: count, sum, min and max over the
//! ledger's time range, from ClickHouse (`readings FINAL`, so duplicates that
//! merges have not collapsed yet count once) and from the batch objects in S3
//! (every object whose hour overlaps the range, read back and aggregated).
//! Counts must match exactly; sum, min and max within 1e-9 relative. S3 is
//! counted once per reading key (device, metric, ts, seq). A key in objects of
//! two different gateways is a broker redelivery after a failover (the first
//! gateway shipped it but its ack was lost): counted once, reported as
//! `s3_redeliveries`, not a failure. A key twice in one object, or in two
//! objects of the same gateway, is a failure: each gateway drops its own
//! redeliveries before batching, so that copy is a bug.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::Arc,
};

use cold::{
    clickhouse::{ClickHouseSink, DeviceFilter},
    s3::S3Sink,
};
use devices::ledger::Ledger;
use serde::Serialize;

use crate::{
    verify::{diff_entry, render_tail, Mismatch},
    Error, Result,
};

/// Aggregates of one device and metric in one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Figures {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }
}

/// One store's comparison with the ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreReport {
    pub devices: u64,
    pub expected_readings: u64,
    pub found_readings: u64,
    pub mismatched_devices: u64,
    /// Readings of the ledger's devices found in the store but in no ledger entry.
    pub unexpected_series: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdReport {
    pub clickhouse: StoreReport,
    pub s3: StoreReport,
    /// S3 batch objects read.
    pub s3_objects: u64,
    /// Readings present more than once in one gateway's S3 objects (a failure).
    pub s3_duplicates: u64,
    /// Readings also present in another gateway's S3 objects (a redelivery
    /// after a failover; counted once).
    pub s3_redeliveries: u64,
    /// Up to 20 examples: "device metric ts seq in KEY and KEY".
    pub duplicate_examples: Vec<String>,
    /// `resolution` is the store ("clickhouse" or "s3").
    pub mismatches: Vec<Mismatch>,
}

impl ColdReport {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.s3_duplicates == 0 && self.clickhouse.devices > 0
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<12} {:>8} {:>14} {:>14} {:>10}",
            "store", "series", "expected", "found", "mismatch"
        );
        for (name, r) in [("clickhouse", &self.clickhouse), ("s3", &self.s3)] {
            let _ = writeln!(
                s,
                "{:<12} {:>8} {:>14} {:>14} {:>10}",
                name, r.devices, r.expected_readings, r.found_readings, r.mismatched_devices
            );
        }
        let _ = writeln!(
            s,
            "s3 objects read: {}, duplicate readings within a gateway: {}, \
             readings redelivered to a second gateway (counted once): {}",
            self.s3_objects, self.s3_duplicates, self.s3_redeliveries
        );
        for d in &self.duplicate_examples {
            let _ = writeln!(s, "DUPLICATE {d}");
        }
        render_tail(
            &mut s,
            &self.mismatches,
            self.ok(),
            "OK: ClickHouse and S3 match the ledger exactly",
        );
        s
    }
}

type Series = BTreeMap<(String, String), Figures>;

fn compare(store: &str, ledger: &Ledger, found: &Series, report: &mut ColdReport) -> StoreReport {
    let mut r = StoreReport::default();
    for (device, metrics) in &ledger.entries {
        for (metric, e) in metrics {
            r.devices += 1;
            r.expected_readings += e.count;
            let got = found.get(&(device.clone(), metric.clone()));
            r.found_readings += got.map_or(0, |g| g.count);
            let diffs = diff_entry(e, got.map(|g| (g.count, g.sum, g.min, g.max)));
            if !diffs.is_empty() {
                r.mismatched_devices += 1;
            }
            for (field, expected, found) in diffs {
                report.mismatches.push(Mismatch {
                    device_id: device.clone(),
                    metric: metric.clone(),
                    resolution: store.into(),
                    field,
                    expected,
                    found,
                });
            }
        }
    }
    for (device, metric) in found.keys() {
        if ledger.get(device, metric).is_none() && ledger.entries.contains_key(device) {
            r.unexpected_series += 1;
            report.mismatches.push(Mismatch {
                device_id: device.clone(),
                metric: metric.clone(),
                resolution: store.into(),
                field: "unexpected",
                expected: 0.0,
                found: found[&(device.clone(), metric.clone())].count as f64,
            });
        }
    }
    r
}

/// Checks ClickHouse and S3 against `ledger`.
pub async fn verify_cold(ch: &ClickHouseSink, s3: &S3Sink, ledger: &Ledger) -> Result<ColdReport> {
    let (Some(min_ts), Some(max_ts)) = (ledger.min_ts_ms(), ledger.max_ts_ms()) else {
        return Err(Error::Ledger("the ledger has no readings".into()));
    };
    let (from, to) = (min_ts, max_ts + 1);
    let mut report = ColdReport::default();

    // ClickHouse, FINAL, only the run's devices (by prefix).
    let aggs = ch
        .aggregates_final(DeviceFilter::Prefix(&ledger.prefix), from, to)
        .await?;
    let ch_series: Series = aggs
        .into_iter()
        .filter(|a| ledger.entries.contains_key(&a.device_id))
        .map(|a| {
            (
                (a.device_id, a.metric),
                Figures {
                    count: a.count,
                    sum: a.sum,
                    min: a.min,
                    max: a.max,
                },
            )
        })
        .collect();
    report.clickhouse = compare("clickhouse", ledger, &ch_series, &mut report);

    // S3: every batch object overlapping the range, read 16 at a time.
    let keys = s3.list_batches(from..to).await?;
    report.s3_objects = keys.len() as u64;
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (s3, key, limit) = (s3.clone(), key.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            s3.get_batch(&key).await.map(|rows| (i, rows))
        });
    }
    let mut s3_series = Series::new();
    // (device, metric, ts, seq) → the first object holding it and the
    // gateway that wrote that copy.
    let mut seen: HashMap<(String, String, i64, u64), (usize, String)> = HashMap::new();
    let mut objects = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, rows) = joined.map_err(|e| Error::Ledger(format!("verify task failed: {e}")))??;
        objects.push((i, rows));
    }
    objects.sort_by_key(|(i, _)| *i);
    for (i, rows) in objects {
        for row in rows {
            let device = row.device_id.as_str();
            if !ledger.entries.contains_key(device) || row.ts_ms < from || row.ts_ms >= to {
                continue;
            }
            let id = (
                device.to_string(),
                row.metric.as_str().to_string(),
                row.ts_ms,
                row.seq,
            );
            if let Some((j, gw)) = seen.get(&id) {
                if gw != row.gateway_id.as_str() {
                    report.s3_redeliveries += 1;
                    continue;
                }
                let j = *j;
                report.s3_duplicates += 1;
                if report.duplicate_examples.len() < 20 {
                    report.duplicate_examples.push(format!(
                        "{} {} {} {} in {} and {}",
                        id.0, id.1, id.2, id.3, keys[j], keys[i]
                    ));
                }
                continue;
            }
            s3_series
                .entry((id.0.clone(), id.1.clone()))
                .or_default()
                .add(row.value);
            seen.insert(id, (i, row.gateway_id.as_str().to_owned()));
        }
    }
    report.s3 = compare("s3", ledger, &s3_series, &mut report);
    report.mismatches.sort_by(|a, b| {
        (&a.device_id, &a.metric, &a.resolution).cmp(&(&b.device_id, &b.metric, &b.resolution))
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_report_is_not_ok() {
        assert!(
            !ColdReport::default().ok(),
            "verifying nothing must not pass"
        );
    }

    #[test]
    fn figures_track_min_max_sum() {
        let mut f = Figures::default();
        for v in [2.0, -1.0, 5.0] {
            f.add(v);
        }
        assert_eq!((f.count, f.sum, f.min, f.max), (3, 6.0, -1.0, 5.0));
    }
}
