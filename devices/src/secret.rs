//! Secrets in config: shown as `<redacted>`, never as their value.
//!
//! Every crate's config keeps passwords and keys as [`secrecy::SecretString`]
//! (whose `Debug` already hides them) and serializes them with [`redact`], so
//! `thermocline check-config` can print the effective configuration.

use secrecy::SecretString;

/// Serializes a secret as `"<redacted>"` (or nothing when unset).
pub fn redact<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}
