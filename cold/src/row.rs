//! What the cold stores hold: rows, batches, batch ids and the S3 key layout.

use std::fmt;

use devices::{DeviceId, MetricName, Reading};

/// One reading as the cold stores keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdRow {
    pub device_id: DeviceId,
    pub metric: MetricName,
    pub ts_ms: i64,
    pub value: f64,
    /// The device's seq, or 0 when it sent none.
    pub seq: u64,
    pub gateway_id: DeviceId,
    /// When the gateway received the message (ms since the epoch).
    pub received_at_ms: i64,
}

impl ColdRow {
    pub fn new(r: &Reading, gateway_id: &DeviceId, received_at_ms: i64) -> Self {
        Self {
            device_id: r.device_id.clone(),
            metric: r.metric.clone(),
            ts_ms: r.ts_ms,
            value: r.value,
            seq: r.seq.unwrap_or(0),
            gateway_id: gateway_id.clone(),
            received_at_ms,
        }
    }
}

/// Where a record sits in the spool: segment number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// A batch's id: derived only from the gateway id, the spool position of its
/// first record and its event hour, so a retried or replayed batch gets the
/// same id (and the same S3 key), and a store can tell it already holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(String);

impl BatchId {
    pub fn new(gateway_id: &DeviceId, first: SpoolPos, hour_start_ms: i64) -> Self {
        Self(format!(
            "{}-{:08x}-{:010x}-{}",
            gateway_id,
            first.segment,
            first.offset,
            hour_start_ms.div_euclid(HOUR_MS)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of a batch object from its S3 key (`…/{batch id}.parquet`, see
    /// [`Batch::s3_key`]), so a tool reading S3 back (backfill) can ask
    /// ClickHouse whether it holds that batch. `None` for any other key.
    pub fn from_key(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next()?.strip_suffix(".parquet")?;
        Self::parse(name)
    }

    /// The id and event hour (start, ms) of a stored batch object, from its
    /// S3 key: the id's last `-` part is the hour since the epoch. `None` for
    /// a key of another shape.
    pub fn from_s3_key(key: &str) -> Option<(Self, i64)> {
        let id = Self::from_key(key)?;
        let hour: i64 = id.0.rsplit_once('-')?.1.parse().ok()?;
        Some((id, hour.checked_mul(HOUR_MS)?))
    }

    /// A batch id as stored (ClickHouse `batches.batch_id`): non-empty, at
    /// most 255 bytes of `[A-Za-z0-9._+-]`, so it is always a safe key name.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
        ok.then(|| Self(s.to_string()))
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const HOUR_MS: i64 = 3_600_000;

/// A batch: rows of one event hour, cut from a contiguous spool range.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: BatchId,
    /// Start of the event hour all rows fall in.
    pub hour_start_ms: i64,
    pub rows: Vec<ColdRow>,
}

impl Batch {
    pub fn min_ts_ms(&self) -> Option<i64> {
        self.rows.iter().map(|r| r.ts_ms).min()
    }

    pub fn max_ts_ms(&self) -> Option<i64> {
        self.rows.iter().map(|r| r.ts_ms).max()
    }

    /// `{prefix}readings/date=YYYY-MM-DD/hour=HH/{batch id}.parquet`; the batch id
    /// starts with the gateway id.
    pub fn s3_key(&self, prefix: &str) -> String {
        let (date, hour) = utc_date_hour(self.hour_start_ms);
        format!(
            "{prefix}readings/date={date}/hour={hour:02}/{}.parquet",
            self.id
        )
    }
}

/// `("YYYY-MM-DD", HH)` in UTC for a time in ms since the epoch.
pub fn utc_date_hour(ts_ms: i64) -> (String, u32) {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    (
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        u32::from(t.hour()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date_hour(0), ("1970-01-01".into(), 0));
        assert_eq!(utc_date_hour(1_732_530_000_123), ("2024-11-25".into(), 10));
        assert_eq!(utc_date_hour(951_782_400_000), ("2000-02-29".into(), 0));
        assert_eq!(utc_date_hour(-1), ("1969-12-31".into(), 23));
    }

    #[test]
    fn batch_ids_are_deterministic() {
        let gw = DeviceId::parse("gw-1").unwrap();
        let pos = SpoolPos {
            segment: 3,
            offset: 4096,
        };
        let a = BatchId::new(&gw, pos, 1_732_528_800_000);
        assert_eq!(a, BatchId::new(&gw, pos, 1_732_528_800_000));
        assert_eq!(a.as_str(), "gw-1-00000003-0000001000-481258");
        assert_ne!(
            a,
            BatchId::new(
                &gw,
                SpoolPos {
                    segment: 3,
                    offset: 4097
                },
                1_732_528_800_000
            )
        );
        let b = Batch {
            id: a,
            hour_start_ms: 1_732_528_800_000,
            rows: vec![],
        };
        assert_eq!(
            b.s3_key("tc/"),
            "tc/readings/date=2024-11-25/hour=10/gw-1-00000003-0000001000-481258.parquet"
        );
        assert_eq!(
            BatchId::from_s3_key(&b.s3_key("tc/")),
            Some((b.id.clone(), 1_732_528_800_000))
        );
        assert_eq!(BatchId::from_s3_key("tc/readings/x.ndjson"), None);
        assert_eq!(BatchId::from_key(&b.s3_key("tc/")), Some(b.id.clone()));
    }

    #[test]
    fn batch_ids_from_keys() {
        assert_eq!(BatchId::from_key("x/readings/a.json"), None);
        assert_eq!(BatchId::from_key("x/readings/.parquet"), None);
        assert_eq!(BatchId::from_key("x/readings/a b.parquet"), None);
        assert_eq!(
            BatchId::from_key("a.parquet").map(|b| b.as_str().to_string()),
            Some("a".into())
        );
        assert!(BatchId::parse(&"a".repeat(256)).is_none());
    }
}
