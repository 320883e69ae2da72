//! The hot path: Redis rolling windows per device and metric.
//!
//! # Layout
//!
//! - [`window`]: the maths. [`window::Agg`] (count, sum, min, max, last) merges
//!   associatively; [`window::Resolution`] aligns timestamps to buckets.
//! - [`dedup`]: the bounded per-device horizon that drops redelivered seqs.
//! - [`aggregate`]: folds [`devices::Message`]s into pending buckets between flushes.
//! - [`writer`]: one atomic Lua script per device, pipelined, into Redis.
//! - [`reader`]: latest view, bucket ranges and the fleet index, for the HTTP
//!   API and `verify --hot`.
//! - [`repair`]: the reconciler's side: whole bucket hashes read back, one
//!   metric's fields rewritten per bucket atomically (compare-and-set), the
//!   reconcile lease.
//! - [`keys`]: the Redis key layout (hash-tagged per device).
//! - [`service`]: the task wiring it together behind a bounded channel.
//! - [`config`], [`connect`], [`metrics`], [`error`].
//!
//! ```text
//! Message ─▶ HotSender ─▶ Aggregator (dedup → Agg per bucket) ─flush─▶ Writer ─▶ Redis ◀─ Reader
//! ```

pub mod aggregate;
pub mod config;
pub mod connect;
pub mod dedup;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod reader;
pub mod repair;
pub mod service;
pub mod window;
pub mod writer;

pub use config::{HotConfig, RawHotConfig};
pub use error::{Error, Result};
pub use metrics::HotMetrics;
pub use service::{HotPath, HotSender};
