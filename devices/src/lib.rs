//! Device identity, topic mapping, payload decoding and the fleet simulator.
//!
//! # Layout
//!
//! - [`id`]: validated newtypes [`DeviceId`] and [`MetricName`]. Nothing from the
//!   wire becomes a Redis key, S3 key or ClickHouse value without passing here.
//! - [`reading`]: the shared [`Reading`] model and [`Message`] (one decoded MQTT
//!   publish: a device, an optional sequence number and its readings).
//! - [`reject`]: [`Rejection`] and its typed [`RejectReason`] (a small fixed set,
//!   used as a metric label).
//! - [`config`]: the `[devices]` config section, raw (serde) and validated.
//! - [`source`]: a source is a topic template plus a payload format and its
//!   mapping (`[[devices.sources]]`); the legacy `topic_pattern` is the default one.
//! - [`topic`]: [`topic::TopicTemplate`], `factory/{site}/{device_id}/{metric}`
//!   → device id (and metric), and the subscription filters.
//! - [`decode`]: topic + payload → [`Message`] or [`Rejection`]: routes the topic
//!   to its source, then dispatches to [`json`] (JSON objects under a mapping;
//!   the gateway's own format is its `thermocline` preset), [`senml`]
//!   (RFC 8428) and [`value`] (a bare value, the metric from the topic).
//! - [`sparkplug`]: Sparkplug B 3.0 (protobuf generated at build time from the
//!   vendored Eclipse Tahu schema): topics, the stateful per-edge-node
//!   [`sparkplug::Decoder`] (BIRTH aliases, `seq`, `bdSeq`, rebirth requests).
//! - [`secret`]: how config secrets are printed (`<redacted>`).
//! - [`sim`]: the deterministic simulated fleet, publishing over MQTT, and
//!   [`ledger`]: what it published, per device and metric, for `verify`.
//! - `testkit` (feature `testkit`): a private, tuned Mosquitto per test, for the
//!   integration tests of every crate and the benchmarks.
//!
//! Data flows topic/payload → `decode` (route to a `source` by its `topic`
//! template) → the source's format (`json` | `senml` | `value`) → `Message`.

pub mod config;
pub mod decode;
pub mod error;
pub mod id;
pub mod json;
pub mod ledger;
pub mod reading;
pub mod reject;
pub mod secret;
pub mod senml;
pub mod sim;
pub mod source;
pub mod sparkplug;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod topic;
pub mod value;

pub use error::{Error, Result};
pub use id::{DeviceId, MetricName};
pub use reading::{Message, Reading};
pub use reject::{RejectReason, Rejection};
