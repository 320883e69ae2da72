//! In-memory pre-aggregation between flushes.
//!
//! The [`Aggregator`] takes decoded [`Message`]s, drops redeliveries through the
//! [`Dedup`] horizon and folds every reading into one [`Agg`] per (device,
//! metric, resolution, bucket). [`Aggregator::take`] hands the pending state over
//! as a [`FlushBatch`], grouped by device because the writer runs one atomic
//! script per device.

use std::collections::HashMap;

use devices::{DeviceId, Message, MetricName};

use crate::{
    dedup::{Dedup, Verdict},
    window::{Agg, Resolution},
};

/// The pending windows of one device.
#[derive(Debug, Default)]
pub struct DeviceBatch {
    /// (metric, resolution index, bucket start) → aggregate.
    pub buckets: HashMap<(MetricName, u8, i64), Agg>,
    /// Per metric, the reading with the greatest timestamp.
    pub latest: HashMap<MetricName, (i64, f64)>,
    /// Arrival time (ms) of the device's newest message in this batch.
    pub seen_ms: i64,
    /// Readings folded into this batch.
    pub readings: u64,
}

/// One flush worth of pre-aggregated windows.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub devices: HashMap<DeviceId, DeviceBatch>,
    pub buckets: usize,
    pub readings: u64,
}

impl FlushBatch {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// What ingesting one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub readings: u64,
    /// Readings of a redelivered message.
    pub duplicates: u64,
    /// Readings too old for every resolution's retention.
    pub expired: u64,
    pub seq_reset: bool,
}

pub struct Aggregator {
    resolutions: Vec<Resolution>,
    dedup: Dedup,
    pending: FlushBatch,
}

impl Aggregator {
    pub fn new(resolutions: Vec<Resolution>, dedup: Dedup) -> Self {
        assert!(resolutions.len() <= u8::MAX as usize);
        Self {
            resolutions,
            dedup,
            pending: FlushBatch::default(),
        }
    }

    pub fn ingest(&mut self, msg: &Message, now_ms: i64) -> Ingested {
        let mut out = Ingested::default();
        if let Some(seq) = msg.seq {
            match self.dedup.check(&msg.device_id, seq) {
                Verdict::Duplicate => {
                    out.duplicates = msg.readings.len() as u64;
                    return out;
                }
                Verdict::Reset => out.seq_reset = true,
                Verdict::New => {}
            }
        }
        let dev = self
            .pending
            .devices
            .entry(msg.device_id.clone())
            .or_default();
        dev.seen_ms = dev.seen_ms.max(now_ms);
        for r in &msg.readings {
            let mut kept = false;
            for (i, res) in self.resolutions.iter().enumerate() {
                let start = res.bucket_start(r.ts_ms);
                if !res.retained(start, now_ms) {
                    continue;
                }
                kept = true;
                match dev.buckets.entry((r.metric.clone(), i as u8, start)) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        e.get_mut().observe(r.ts_ms, r.value)
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(Agg::one(r.ts_ms, r.value));
                        self.pending.buckets += 1;
                    }
                }
            }
            if !kept {
                out.expired += 1;
                continue;
            }
            let latest = dev
                .latest
                .entry(r.metric.clone())
                .or_insert((r.ts_ms, r.value));
            if (r.ts_ms, r.value) > *latest {
                *latest = (r.ts_ms, r.value);
            }
            dev.readings += 1;
            out.readings += 1;
        }
        self.pending.readings += out.readings;
        out
    }

    /// Distinct buckets pending.
    pub fn pending_buckets(&self) -> usize {
        self.pending.buckets
    }

    pub fn dedup_devices(&self) -> usize {
        self.dedup.devices()
    }

    /// Takes everything pending, leaving the aggregator empty.
    pub fn take(&mut self) -> FlushBatch {
        let mut batch = std::mem::take(&mut self.pending);
        batch.devices.retain(|_, d| d.readings > 0);
        batch
    }

    pub fn resolutions(&self) -> &[Resolution] {
        &self.resolutions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::Reading;
    use std::time::Duration;

    fn msg(dev: &str, seq: Option<u64>, ts: i64, vals: &[(&str, f64)]) -> Message {
        let d = DeviceId::parse(dev).unwrap();
        Message {
            device_id: d.clone(),
            seq,
            readings: vals
                .iter()
                .map(|(m, v)| Reading {
                    device_id: d.clone(),
                    metric: MetricName::parse(m).unwrap(),
                    ts_ms: ts,
                    value: *v,
                    seq,
                })
                .collect(),
        }
    }

    fn agg() -> Aggregator {
        let res = vec![
            Resolution::new(Duration::from_secs(10), Duration::from_secs(60)),
            Resolution::new(Duration::from_secs(60), Duration::from_secs(3600)),
        ];
        Aggregator::new(res, Dedup::new(64, 100))
    }

    #[test]
    fn folds_readings_per_bucket_and_resolution() {
        let mut a = agg();
        let now = 1_000_000;
        assert_eq!(
            a.ingest(
                &msg("d1", Some(0), now - 1000, &[("t", 1.0), ("h", 2.0)]),
                now
            )
            .readings,
            2
        );
        assert_eq!(
            a.ingest(&msg("d1", Some(1), now - 500, &[("t", 3.0)]), now)
                .readings,
            1
        );
        // 2 metrics × 2 resolutions; both t readings share their buckets.
        assert_eq!(a.pending_buckets(), 4);
        let b = a.take();
        assert_eq!((b.readings, b.buckets), (3, 4));
        let d = &b.devices[&DeviceId::parse("d1").unwrap()];
        let t = MetricName::parse("t").unwrap();
        let bucket = d.buckets[&(t.clone(), 0, 990_000)];
        assert_eq!((bucket.count, bucket.sum, bucket.last), (2, 4.0, 3.0));
        assert_eq!(d.latest[&t], (now - 500, 3.0));
        assert_eq!(a.pending_buckets(), 0);
    }

    #[test]
    fn duplicates_and_expired_are_skipped() {
        let mut a = agg();
        let now = 10_000_000;
        a.ingest(&msg("d1", Some(7), now, &[("t", 1.0)]), now);
        let dup = a.ingest(&msg("d1", Some(7), now, &[("t", 1.0)]), now);
        assert_eq!((dup.readings, dup.duplicates), (0, 1));
        // 2 h old: past the 10 s resolution's retention (60 s) and the 1 m one's (1 h).
        let old = a.ingest(&msg("d1", Some(8), now - 7_200_000, &[("t", 1.0)]), now);
        assert_eq!((old.readings, old.expired), (0, 1));
        // 30 min old: only the 1 m resolution still keeps it.
        let late = a.ingest(&msg("d1", Some(9), now - 1_800_000, &[("t", 5.0)]), now);
        assert_eq!(late.readings, 1);
        let b = a.take();
        assert_eq!(b.readings, 2);
        assert_eq!(b.buckets, 3);
    }
}
