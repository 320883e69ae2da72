//! Cold rows → hot windows: how backfill (`--hot`) and import put readings
//! into the Redis windows of the buckets still within retention.
//!
//! The rows go through the gateway's own [`Aggregator`] and [`Writer`] (the
//! same bucket maths and the same merge script), so a bucket gets exactly
//! what the live path would have added. The merge ADDS to a bucket: loading
//! rows the windows already hold counts them twice. Callers only load rows
//! that were not in the cold stores before (see `import` and `backfill`);
//! `thermocline reconcile --repair` is the idempotent way to rebuild buckets
//! from ClickHouse.
//!
//! The device's `seen` (latest view, active-device set) becomes the newest
//! event time loaded, not the time of the load: an old backfill does not make
//! a device look active.

use cold::row::ColdRow;
use devices::{Message, Reading};
use hot::{aggregate::Aggregator, dedup::Dedup, keys::Keys, writer::Writer, HotConfig};

use crate::Result;

/// Loads rows into the hot windows. Cheap to clone.
#[derive(Clone)]
pub struct HotLoader {
    writer: Writer,
    cfg: HotConfig,
}

/// What one load did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Readings merged into at least one bucket.
    pub readings: u64,
    /// Readings older than every resolution's retention (not loaded).
    pub expired: u64,
}

impl HotLoader {
    /// Connects lazily (the first load reaches Redis).
    pub fn new(cfg: &HotConfig) -> Result<Self> {
        let conn = hot::connect::connect(&cfg.redis)?;
        let writer = Writer::new(
            conn,
            Keys::new(&cfg.key_prefix),
            &cfg.resolutions,
            cfg.devices_per_pipeline,
        );
        Ok(Self {
            writer,
            cfg: cfg.clone(),
        })
    }

    /// Merges `rows` into their buckets (those still within retention at `now_ms`).
    pub async fn load(&self, rows: &[ColdRow], now_ms: i64) -> Result<Loaded> {
        // No dedup here: messages carry no seq (each row's own seq stays on
        // its reading); the cold stores already decided what is new.
        let mut agg = Aggregator::new(self.cfg.resolutions.clone(), Dedup::new(64, 1));
        let mut out = Loaded::default();
        for r in rows {
            let msg = Message {
                device_id: r.device_id.clone(),
                seq: None,
                readings: vec![Reading {
                    device_id: r.device_id.clone(),
                    metric: r.metric.clone(),
                    ts_ms: r.ts_ms,
                    value: r.value,
                    seq: Some(r.seq),
                }],
            };
            let i = agg.ingest(&msg, now_ms);
            out.readings += i.readings;
            out.expired += i.expired;
        }
        let mut batch = agg.take();
        if batch.is_empty() {
            return Ok(out);
        }
        for dev in batch.devices.values_mut() {
            dev.seen_ms = dev.latest.values().map(|(ts, _)| *ts).max().unwrap_or(0);
        }
        self.writer.write(&batch, now_ms).await?;
        Ok(out)
    }
}
