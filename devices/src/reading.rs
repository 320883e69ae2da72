//! The shared reading model.

use crate::id::{DeviceId, MetricName};

/// One value of one metric of one device at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: DeviceId,
    pub metric: MetricName,
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Always finite.
    pub value: f64,
    /// The device's message sequence number, when it sent one.
    pub seq: Option<u64>,
}

/// One decoded MQTT publish: all readings of a message share its device and seq.
///
/// A message is accepted or rejected as a whole, so a device's ledger never
/// counts half a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub device_id: DeviceId,
    pub seq: Option<u64>,
    pub readings: Vec<Reading>,
}
