//! The cold crate's error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value is invalid; `key` is its full dotted path.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A spool record failed its length or CRC check somewhere other than the tail.
    #[error("spool corrupt at {path} offset {offset}: {reason}")]
    SpoolCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A spool record (frame) larger than a segment: it can never be stored.
    #[error("spool record of {len} bytes is larger than a segment ({limit} bytes)")]
    RecordTooLarge { len: u64, limit: u64 },
    /// The spool is at its size bound; the caller must wait (backpressure).
    #[error("spool full ({used} of {limit} bytes)")]
    SpoolFull { used: u64, limit: u64 },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// An S3 operation failed; `op` names it (PutObject, ...).
    #[error("s3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
        retriable: bool,
    },
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A ClickHouse operation failed for good after `attempts` tries; `op`
    /// names it (insert_readings, ping, ...). The server's message is in
    /// `source`; the password never is.
    #[error("clickhouse {op} failed after {attempts} attempt(s): {source}")]
    ClickHouseOp {
        op: &'static str,
        attempts: u32,
        source: clickhouse::error::Error,
    },
    /// Registering the cold path's metrics failed (a name registered twice).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The cold pipeline stopped (shutdown or a spool failure); nothing more
    /// can be handed to it.
    #[error("the cold pipeline has stopped")]
    PipelineStopped,
    /// Data read back from a store does not have the expected shape.
    #[error("invalid data in {what}: {reason}")]
    InvalidData { what: String, reason: String },
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::S3 { retriable, .. } => *retriable,
            Self::ClickHouse(e) | Self::ClickHouseOp { source: e, .. } => {
                crate::clickhouse::is_retriable(e)
            }
            Self::Io { .. } | Self::SpoolFull { .. } => true,
            _ => false,
        }
    }
}
