//! The cold path: durable spool, Parquet batches to S3 and ClickHouse.
//!
//! # Layout
//!
//! Not built yet: this crate holds no code until the cold-path milestone, so
//! nothing here can be mistaken for a working store. The gateway does not
//! write cold data today; its README says so.
