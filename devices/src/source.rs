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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    config::{NonNumericPolicy, PayloadFormat},
    error::Error,
    id::MetricName,
    topic::TopicTemplate,
};

pub use crate::json::{JsonMapping, RawJsonMapping};

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
    /// Mapping for `format = "json"`; absent = the gateway's own
    /// `{"ts","seq","metrics"}` shape (preset `thermocline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<RawJsonMapping>,
    /// Mapping for `format = "value"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<RawValueMapping>,
}

/// `value = {…}` of a source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValueMapping {
    /// The metric name when the topic template has no `{metric}` level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// `true` / `false` (any case) as 1 / 0.
    pub booleans: bool,
    /// Words and their values, matched in any ASCII case (`ON = 1`, `OFF = 0`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub words: BTreeMap<String, f64>,
}

/// Configured words and their values.
pub type Words = Box<[(Box<str>, f64)]>;

/// The validated `value` mapping (also the word rules of a JSON mapping).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueMapping {
    /// Set when the template has no `{metric}` level.
    pub metric: Option<MetricName>,
    pub booleans: bool,
    pub words: Words,
}

/// Validates word maps: non-empty words, finite values, no two words equal in ASCII case.
pub(crate) fn validate_words(key: &str, words: BTreeMap<String, f64>) -> crate::Result<Words> {
    let mut out: Vec<(Box<str>, f64)> = Vec::with_capacity(words.len());
    for (word, v) in words {
        if word.is_empty() || !v.is_finite() {
            return Err(Error::Config {
                key: key.into(),
                reason: format!("{word:?} = {v}: a word must be non-empty and its value finite"),
            });
        }
        if out.iter().any(|(w, _)| w.eq_ignore_ascii_case(&word)) {
            return Err(Error::Config {
                key: key.into(),
                reason: format!("{word:?} is given twice (words match in any case)"),
            });
        }
        out.push((word.into(), v));
    }
    Ok(out.into())
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
    /// First non-whitespace byte `[`: SenML; `{`: the JSON object format
    /// (the `thermocline` preset).
    Auto {
        json: Box<JsonMapping>,
        senml: SenmlMapping,
    },
    /// A JSON object under a mapping (see [`crate::json`]).
    Json(Box<JsonMapping>),
    /// SenML JSON (RFC 8428).
    Senml(SenmlMapping),
    /// A bare value as text (see [`crate::value`]).
    Value(ValueMapping),
}

impl Format {
    /// The gateway's own JSON object format.
    pub fn thermocline_json() -> Self {
        Self::Json(Box::new(JsonMapping::thermocline()))
    }
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
        let format = build_format(
            key,
            &template,
            self.format,
            Mappings {
                senml: self.senml,
                json: self.json,
                value: self.value,
            },
        )?;
        Ok(Source { template, format })
    }
}

/// The raw mapping tables of a source.
#[derive(Default)]
pub(crate) struct Mappings {
    pub senml: Option<RawSenmlMapping>,
    pub json: Option<RawJsonMapping>,
    pub value: Option<RawValueMapping>,
}

/// The format of a source (or of the default source, `key` "") from its raw parts.
pub(crate) fn build_format(
    key: &str,
    template: &TopicTemplate,
    format: PayloadFormat,
    mappings: Mappings,
) -> crate::Result<Format> {
    let Mappings { senml, json, value } = mappings;
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
    let sub = |name: &str| {
        if key.is_empty() {
            format!("devices.{name}")
        } else {
            format!("{key}.{name}")
        }
    };
    if template.has_metric() && format != PayloadFormat::Value {
        return Err(error(
            key,
            if key.is_empty() { "topic_pattern" } else { "topic" },
            format!(
                "{{metric}} in the topic is only for format = \"value\"; this source's format is {:?}",
                format.as_str()
            ),
        ));
    }
    let json_mapping = |json: Option<RawJsonMapping>| -> crate::Result<Box<JsonMapping>> {
        Ok(Box::new(match json {
            None => JsonMapping::thermocline(),
            Some(raw) => raw.validate(&sub("json"))?,
        }))
    };
    Ok(match format {
        PayloadFormat::Auto => {
            if value.is_some() {
                return Err(unused("value"));
            }
            Format::Auto {
                json: json_mapping(json)?,
                senml: senml.unwrap_or_default().into(),
            }
        }
        PayloadFormat::Json => {
            if senml.is_some() {
                return Err(unused("senml"));
            }
            if value.is_some() {
                return Err(unused("value"));
            }
            Format::Json(json_mapping(json)?)
        }
        PayloadFormat::Senml => {
            if json.is_some() {
                return Err(unused("json"));
            }
            if value.is_some() {
                return Err(unused("value"));
            }
            Format::Senml(senml.unwrap_or_default().into())
        }
        PayloadFormat::Value => {
            if json.is_some() {
                return Err(unused("json"));
            }
            if senml.is_some() {
                return Err(unused("senml"));
            }
            let raw = value.unwrap_or_default();
            let metric = match (&raw.metric, template.has_metric()) {
                (Some(_), true) => {
                    return Err(error(
                        key,
                        "value.metric",
                        "the topic has a {metric} level already; remove one of them",
                    ))
                }
                (None, false) => {
                    return Err(error(
                        key,
                        "value.metric",
                        "the topic has no {metric} level: set value.metric to name the metric",
                    ))
                }
                (Some(m), false) => {
                    Some(MetricName::parse(m).map_err(|r| error(key, "value.metric", r.detail))?)
                }
                (None, true) => None,
            };
            Format::Value(ValueMapping {
                metric,
                booleans: raw.booleans,
                words: validate_words(&sub("value.words"), raw.words)?,
            })
        }
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
