//! Rejected batches: a batch a store refused for good (see
//! [`Error::is_permanent`]), set aside as one JSON object so its spool range
//! can be released instead of stalling every range after it.
//!
//! Key: `{prefix}rejected/date=YYYY-MM-DD/hour=HH/{batch id}.json` (the
//! batch's event hour; the batch id is deterministic, so a replay overwrites).
//! Body: the batch id, the store that refused it and why, the S3 key of its
//! Parquet object when S3 took it (ClickHouse refused: `backfill` can load it
//! once the table is fixed), and every row, so nothing is lost when S3 itself
//! could not take the batch.

use serde::{Deserialize, Serialize};

use crate::{
    row::{utc_date_hour, Batch},
    Error, Result,
};

/// A batch a store refused, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedBatch {
    pub batch_id: String,
    pub gateway_id: String,
    /// `s3` or `clickhouse`.
    pub store: String,
    /// The store's error, as logged.
    pub reason: String,
    /// The batch's Parquet object, when S3 holds it.
    pub s3_key: Option<String>,
    pub hour_start_ms: i64,
    pub rejected_at_ms: i64,
    pub rows: Vec<RejectedRow>,
}

/// One row of a rejected batch (the columns of `readings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedRow {
    pub device_id: String,
    pub metric: String,
    pub ts_ms: i64,
    pub value: f64,
    pub seq: u64,
    pub received_at_ms: i64,
}

impl RejectedBatch {
    pub fn new(
        batch: &Batch,
        store: &str,
        reason: String,
        s3_key: Option<String>,
        now_ms: i64,
    ) -> Self {
        Self {
            batch_id: batch.id.as_str().to_owned(),
            gateway_id: batch
                .rows
                .first()
                .map(|r| r.gateway_id.as_str().to_owned())
                .unwrap_or_default(),
            store: store.to_owned(),
            reason,
            s3_key,
            hour_start_ms: batch.hour_start_ms,
            rejected_at_ms: now_ms,
            rows: batch
                .rows
                .iter()
                .map(|r| RejectedRow {
                    device_id: r.device_id.as_str().to_owned(),
                    metric: r.metric.as_str().to_owned(),
                    ts_ms: r.ts_ms,
                    value: r.value,
                    seq: r.seq,
                    received_at_ms: r.received_at_ms,
                })
                .collect(),
        }
    }

    /// `{prefix}rejected/date=…/hour=…/{batch id}.json`.
    pub fn key(&self, prefix: &str) -> String {
        let (date, hour) = utc_date_hour(self.hour_start_ms);
        format!(
            "{prefix}rejected/date={date}/hour={hour:02}/{}.json",
            self.batch_id
        )
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::InvalidData {
            what: "rejected batch".into(),
            reason: e.to_string(),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidData {
            what: "rejected batch".into(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lands_under_its_event_hour() {
        let r = RejectedBatch {
            batch_id: "00000000000000010000000000000000-abc".into(),
            gateway_id: "gw-1".into(),
            store: "clickhouse".into(),
            reason: "Code: 395".into(),
            s3_key: Some("p/readings/x.parquet".into()),
            // 2024-11-25T10:00Z
            hour_start_ms: 1_732_528_800_000,
            rejected_at_ms: 1,
            rows: vec![RejectedRow {
                device_id: "d".into(),
                metric: "temp".into(),
                ts_ms: 1_732_528_800_001,
                value: 666.0,
                seq: 3,
                received_at_ms: 2,
            }],
        };
        assert_eq!(RejectedBatch::decode(&r.encode().unwrap()).unwrap(), r);
        assert_eq!(
            r.key("p/"),
            "p/rejected/date=2024-11-25/hour=10/00000000000000010000000000000000-abc.json"
        );
        assert!(RejectedBatch::decode(b"{\"batch_id\":1}").is_err());
    }
}
