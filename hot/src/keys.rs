//! The Redis key layout.
//!
//! Every key of one device carries the device id as a Redis Cluster hash tag
//! (`{device}`), so a device's buckets and its latest view share a slot and one
//! script can update them atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:{{device}}:w:{res}:{start_ms}:{metric}` | hash | one bucket: `c` count, `s` sum, `mn` min, `mx` max, `l` last value, `lt` its ts (ms) |
//! | `{prefix}:{{device}}:latest` | hash | `v:{metric}` last value, `t:{metric}` its ts, `seen` last arrival (ms) |
//! | `{prefix}:devices` | sorted set | device id scored by last arrival time (ms) |
//!
//! The metric is the last component because metric names may contain `:`;
//! device ids never contain `:`, `{` or `}` (see [`devices::DeviceId`]).

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

    pub fn bucket(
        &self,
        device: &DeviceId,
        res_label: &str,
        start_ms: i64,
        metric: &MetricName,
    ) -> String {
        format!(
            "{}:{{{}}}:w:{}:{}:{}",
            self.prefix, device, res_label, start_ms, metric
        )
    }

    pub fn latest(&self, device: &DeviceId) -> String {
        format!("{}:{{{}}}:latest", self.prefix, device)
    }

    pub fn device_index(&self) -> String {
        format!("{}:devices", self.prefix)
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
        assert_eq!(
            k.bucket(&d, "1m", 60_000, &m),
            "tc:{dev-1}:w:1m:60000:urn:x:temp"
        );
        assert_eq!(k.latest(&d), "tc:{dev-1}:latest");
        assert_eq!(k.device_index(), "tc:devices");
    }
}
