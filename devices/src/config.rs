//! The `[devices]` config section: [`RawDevicesConfig`] as written (serde, with
//! units: `"64KiB"`, `"5m"`), validated into [`DevicesConfig`] (typed, in bytes
//! and milliseconds) by [`RawDevicesConfig::validate`].
//!
//! ```toml
//! [devices]
//! topic_pattern = "devices/{device_id}/telemetry"   # the default source; "" for none
//! payload_format = "auto"        # auto | json | senml
//! max_payload_size = "64KiB"
//! max_future_skew = "5m"
//! senml_non_numeric = "ignore"   # ignore | reject
//!
//! [[devices.sources]]            # more sources, tried after the default one
//! topic = "tele/{device_id}/SENSOR"
//! format = "json"
//! [devices.sparkplug]            # see crate::sparkplug::config
//! enabled = false
//! ```
//!
//! See [`crate::source`] for what a source is and how a topic finds its source.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    source::{build_format, Mappings, RawSenmlMapping, RawSource, Source},
    sparkplug::{RawSparkplugConfig, SparkplugConfig},
    topic::{subscription_filters, TopicTemplate},
};

/// Default `max_metrics_per_message`.
pub const DEFAULT_MAX_METRICS_PER_MESSAGE: usize = 1000;
/// Largest accepted `max_metrics_per_message`.
pub const MAX_METRICS_PER_MESSAGE_LIMIT: usize = 100_000;

/// Largest accepted `max_payload_size`: the MQTT maximum packet size (256 MiB).
pub const MAX_PAYLOAD_SIZE_LIMIT: u64 = 256 * 1024 * 1024;

/// How payloads are parsed: a source's `format` (and `devices.payload_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PayloadFormat {
    /// Sniff the first non-whitespace byte: `[` is SenML, `{` is the JSON object format.
    #[default]
    Auto,
    /// The gateway's JSON object format only (see [`crate::json`]).
    Json,
    /// SenML JSON (RFC 8428) only (see [`crate::senml`]).
    Senml,
    /// A bare value as text, the metric from the topic (see [`crate::value`]).
    Value,
}

impl PayloadFormat {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::Senml => "senml",
            Self::Value => "value",
        }
    }
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
    /// The default source's topic template; empty = no default source.
    pub topic_pattern: String,
    /// The default source's payload format.
    pub payload_format: PayloadFormat,
    /// Larger payloads are rejected unparsed (`too_large`).
    pub max_payload_size: ByteSize,
    /// How far in the future a reading's timestamp may be (device clock skew).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// The default source's SenML policy.
    pub senml_non_numeric: NonNumericPolicy,
    /// A message with more readings than this is rejected (`too_large`).
    pub max_metrics_per_message: usize,
    /// More sources, tried in order after the default one.
    pub sources: Vec<RawSource>,
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
            max_metrics_per_message: DEFAULT_MAX_METRICS_PER_MESSAGE,
            sources: Vec::new(),
            sparkplug: RawSparkplugConfig::default(),
        }
    }
}

impl RawDevicesConfig {
    /// Validates into a [`DevicesConfig`]; errors name the full key (`devices.…`).
    pub fn validate(self) -> crate::Result<DevicesConfig> {
        let mut sources = Vec::with_capacity(self.sources.len() + 1);
        if !self.topic_pattern.is_empty() {
            let template = TopicTemplate::parse(&self.topic_pattern)
                .map_err(|reason| config_error("topic_pattern", reason))?;
            // `senml_non_numeric` is the legacy source's SenML policy: it only
            // applies (and is only passed on) where the format reads SenML.
            let senml = matches!(
                self.payload_format,
                PayloadFormat::Auto | PayloadFormat::Senml
            )
            .then_some(RawSenmlMapping {
                non_numeric: self.senml_non_numeric,
            });
            let format = build_format(
                "",
                &template,
                self.payload_format,
                Mappings {
                    senml,
                    ..Default::default()
                },
            )?;
            sources.push((
                String::from("devices.topic_pattern"),
                Source { template, format },
            ));
        }
        for (i, raw) in self.sources.into_iter().enumerate() {
            let key = format!("devices.sources[{i}]");
            let source = raw.validate(&key)?;
            if let Some((earlier, _)) = sources
                .iter()
                .find(|(_, s)| s.template.as_str() == source.template.as_str())
            {
                return Err(Error::Config {
                    key: format!("{key}.topic"),
                    reason: format!(
                        "{:?} is already the template of {earlier}; a topic goes to the first source it fits, so this one would never be used",
                        source.template.as_str()
                    ),
                });
            }
            sources.push((format!("{key}.topic"), source));
        }
        if sources.is_empty() {
            return Err(config_error(
                "sources",
                "no source: set devices.topic_pattern or add a [[devices.sources]] entry",
            ));
        }
        let sources = sources.into_iter().map(|(_, s)| s).collect();

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

        if !(1..=MAX_METRICS_PER_MESSAGE_LIMIT).contains(&self.max_metrics_per_message) {
            return Err(config_error(
                "max_metrics_per_message",
                format!(
                    "{} is out of range: 1-{MAX_METRICS_PER_MESSAGE_LIMIT}",
                    self.max_metrics_per_message
                ),
            ));
        }

        let sparkplug = if self.sparkplug.enabled {
            Some(self.sparkplug.validate("devices.sparkplug")?)
        } else {
            None
        };
        Ok(DevicesConfig {
            sources,
            sparkplug,
            max_payload_bytes,
            max_future_skew_ms,
            max_metrics_per_message: self.max_metrics_per_message,
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
#[derive(Debug, Clone, PartialEq)]
pub struct DevicesConfig {
    /// Never empty: the default source (if `topic_pattern` is set) first, then
    /// `[[devices.sources]]` in order.
    pub sources: Vec<Source>,
    /// Payloads longer than this are rejected as `too_large` before parsing.
    pub max_payload_bytes: usize,
    /// A reading may be at most this far ahead of the gateway's clock.
    pub max_future_skew_ms: i64,
    /// A message with more readings is rejected as `too_large`.
    pub max_metrics_per_message: usize,
    /// `Some` when `devices.sparkplug.enabled`: topics under `spBv1.0/` are
    /// Sparkplug B, decoded statefully at ingest (see [`crate::sparkplug`]).
    pub sparkplug: Option<SparkplugConfig>,
}

impl DevicesConfig {
    /// The MQTT subscription filters all sources need (see
    /// [`subscription_filters`]): wider than the templates, deduplicated.
    pub fn subscription_filters(&self) -> Vec<String> {
        subscription_filters(self.sources.iter().map(|s| &s.template))
    }
}

impl Default for DevicesConfig {
    fn default() -> Self {
        RawDevicesConfig::default()
            .validate()
            .expect("the built-in [devices] defaults are valid")
    }
}

#[cfg(test)]
mod tests;
