//! The `[cold.s3]` config section: raw (serde, as written) and validated (typed).

use std::time::Duration;

use bytesize::ByteSize;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part, and its largest single PutObject.
pub const MAX_OBJECT_PART: u64 = 5 * 1024 * 1024 * 1024;

/// `[cold.s3]` as written in TOML or the environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawS3Config {
    /// `http(s)://host:port` of an S3-compatible server; unset means AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key: empty, or ends with `/` (`tc/`, `site-a/gw/`).
    pub prefix: String,
    /// With `secret_access_key`; both unset means the SDK's default chain
    /// (environment, profile, web identity, ECS/EC2 instance roles).
    pub access_key_id: Option<String>,
    /// Never logged; printed as `<redacted>`.
    #[serde(serialize_with = "devices::secret::redact")]
    pub secret_access_key: Option<SecretString>,
    /// Path-style URLs (`endpoint/bucket/key`); defaults to true when
    /// `endpoint` is set (most S3-compatible servers need it), else false.
    pub force_path_style: Option<bool>,
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: ByteSize,
    pub multipart_part_size: ByteSize,
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on one attempt of one request (a part upload, a GET with its body).
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

impl Default for RawS3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: "thermocline".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            force_path_style: None,
            multipart_threshold: ByteSize::mib(16),
            multipart_part_size: ByteSize::mib(8),
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(10),
            max_attempts: 5,
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(120),
        }
    }
}

/// The validated `[cold.s3]` section.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub credentials: Option<StaticCredentials>,
    pub force_path_style: bool,
    pub multipart_threshold: u64,
    pub multipart_part_size: u64,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    /// Keys per ListObjectsV2 page: 1000 (S3's maximum); not in the raw
    /// config, lowered by tests to exercise pagination.
    pub list_page_size: i32,
}

#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

/// Capped exponential backoff with jitter; see [`RetryPolicy::delay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: format!("cold.s3.{key}"),
        reason: reason.into(),
    }
}

impl RawS3Config {
    pub fn validate(self) -> Result<S3Config> {
        if let Some(ep) = &self.endpoint {
            let rest = ep
                .strip_prefix("http://")
                .or_else(|| ep.strip_prefix("https://"))
                .ok_or_else(|| invalid("endpoint", "must start with http:// or https://"))?;
            if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
                return Err(invalid("endpoint", "must be http(s)://host[:port]"));
            }
        }
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid("region", "a region name like us-east-1"));
        }
        validate_bucket(&self.bucket)?;
        validate_prefix(&self.prefix)?;
        let credentials = match (self.access_key_id, self.secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() => Some(StaticCredentials {
                access_key_id: id,
                secret_access_key: secret,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "secret_access_key",
                    "must be set with access_key_id (from the environment: THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY)",
                ))
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "access_key_id",
                    "must be set (non-empty) with secret_access_key",
                ))
            }
        };
        let part = self.multipart_part_size.as_u64();
        if !(MIN_PART_SIZE..=MAX_OBJECT_PART).contains(&part) {
            return Err(invalid(
                "multipart_part_size",
                "must be between 5MiB and 5GiB",
            ));
        }
        let threshold = self.multipart_threshold.as_u64();
        if threshold == 0 || threshold > MAX_OBJECT_PART {
            return Err(invalid(
                "multipart_threshold",
                "must be between 1B and 5GiB",
            ));
        }
        if self.retry_min_delay.is_zero() {
            return Err(invalid("retry_min_delay", "must be more than 0"));
        }
        if self.retry_max_delay < self.retry_min_delay {
            return Err(invalid(
                "retry_max_delay",
                "must be at least retry_min_delay",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid("max_attempts", "must be between 1 and 100"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be more than 0"));
        }
        if self.attempt_timeout.is_zero() {
            return Err(invalid("attempt_timeout", "must be more than 0"));
        }
        Ok(S3Config {
            force_path_style: self.force_path_style.unwrap_or(self.endpoint.is_some()),
            endpoint: self.endpoint,
            region: self.region,
            bucket: self.bucket,
            prefix: self.prefix,
            credentials,
            multipart_threshold: threshold,
            multipart_part_size: part,
            retry: RetryPolicy {
                min_delay: self.retry_min_delay,
                max_delay: self.retry_max_delay,
                max_attempts: self.max_attempts,
            },
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
            list_page_size: 1000,
        })
    }
}

/// S3's bucket naming rules (the subset that matters: 3-63 of `[a-z0-9.-]`,
/// alphanumeric at both ends).
fn validate_bucket(b: &str) -> Result<()> {
    let ok_chars = b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&b.len())
        || !ok_chars
        || !ends(b.chars().next())
        || !ends(b.chars().last())
    {
        return Err(invalid(
            "bucket",
            "3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// Empty, or `/`-separated segments of `[A-Za-z0-9._-]` (no `.`/`..` segment)
/// ending with `/`: keys stay plain paths on every S3 implementation.
fn validate_prefix(p: &str) -> Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    let reason = "empty, or segments of A-Z a-z 0-9 . _ - each followed by / \
                  (like tc/ or site-a/gw/; no leading /, no . or .. segments)";
    let Some(body) = p.strip_suffix('/') else {
        return Err(invalid("prefix", reason));
    };
    if p.len() > 256
        || body.split('/').any(|seg| {
            seg.is_empty()
                || seg == "."
                || seg == ".."
                || !seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    {
        return Err(invalid("prefix", reason));
    }
    Ok(())
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (after `attempt` failures, from 1):
    /// `min_delay * 2^(attempt-1)` capped at `max_delay`, then jittered
    /// uniformly into its upper half so that gateways retrying together spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let capped = self
            .min_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let nanos = u64::try_from(capped.as_nanos()).unwrap_or(u64::MAX);
        let jittered = rand::random_range(nanos / 2..=nanos);
        Duration::from_nanos(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawS3Config {
        RawS3Config::default()
    }

    fn key_of(r: Result<S3Config>) -> String {
        match r {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_validate() {
        let c = raw().validate().unwrap();
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.bucket, "thermocline");
        assert_eq!(c.prefix, "");
        assert!(c.credentials.is_none());
        assert!(!c.force_path_style);
        assert_eq!(c.multipart_threshold, 16 * 1024 * 1024);
        assert_eq!(c.multipart_part_size, 8 * 1024 * 1024);
        assert_eq!(c.retry.max_attempts, 5);
    }

    #[test]
    fn parses_units_and_path_style_follows_endpoint() {
        let raw: RawS3Config = serde_json::from_str(
            r#"{
                "endpoint": "http://127.0.0.1:9000",
                "prefix": "site-a/gw.1/",
                "access_key_id": "k",
                "secret_access_key": "s",
                "multipart_threshold": "32MiB",
                "multipart_part_size": "5MiB",
                "retry_min_delay": "50ms",
                "retry_max_delay": "2s"
            }"#,
        )
        .unwrap();
        let c = raw.validate().unwrap();
        assert!(c.force_path_style);
        assert_eq!(c.prefix, "site-a/gw.1/");
        assert_eq!(c.multipart_threshold, 32 * 1024 * 1024);
        assert_eq!(c.multipart_part_size, 5 * 1024 * 1024);
        assert_eq!(c.retry.min_delay, Duration::from_millis(50));
        assert_eq!(c.credentials.unwrap().access_key_id, "k");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<RawS3Config>(r#"{"buckett": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("buckett"), "{err}");
    }

    #[test]
    fn secret_is_redacted_when_serialized_and_debugged() {
        let mut r = raw();
        r.access_key_id = Some("AKIA".into());
        r.secret_access_key = Some(SecretString::from("hunter2"));
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("<redacted>") && !s.contains("hunter2"), "{s}");
        let c = r.validate().unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
    }

    #[test]
    fn bad_values_name_their_key() {
        type Edit = fn(&mut RawS3Config);
        let cases: Vec<(Edit, &str)> = vec![
            (|r| r.prefix = "/tc/".into(), "cold.s3.prefix"),
            (|r| r.prefix = "tc".into(), "cold.s3.prefix"),
            (|r| r.prefix = "a//".into(), "cold.s3.prefix"),
            (|r| r.prefix = "a/../".into(), "cold.s3.prefix"),
            (|r| r.prefix = "a b/".into(), "cold.s3.prefix"),
            (|r| r.bucket = "Upper".into(), "cold.s3.bucket"),
            (|r| r.bucket = "ab".into(), "cold.s3.bucket"),
            (|r| r.bucket = "-ab".into(), "cold.s3.bucket"),
            (
                |r| r.endpoint = Some("127.0.0.1:9000".into()),
                "cold.s3.endpoint",
            ),
            (|r| r.endpoint = Some("http://".into()), "cold.s3.endpoint"),
            (|r| r.region = String::new(), "cold.s3.region"),
            (
                |r| r.access_key_id = Some("k".into()),
                "cold.s3.secret_access_key",
            ),
            (
                |r| r.secret_access_key = Some(SecretString::from("s")),
                "cold.s3.access_key_id",
            ),
            (
                |r| r.multipart_part_size = ByteSize::mib(4),
                "cold.s3.multipart_part_size",
            ),
            (
                |r| r.multipart_threshold = ByteSize::b(0),
                "cold.s3.multipart_threshold",
            ),
            (
                |r| r.retry_min_delay = Duration::ZERO,
                "cold.s3.retry_min_delay",
            ),
            (
                |r| r.retry_max_delay = Duration::from_millis(1),
                "cold.s3.retry_max_delay",
            ),
            (|r| r.max_attempts = 0, "cold.s3.max_attempts"),
        ];
        for (edit, key) in cases {
            let mut r = raw();
            edit(&mut r);
            assert_eq!(key_of(r.validate()), key);
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 10,
        };
        for _ in 0..200 {
            for (attempt, ceiling_ms) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (60, 1000),
            ] {
                let d = p.delay(attempt);
                let ceiling = Duration::from_millis(ceiling_ms);
                assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
            }
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| p.delay(3)).collect();
        assert!(samples.len() > 10);
    }
}
