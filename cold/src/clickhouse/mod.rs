//! The ClickHouse sink: schema, one RowBinary insert per batch, the `batches`
//! table, exact read-backs.
//!
//! # Layout
//!
//! - [`config`]: `[cold.clickhouse]`, raw → validated.
//! - [`connect`]: the HTTP client (TCP_NODELAY, TLS, validation off for 18.16).
//! - [`schema`]: the DDL of `readings` and `batches`, why they collapse
//!   duplicates, and the start-up column check.
//! - [`sink`]: [`ClickHouseSink`]: `ensure_schema`, `insert_batch` (readings
//!   first, then the `batches` row), `has_batch`, `batches`, `ping`, health.
//! - [`query`]: `aggregates_final` and `bucket_aggregates` from `readings FINAL`.
//! - [`retry`]: capped exponential backoff with jitter; network errors only.
//! - [`metrics`]: the `thermocline_cold_clickhouse_*` metrics.
//!
//! Works against ClickHouse 18.16 (Debian's) and current releases: plain
//! RowBinary, no server-side parameters (values are bound client-side with
//! `.bind()`), no type newer than 18.16.

pub mod config;
pub mod connect;
pub mod metrics;
pub mod query;
pub mod retry;
pub mod schema;
pub mod sink;

pub use config::{ClickHouseConfig, RawClickHouseConfig};
pub use metrics::ClickHouseMetrics;
pub use query::{Agg, BucketAgg, DeviceBucketAgg, DeviceFilter};
pub use retry::{is_retriable, rejects_data, Backoff};
pub use sink::{BatchRecord, ClickHouseHealth, ClickHouseSink};
