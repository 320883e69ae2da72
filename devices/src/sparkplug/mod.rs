//! Sparkplug B 3.0 (Eclipse Sparkplug): edge nodes and their devices
//! publishing protobuf payloads under `spBv1.0/`.
//!
//! # Layout
//!
//! - [`proto`]: the payload types, generated at build time by prost from the
//!   vendored Eclipse Tahu `proto/sparkplug_b.proto` (EPL-2.0).
//! - [`topic`]: `spBv1.0/{group}/{type}/{edge}[/{device}]` → [`topic::Topic`].
//! - [`value`]: metric names (sanitised to [`crate::MetricName`]) and
//!   values (numeric datatypes → `f64`, booleans 0/1).
//! - [`decoder`]: the per-edge-node state (BIRTH declarations, aliases, `seq`,
//!   `bdSeq`) and topic + payload → [`Decoded`]: readings, stale devices, or a
//!   rejection, with a [`RebirthRequest`] when the node must rebirth.
//! - [`rebirth`]: the NCMD `Node Control/Rebirth` the gateway publishes.
//! - [`spooled`]: the decoded result as ingest spools it, self-contained, so
//!   the cold path decodes exactly what the hot path got without any state.
//! - [`config`]: the decoder's settings and bounds.
//!
//! Device ids: `{group}.{edge}` for node messages and `{group}.{edge}.{device}`
//! for device messages (`id_separator` changes the `.`), each a valid
//! [`crate::DeviceId`] as sent or `invalid_device_id`.
//!
//! Unlike the JSON and SenML decoders this one has state: a DATA means
//! nothing without its BIRTH, so every message of a node must pass through
//! the same [`Decoder`] in arrival order.

pub mod config;
pub mod decoder;
pub mod proto;
pub mod rebirth;
pub mod spooled;
pub mod topic;
pub mod value;

#[cfg(test)]
mod tests;

pub use config::{RawSparkplugConfig, SparkplugConfig};
pub use decoder::{Decoded, Decoder, Outcome, SparkplugMessage};
pub use rebirth::RebirthRequest;
