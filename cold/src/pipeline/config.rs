//! The whole `[cold]` section: the pipeline's own keys plus the sections of
//! the spool, the batcher and both sinks, validated together into [`ColdConfig`].

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::{
    batcher::{BatchConfig, RawBatchConfig},
    clickhouse::{ClickHouseConfig, RawClickHouseConfig},
    s3::{RawS3Config, S3Config},
    spool::{RawSpoolConfig, SpoolConfig},
    Error, Result,
};

/// `[cold]` as written in TOML or the environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawColdConfig {
    /// false: no spool, no S3, no ClickHouse; the broker's messages are acked on
    /// receipt and only the hot path sees them.
    pub enabled: bool,
    /// Spooled messages queued between ingest and the cold pipeline.
    pub channel_capacity: usize,
    /// Batches (and dead-letter objects) being shipped at the same time.
    pub max_inflight_batches: usize,
    /// Decoded rows held in memory awaiting a cut or a store (estimated bytes);
    /// past it the pipeline stops taking messages and ingest waits.
    pub max_pending_bytes: ByteSize,
    /// Rows remembered to drop broker redeliveries of readings already spooled.
    pub dedup_window_rows: usize,
    /// Shipping retries forever, waiting this long after the first failure…
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    /// …doubling up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    pub spool: RawSpoolConfig,
    pub batch: RawBatchConfig,
    pub s3: RawS3Config,
    pub clickhouse: RawClickHouseConfig,
}

impl Default for RawColdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            channel_capacity: 8192,
            max_inflight_batches: 4,
            max_pending_bytes: ByteSize::mib(256),
            dedup_window_rows: 262_144,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            spool: RawSpoolConfig::default(),
            batch: RawBatchConfig::default(),
            s3: RawS3Config::default(),
            clickhouse: RawClickHouseConfig::default(),
        }
    }
}

/// The validated `[cold]` section.
#[derive(Debug, Clone)]
pub struct ColdConfig {
    pub enabled: bool,
    pub channel_capacity: usize,
    pub max_inflight_batches: usize,
    pub max_pending_bytes: u64,
    pub dedup_window_rows: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    pub spool: SpoolConfig,
    pub batch: BatchConfig,
    pub s3: S3Config,
    pub clickhouse: ClickHouseConfig,
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("cold.{key}"),
        reason: reason.into(),
    }
}

impl RawColdConfig {
    /// Validates every sub-section (also when disabled, so a config that works
    /// with the cold path off still works once it is switched on).
    pub fn validate(self) -> Result<ColdConfig> {
        if self.channel_capacity == 0 {
            return Err(invalid("channel_capacity", "must be above zero"));
        }
        if !(1..=64).contains(&self.max_inflight_batches) {
            return Err(invalid("max_inflight_batches", "must be between 1 and 64"));
        }
        if self.max_pending_bytes.as_u64() < ByteSize::mib(1).as_u64() {
            return Err(invalid("max_pending_bytes", "must be at least 1MiB"));
        }
        if self.retry_min_delay.is_zero() || self.retry_min_delay > self.retry_max_delay {
            return Err(invalid(
                "retry_min_delay",
                "must be above zero and at most cold.retry_max_delay",
            ));
        }
        Ok(ColdConfig {
            enabled: self.enabled,
            channel_capacity: self.channel_capacity,
            max_inflight_batches: self.max_inflight_batches,
            max_pending_bytes: self.max_pending_bytes.as_u64(),
            dedup_window_rows: self.dedup_window_rows,
            retry_min_delay: self.retry_min_delay,
            retry_max_delay: self.retry_max_delay,
            spool: self.spool.validate()?,
            batch: self.batch.validate()?,
            s3: self.s3.validate()?,
            clickhouse: self.clickhouse.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        let c = RawColdConfig::default().validate().unwrap();
        assert!(c.enabled);
        assert_eq!(c.spool.max_size_bytes, 1 << 30);
        let raw = RawColdConfig {
            max_inflight_batches: 0,
            ..Default::default()
        };
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("cold.max_inflight_batches"), "{e}");
    }
}
