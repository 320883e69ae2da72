//! Validated identifiers.
//!
//! A [`DeviceId`] is 1–64 characters of `[A-Za-z0-9._-]` whose first character is
//! alphanumeric (so `.` and `..` can never be ids: they would be path segments in
//! an S3 key). A [`MetricName`] follows RFC 8428's rule for resolved SenML names,
//! `[A-Za-z0-9][-:./_A-Za-z0-9]*`, at most 128 characters.
//!
//! Both are cheap to clone (`Arc<str>`), since one message's readings share them.

use std::{fmt, sync::Arc};

use crate::reject::{RejectReason, Rejection};

/// Maximum length of a device id, in bytes (ASCII only, so also characters).
pub const DEVICE_ID_MAX_LEN: usize = 64;
/// Maximum length of a metric name.
pub const METRIC_NAME_MAX_LEN: usize = 128;

/// A device identity that is safe to embed in Redis keys, S3 keys and ClickHouse values.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Validates `s` as a device id.
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        if s.is_empty() {
            return Err(Rejection::new(
                RejectReason::InvalidDeviceId,
                "empty device id",
            ));
        }
        if s.len() > DEVICE_ID_MAX_LEN {
            return Err(Rejection::new(
                RejectReason::InvalidDeviceId,
                format!(
                    "device id is {} bytes, more than {DEVICE_ID_MAX_LEN}",
                    s.len()
                ),
            ));
        }
        let first = s.as_bytes()[0];
        if !first.is_ascii_alphanumeric() {
            return Err(Rejection::new(
                RejectReason::InvalidDeviceId,
                "device id must start with a letter or digit",
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(Rejection::new(
                RejectReason::InvalidDeviceId,
                format!("device id contains {bad:?}; allowed: A-Z a-z 0-9 . _ -"),
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:?})", &*self.0)
    }
}

/// A metric name, valid per RFC 8428 §4.5.1's rule for resolved names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricName(Arc<str>);

impl MetricName {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        if s.is_empty() {
            return Err(Rejection::new(
                RejectReason::InvalidMetric,
                "empty metric name",
            ));
        }
        if s.len() > METRIC_NAME_MAX_LEN {
            return Err(Rejection::new(
                RejectReason::InvalidMetric,
                format!(
                    "metric name is {} bytes, more than {METRIC_NAME_MAX_LEN}",
                    s.len()
                ),
            ));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(Rejection::new(
                RejectReason::InvalidMetric,
                "metric name must start with a letter or digit",
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_')))
        {
            return Err(Rejection::new(
                RejectReason::InvalidMetric,
                format!("metric name contains {bad:?}; allowed: A-Z a-z 0-9 - : . / _"),
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricName({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        for ok in ["a", "dev-1", "A.b_c-9", &"x".repeat(64)] {
            assert_eq!(DeviceId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "a:b",
            "*",
            "../x",
            "..",
            ".",
            "-a",
            "é",
            "a b",
            "a/b",
            "{a}",
            &"x".repeat(65),
        ] {
            let err = DeviceId::parse(bad).unwrap_err();
            assert_eq!(err.reason, RejectReason::InvalidDeviceId, "{bad:?}");
        }
    }

    #[test]
    fn metric_names() {
        for ok in ["temp", "urn:dev:ow:10e2073a01080063:voltage", "a/b.c_d-e"] {
            assert_eq!(MetricName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ":a", "a b", "t{x}", "温度", &"m".repeat(129)] {
            assert_eq!(
                MetricName::parse(bad).unwrap_err().reason,
                RejectReason::InvalidMetric,
                "{bad:?}"
            );
        }
    }
}
