//! The `[cold.spool]` config section: [`RawSpoolConfig`] as written (serde, with
//! units), validated into [`SpoolConfig`] (typed, in bytes and durations) by
//! [`RawSpoolConfig::validate`].
//!
//! ```toml
//! [cold.spool]
//! dir = "data/spool"
//! max_size = "1GiB"        # disk + buffer; when full, appends wait (backpressure)
//! segment_size = "64MiB"   # a segment file is rolled past this size
//! fsync_interval = "20ms"  # group commit period
//! flush_size = "1MiB"      # buffered bytes that trigger an early write + fsync
//! ```

use std::{path::PathBuf, time::Duration};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Smallest accepted `segment_size` (tests use tiny segments; production 64 MiB).
pub const MIN_SEGMENT_SIZE: u64 = 1024;
/// Largest accepted `segment_size`: offsets and lengths stay well inside u32/u64.
pub const MAX_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;

/// The `[cold.spool]` section as written in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpoolConfig {
    /// Directory holding the segment files, the `released` watermark and `LOCK`.
    pub dir: PathBuf,
    /// Bound on the spool: bytes on disk plus bytes buffered for the next write.
    pub max_size: ByteSize,
    /// A segment file is rolled when the next record would take it past this.
    pub segment_size: ByteSize,
    /// Group commit: buffered records are written and fsynced this often.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Buffered bytes that trigger a write + fsync before the interval ends.
    pub flush_size: ByteSize,
}

impl Default for RawSpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/spool"),
            max_size: ByteSize::gib(1),
            segment_size: ByteSize::mib(64),
            fsync_interval: Duration::from_millis(20),
            flush_size: ByteSize::mib(1),
        }
    }
}

impl RawSpoolConfig {
    /// Validates into a [`SpoolConfig`]; errors name the full key (`cold.spool.…`).
    pub fn validate(self) -> crate::Result<SpoolConfig> {
        if self.dir.as_os_str().is_empty() {
            return Err(config_error("dir", "must not be empty"));
        }
        let segment_size = self.segment_size.as_u64();
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(config_error(
                "segment_size",
                format!(
                    "{} is out of range: must be between {} and {}",
                    self.segment_size,
                    ByteSize::b(MIN_SEGMENT_SIZE),
                    ByteSize::b(MAX_SEGMENT_SIZE)
                ),
            ));
        }
        let max_size = self.max_size.as_u64();
        // Two segments at least: the one being written and one being released.
        if max_size < 2 * segment_size {
            return Err(config_error(
                "max_size",
                format!(
                    "{} must be at least twice cold.spool.segment_size ({})",
                    self.max_size, self.segment_size
                ),
            ));
        }
        if self.fsync_interval.is_zero() || self.fsync_interval > Duration::from_secs(10) {
            return Err(config_error(
                "fsync_interval",
                format!(
                    "{:?} is out of range: must be between 1ms and 10s",
                    self.fsync_interval
                ),
            ));
        }
        let flush_size = self.flush_size.as_u64();
        if flush_size == 0 || flush_size > max_size {
            return Err(config_error(
                "flush_size",
                format!(
                    "{} is out of range: must be between 1 B and cold.spool.max_size",
                    self.flush_size
                ),
            ));
        }
        Ok(SpoolConfig {
            dir: self.dir,
            max_size_bytes: max_size,
            segment_size_bytes: segment_size,
            fsync_interval: self.fsync_interval,
            flush_size_bytes: flush_size,
        })
    }
}

fn config_error(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("cold.spool.{key}"),
        reason: reason.into(),
    }
}

/// The validated `[cold.spool]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Segment bytes on disk plus buffered bytes never exceed this, except for
    /// cut markers (tiny, at most one per batch cut), which must never wait.
    pub max_size_bytes: u64,
    /// A segment is rolled when the next record would take it past this; a
    /// single record (frame) may not be larger.
    pub segment_size_bytes: u64,
    pub fsync_interval: Duration,
    pub flush_size_bytes: u64,
}

impl SpoolConfig {
    /// The defaults with another directory (tests, tools).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        RawSpoolConfig {
            dir: dir.into(),
            ..RawSpoolConfig::default()
        }
        .validate()
        .expect("the built-in [cold.spool] defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: Error) -> String {
        match err {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn defaults_and_units() {
        let cfg = SpoolConfig::in_dir("/x");
        assert_eq!(cfg.max_size_bytes, 1 << 30);
        assert_eq!(cfg.segment_size_bytes, 64 << 20);
        assert_eq!(cfg.fsync_interval, Duration::from_millis(20));
        assert_eq!(cfg.flush_size_bytes, 1 << 20);

        let raw: RawSpoolConfig = serde_json::from_str(
            r#"{"dir":"/s","max_size":"10MiB","segment_size":"1MiB","fsync_interval":"5ms","flush_size":"64KiB"}"#,
        )
        .unwrap();
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.dir, PathBuf::from("/s"));
        assert_eq!(cfg.max_size_bytes, 10 << 20);
        assert_eq!(cfg.segment_size_bytes, 1 << 20);
        assert_eq!(cfg.fsync_interval, Duration::from_millis(5));
        assert_eq!(cfg.flush_size_bytes, 64 << 10);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |f: fn(&mut RawSpoolConfig)| {
            let mut raw = RawSpoolConfig::default();
            f(&mut raw);
            key_of(raw.validate().unwrap_err())
        };
        assert_eq!(bad(|r| r.dir = PathBuf::new()), "cold.spool.dir");
        assert_eq!(
            bad(|r| r.segment_size = ByteSize::b(10)),
            "cold.spool.segment_size"
        );
        assert_eq!(
            bad(|r| r.max_size = ByteSize::mib(100)),
            "cold.spool.max_size"
        );
        assert_eq!(
            bad(|r| r.fsync_interval = Duration::ZERO),
            "cold.spool.fsync_interval"
        );
        assert_eq!(
            bad(|r| r.flush_size = ByteSize::b(0)),
            "cold.spool.flush_size"
        );
        assert!(
            serde_json::from_str::<RawSpoolConfig>(r#"{"max_sise":"1GiB"}"#)
                .unwrap_err()
                .to_string()
                .contains("max_sise")
        );
    }
}
