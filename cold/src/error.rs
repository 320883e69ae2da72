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

    /// Whether the store refuses this *data* for good: sending the same batch
    /// again can never succeed, whatever state the store is in (a row a table
    /// rejects, a table whose columns do not match the sink's, data that
    /// cannot be encoded). The pipeline sets such a batch aside instead of
    /// retrying it. Errors about the store itself (down, overloaded, read-only,
    /// wrong credentials, missing bucket) are not permanent in this sense,
    /// even when not [retriable](Self::is_retriable) right away: they go away
    /// once the store or the config is fixed, so the batch waits for that.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::ClickHouse(e) | Self::ClickHouseOp { source: e, .. } => {
                crate::clickhouse::rejects_data(e)
            }
            Self::InvalidData { .. }
            | Self::Parquet(_)
            | Self::Arrow(_)
            | Self::RecordTooLarge { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_response(msg: &str) -> Error {
        Error::ClickHouseOp {
            op: "insert_readings",
            attempts: 1,
            source: clickhouse::error::Error::BadResponse(msg.into()),
        }
    }

    #[test]
    fn data_refusals_are_permanent_and_store_conditions_are_not() {
        // 18.16's and current servers' message formats.
        for msg in [
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero",
            "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)",
            "Code: 16, e.displayText() = DB::Exception: No such column seq in table",
        ] {
            assert!(bad_response(msg).is_permanent(), "{msg}");
        }
        for msg in [
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300)",
            "Code: 164, e.displayText() = DB::Exception: Cannot execute query in readonly mode",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 516. DB::Exception: default: Authentication failed",
            "no code at all",
            "Code: x",
        ] {
            assert!(!bad_response(msg).is_permanent(), "{msg}");
        }
        assert!(!Error::ClickHouse(clickhouse::error::Error::TimedOut).is_permanent());
        let s3 = Error::S3 {
            op: "PutObject",
            key: "k".into(),
            message: "AccessDenied".into(),
            retriable: false,
        };
        assert!(
            !s3.is_permanent(),
            "a refusing S3 is waited for, not bypassed"
        );
        let schema = Error::InvalidData {
            what: "clickhouse table db.readings".into(),
            reason: "column `seq` is String, expected UInt64".into(),
        };
        assert!(schema.is_permanent());
    }
}
