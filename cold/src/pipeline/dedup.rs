//! Drops broker redeliveries before they reach a batch.
//!
//! A QoS 1 message whose ack was lost (a crash between fsync and PUBACK, a
//! dropped connection) comes again and is spooled a second time. ClickHouse
//! would collapse it (`ReplacingMergeTree` on the reading's identity), but S3
//! would hold the reading in two objects. So rows whose identity (device,
//! metric, ts, seq) was seen among the last `window` rows are dropped.
//!
//! The filter is fed records in spool order, during replay and live, so the
//! same records from the released watermark on give the same batches. On
//! open it is first taught the released records still on disk (the released
//! prefix of the watermark's segment, see `SpoolReader::with_history`), so a
//! redelivery whose first copy was shipped before a crash is still
//! recognised. A first copy in an already deleted segment is not (it needs a
//! segment roll between the two copies); ClickHouse still collapses it, S3
//! would hold it twice.

use std::{
    collections::{HashSet, VecDeque},
    hash::{Hash, Hasher},
};

use crate::row::ColdRow;

/// The identity of a reading, hashed to 128 bits (two independent SipHash
/// keys), so that a collision — which would drop a real reading — is not a
/// practical concern at any window size.
type Key = u128;

fn key(r: &ColdRow) -> Key {
    let mut halves = [0u64; 2];
    for (i, h) in halves.iter_mut().enumerate() {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        (i as u8).hash(&mut s);
        r.device_id.as_str().hash(&mut s);
        r.metric.as_str().hash(&mut s);
        r.ts_ms.hash(&mut s);
        r.seq.hash(&mut s);
        *h = s.finish();
    }
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

/// Remembers the identities of the last `window` rows.
#[derive(Debug)]
pub struct Dedup {
    window: usize,
    seen: HashSet<Key>,
    order: VecDeque<Key>,
    dropped: u64,
}

impl Dedup {
    pub fn new(window: usize) -> Self {
        Self {
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Keeps the rows not seen before (also within `rows`).
    pub fn filter(&mut self, rows: Vec<ColdRow>) -> Vec<ColdRow> {
        if self.window == 0 {
            return rows;
        }
        let before = rows.len();
        let kept: Vec<_> = rows
            .into_iter()
            .filter(|r| {
                let k = key(r);
                if !self.seen.insert(k) {
                    return false;
                }
                self.order.push_back(k);
                if self.order.len() > self.window {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                true
            })
            .collect();
        self.dropped += (before - kept.len()) as u64;
        kept
    }

    /// Rows dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use devices::{DeviceId, MetricName};

    use super::*;

    fn row(dev: &str, seq: u64) -> ColdRow {
        ColdRow {
            device_id: DeviceId::parse(dev).unwrap(),
            metric: MetricName::parse("temp").unwrap(),
            ts_ms: 1_000,
            value: 1.0,
            seq,
            gateway_id: DeviceId::parse("gw").unwrap(),
            received_at_ms: 2_000,
        }
    }

    #[test]
    fn drops_repeats_within_the_window_only() {
        let mut d = Dedup::new(2);
        assert_eq!(d.filter(vec![row("a", 1), row("a", 1)]).len(), 1);
        assert_eq!(d.filter(vec![row("a", 1), row("b", 1)]).len(), 1);
        assert_eq!(d.filter(vec![row("c", 1)]).len(), 1);
        // "a" fell out of the two-row window.
        assert_eq!(d.filter(vec![row("a", 1)]).len(), 1);
        assert_eq!(d.dropped(), 2);
    }
}
