//! The Redis key layout.
//!
//! Every key of one device carries the device id as a Redis Cluster hash tag
//! (`{device}`), so a device's buckets and its latest view share a slot and one
//! script can update them atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:{{device}}:w:{res}:{start_ms}` | hash | one bucket of every metric: `c:{metric}` count, `s:{metric}` sum, `mn:{metric}` min, `mx:{metric}` max, `l:{metric}` last value, `lt:{metric}` its ts (ms) |
//! | `{prefix}:{{device}}:latest` | hash | `v:{metric}` last value, `t:{metric}` its ts, `seen` last arrival (ms) |
//! | `{prefix}:devices` | sorted set | device id scored by last arrival time (ms) |
//! | `{prefix}:reconcile:lease` | string | the gateway id running the reconciler (expires) |
//!
//! One hash holds a bucket of all of a device's metrics: a flush touches one
//! key per resolution instead of one per metric and resolution, and small
//! hashes stay in Redis's compact encoding. Metric names may contain `:`; they
//! are only ever the tail of a field name, after a fixed prefix. Device ids
//! never contain `:`, `{` or `}` (see [`devices::DeviceId`]).

use devices::{DeviceId, MetricName};

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn bucket(&self, device: &DeviceId, res_label: &str, start_ms: i64) -> String {
        format!(
            "{}:{{{}}}:w:{}:{}",
            self.prefix, device, res_label, start_ms
        )
    }

    /// The six fields of one metric in a bucket hash: count, sum, min, max, last, last ts.
    pub fn bucket_fields(metric: &MetricName) -> [String; 6] {
        ["c", "s", "mn", "mx", "l", "lt"].map(|f| format!("{f}:{metric}"))
    }

    pub fn latest(&self, device: &DeviceId) -> String {
        format!("{}:{{{}}}:latest", self.prefix, device)
    }

    pub fn device_index(&self) -> String {
        format!("{}:devices", self.prefix)
    }

    /// Held by the one gateway whose reconciler runs (see `crate::repair`).
    pub fn reconcile_lease(&self) -> String {
        format!("{}:reconcile:lease", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("tc");
        let d = DeviceId::parse("dev-1").unwrap();
        let m = MetricName::parse("urn:x:temp").unwrap();
        assert_eq!(k.bucket(&d, "1m", 60_000), "tc:{dev-1}:w:1m:60000");
        assert_eq!(Keys::bucket_fields(&m)[5], "lt:urn:x:temp");
        assert_eq!(k.latest(&d), "tc:{dev-1}:latest");
        assert_eq!(k.device_index(), "tc:devices");
        assert_eq!(k.reconcile_lease(), "tc:reconcile:lease");
    }
}
