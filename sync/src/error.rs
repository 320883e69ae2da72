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
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Hot(e) => e.is_retriable(),
            Self::Cold(e) => e.is_retriable(),
            _ => false,
        }
    }
}
