//! Keeping the stores honest: verify, the reconciler that makes the hot
//! windows agree with cold storage, backfill and import.
//!
//! # Layout
//!
//! - [`verify`]: checks what the stores hold against a simulator ledger.
//!   `verify --hot` reads the Redis windows through [`hot::reader::Reader`].
//! - [`verify_cold`]: `verify --cold`, ClickHouse (`FINAL`) and the Parquet
//!   objects in S3 against the ledger, and duplicates across S3 objects.
//! - [`reconcile`]: sealed hot buckets against `readings FINAL`, classified and
//!   repaired through [`hot::repair`]; the `batches` table against the S3
//!   listing ([`reconcile::batches`]); the interval loop behind a Redis lease
//!   ([`reconcile::service`]).
//! - [`backfill`]: S3 → ClickHouse for the batches `batches` lacks (and, on
//!   request, → hot windows).
//! - [`import`]: an NDJSON, CSV or Parquet file → validated rows → batches
//!   with ids derived from the file → S3 + ClickHouse → hot windows;
//!   checkpointed, resumable.
//! - [`hotload`]: cold rows → hot windows through the gateway's aggregator
//!   and writer.
//! - [`timearg`]: `--from`/`--to` parsing (RFC 3339, relative `-2h`, epoch ms).
//! - [`progress`]: the progress callback the CLI renders.
//! - [`config`] (`[sync]`), [`metrics`], [`error`].
//!
//! ```text
//! S3 listing ─┐                         ┌─ Redis buckets (hot::repair)
//!             ├─ reload missing batches ─▶ ClickHouse ─ compare ─┤
//! batches ────┘                         └─ repair sealed buckets ─▶ Redis
//! ```

pub mod backfill;
pub mod config;
pub mod error;
pub mod hotload;
pub mod import;
pub mod metrics;
pub mod progress;
pub mod reconcile;
pub mod timearg;
pub mod verify;
pub mod verify_cold;

pub use config::{RawSyncConfig, SyncConfig};
pub use error::{Error, Result};
