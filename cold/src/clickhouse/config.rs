//! The `[cold.clickhouse]` config section: raw (serde, as written) and
//! validated (typed, no leftover `Option`s except the password).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::retry::Backoff;
use crate::{Error, Result};

/// `[cold.clickhouse]` as written in TOML or the environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClickHouseConfig {
    /// HTTP(S) endpoint, e.g. `http://127.0.0.1:8123`. No credentials and no
    /// query string here: use `user` / `password` and `database`.
    pub url: String,
    /// Database holding `readings` and `batches`; created when absent.
    pub database: String,
    /// Name of a cluster in the servers' `remote_servers` config, or empty
    /// for one server. With a cluster, `readings` and `batches` are
    /// `Distributed` tables over per-shard `readings_local` /
    /// `batches_local`, created by connecting to each of `shard_urls`.
    pub cluster: String,
    /// HTTP endpoint of every shard of `cluster` (one replica each), same
    /// user and password as `url`; required with a cluster, empty without.
    pub shard_urls: Vec<String>,
    pub user: String,
    /// Sent in the `X-ClickHouse-Key` header; never logged, serialized as
    /// `"<redacted>"`. Set it from the environment
    /// (`THERMOCLINE__COLD__CLICKHOUSE__PASSWORD`).
    #[serde(serialize_with = "devices::secret::redact")]
    pub password: Option<SecretString>,
    /// TCP connect timeout of one attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit on one attempt of a query (DDL, ping, aggregates).
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Limit on one attempt of an insert (sending the rows, then waiting for
    /// the server to commit them).
    #[serde(with = "humantime_serde")]
    pub insert_timeout: Duration,
    /// First retry delay; doubles per attempt up to `retry_max_delay`, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Tries of one operation, the first included (1 = no retry). Only
    /// network errors and timeouts are retried.
    pub max_attempts: u32,
}

impl Default for RawClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "thermocline".into(),
            cluster: String::new(),
            shard_urls: Vec::new(),
            user: "default".into(),
            password: None,
            connect_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(30),
            insert_timeout: Duration::from_secs(30),
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

/// The validated `[cold.clickhouse]` section.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    pub url: url::Url,
    /// A plain identifier (`[A-Za-z_][A-Za-z0-9_]*`), safe to splice into SQL.
    pub database: String,
    /// `None`: one server. `Some`: the cluster, a plain identifier.
    pub cluster: Option<Cluster>,
    pub user: String,
    pub password: Option<SecretString>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub insert_timeout: Duration,
    pub backoff: Backoff,
}

/// A ClickHouse cluster (`cold.clickhouse.cluster` and `shard_urls`).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// A plain identifier, safe to splice into SQL.
    pub name: String,
    /// One HTTP endpoint per shard, in the config's order.
    pub shard_urls: Vec<url::Url>,
}

/// Parses an endpoint the way `cold.clickhouse.url` must look.
fn parse_endpoint(key: &str, raw: &str) -> Result<url::Url> {
    let url = url::Url::parse(raw).map_err(|e| invalid(key, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key, "scheme must be http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(invalid(key, "needs a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            "must not contain credentials; set cold.clickhouse.user and cold.clickhouse.password",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            "must not have a query string; the database is cold.clickhouse.database",
        ));
    }
    Ok(url)
}

/// At most this many shards (a bound on the start-up fan-out).
pub const MAX_SHARDS: usize = 256;

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("cold.clickhouse.{key}"),
        reason: reason.into(),
    }
}

/// Whether `s` is a ClickHouse identifier that needs no quoting.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl RawClickHouseConfig {
    pub fn validate(self) -> Result<ClickHouseConfig> {
        let url = parse_endpoint("url", &self.url)?;
        if !is_identifier(&self.database) {
            return Err(invalid(
                "database",
                "must match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)",
            ));
        }
        let cluster = if self.cluster.is_empty() {
            if !self.shard_urls.is_empty() {
                return Err(invalid(
                    "shard_urls",
                    "only with cold.clickhouse.cluster (empty = one server)",
                ));
            }
            None
        } else {
            if !is_identifier(&self.cluster) {
                return Err(invalid(
                    "cluster",
                    "must match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)",
                ));
            }
            if self.shard_urls.is_empty() || self.shard_urls.len() > MAX_SHARDS {
                return Err(invalid(
                    "shard_urls",
                    format!("a cluster needs the HTTP URL of each shard (1 to {MAX_SHARDS})"),
                ));
            }
            let shard_urls = self
                .shard_urls
                .iter()
                .map(|u| parse_endpoint("shard_urls", u))
                .collect::<Result<Vec<_>>>()?;
            Some(Cluster {
                name: self.cluster,
                shard_urls,
            })
        };
        // Both travel in HTTP headers: no control characters.
        if self.user.is_empty() || self.user.chars().any(char::is_control) {
            return Err(invalid(
                "user",
                "must be non-empty, without control characters",
            ));
        }
        if let Some(p) = &self.password {
            if p.expose_secret().chars().any(char::is_control) {
                return Err(invalid("password", "must not contain control characters"));
            }
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("query_timeout", self.query_timeout),
            ("insert_timeout", self.insert_timeout),
            ("retry_min_delay", self.retry_min_delay),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.retry_max_delay < self.retry_min_delay {
            return Err(invalid(
                "retry_max_delay",
                "must be at least cold.clickhouse.retry_min_delay",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid("max_attempts", "must be between 1 and 100"));
        }
        Ok(ClickHouseConfig {
            url,
            database: self.database,
            cluster,
            user: self.user,
            password: self.password,
            connect_timeout: self.connect_timeout,
            query_timeout: self.query_timeout,
            insert_timeout: self.insert_timeout,
            backoff: Backoff {
                min_delay: self.retry_min_delay,
                max_delay: self.retry_max_delay,
                max_attempts: self.max_attempts,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = RawClickHouseConfig::default().validate().unwrap();
        assert_eq!(c.url.as_str(), "http://127.0.0.1:8123/");
        assert_eq!(
            (c.database.as_str(), c.user.as_str()),
            ("thermocline", "default")
        );
        assert_eq!(c.backoff.max_attempts, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let check = |raw: RawClickHouseConfig, key: &str| {
            let e = raw.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("cold.clickhouse.{key}")), "{key}: {e}");
            e
        };
        let e = check(
            RawClickHouseConfig {
                url: "http://default:hunter2@localhost:8123".into(),
                ..Default::default()
            },
            "url",
        );
        assert!(!e.contains("hunter2"), "{e}");
        for url in ["ftp://x", "http://x:8123/?database=a", "not a url"] {
            check(
                RawClickHouseConfig {
                    url: url.into(),
                    ..Default::default()
                },
                "url",
            );
        }
        for db in ["", "1abc", "a-b", "a;DROP", "a b"] {
            check(
                RawClickHouseConfig {
                    database: db.into(),
                    ..Default::default()
                },
                "database",
            );
        }
        check(
            RawClickHouseConfig {
                max_attempts: 0,
                ..Default::default()
            },
            "max_attempts",
        );
        check(
            RawClickHouseConfig {
                retry_max_delay: Duration::from_millis(1),
                ..Default::default()
            },
            "retry_max_delay",
        );
        let e = check(
            RawClickHouseConfig {
                password: Some(SecretString::from("hunter2\n")),
                ..Default::default()
            },
            "password",
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn cluster_needs_shard_urls_and_an_identifier() {
        let with = |cluster: &str, shards: &[&str]| RawClickHouseConfig {
            cluster: cluster.into(),
            shard_urls: shards.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let c = with("two", &["http://a:8123", "http://b:8123"])
            .validate()
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!((c.name.as_str(), c.shard_urls.len()), ("two", 2));
        assert!(RawClickHouseConfig::default()
            .validate()
            .unwrap()
            .cluster
            .is_none());
        for (raw, key) in [
            (with("two", &[]), "shard_urls"),
            (with("", &["http://a:8123"]), "shard_urls"),
            (with("a-b", &["http://a:8123"]), "cluster"),
            (with("two", &["http://u:pw@a:8123"]), "shard_urls"),
            (with("two", &["ftp://a"]), "shard_urls"),
        ] {
            let e = raw.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("cold.clickhouse.{key}")), "{key}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn https_is_accepted() {
        let raw = RawClickHouseConfig {
            url: "https://ch.example.com:8443".into(),
            ..Default::default()
        };
        assert_eq!(raw.validate().unwrap().url.scheme(), "https");
    }

    #[test]
    fn password_is_redacted_when_serialized() {
        let raw = RawClickHouseConfig {
            password: Some(SecretString::from("hunter2")),
            ..Default::default()
        };
        let s = serde_json::to_string(&raw).unwrap();
        assert!(s.contains("<redacted>") && !s.contains("hunter2"), "{s}");
        let back: RawClickHouseConfig =
            serde_json::from_str(r#"{"url":"http://h:1","password":"pw","insert_timeout":"5s"}"#)
                .unwrap();
        assert_eq!(back.insert_timeout, Duration::from_secs(5));
        assert!(serde_json::from_str::<RawClickHouseConfig>(r#"{"pasword":"x"}"#).is_err());
    }
}
