//! The devices crate's error type (configuration, simulator and ledger I/O).
//! Rejected messages are not errors: they are [`crate::Rejection`]s.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value is invalid; `key` is its full dotted path.
    #[error("invalid config `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("MQTT client: {0}")]
    Mqtt(#[from] rumqttc::ClientError),
    #[error("MQTT connection: {0}")]
    MqttConnection(Box<rumqttc::ConnectionError>),
    #[error("simulator: {0}")]
    Simulator(String),
    #[error("ledger {path}: {source}")]
    LedgerIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger {path}: {source}")]
    LedgerFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl From<rumqttc::ConnectionError> for Error {
    fn from(e: rumqttc::ConnectionError) -> Self {
        Self::MqttConnection(Box::new(e))
    }
}

impl Error {
    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::MqttConnection(_))
    }
}
