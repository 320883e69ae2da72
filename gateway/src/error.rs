//! The gateway crate's error type. `anyhow` is used only in `main.rs` and the CLI.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value is invalid; `key` is its full dotted path.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// The config files or environment could not be read or parsed.
    #[error("config: {0}")]
    ConfigLoad(#[from] config::ConfigError),
    #[error(transparent)]
    Devices(#[from] devices::Error),
    #[error(transparent)]
    Hot(#[from] hot::Error),
    #[error(transparent)]
    Cold(#[from] cold::Error),
    #[error(transparent)]
    Sync(#[from] sync::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http server on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Hot(e) => e.is_retriable(),
            Self::Devices(e) => e.is_retriable(),
            Self::Cold(e) => e.is_retriable(),
            Self::Sync(e) => e.is_retriable(),
            _ => false,
        }
    }
}
