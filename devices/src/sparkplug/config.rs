//! The Sparkplug B decoder's settings: [`RawSparkplugConfig`] as written
//! (serde, `deny_unknown_fields`), validated into [`SparkplugConfig`].
//!
//! ```toml
//! [devices.sparkplug]
//! enabled = false               # true: also subscribe to spBv1.0/# and decode it
//! id_separator = "."            # {group}.{edge}.{device}; one of . _ -
//! non_numeric = "ignore"        # String, Text, DateTime, UUID, DataSet, Bytes, File,
//!                               # Template and arrays: ignore | reject
//! rebirth = true                # answer unknown aliases / DATA before BIRTH with an NCMD
//! rebirth_min_interval = "10s"  # at most one rebirth request per edge node per interval
//! max_nodes = 10000             # edge nodes with state (aliases, seq, bdSeq)
//! max_devices_per_node = 256
//! max_metrics_per_node = 2000   # metrics declared by an NBIRTH and its DBIRTHs together
//! ```
//!
//! Memory: each declared metric costs about 100 bytes of state (alias, name,
//! datatype), so the defaults bound the decoder near 10,000 × 2,000 × 100 B
//! = 2 GB in the worst case of every node declaring its maximum; size
//! `max_nodes` × `max_metrics_per_node` to the fleet.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{config::NonNumericPolicy, error::Error};

/// Largest accepted `max_nodes`, `max_devices_per_node` and `max_metrics_per_node`.
pub const STATE_LIMIT: usize = 1_000_000;

/// The Sparkplug B settings as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSparkplugConfig {
    /// Whether the gateway subscribes to `spBv1.0/#` and decodes Sparkplug B.
    pub enabled: bool,
    /// Joins group, edge node and device into a device id.
    pub id_separator: String,
    /// What to do with metrics of non-numeric datatypes.
    pub non_numeric: NonNumericPolicy,
    /// Whether unknown aliases and DATA before BIRTH are answered with an
    /// NCMD `Node Control/Rebirth`.
    pub rebirth: bool,
    /// At most one rebirth request per edge node per this interval.
    #[serde(with = "humantime_serde")]
    pub rebirth_min_interval: Duration,
    pub max_nodes: usize,
    pub max_devices_per_node: usize,
    pub max_metrics_per_node: usize,
}

impl Default for RawSparkplugConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            id_separator: ".".into(),
            non_numeric: NonNumericPolicy::Ignore,
            rebirth: true,
            rebirth_min_interval: Duration::from_secs(10),
            max_nodes: 10_000,
            max_devices_per_node: 256,
            max_metrics_per_node: 2_000,
        }
    }
}

impl RawSparkplugConfig {
    /// Validates into a [`SparkplugConfig`]; `section` is the dotted path of
    /// the table this was read from (`devices.sparkplug`), so errors name the key.
    pub fn validate(self, section: &str) -> crate::Result<SparkplugConfig> {
        let key = |k: &str| format!("{section}.{k}");
        let separator = match self.id_separator.as_str() {
            "." => '.',
            "_" => '_',
            "-" => '-',
            other => {
                return Err(Error::Config {
                    key: key("id_separator"),
                    reason: format!(
                        "{other:?} is not allowed: one of \".\", \"_\", \"-\" (characters a device id may hold)"
                    ),
                })
            }
        };
        let rebirth_min_interval_ms = i64::try_from(self.rebirth_min_interval.as_millis())
            .ok()
            .filter(|ms| *ms <= i64::MAX / 2)
            .ok_or_else(|| Error::Config {
                key: key("rebirth_min_interval"),
                reason: format!("{:?} is too large", self.rebirth_min_interval),
            })?;
        for (name, value) in [
            ("max_nodes", self.max_nodes),
            ("max_devices_per_node", self.max_devices_per_node),
            ("max_metrics_per_node", self.max_metrics_per_node),
        ] {
            if value == 0 || value > STATE_LIMIT {
                return Err(Error::Config {
                    key: key(name),
                    reason: format!("{value} is out of range: must be between 1 and {STATE_LIMIT}"),
                });
            }
        }
        Ok(SparkplugConfig {
            separator,
            non_numeric: self.non_numeric,
            rebirth: self.rebirth,
            rebirth_min_interval_ms,
            max_nodes: self.max_nodes,
            max_devices_per_node: self.max_devices_per_node,
            max_metrics_per_node: self.max_metrics_per_node,
        })
    }
}

/// The validated Sparkplug B settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugConfig {
    pub separator: char,
    pub non_numeric: NonNumericPolicy,
    pub rebirth: bool,
    pub rebirth_min_interval_ms: i64,
    pub max_nodes: usize,
    pub max_devices_per_node: usize,
    pub max_metrics_per_node: usize,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        RawSparkplugConfig::default()
            .validate("devices.sparkplug")
            .expect("the built-in Sparkplug defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(raw: RawSparkplugConfig) -> String {
        match raw.validate("devices.sparkplug").unwrap_err() {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn empty_table_is_the_defaults() {
        let raw: RawSparkplugConfig = serde_json::from_str("{}").unwrap();
        let cfg = raw.validate("devices.sparkplug").unwrap();
        assert_eq!(cfg, SparkplugConfig::default());
        assert_eq!(cfg.separator, '.');
        assert_eq!(cfg.rebirth_min_interval_ms, 10_000);
        assert!(cfg.rebirth);
    }

    #[test]
    fn parses_units_and_rejects_unknown_keys() {
        let raw: RawSparkplugConfig = serde_json::from_str(
            r#"{"id_separator":"_","non_numeric":"reject","rebirth":false,
                "rebirth_min_interval":"1m","max_nodes":3}"#,
        )
        .unwrap();
        let cfg = raw.validate("x").unwrap();
        assert_eq!(
            (
                cfg.separator,
                cfg.non_numeric,
                cfg.rebirth,
                cfg.rebirth_min_interval_ms,
                cfg.max_nodes
            ),
            ('_', NonNumericPolicy::Reject, false, 60_000, 3)
        );
        let err = serde_json::from_str::<RawSparkplugConfig>(r#"{"separator":"."}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let bad_sep = RawSparkplugConfig {
            id_separator: "/".into(),
            ..Default::default()
        };
        assert_eq!(key_of(bad_sep), "devices.sparkplug.id_separator");
        let zero = RawSparkplugConfig {
            max_metrics_per_node: 0,
            ..Default::default()
        };
        assert_eq!(key_of(zero), "devices.sparkplug.max_metrics_per_node");
        let huge = RawSparkplugConfig {
            max_nodes: STATE_LIMIT + 1,
            ..Default::default()
        };
        assert_eq!(key_of(huge), "devices.sparkplug.max_nodes");
        let forever = RawSparkplugConfig {
            rebirth_min_interval: Duration::MAX,
            ..Default::default()
        };
        assert_eq!(key_of(forever), "devices.sparkplug.rebirth_min_interval");
    }
}
