//! The simulator's ledger: what it published, per device and metric.
//!
//! A ledger is the ground truth that `verify` checks the stores against. It only
//! ever contains messages the broker acknowledged (QoS 1 PubAck): the simulator
//! returns an error rather than a ledger when any publish stayed unacknowledged.
//!
//! Timestamps are the `ts` written into each payload (milliseconds since the Unix
//! epoch), so the ledger and the payloads agree exactly.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Aggregate of one metric of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Smallest timestamp recorded (not necessarily the first one recorded).
    pub first_ts_ms: i64,
    /// Largest timestamp recorded.
    pub last_ts_ms: i64,
    /// The value at `last_ts_ms` (the greater one if several share it: the
    /// hot path's rule for "last"). Absent in ledgers written before it was
    /// recorded; `verify --hot` then does not check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
}

impl LedgerEntry {
    /// Adds one reading.
    pub fn record(&mut self, ts_ms: i64, value: f64) {
        if self.count == 0 {
            *self = Self {
                count: 1,
                sum: value,
                min: value,
                max: value,
                first_ts_ms: ts_ms,
                last_ts_ms: ts_ms,
                last: Some(value),
            };
            return;
        }
        if ts_ms > self.last_ts_ms || (ts_ms == self.last_ts_ms && self.last < Some(value)) {
            self.last = Some(value);
        }
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.first_ts_ms = self.first_ts_ms.min(ts_ms);
        self.last_ts_ms = self.last_ts_ms.max(ts_ms);
    }

    /// Mean of the recorded values; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// What one simulator run published, and with which parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Device id prefix: device ids are `{prefix}-{index:06}`.
    pub prefix: String,
    pub seed: u64,
    pub devices: u32,
    pub messages_per_device: u64,
    /// Wall clock when the run started, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Wall clock when every publish was acknowledged, ms since the Unix epoch.
    pub finished_at_ms: i64,
    /// device id -> metric -> entry
    pub entries: BTreeMap<String, BTreeMap<String, LedgerEntry>>,
}

impl Ledger {
    /// Adds one reading of `metric` of `device`.
    pub fn record(&mut self, device: &str, metric: &str, ts_ms: i64, value: f64) {
        // Look up before inserting so the common case allocates no key strings.
        if let Some(metrics) = self.entries.get_mut(device) {
            if let Some(entry) = metrics.get_mut(metric) {
                entry.record(ts_ms, value);
                return;
            }
            metrics
                .entry(metric.to_owned())
                .or_default()
                .record(ts_ms, value);
            return;
        }
        self.entries
            .entry(device.to_owned())
            .or_default()
            .entry(metric.to_owned())
            .or_default()
            .record(ts_ms, value);
    }

    /// The entry of `metric` of `device`, if any reading was recorded.
    pub fn get(&self, device: &str, metric: &str) -> Option<&LedgerEntry> {
        self.entries.get(device)?.get(metric)
    }

    fn all_entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.values().flat_map(|m| m.values())
    }

    /// Smallest timestamp over all entries.
    pub fn min_ts_ms(&self) -> Option<i64> {
        self.all_entries().map(|e| e.first_ts_ms).min()
    }

    /// Largest timestamp over all entries.
    pub fn max_ts_ms(&self) -> Option<i64> {
        self.all_entries().map(|e| e.last_ts_ms).max()
    }

    /// Number of readings (not messages: a message has one reading per metric).
    pub fn total_readings(&self) -> u64 {
        self.all_entries().map(|e| e.count).sum()
    }

    /// Writes the ledger as pretty JSON. The file is written beside `path` and
    /// renamed over it, so a reader never sees half a ledger.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|source| Error::LedgerFormat {
            path: path.to_owned(),
            source,
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let io = |source| Error::LedgerIo {
            path: path.to_owned(),
            source,
        };
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a ledger written by [`Ledger::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::LedgerIo {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::LedgerFormat {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_maths() {
        let mut l = Ledger::default();
        assert_eq!(l.min_ts_ms(), None);
        assert_eq!(l.max_ts_ms(), None);
        assert_eq!(l.total_readings(), 0);

        // Out-of-order timestamps and negative values: first/last are min/max.
        l.record("d1", "temp", 2_000, 5.5);
        l.record("d1", "temp", 1_000, -3.25);
        l.record("d1", "temp", 3_000, 10.0);
        l.record("d1", "hum", 1_500, 40.0);
        l.record("d2", "temp", 500, 7.0);

        let t = l.get("d1", "temp").unwrap();
        assert_eq!(t.count, 3);
        assert_eq!(t.sum, 12.25);
        assert_eq!(t.min, -3.25);
        assert_eq!(t.max, 10.0);
        assert_eq!(t.first_ts_ms, 1_000);
        assert_eq!(t.last_ts_ms, 3_000);
        assert_eq!(t.mean(), Some(12.25 / 3.0));

        // A single reading initialises min and max (not the Default's 0.0).
        let d2 = l.get("d2", "temp").unwrap();
        assert_eq!((d2.min, d2.max, d2.count), (7.0, 7.0, 1));

        assert_eq!(l.min_ts_ms(), Some(500));
        assert_eq!(l.max_ts_ms(), Some(3_000));
        assert_eq!(l.total_readings(), 5);
        assert_eq!(l.get("d2", "hum"), None);
        assert_eq!(LedgerEntry::default().mean(), None);
    }

    #[test]
    fn json_round_trip() {
        let mut l = Ledger {
            prefix: "sim-abc".into(),
            seed: u64::MAX,
            devices: 2,
            messages_per_device: 3,
            started_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_000_500,
            entries: BTreeMap::new(),
        };
        // Values that do not print as short decimals must still round-trip exactly.
        l.record("sim-abc-000000", "temp", 1_700_000_000_001, 0.1 + 0.2);
        l.record("sim-abc-000000", "temp", 1_700_000_000_002, 1e-300);
        l.record(
            "sim-abc-000001",
            "pressure",
            1_700_000_000_003,
            -1.7976931348623157e308,
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        l.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n  \"prefix\""), "pretty JSON: {text}");
        assert_eq!(Ledger::read(&path).unwrap(), l);
        assert!(!dir.path().join("ledger.json.tmp").exists());
    }

    #[test]
    fn read_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = Ledger::read(&missing).unwrap_err();
        assert!(matches!(err, Error::LedgerIo { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.json"));

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"prefix\": 1}").unwrap();
        let err = Ledger::read(&bad).unwrap_err();
        assert!(matches!(err, Error::LedgerFormat { .. }), "{err:?}");
    }
}
