//! The sync crate's error type.

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
    /// A store did not answer the reconciler's first round trip.
    #[error("{store} is unreachable: {source}")]
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
