//! The JSON mapping's config: the presets, `[devices.sources.json]` as
//! written ([`RawJsonMapping`]) and validated ([`JsonMapping`]).

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::{
    config::NonNumericPolicy,
    error::Error,
    source::{validate_words, ValueMapping},
};

/// Largest accepted `max_depth`.
pub const MAX_DEPTH_LIMIT: u32 = 32;

/// The base a `[devices.sources.json]` table starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonPreset {
    /// `{"ts","seq","metrics"}`: the gateway's own format.
    Thermocline,
    /// The whole object, flattened; no ts, no seq; non-numeric ignored.
    Generic,
}

/// How a timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TsFormat {
    EpochMs,
    EpochS,
    Iso8601,
}

/// `json = {…}` of a source as written; every key overrides the preset's value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJsonMapping {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<JsonPreset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flatten: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_format: Option<TsFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_numeric: Option<NonNumericPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booleans: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<BTreeMap<String, f64>>,
}

/// A validated JSON mapping.
#[derive(Debug, Clone)]
pub struct JsonMapping {
    pub(super) metrics: Box<[Box<str>]>,
    pub(super) separator: Box<str>,
    pub(super) flatten: bool,
    pub(super) max_depth: usize,
    pub(super) ts: Option<Box<[Box<str>]>>,
    pub(super) ts_format: TsFormat,
    pub(super) time_zone: jiff::tz::TimeZone,
    pub(super) seq: Option<Box<[Box<str>]>>,
    pub(super) include: Option<(Vec<String>, GlobSet)>,
    pub(super) exclude: Option<(Vec<String>, GlobSet)>,
    pub(super) non_numeric: NonNumericPolicy,
    pub(super) words: ValueMapping,
}

impl PartialEq for JsonMapping {
    fn eq(&self, o: &Self) -> bool {
        let globs = |g: &Option<(Vec<String>, GlobSet)>| g.as_ref().map(|(p, _)| p.clone());
        self.metrics == o.metrics
            && self.separator == o.separator
            && self.flatten == o.flatten
            && self.max_depth == o.max_depth
            && self.ts == o.ts
            && self.ts_format == o.ts_format
            && self.time_zone.iana_name() == o.time_zone.iana_name()
            && self.seq == o.seq
            && globs(&self.include) == globs(&o.include)
            && globs(&self.exclude) == globs(&o.exclude)
            && self.non_numeric == o.non_numeric
            && self.words == o.words
    }
}

fn path(dotted: &str) -> Box<[Box<str>]> {
    if dotted.is_empty() {
        Box::new([])
    } else {
        dotted.split('.').map(Box::from).collect()
    }
}

impl JsonMapping {
    /// The gateway's own `{"ts","seq","metrics"}` format.
    pub fn thermocline() -> Self {
        Self {
            metrics: path("metrics"),
            separator: ".".into(),
            flatten: false,
            max_depth: 8,
            ts: Some(path("ts")),
            ts_format: TsFormat::EpochMs,
            time_zone: jiff::tz::TimeZone::UTC,
            seq: Some(path("seq")),
            include: None,
            exclude: None,
            non_numeric: NonNumericPolicy::Reject,
            words: ValueMapping::default(),
        }
    }

    /// The whole object, flattened with `.`; no ts or seq; non-numeric ignored.
    pub fn generic() -> Self {
        Self {
            metrics: path(""),
            flatten: true,
            ts: None,
            seq: None,
            non_numeric: NonNumericPolicy::Ignore,
            ..Self::thermocline()
        }
    }
}

fn globs(key: &str, patterns: Vec<String>) -> crate::Result<Option<(Vec<String>, GlobSet)>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in &patterns {
        b.add(Glob::new(p).map_err(|e| Error::Config {
            key: key.into(),
            reason: format!("{p:?} is not a glob: {e}"),
        })?);
    }
    let set = b.build().map_err(|e| Error::Config {
        key: key.into(),
        reason: e.to_string(),
    })?;
    Ok(Some((patterns, set)))
}

impl RawJsonMapping {
    /// Validates into a [`JsonMapping`]; `key` is the table's full key
    /// (`devices.sources[1].json`).
    pub fn validate(self, key: &str) -> crate::Result<JsonMapping> {
        let invalid = |sub: &str, reason: String| Error::Config {
            key: format!("{key}.{sub}"),
            reason,
        };
        let base = match self.preset.unwrap_or(JsonPreset::Generic) {
            JsonPreset::Thermocline => JsonMapping::thermocline(),
            JsonPreset::Generic => JsonMapping::generic(),
        };
        let check_path = |sub: &str, p: &str| {
            if p.split('.').any(str::is_empty) && !p.is_empty() {
                Err(invalid(sub, format!("{p:?} has an empty segment")))
            } else {
                Ok(path(p))
            }
        };
        let metrics = match &self.metrics {
            Some(p) => check_path("metrics", p)?,
            None => base.metrics.clone(),
        };
        let field = |sub: &str, given: &Option<String>, base: &Option<Box<[Box<str>]>>| {
            Ok::<_, Error>(match given {
                Some(p) if p.is_empty() => None,
                Some(p) => Some(check_path(sub, p)?),
                None => base.clone(),
            })
        };
        let ts = field("ts_field", &self.ts_field, &base.ts)?;
        let seq = field("seq_field", &self.seq_field, &base.seq)?;
        let separator: Box<str> = match self.separator {
            Some(s) => {
                let ok = !s.is_empty()
                    && s.len() <= 4
                    && s.chars().all(|c| matches!(c, '-' | ':' | '.' | '/' | '_'));
                if !ok {
                    return Err(invalid(
                        "separator",
                        format!("{s:?}: 1-4 of the metric name characters - : . / _"),
                    ));
                }
                s.into()
            }
            None => base.separator.clone(),
        };
        let max_depth = match self.max_depth {
            Some(d) if (1..=MAX_DEPTH_LIMIT).contains(&d) => d as usize,
            Some(d) => {
                return Err(invalid(
                    "max_depth",
                    format!("{d} is out of range: 1-{MAX_DEPTH_LIMIT}"),
                ))
            }
            None => base.max_depth,
        };
        let time_zone = match &self.time_zone {
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
                invalid(
                    "time_zone",
                    format!("{name:?} is not a known IANA time zone: {e}"),
                )
            })?,
            None => base.time_zone.clone(),
        };
        let ts_format = self.ts_format.unwrap_or(base.ts_format);
        if ts_format != TsFormat::Iso8601 && self.time_zone.is_some() {
            return Err(invalid(
                "time_zone",
                "only zone-less text has a time zone to apply: set ts_format = \"iso8601\"".into(),
            ));
        }
        if let (Some(t), Some(s)) = (&ts, &seq) {
            if t == s {
                return Err(invalid("seq_field", "is the same field as ts_field".into()));
            }
        }
        Ok(JsonMapping {
            metrics,
            separator,
            flatten: self.flatten.unwrap_or(base.flatten),
            max_depth,
            ts,
            ts_format,
            time_zone,
            seq,
            include: globs(&format!("{key}.include"), self.include.unwrap_or_default())?,
            exclude: globs(&format!("{key}.exclude"), self.exclude.unwrap_or_default())?,
            non_numeric: self.non_numeric.unwrap_or(base.non_numeric),
            words: ValueMapping {
                metric: None,
                booleans: self.booleans.unwrap_or(base.words.booleans),
                words: match self.words {
                    Some(w) => validate_words(&format!("{key}.words"), w)?,
                    None => base.words.words.clone(),
                },
            },
        })
    }
}
