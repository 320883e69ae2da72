//! Keeping the stores honest: verify (now), reconcile and backfill (later issues).
//!
//! # Layout
//!
//! - [`verify`]: checks what the stores hold against a simulator ledger.
//!   `verify --hot` reads the Redis windows through [`hot::reader::Reader`].
//! - [`verify_cold`]: `verify --cold`, ClickHouse (`FINAL`) and the Parquet
//!   objects in S3 against the ledger, and duplicates across S3 objects.
//!   The reconciler and backfill are not written yet; nothing here claims to
//!   do them.
//! - [`error`]: the crate's error type.

pub mod error;
pub mod verify;
pub mod verify_cold;

pub use error::{Error, Result};
