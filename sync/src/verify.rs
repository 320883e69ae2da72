//! `verify --hot`: do the Redis windows add up exactly to what was published?
//!
//! For every device and metric in the ledger, and every resolution whose
//! retention still covers the ledger's first reading, the stored buckets over
//! `[first_ts, last_ts]` are rolled up and compared with the ledger: counts
//! exactly; sum, min and max within 1e-9 relative (the sum is added in another
//! order than the simulator added it); the last value and its ts exactly when
//! the ledger records them.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc};

use devices::{ledger::Ledger, DeviceId, MetricName};
use hot::{reader::Reader, window::Agg};
use serde::Serialize;

use crate::{Error, Result};

/// Relative tolerance for sum, min and max.
pub const REL_TOLERANCE: f64 = 1e-9;

/// One difference between the ledger and the store.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Mismatch {
    pub device_id: String,
    pub metric: String,
    pub resolution: String,
    pub field: &'static str,
    pub expected: f64,
    pub found: f64,
}

/// Per metric and resolution: what was expected and what was found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Row {
    pub devices: u64,
    pub expected_readings: u64,
    pub found_readings: u64,
    pub mismatched_devices: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HotReport {
    /// (metric, resolution) → row.
    pub rows: BTreeMap<(String, String), Row>,
    /// Resolutions left out because the ledger's data is past their retention.
    pub skipped_resolutions: Vec<String>,
    pub mismatches: Vec<Mismatch>,
}

impl HotReport {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && !self.rows.is_empty()
    }

    /// A plain-text table, then the first differences.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>8} {:>14} {:>14} {:>10}",
            "metric", "res", "devices", "expected", "found", "mismatch"
        );
        for ((metric, res), r) in &self.rows {
            let _ = writeln!(
                s,
                "{:<24} {:>6} {:>8} {:>14} {:>14} {:>10}",
                metric, res, r.devices, r.expected_readings, r.found_readings, r.mismatched_devices
            );
        }
        if !self.skipped_resolutions.is_empty() {
            let _ = writeln!(
                s,
                "skipped (past retention): {}",
                self.skipped_resolutions.join(", ")
            );
        }
        render_tail(
            &mut s,
            &self.mismatches,
            self.ok(),
            "OK: hot windows match the ledger exactly",
        );
        s
    }
}

/// The end of a verify report: the first 20 mismatches, then OK or FAILED.
pub(crate) fn render_tail(s: &mut String, mismatches: &[Mismatch], ok: bool, ok_line: &str) {
    for m in mismatches.iter().take(20) {
        let _ = writeln!(
            s,
            "MISMATCH {} {} {} {}: expected {} found {}",
            m.device_id, m.metric, m.resolution, m.field, m.expected, m.found
        );
    }
    if mismatches.len() > 20 {
        let _ = writeln!(s, "... and {} more", mismatches.len() - 20);
    }
    let _ = writeln!(s, "{}", if ok { ok_line } else { "FAILED" });
}

/// The fields in which a store's (count, sum, min, max) differs from a ledger
/// entry: (field, expected, found). Counts exactly, the rest within
/// [`REL_TOLERANCE`]; nothing found is a count of 0.
pub(crate) fn diff_entry(
    entry: &devices::ledger::LedgerEntry,
    got: Option<(u64, f64, f64, f64)>,
) -> Vec<(&'static str, f64, f64)> {
    let Some((count, sum, min, max)) = got else {
        return vec![("count", entry.count as f64, 0.0)];
    };
    let mut diffs = Vec::new();
    if count != entry.count {
        diffs.push(("count", entry.count as f64, count as f64));
    }
    for (field, e, f) in [
        ("sum", entry.sum, sum),
        ("min", entry.min, min),
        ("max", entry.max, max),
    ] {
        if !close(e, f) {
            diffs.push((field, e, f));
        }
    }
    diffs
}

pub(crate) fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= REL_TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// Checks the hot windows against `ledger`.
pub async fn verify_hot(reader: &Reader, ledger: &Ledger, now_ms: i64) -> Result<HotReport> {
    let mut report = HotReport::default();
    let Some(min_ts) = ledger.min_ts_ms() else {
        return Err(Error::Ledger("the ledger has no readings".into()));
    };
    let resolutions: Vec<_> = reader
        .resolutions()
        .iter()
        .filter(|r| {
            let keep = r.retained(r.bucket_start(min_ts), now_ms);
            if !keep {
                report.skipped_resolutions.push(r.label.clone());
            }
            keep
        })
        .cloned()
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (device, metrics) in &ledger.entries {
        let dev = DeviceId::parse(device)
            .map_err(|r| Error::Ledger(format!("device {device:?}: {r}")))?;
        for (metric, entry) in metrics {
            let m = MetricName::parse(metric)
                .map_err(|r| Error::Ledger(format!("metric {metric:?}: {r}")))?;
            for res in &resolutions {
                let (reader, dev, m, res, entry, limit) = (
                    reader.clone(),
                    dev.clone(),
                    m.clone(),
                    res.clone(),
                    entry.clone(),
                    limit.clone(),
                );
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let buckets = reader
                        .buckets(&dev, &m, &res, entry.first_ts_ms, entry.last_ts_ms)
                        .await?;
                    let got = Agg::merged(buckets.iter().map(|b| &b.agg));
                    Ok::<_, Error>((dev, m, res.label, entry, got))
                });
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (dev, m, res, entry, got) =
            joined.map_err(|e| Error::Ledger(format!("verify task failed: {e}")))??;
        let row = report.rows.entry((m.to_string(), res.clone())).or_default();
        row.devices += 1;
        row.expected_readings += entry.count;
        row.found_readings += got.map_or(0, |g| g.count);
        let mut diffs = diff_entry(&entry, got.map(|g| (g.count, g.sum, g.min, g.max)));
        // The last value and its ts, exactly: the rolled-up buckets' last is
        // the reading with the greatest ts, as the ledger's is.
        if let (Some(g), Some(last)) = (got, entry.last) {
            if g.last_ts_ms != entry.last_ts_ms {
                diffs.push(("last_ts", entry.last_ts_ms as f64, g.last_ts_ms as f64));
            } else if g.last != last {
                diffs.push(("last", last, g.last));
            }
        }
        if !diffs.is_empty() {
            row.mismatched_devices += 1;
        }
        for (field, expected, found) in diffs {
            report.mismatches.push(Mismatch {
                device_id: dev.to_string(),
                metric: m.to_string(),
                resolution: res.clone(),
                field,
                expected,
                found,
            });
        }
    }
    report.mismatches.sort_by(|a, b| {
        (&a.device_id, &a.metric, &a.resolution).cmp(&(&b.device_id, &b.metric, &b.resolution))
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_relative() {
        assert!(close(1e12, 1e12 + 1.0));
        assert!(!close(1e3, 1e3 + 1e-3));
        assert!(close(0.0, 1e-12));
        assert!(!close(0.0, 1e-6));
    }

    #[test]
    fn empty_report_is_not_ok() {
        assert!(
            !HotReport::default().ok(),
            "verifying nothing must not pass"
        );
    }
}
