//! Keeping the stores honest: verify, and the reconciler that makes the hot
//! windows agree with cold storage.
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
//! - [`timearg`]: `--from`/`--to` parsing (RFC 3339 or relative `-2h`).
//! - [`config`] (`[sync]`), [`metrics`], [`error`].
//!
//! ```text
//! S3 listing ─┐                         ┌─ Redis buckets (hot::repair)
//!             ├─ reload missing batches ─▶ ClickHouse ─ compare ─┤
//! batches ────┘                         └─ repair sealed buckets ─▶ Redis
//! ```

pub mod config;
pub mod error;
pub mod metrics;
pub mod reconcile;
pub mod timearg;
pub mod verify;
pub mod verify_cold;

pub use config::{RawSyncConfig, SyncConfig};
pub use error::{Error, Result};
