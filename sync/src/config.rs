//! The `[sync]` section: the reconciler inside `thermocline run`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `[sync]` as written in TOML or the environment.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSyncConfig {
    /// Run the reconciler inside `thermocline run` (needs `cold.enabled`).
    pub enabled: bool,
    /// Time between runs; the lease lasts twice this.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How far back each run looks.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// A bucket is sealed (compared, repaired) once its end is this old.
    /// Unset: twice `cold.batch.max_age`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub seal_delay: Option<Duration>,
    /// Reload batches that are in S3 but missing from ClickHouse.
    pub reload_batches: bool,
}

impl Default for RawSyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            lookback: Duration::from_secs(2 * 3600),
            seal_delay: None,
            reload_batches: true,
        }
    }
}

/// The validated `[sync]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    pub enabled: bool,
    pub interval: Duration,
    pub lookback: Duration,
    pub seal_delay: Duration,
    pub reload_batches: bool,
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("sync.{key}"),
        reason: reason.into(),
    }
}

impl RawSyncConfig {
    /// `cold_batch_max_age` gives the default seal delay (twice it): by then
    /// every gateway has cut and shipped the batches holding a bucket's readings.
    pub fn validate(self, cold_batch_max_age: Duration) -> Result<SyncConfig> {
        if self.interval < Duration::from_secs(1) {
            return Err(invalid("interval", "must be at least 1s"));
        }
        if self.lookback < Duration::from_secs(1) {
            return Err(invalid("lookback", "must be at least 1s"));
        }
        let seal_delay = self.seal_delay.unwrap_or(cold_batch_max_age * 2);
        if seal_delay.is_zero() {
            return Err(invalid(
                "seal_delay",
                "must be above zero inside `run` (0s is only for `thermocline reconcile` with ingestion paused)",
            ));
        }
        if seal_delay >= self.lookback {
            return Err(invalid(
                "seal_delay",
                format!(
                    "{} leaves nothing of sync.lookback ({}) to check",
                    humantime::format_duration(seal_delay),
                    humantime::format_duration(self.lookback)
                ),
            ));
        }
        Ok(SyncConfig {
            enabled: self.enabled,
            interval: self.interval,
            lookback: self.lookback,
            seal_delay,
            reload_batches: self.reload_batches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_delay_defaults_to_twice_the_batch_age() {
        let c = RawSyncConfig::default()
            .validate(Duration::from_secs(5))
            .unwrap();
        assert_eq!(c.seal_delay, Duration::from_secs(10));
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.lookback, Duration::from_secs(7200));
        let c = RawSyncConfig {
            seal_delay: Some(Duration::from_secs(30)),
            ..Default::default()
        }
        .validate(Duration::from_secs(5))
        .unwrap();
        assert_eq!(c.seal_delay, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key() {
        let e = RawSyncConfig {
            seal_delay: Some(Duration::ZERO),
            ..Default::default()
        }
        .validate(Duration::from_secs(5))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sync.seal_delay"), "{e}");
        let e = RawSyncConfig {
            interval: Duration::ZERO,
            ..Default::default()
        }
        .validate(Duration::from_secs(5))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sync.interval"), "{e}");
    }
}
