//! The `[devices]` config section: [`RawDevicesConfig`] as written (serde, with
//! units: `"64KiB"`, `"5m"`), validated into [`DevicesConfig`] (typed, in bytes
//! and milliseconds) by [`RawDevicesConfig::validate`].
//!
//! ```toml
//! [devices]
//! topic_pattern = "devices/{device_id}/telemetry"
//! payload_format = "auto"        # auto | json | senml
//! max_payload_size = "64KiB"
//! max_future_skew = "5m"
//! senml_non_numeric = "ignore"   # ignore | reject
//!
//! [devices.sparkplug]            # see crate::sparkplug::config
//! enabled = false
//! ```

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    sparkplug::{RawSparkplugConfig, SparkplugConfig},
    topic::TopicPattern,
};

/// Largest accepted `max_payload_size`: the MQTT maximum packet size (256 MiB).
pub const MAX_PAYLOAD_SIZE_LIMIT: u64 = 256 * 1024 * 1024;

/// How payloads are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// Sniff the first non-whitespace byte: `[` is SenML, `{` is the JSON object format.
    #[default]
    Auto,
    /// The gateway's JSON object format only (see [`crate::json`]).
    Json,
    /// SenML JSON (RFC 8428) only (see [`crate::senml`]).
    Senml,
}

/// What to do with SenML records that carry no numeric value (`vs`, `vb`, `vd`,
/// or a sum `s` without `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NonNumericPolicy {
    /// Skip such records; the numeric records of the pack are kept.
    #[default]
    Ignore,
    /// Reject the whole message with [`crate::RejectReason::NonNumeric`].
    Reject,
}

/// The `[devices]` section as written in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDevicesConfig {
    /// Topic pattern with one `{device_id}` level.
    pub topic_pattern: String,
    pub payload_format: PayloadFormat,
    /// Larger payloads are rejected unparsed (`too_large`).
    pub max_payload_size: ByteSize,
    /// How far in the future a reading's timestamp may be (device clock skew).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    pub senml_non_numeric: NonNumericPolicy,
    /// `[devices.sparkplug]`: Sparkplug B 3.0 beside the topic pattern.
    pub sparkplug: RawSparkplugConfig,
}

impl Default for RawDevicesConfig {
    fn default() -> Self {
        Self {
            topic_pattern: "devices/{device_id}/telemetry".into(),
            payload_format: PayloadFormat::Auto,
            max_payload_size: ByteSize::kib(64),
            max_future_skew: Duration::from_secs(5 * 60),
            senml_non_numeric: NonNumericPolicy::Ignore,
            sparkplug: RawSparkplugConfig::default(),
        }
    }
}

impl RawDevicesConfig {
    /// Validates into a [`DevicesConfig`]; errors name the full key (`devices.…`).
    pub fn validate(self) -> crate::Result<DevicesConfig> {
        let topic = TopicPattern::parse(&self.topic_pattern)
            .map_err(|reason| config_error("topic_pattern", reason))?;

        let size = self.max_payload_size.as_u64();
        if size == 0 || size > MAX_PAYLOAD_SIZE_LIMIT {
            return Err(config_error(
                "max_payload_size",
                format!(
                    "{} is out of range: must be between 1 B and {} (the MQTT packet limit)",
                    self.max_payload_size,
                    ByteSize::b(MAX_PAYLOAD_SIZE_LIMIT)
                ),
            ));
        }
        let max_payload_bytes = usize::try_from(size).map_err(|_| {
            config_error(
                "max_payload_size",
                format!(
                    "{} does not fit this platform's usize",
                    self.max_payload_size
                ),
            )
        })?;

        let max_future_skew_ms = i64::try_from(self.max_future_skew.as_millis())
            .ok()
            .filter(|ms| *ms <= i64::MAX / 2)
            .ok_or_else(|| {
                config_error(
                    "max_future_skew",
                    format!("{:?} is too large", self.max_future_skew),
                )
            })?;

        let sparkplug = if self.sparkplug.enabled {
            Some(self.sparkplug.validate("devices.sparkplug")?)
        } else {
            None
        };
        Ok(DevicesConfig {
            sparkplug,
            topic,
            payload_format: self.payload_format,
            max_payload_bytes,
            max_future_skew_ms,
            senml_non_numeric: self.senml_non_numeric,
        })
    }
}

fn config_error(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("devices.{key}"),
        reason: reason.into(),
    }
}

/// The validated `[devices]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesConfig {
    pub topic: TopicPattern,
    pub payload_format: PayloadFormat,
    /// Payloads longer than this are rejected as `too_large` before parsing.
    pub max_payload_bytes: usize,
    /// A reading may be at most this far ahead of the gateway's clock.
    pub max_future_skew_ms: i64,
    pub senml_non_numeric: NonNumericPolicy,
    /// `Some` when `devices.sparkplug.enabled`: topics under `spBv1.0/` are
    /// Sparkplug B, decoded statefully at ingest (see [`crate::sparkplug`]).
    pub sparkplug: Option<SparkplugConfig>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        RawDevicesConfig::default()
            .validate()
            .expect("the built-in [devices] defaults are valid")
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
    fn defaults() {
        let cfg = DevicesConfig::default();
        assert_eq!(cfg.topic.as_str(), "devices/{device_id}/telemetry");
        assert_eq!(cfg.topic.subscription_filter(), "devices/#");
        assert_eq!(cfg.payload_format, PayloadFormat::Auto);
        assert_eq!(cfg.max_payload_bytes, 64 * 1024);
        assert_eq!(cfg.max_future_skew_ms, 5 * 60 * 1000);
        assert_eq!(cfg.senml_non_numeric, NonNumericPolicy::Ignore);
    }

    #[test]
    fn empty_section_is_the_defaults() {
        let raw: RawDevicesConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(raw.validate().unwrap(), DevicesConfig::default());
    }

    #[test]
    fn parses_units_and_enums() {
        let raw: RawDevicesConfig = serde_json::from_str(
            r#"{"topic_pattern":"t/{device_id}","payload_format":"senml",
                "max_payload_size":"1MiB","max_future_skew":"90s",
                "senml_non_numeric":"reject"}"#,
        )
        .unwrap();
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.topic.as_str(), "t/{device_id}");
        assert_eq!(cfg.payload_format, PayloadFormat::Senml);
        assert_eq!(cfg.max_payload_bytes, 1024 * 1024);
        assert_eq!(cfg.max_future_skew_ms, 90_000);
        assert_eq!(cfg.senml_non_numeric, NonNumericPolicy::Reject);
    }

    #[test]
    fn serializes_and_reparses() {
        let raw = RawDevicesConfig::default();
        let text = serde_json::to_string(&raw).unwrap();
        assert!(text.contains(r#""payload_format":"auto""#), "{text}");
        assert!(text.contains(r#""max_future_skew":"5m""#), "{text}");
        let back: RawDevicesConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.validate().unwrap(), DevicesConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_enums_are_rejected() {
        let err = serde_json::from_str::<RawDevicesConfig>(r#"{"topic":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err =
            serde_json::from_str::<RawDevicesConfig>(r#"{"payload_format":"xml"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let raw = RawDevicesConfig {
            topic_pattern: "devices/+/telemetry".into(),
            ..Default::default()
        };
        let err = raw.validate().unwrap_err();
        assert!(err.to_string().contains("`devices.topic_pattern`"), "{err}");
        assert_eq!(key_of(err), "devices.topic_pattern");

        let raw = RawDevicesConfig {
            max_payload_size: ByteSize::b(0),
            ..Default::default()
        };
        assert_eq!(
            key_of(raw.validate().unwrap_err()),
            "devices.max_payload_size"
        );

        let raw = RawDevicesConfig {
            max_payload_size: ByteSize::gib(1),
            ..Default::default()
        };
        assert_eq!(
            key_of(raw.validate().unwrap_err()),
            "devices.max_payload_size"
        );

        let raw = RawDevicesConfig {
            max_future_skew: Duration::MAX,
            ..Default::default()
        };
        assert_eq!(
            key_of(raw.validate().unwrap_err()),
            "devices.max_future_skew"
        );
    }
}
