//! The `[hot]` config section: raw (serde, as written) and validated (typed).

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{window::Resolution, Error, Result};

/// `[hot]` as written in TOML or the environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHotConfig {
    pub redis: RawRedisConfig,
    /// Prefix of every key; lets several deployments (or tests) share a Redis.
    pub key_prefix: String,
    /// How long readings are pre-aggregated in memory before a write.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush early when this many distinct buckets are pending.
    pub max_pending_buckets: usize,
    /// Flushes written concurrently; when all are busy, ingestion waits.
    pub max_inflight_flushes: usize,
    /// Devices per Redis pipeline (one script call per device).
    pub devices_per_pipeline: usize,
    /// Messages queued between MQTT ingest and the aggregator.
    pub channel_capacity: usize,
    /// Sequence numbers remembered per device to drop redeliveries.
    pub dedup_horizon: u32,
    /// Devices whose dedup horizon is remembered (memory bound).
    pub dedup_max_devices: usize,
    pub resolutions: Vec<RawResolution>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawResolution {
    #[serde(with = "humantime_serde")]
    pub width: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// `[hot.redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedisConfig {
    /// One server: `redis://host:port/db` or `rediss://` for TLS. No password
    /// here: use `password`. Empty = not set (then `redis://127.0.0.1:6379`
    /// unless `cluster_nodes` is set).
    pub url: String,
    /// A Redis Cluster instead: seed nodes `redis://host:port` (or all
    /// `rediss://`); the rest of the topology is discovered. Credentials and
    /// TLS as for one server. Setting both this and `url` is an error.
    pub cluster_nodes: Vec<String>,
    pub username: Option<String>,
    /// Never logged; `check-config` prints it redacted.
    #[serde(serialize_with = "devices::secret::redact")]
    pub password: Option<SecretString>,
    /// PEM file with the CA that signs the server's certificate (for `rediss://`
    /// with a private CA); the system roots are used otherwise.
    pub tls_ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl Default for RawRedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster_nodes: Vec::new(),
            username: None,
            password: None,
            tls_ca_file: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for RawHotConfig {
    fn default() -> Self {
        let res = |w: u64, r: u64| RawResolution {
            width: Duration::from_secs(w),
            retention: Duration::from_secs(r),
        };
        Self {
            redis: RawRedisConfig::default(),
            key_prefix: "tc".into(),
            flush_interval: Duration::from_millis(100),
            max_pending_buckets: 200_000,
            max_inflight_flushes: 2,
            devices_per_pipeline: 256,
            channel_capacity: 8192,
            dedup_horizon: 256,
            dedup_max_devices: 1_000_000,
            resolutions: vec![
                res(10, 3600),
                res(60, 86_400),
                res(300, 7 * 86_400),
                res(3600, 30 * 86_400),
            ],
        }
    }
}

/// The validated `[hot]` section.
#[derive(Debug, Clone)]
pub struct HotConfig {
    pub redis: RedisConfig,
    pub key_prefix: String,
    pub flush_interval: Duration,
    pub max_pending_buckets: usize,
    pub max_inflight_flushes: usize,
    pub devices_per_pipeline: usize,
    pub channel_capacity: usize,
    pub dedup_horizon: u32,
    pub dedup_max_devices: usize,
    /// Finest first.
    pub resolutions: Vec<Resolution>,
}

/// Where the hot path's Redis is.
#[derive(Debug, Clone)]
pub enum RedisServers {
    Single(url::Url),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<url::Url>),
}

impl RedisServers {
    /// Whether TLS is on (`rediss://`).
    pub fn tls(&self) -> bool {
        match self {
            Self::Single(u) => u.scheme() == "rediss",
            Self::Cluster(nodes) => nodes.iter().all(|u| u.scheme() == "rediss"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub servers: RedisServers,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub tls_ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("hot.{key}"),
        reason: reason.into(),
    }
}

impl RawHotConfig {
    pub fn validate(self) -> Result<HotConfig> {
        let redis = self.redis.validate()?;
        let p = &self.key_prefix;
        if p.is_empty()
            || p.len() > 32
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "key_prefix",
                "1-32 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if self.flush_interval < Duration::from_millis(1)
            || self.flush_interval > Duration::from_secs(60)
        {
            return Err(invalid("flush_interval", "must be between 1ms and 60s"));
        }
        for (key, v) in [
            ("max_pending_buckets", self.max_pending_buckets),
            ("max_inflight_flushes", self.max_inflight_flushes),
            ("devices_per_pipeline", self.devices_per_pipeline),
            ("channel_capacity", self.channel_capacity),
            ("dedup_max_devices", self.dedup_max_devices),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.dedup_horizon == 0 || self.dedup_horizon > 65_536 {
            return Err(invalid("dedup_horizon", "must be between 1 and 65536"));
        }
        if self.resolutions.is_empty() {
            return Err(invalid("resolutions", "at least one resolution is needed"));
        }
        let mut resolutions: Vec<Resolution> = Vec::new();
        for (i, r) in self.resolutions.iter().enumerate() {
            if r.width < Duration::from_secs(1) || r.width.subsec_nanos() != 0 {
                return Err(invalid(
                    &format!("resolutions[{i}].width"),
                    "must be whole seconds, at least 1s",
                ));
            }
            if r.retention < r.width {
                return Err(invalid(
                    &format!("resolutions[{i}].retention"),
                    "must be at least the width",
                ));
            }
            let res = Resolution::new(r.width, r.retention);
            if resolutions.iter().any(|o| o.label == res.label) {
                return Err(invalid(
                    &format!("resolutions[{i}].width"),
                    format!("{} is configured twice", res.label),
                ));
            }
            resolutions.push(res);
        }
        resolutions.sort_by_key(|r| r.width_ms);
        Ok(HotConfig {
            redis,
            key_prefix: self.key_prefix,
            flush_interval: self.flush_interval,
            max_pending_buckets: self.max_pending_buckets,
            max_inflight_flushes: self.max_inflight_flushes,
            devices_per_pipeline: self.devices_per_pipeline,
            channel_capacity: self.channel_capacity,
            dedup_horizon: self.dedup_horizon,
            dedup_max_devices: self.dedup_max_devices,
            resolutions,
        })
    }
}

fn server_url(key: &str, raw: &str) -> Result<url::Url> {
    let url = url::Url::parse(raw).map_err(|e| invalid(key, e.to_string()))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(invalid(key, "scheme must be redis:// or rediss:// (TLS)"));
    }
    if url.password().is_some() {
        return Err(invalid(
            key,
            "must not contain a password; set hot.redis.password (e.g. THERMOCLINE__HOT__REDIS__PASSWORD)",
        ));
    }
    if url.host_str().is_none() {
        return Err(invalid(key, "needs a host"));
    }
    Ok(url)
}

impl RawRedisConfig {
    fn validate(self) -> Result<RedisConfig> {
        let servers = match (self.url.is_empty(), self.cluster_nodes.is_empty()) {
            (false, false) => {
                return Err(invalid(
                    "redis.url",
                    "set either hot.redis.url (one server) or hot.redis.cluster_nodes (a cluster), not both",
                ))
            }
            (true, true) => RedisServers::Single(server_url("redis.url", "redis://127.0.0.1:6379")?),
            (false, true) => RedisServers::Single(server_url("redis.url", &self.url)?),
            (true, false) => {
                let mut nodes = Vec::new();
                for (i, raw) in self.cluster_nodes.iter().enumerate() {
                    let key = format!("redis.cluster_nodes[{i}]");
                    let u = server_url(&key, raw)?;
                    if u.path().len() > 1 {
                        return Err(invalid(&key, "a cluster has only database 0: no /db path"));
                    }
                    nodes.push(u);
                }
                let tls = nodes.iter().filter(|u| u.scheme() == "rediss").count();
                if tls != 0 && tls != nodes.len() {
                    return Err(invalid(
                        "redis.cluster_nodes",
                        "either every node is rediss:// (TLS) or none",
                    ));
                }
                RedisServers::Cluster(nodes)
            }
        };
        // The redis crate sends AUTH only when there is a password: a username
        // alone would silently connect as the `default` user instead.
        if self.username.is_some() && self.password.is_none() {
            return Err(invalid(
                "redis.password",
                "required when hot.redis.username is set (THERMOCLINE__HOT__REDIS__PASSWORD)",
            ));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !servers.tls() {
                return Err(invalid(
                    "redis.tls_ca_file",
                    "only applies to rediss:// URLs",
                ));
            }
            if !ca.is_file() {
                return Err(invalid(
                    "redis.tls_ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(invalid(
                "redis.connect_timeout",
                "timeouts must be above zero",
            ));
        }
        Ok(RedisConfig {
            servers,
            username: self.username,
            password: self.password,
            tls_ca_file: self.tls_ca_file,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = RawHotConfig::default().validate().unwrap();
        let labels: Vec<_> = c.resolutions.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["10s", "1m", "5m", "1h"]);
        assert_eq!(c.resolutions[3].retention_ms, 30 * 86_400_000);
    }

    #[test]
    fn errors_name_the_key() {
        let mut raw = RawHotConfig::default();
        raw.redis.url = "redis://:hunter2@localhost".into();
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("hot.redis.url") && !e.contains("hunter2"), "{e}");

        let raw = RawHotConfig {
            key_prefix: "a:b".into(),
            ..Default::default()
        };
        assert!(raw
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hot.key_prefix"));

        let mut raw = RawHotConfig::default();
        raw.redis.username = Some("thermocline".into());
        assert!(raw
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hot.redis.password"));

        let mut raw = RawHotConfig::default();
        raw.resolutions[1].width = Duration::from_millis(1500);
        assert!(raw
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hot.resolutions[1].width"));
    }

    #[test]
    fn url_or_cluster_nodes_not_both() {
        let mut raw = RawHotConfig::default();
        raw.redis.url = "redis://127.0.0.1:6379".into();
        raw.redis.cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
        let e = raw.validate().unwrap_err().to_string();
        assert!(
            e.contains("hot.redis.url") && e.contains("hot.redis.cluster_nodes"),
            "{e}"
        );

        let mut raw = RawHotConfig::default();
        raw.redis.cluster_nodes = vec!["redis://a:7000".into(), "rediss://b:7001".into()];
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("hot.redis.cluster_nodes"), "{e}");

        let mut raw = RawHotConfig::default();
        raw.redis.cluster_nodes = vec!["redis://a:7000".into(), "redis://:pw@b:7001".into()];
        let e = raw.validate().unwrap_err().to_string();
        assert!(
            e.contains("hot.redis.cluster_nodes[1]") && !e.contains("pw@"),
            "{e}"
        );

        let mut raw = RawHotConfig::default();
        raw.redis.cluster_nodes = vec!["redis://a:7000".into(), "redis://b:7001".into()];
        let c = raw.validate().unwrap();
        assert!(matches!(c.redis.servers, RedisServers::Cluster(ref n) if n.len() == 2));
        // Neither set: the local default server.
        let c = RawHotConfig::default().validate().unwrap();
        assert!(
            matches!(c.redis.servers, RedisServers::Single(ref u) if u.as_str() == "redis://127.0.0.1:6379")
        );
    }

    #[test]
    fn password_is_redacted_when_serialized() {
        let mut raw = RawHotConfig::default();
        raw.redis.password = Some(SecretString::from("hunter2"));
        let s = serde_json::to_string(&raw).unwrap();
        assert!(s.contains("<redacted>") && !s.contains("hunter2"), "{s}");
    }
}
