//! Devices that go quiet: the `[fleet]` section and the gauge task.
//!
//! Every `quiet_refresh_interval` one `ZCARD` and one `ZCOUNT` per configured
//! threshold on the fleet index `{prefix}:devices` (O(log n) each, never a
//! scan of the index) set `thermocline_fleet_devices_indexed` and
//! `thermocline_fleet_devices_quiet{for="…"}`. A device counts as quiet for a
//! threshold when its last arrival is older than the threshold but still
//! within the index's retention (the longest resolution's width + retention).
//! `GET /api/v1/devices?silent_for=10m` lists them (see [`crate::http`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{metrics::FleetMetrics, Error, Result};

/// At most this many thresholds: they are label values.
pub const MAX_THRESHOLDS: usize = 8;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFleetConfig {
    /// Durations (`10m`, `1h`): one gauge series each.
    pub quiet_thresholds: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub quiet_refresh_interval: Duration,
}

impl Default for RawFleetConfig {
    fn default() -> Self {
        Self {
            quiet_thresholds: vec!["10m".into(), "1h".into()],
            quiet_refresh_interval: Duration::from_secs(15),
        }
    }
}

/// One threshold: its duration and its label value (`humantime` form, `10m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    pub duration: Duration,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Distinct, ascending.
    pub quiet_thresholds: Vec<Threshold>,
    pub quiet_refresh_interval: Duration,
}

impl RawFleetConfig {
    pub fn validate(self) -> Result<FleetConfig> {
        let invalid = |key: String, reason: String| Error::Config { key, reason };
        if self.quiet_thresholds.len() > MAX_THRESHOLDS {
            return Err(invalid(
                "fleet.quiet_thresholds".into(),
                format!("at most {MAX_THRESHOLDS} thresholds (each is a label value)"),
            ));
        }
        let mut out: Vec<Threshold> = Vec::with_capacity(self.quiet_thresholds.len());
        for (i, t) in self.quiet_thresholds.iter().enumerate() {
            let key = format!("fleet.quiet_thresholds[{i}]");
            let d = humantime::parse_duration(t)
                .map_err(|e| invalid(key.clone(), format!("{t:?}: {e} (e.g. 10m, 1h)")))?;
            if d < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1s".into()));
            }
            let label = humantime::format_duration(d).to_string().replace(' ', "");
            if out.iter().any(|o| o.duration == d) {
                return Err(invalid(key, format!("{t:?} is given twice")));
            }
            out.push(Threshold { duration: d, label });
        }
        out.sort_by_key(|t| t.duration);
        if self.quiet_refresh_interval < Duration::from_millis(100) {
            return Err(invalid(
                "fleet.quiet_refresh_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        Ok(FleetConfig {
            quiet_thresholds: out,
            quiet_refresh_interval: self.quiet_refresh_interval,
        })
    }
}

/// Refreshes the fleet gauges until `shutdown`. A Redis error keeps the last
/// values (the hot path's `redis_up` shows the outage) and is retried next tick.
pub fn spawn(
    cfg: FleetConfig,
    reader: hot::reader::Reader,
    metrics: FleetMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.quiet_refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = refresh(&cfg, &reader, &metrics).await {
                tracing::debug!(error = %e, "fleet gauges not refreshed");
            }
        }
    })
}

async fn refresh(cfg: &FleetConfig, reader: &hot::reader::Reader, m: &FleetMetrics) -> Result<()> {
    let now = hot::service::now_ms();
    let horizon = reader.index_horizon_ms(now);
    let indexed = reader.count_seen_between(horizon, i64::MAX).await?;
    let mut quiet = Vec::with_capacity(cfg.quiet_thresholds.len());
    for t in &cfg.quiet_thresholds {
        let before = now - t.duration.as_millis() as i64;
        quiet.push(reader.count_seen_between(horizon, before).await?);
    }
    m.devices_indexed.set(indexed as i64);
    for (t, n) in cfg.quiet_thresholds.iter().zip(quiet) {
        m.devices_quiet.with_label_values(&[&t.label]).set(n as i64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(t: &[&str]) -> RawFleetConfig {
        RawFleetConfig {
            quiet_thresholds: t.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_are_sorted_and_labelled_in_humantime_form() {
        let c = raw(&["1h", "600s", "90s"]).validate().unwrap();
        let labels: Vec<_> = c
            .quiet_thresholds
            .iter()
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labels, ["1m30s", "10m", "1h"]);
    }

    #[test]
    fn bad_thresholds_name_the_key() {
        let e = raw(&["10m", "soon"]).validate().unwrap_err().to_string();
        assert!(e.contains("fleet.quiet_thresholds[1]"), "{e}");
        let e = raw(&["10m", "600s"]).validate().unwrap_err().to_string();
        assert!(
            e.contains("fleet.quiet_thresholds[1]") && e.contains("twice"),
            "{e}"
        );
        let e = raw(&["0s"]).validate().unwrap_err().to_string();
        assert!(e.contains("fleet.quiet_thresholds[0]"), "{e}");
        let many: Vec<String> = (1..=9).map(|i| format!("{i}m")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = raw(&many).validate().unwrap_err().to_string();
        assert!(e.contains("fleet.quiet_thresholds"), "{e}");
        let mut r = raw(&["10m"]);
        r.quiet_refresh_interval = Duration::from_millis(10);
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("fleet.quiet_refresh_interval"), "{e}");
    }
}
