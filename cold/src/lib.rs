//! The cold path: durable spool, Parquet batches to S3 and ClickHouse.
//!
//! # Layout
//!
//! - [`row`]: [`row::ColdRow`] (one reading as stored: device, metric, ts, value,
//!   seq, gateway, arrival), [`row::Batch`] and its deterministic [`row::BatchId`],
//!   the S3 key layout.
//! - [`spool`]: the local write-ahead log of raw MQTT messages and batch-cut
//!   markers (length + CRC per record, group-committed fsync, bounded with
//!   backpressure, replayed on start, torn tails cut); a range is released once
//!   both stores hold its batches ([`spool::ReleaseTracker`]).
//! - [`batcher`]: when to cut a batch (rows, bytes, age with jitter), decoding
//!   spooled messages into rows and dead letters; one event hour per batch.
//! - [`parquet`]: batches ⇄ Parquet (zstd).
//! - [`s3`]: the S3 sink (aws-sdk-s3): batch objects, dead letters, retries.
//! - [`clickhouse`]: the ClickHouse sink: schema, RowBinary inserts, the
//!   `batches` table.
//! - [`pipeline`]: the task that ties them together for the gateway: replay,
//!   cut, ship to both stores with retries, release; the `[cold]` config
//!   section; health for `/readyz`.
//! - [`error`].

pub mod batcher;
pub mod clickhouse;
pub mod error;
pub mod parquet;
pub mod pipeline;
pub mod row;
pub mod s3;
pub mod spool;

pub use error::{Error, Result};
