//! Why a message was rejected.

use std::fmt;

/// The reason a message was rejected: a small fixed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The topic does not match the configured pattern.
    InvalidTopic,
    /// The device id in the topic is not a valid [`crate::DeviceId`].
    InvalidDeviceId,
    /// A metric name is not a valid [`crate::MetricName`].
    InvalidMetric,
    /// The payload is larger than the configured cap.
    TooLarge,
    /// The payload is not valid in its format (bad JSON, wrong shape, no readings).
    Malformed,
    /// A value is not a number (a string, a bool, null), or a SenML
    /// non-numeric value while those are configured to be rejected.
    NonNumeric,
    /// A value is NaN or infinite (or overflows f64).
    NonFinite,
    /// A timestamp is further in the future than the allowed clock skew.
    FutureTimestamp,
    /// Sparkplug: a DATA message from an edge node or device with no BIRTH
    /// in force (never born, or dead since).
    NoBirth,
    /// Sparkplug: a DATA metric whose alias (or name) its BIRTH did not declare.
    UnknownAlias,
    /// Sparkplug: two metric names of one BIRTH that are equal once sanitised,
    /// or one alias declared twice.
    MetricCollision,
    /// Sparkplug: a BIRTH beyond the decoder's state bounds (edge nodes,
    /// devices per node, metrics per node).
    OverLimit,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        Self::InvalidTopic,
        Self::InvalidDeviceId,
        Self::InvalidMetric,
        Self::TooLarge,
        Self::Malformed,
        Self::NonNumeric,
        Self::NonFinite,
        Self::FutureTimestamp,
        Self::NoBirth,
        Self::UnknownAlias,
        Self::MetricCollision,
        Self::OverLimit,
    ];

    /// The reasons only the stateful Sparkplug B decoder gives.
    pub const SPARKPLUG_ONLY: [RejectReason; 4] = [
        Self::NoBirth,
        Self::UnknownAlias,
        Self::MetricCollision,
        Self::OverLimit,
    ];

    /// The snake_case label used in metrics and dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTopic => "invalid_topic",
            Self::InvalidDeviceId => "invalid_device_id",
            Self::InvalidMetric => "invalid_metric",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::NonNumeric => "non_numeric",
            Self::NonFinite => "non_finite",
            Self::FutureTimestamp => "future_timestamp",
            Self::NoBirth => "no_birth",
            Self::UnknownAlias => "unknown_alias",
            Self::MetricCollision => "metric_collision",
            Self::OverLimit => "over_limit",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the typed reason plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}
