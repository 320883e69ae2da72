//! The sync crate's error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Hot(#[from] hot::Error),
    #[error(transparent)]
    Devices(#[from] devices::Error),
    #[error(transparent)]
    Cold(#[from] cold::Error),
    #[error("invalid ledger entry: {0}")]
    Ledger(String),
    /// A bad command-line argument (a time, a range, a device id).
    #[error("{0}")]
    Arg(String),
    /// A config value is invalid; `key` is its full dotted path.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A `--from`/`--to` argument that is not a time.
    #[error("bad time {arg:?}: {reason}")]
    TimeArg { arg: String, reason: String },
    /// An empty or reversed range.
    #[error("bad range: {0}")]
    Range(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input file that cannot be imported at all (bad header, unknown
    /// format, unreadable Parquet); single bad lines are reported, not errors.
    #[error("{path}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Input {
        path: PathBuf,
        line: Option<u64>,
        reason: String,
    },
    /// A checkpoint that does not belong to the input.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A store could not be reached before any work started.
    #[error("{store} is unreachable")]
    Unreachable {
        store: &'static str,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Hot(e) => e.is_retriable(),
            Self::Cold(e) => e.is_retriable(),
            Self::Unreachable { .. } => true,
            _ => false,
        }
    }
}
