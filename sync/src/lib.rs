//! Keeping the stores honest: verify, backfill and import.
//!
//! # Layout
//!
//! - [`verify`]: checks what the stores hold against a simulator ledger.
//!   `verify --hot` reads the Redis windows through [`hot::reader::Reader`].
//! - [`verify_cold`]: `verify --cold`, ClickHouse (`FINAL`) and the Parquet
//!   objects in S3 against the ledger, and duplicates across S3 objects.
//! - [`backfill`]: S3 → ClickHouse for the batches `batches` lacks (and, on
//!   request, → hot windows).
//! - [`import`]: an NDJSON, CSV or Parquet file → validated rows → batches
//!   with ids derived from the file → S3 + ClickHouse → hot windows;
//!   checkpointed, resumable.
//! - [`hotload`]: cold rows → hot windows through the gateway's aggregator
//!   and writer.
//! - [`timearg`]: `--from`/`--to` (RFC 3339 or `-2h`).
//! - [`progress`]: the progress callback the CLI renders.
//! - [`error`]: the crate's error type.

pub mod backfill;
pub mod error;
pub mod hotload;
pub mod import;
pub mod progress;
pub mod timearg;
pub mod verify;
pub mod verify_cold;

pub use error::{Error, Result};
