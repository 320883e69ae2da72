//! Sources: which topics carry which payloads.
//!
//! A source is a topic template ([`TopicTemplate`]) plus a payload format with
//! that format's own mapping config. One gateway reads several device
//! families side by side:
//!
//! ```toml
//! [[devices.sources]]
//! topic = "sensors/{site}/{device_id}"
//! format = "senml"
//! senml = { non_numeric = "reject" }
//! ```
//!
//! The legacy `devices.topic_pattern` + `devices.payload_format` (+
//! `devices.senml_non_numeric`) are the default source, tried first; the
//! `[[devices.sources]]` follow in file order. A topic is decoded by the first
//! source whose template it fits ([`TopicTemplate::matches`]); a topic that
//! fits none is `invalid_topic`.
//!
//! Each format is a variant of [`Format`], validated from its raw sub-table
//! (`senml = {…}`); a sub-table given for another format than the source's is
//! a config error, so a typo never silently falls back to defaults.

use serde::{Deserialize, Serialize};

use crate::{
    config::{NonNumericPolicy, PayloadFormat},
    error::Error,
    topic::TopicTemplate,
};

/// One `[[devices.sources]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// The topic template (see [`crate::topic`]).
    pub topic: String,
    /// The payload format; `auto` sniffs SenML (`[`) or the JSON object format (`{`).
    #[serde(default)]
    pub format: PayloadFormat,
    /// Mapping for `format = "senml"` (or the SenML side of `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub senml: Option<RawSenmlMapping>,
}

/// `senml = {…}` of a source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSenmlMapping {
    /// Records with `vs`/`vb`/`vd` (or only a sum): skip them or reject the message.
    pub non_numeric: NonNumericPolicy,
}

/// A validated source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub template: TopicTemplate,
    pub format: Format,
}

/// A payload format with its validated mapping.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Format {
    /// First non-whitespace byte `[`: SenML; `{`: the JSON object format.
    Auto { senml: SenmlMapping },
    /// The gateway's JSON object format (see [`crate::json`]).
    Json,
    /// SenML JSON (RFC 8428).
    Senml(SenmlMapping),
}

/// The validated SenML mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenmlMapping {
    pub non_numeric: NonNumericPolicy,
}

impl From<RawSenmlMapping> for SenmlMapping {
    fn from(raw: RawSenmlMapping) -> Self {
        Self {
            non_numeric: raw.non_numeric,
        }
    }
}

impl RawSource {
    /// Validates into a [`Source`]; `key` is the entry's full key
    /// (`devices.sources[2]`), and errors name the key below it
    /// (`devices.sources[2].topic`).
    pub fn validate(self, key: &str) -> crate::Result<Source> {
        let template =
            TopicTemplate::parse(&self.topic).map_err(|reason| error(key, "topic", reason))?;
        let format = build_format(key, self.format, self.senml)?;
        Ok(Source { template, format })
    }
}

/// The format of a source (or of the default source) from its raw parts.
pub(crate) fn build_format(
    key: &str,
    format: PayloadFormat,
    senml: Option<RawSenmlMapping>,
) -> crate::Result<Format> {
    let unused = |sub: &str| {
        error(
            key,
            sub,
            format!(
                "a `{sub}` mapping is given but the format is {:?}; remove it or change `format`",
                format.as_str()
            ),
        )
    };
    Ok(match format {
        PayloadFormat::Auto => Format::Auto {
            senml: senml.unwrap_or_default().into(),
        },
        PayloadFormat::Json => {
            if senml.is_some() {
                return Err(unused("senml"));
            }
            Format::Json
        }
        PayloadFormat::Senml => Format::Senml(senml.unwrap_or_default().into()),
    })
}

fn error(key: &str, sub: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: if key.is_empty() {
            format!("devices.{sub}")
        } else {
            format!("{key}.{sub}")
        },
        reason: reason.into(),
    }
}
