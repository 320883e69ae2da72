//! JSON objects under a mapping: the gateway's own format and device families'.
//!
//! A [`JsonMapping`] says where a payload's metrics, timestamp and sequence
//! number are. The gateway's own shape is the preset `thermocline`:
//!
//! ```json
//! {"ts":1732530000123,"seq":17,"metrics":{"temp":21.5,"hum":40.2}}
//! ```
//!
//! (metrics under `metrics`, not flattened; `ts` epoch ms; `seq`; non-numeric
//! values rejected), and other shapes are mappings over the preset `generic`:
//!
//! ```toml
//! [devices.sources.json]          # Tasmota: {"Time":"2026-12-01T11:05:00","AM2301":{"Temperature":21.5}}
//! ts_field = "Time"
//! ts_format = "iso8601"
//! time_zone = "Europe/Berlin"
//! exclude = ["TempUnit"]
//! ```
//!
//! - `metrics`: the dotted path of the object holding the metrics; `""` = the
//!   whole payload. `ts_field`, `seq_field`: dotted paths (`StatusSNS.Time`);
//!   `""` = none. Those fields are never metrics.
//! - `flatten` (generic: on): nested objects become metrics named by their path
//!   joined with `separator` (`.`): `{"AM2301":{"Temperature":21.5}}` →
//!   `AM2301.Temperature`, at most `max_depth` (8) levels below `metrics`
//!   (deeper is `malformed`). Off: a nested object is a non-numeric value.
//! - `ts_format`: `epoch_ms` (a non-negative integer), `epoch_s` (a number,
//!   rounded to ms) or `iso8601` (RFC 3339 text with an offset or `Z`, or
//!   zone-less ISO 8601 `2026-12-01T11:05:00` read in `time_zone`, an IANA
//!   name, default `UTC`; a local time that a DST change skips or repeats is
//!   taken as the earlier offset's, jiff's "compatible" rule). A missing or
//!   `null` ts is the arrival time; a ts of the wrong type is `malformed`.
//! - `include` / `exclude`: globs over the metric names (`*` also crosses the
//!   separator); a name must match an include (when any are given) and no exclude.
//! - `non_numeric`: a string, bool, null, array (or unflattened object) is
//!   skipped (`ignore`, generic) or rejects the message (`reject`, thermocline),
//!   after `booleans` (true/false as 1/0) and `words` (`ON = 1`) are applied.
//!
//! Rejections: a metric value that is not a number (under `reject`) is
//! `non_numeric`; a number that does not fit a finite f64 (`1e999`) is
//! `non_finite`; a metric name that is not a valid [`MetricName`] is
//! `invalid_metric`; more metrics than `devices.max_metrics_per_message` is
//! `too_large` (the walk stops there); anything else (bad JSON, `NaN`, a
//! missing `metrics` object, a bad `ts` or `seq`, a field or metric name given
//! twice, nesting deeper than `max_depth`) is `malformed`.
//!
//! Parsing is a single pass of serde over the payload, guided by the mapping;
//! no `serde_json::Value` tree is built, and keys are borrowed from the payload.
//! The walk recurses only into the metrics object (at most `max_depth`) and
//! the parents of the configured fields; everything else is skipped by
//! serde_json without recursion, however deep.
//!
//! This module also holds the JSON helpers [`crate::senml`] shares: borrowed
//! strings and the number-or-what-else value visitor.

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::{
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

use crate::{
    config::NonNumericPolicy,
    id::{DeviceId, MetricName},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
    topic::truncate,
};

mod mapping;

pub use mapping::{JsonMapping, JsonPreset, RawJsonMapping, TsFormat, MAX_DEPTH_LIMIT};

/// Up to this many metrics, duplicate names are found by a linear scan.
const DUPLICATE_SCAN_MAX: usize = 16;
/// Decodes a JSON object payload for `device_id` under `map`; `now_ms` stands
/// in for an absent `ts`; more than `max_metrics` readings is `too_large`.
pub fn decode(
    payload: &[u8],
    device_id: &DeviceId,
    now_ms: i64,
    map: &JsonMapping,
    max_metrics: usize,
) -> Result<Message, Rejection> {
    let mut walk = Walk {
        map,
        path: Vec::with_capacity(8),
        leaves: Vec::new(),
        ts: None,
        seq: None,
        metrics_seen: false,
        max_metrics,
        fail: None,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = Node {
        w: &mut walk,
        role: Role::Root,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(rejection) = walk.fail.take() {
        return Err(rejection);
    }
    parsed.map_err(from_serde)?;
    if !map.metrics.is_empty() && !walk.metrics_seen {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("no `{}` object", map.metrics.join(".")),
        ));
    }
    let ts_ms = match walk.ts.take() {
        None | Some(Ts::Null) => now_ms,
        Some(ts) => ts.millis(map)?,
    };
    let seq = walk.seq;
    let leaves = walk.leaves;
    if leaves.is_empty() {
        return Err(Rejection::new(
            RejectReason::Malformed,
            "no numeric metrics in the object",
        ));
    }
    let mut readings = Vec::with_capacity(leaves.len());
    // Duplicate names: a linear scan for typical small messages, a set for big
    // ones (a 64 KiB payload can carry thousands of metrics; O(n²) would be a DoS).
    let mut seen =
        (leaves.len() > DUPLICATE_SCAN_MAX).then(|| HashSet::with_capacity(leaves.len()));
    for (i, (name, value)) in leaves.iter().enumerate() {
        let metric = MetricName::parse(name)?;
        let value = value.finite(name)?;
        let duplicate = match &mut seen {
            Some(seen) => !seen.insert(&**name),
            None => leaves[..i].iter().any(|(earlier, _)| earlier == name),
        };
        if duplicate {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("metric {:?} appears twice", truncate(name, 64)),
            ));
        }
        readings.push(Reading {
            device_id: device_id.clone(),
            metric,
            ts_ms,
            value,
            seq,
        });
    }
    Ok(Message {
        device_id: device_id.clone(),
        seq,
        readings,
    })
}

/// A timestamp as found, converted once the walk is done.
enum Ts<'de> {
    Null,
    Int(i128),
    Float(f64),
    Text(Cow<'de, str>),
    Other(&'static str),
}

/// Largest accepted epoch_s timestamp in ms, below i64::MAX as an f64.
const TS_S_MAX_MS: f64 = 9.0e18;

impl Ts<'_> {
    fn millis(self, map: &JsonMapping) -> Result<i64, Rejection> {
        let bad = |why: String| Rejection::new(RejectReason::Malformed, format!("ts {why}"));
        let ms: i128 = match (map.ts_format, self) {
            (TsFormat::EpochMs, Ts::Int(ms)) => ms,
            (TsFormat::EpochMs, Ts::Float(f)) => {
                return Err(bad(format!("{f} is not an integer of milliseconds")))
            }
            (TsFormat::EpochS, Ts::Int(s)) => s.saturating_mul(1000),
            (TsFormat::EpochS, Ts::Float(s)) => {
                let ms = (s * 1000.0).round();
                if !(0.0..=TS_S_MAX_MS).contains(&ms) {
                    return Err(bad(format!("{s} s is out of range")));
                }
                ms as i128
            }
            (TsFormat::Iso8601, Ts::Text(text)) => {
                iso8601_ms(&text, &map.time_zone).ok_or_else(|| {
                    bad(format!(
                        "{:?} is neither RFC 3339 nor zone-less ISO 8601 date-time",
                        truncate(&text, 40)
                    ))
                })? as i128
            }
            (fmt, Ts::Text(_)) => return Err(bad(format!("is text; ts_format is {fmt:?}"))),
            (fmt, Ts::Int(_) | Ts::Float(_)) => {
                return Err(bad(format!("is a number; ts_format is {fmt:?}")))
            }
            (_, Ts::Other(what)) => return Err(bad(format!("is {what}"))),
            (_, Ts::Null) => unreachable!("null ts is the arrival time"),
        };
        if ms < 0 {
            return Err(bad(format!("{ms} is negative")));
        }
        i64::try_from(ms).map_err(|_| bad(format!("{ms} is out of range")))
    }
}

/// RFC 3339 (with an offset) or a zone-less ISO 8601 date-time in `tz`, as ms.
fn iso8601_ms(text: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    let zoned = civil.to_zoned(tz.clone()).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// What the walk gathered.
struct Walk<'m, 'de> {
    map: &'m JsonMapping,
    /// Keys from the root to the current value.
    path: Vec<Cow<'de, str>>,
    /// (metric name, value) in payload order, already filtered.
    leaves: Vec<(String, NumOr)>,
    ts: Option<Ts<'de>>,
    seq: Option<u64>,
    metrics_seen: bool,
    max_metrics: usize,
    /// Set before a walk is aborted with a typed reason.
    fail: Option<Rejection>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Ts,
    Seq,
    MetricsRoot,
    /// Inside the metrics object, at this depth below it (1 = its own keys).
    Metric(usize),
    /// On the way to the ts, seq or metrics field.
    Ancestor,
    Ignore,
}

fn is(path: &[Cow<'_, str>], target: &[Box<str>]) -> bool {
    path.len() == target.len() && path.iter().zip(target).all(|(a, b)| **a == **b)
}

fn is_prefix(path: &[Cow<'_, str>], target: &[Box<str>]) -> bool {
    path.len() < target.len() && path.iter().zip(target).all(|(a, b)| **a == **b)
}

impl<'de> Walk<'_, 'de> {
    fn role(&self) -> Role {
        let map = self.map;
        let p = &self.path[..];
        if map.ts.as_deref().is_some_and(|t| is(p, t)) {
            return Role::Ts;
        }
        if map.seq.as_deref().is_some_and(|s| is(p, s)) {
            return Role::Seq;
        }
        if !map.metrics.is_empty() && is(p, &map.metrics) {
            return Role::MetricsRoot;
        }
        if p.len() > map.metrics.len() && p.iter().zip(map.metrics.iter()).all(|(a, b)| **a == **b)
        {
            return Role::Metric(p.len() - map.metrics.len());
        }
        let on_the_way = is_prefix(p, &map.metrics)
            || map.ts.as_deref().is_some_and(|t| is_prefix(p, t))
            || map.seq.as_deref().is_some_and(|s| is_prefix(p, s));
        if on_the_way {
            Role::Ancestor
        } else {
            Role::Ignore
        }
    }

    fn abort<E: de::Error>(&mut self, reason: RejectReason, detail: String) -> E {
        self.fail = Some(Rejection::new(reason, detail));
        E::custom("aborted")
    }

    /// The current metric's name: the keys below `metrics`, joined.
    fn metric_name(&self) -> String {
        let parts = &self.path[self.map.metrics.len()..];
        let mut name = String::with_capacity(
            parts
                .iter()
                .map(|p| p.len() + self.map.separator.len())
                .sum(),
        );
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                name.push_str(&self.map.separator);
            }
            name.push_str(part);
        }
        name
    }

    fn leaf<E: de::Error>(&mut self, value: NumOr) -> Result<(), E> {
        let name = self.metric_name();
        if let Some((_, set)) = &self.map.include {
            if !set.is_match(&name) {
                return Ok(());
            }
        }
        if let Some((_, set)) = &self.map.exclude {
            if set.is_match(&name) {
                return Ok(());
            }
        }
        if matches!(value, NumOr::Other(_)) && self.map.non_numeric == NonNumericPolicy::Ignore {
            return Ok(());
        }
        if self.leaves.len() >= self.max_metrics {
            let max = self.max_metrics;
            return Err(self.abort(
                RejectReason::TooLarge,
                format!("more than {max} metrics in one message (devices.max_metrics_per_message)"),
            ));
        }
        self.leaves.push((name, value));
        Ok(())
    }

    fn word(&self, text: &str) -> NumOr {
        match crate::value::word(text, &self.map.words) {
            Some(v) => NumOr::Number(v),
            None => NumOr::Other("a string"),
        }
    }
}

/// One value of the payload, visited in its role.
struct Node<'w, 'm, 'de> {
    w: &'w mut Walk<'m, 'de>,
    role: Role,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Node<'_, '_, 'de> {
    /// A scalar (or a skipped container) in this node's role.
    fn scalar<E: de::Error>(self, v: Scalar<'de>) -> Result<(), E> {
        let w = self.w;
        match self.role {
            Role::Root => Err(w.abort(
                RejectReason::Malformed,
                format!("payload is {}, not a JSON object", v.what()),
            )),
            Role::MetricsRoot => {
                let at = w.map.metrics.join(".");
                Err(w.abort(
                    RejectReason::Malformed,
                    format!("`{at}` is {}, not an object", v.what()),
                ))
            }
            Role::Ts => {
                if w.ts.is_some() {
                    return Err(w.abort(RejectReason::Malformed, "ts appears twice".into()));
                }
                w.ts = Some(match v {
                    Scalar::Int(i) => Ts::Int(i),
                    Scalar::Float(f) => Ts::Float(f),
                    Scalar::Str(s) => Ts::Text(Cow::Owned(s)),
                    Scalar::BorrowedStr(s) => Ts::Text(Cow::Borrowed(s)),
                    Scalar::Null => Ts::Null,
                    other => Ts::Other(other.what()),
                });
                Ok(())
            }
            Role::Seq => {
                let seq = match v {
                    Scalar::Null => None,
                    Scalar::Int(i) => match u64::try_from(i) {
                        Ok(s) => Some(s),
                        Err(_) => {
                            return Err(w.abort(
                                RejectReason::Malformed,
                                format!("seq {i} is not an unsigned 64-bit integer"),
                            ))
                        }
                    },
                    other => {
                        return Err(w.abort(
                            RejectReason::Malformed,
                            format!("seq is {}, not an unsigned integer", other.what()),
                        ))
                    }
                };
                if w.seq.is_some() {
                    return Err(w.abort(RejectReason::Malformed, "seq appears twice".into()));
                }
                w.seq = seq;
                Ok(())
            }
            Role::Metric(_) => {
                let value = match v {
                    Scalar::Int(i) => NumOr::Number(i as f64),
                    Scalar::Float(f) => NumOr::Number(f),
                    Scalar::Bool(b) if w.map.words.booleans => {
                        NumOr::Number(f64::from(u8::from(b)))
                    }
                    Scalar::Str(ref s) => w.word(s),
                    Scalar::BorrowedStr(s) => w.word(s),
                    other => NumOr::Other(other.what()),
                };
                w.leaf(value)
            }
            Role::Ancestor | Role::Ignore => Ok(()),
        }
    }
}

/// A non-object JSON value.
enum Scalar<'de> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    BorrowedStr(&'de str),
    Null,
    Array,
    /// An object that is not walked (flattening off).
    Object,
}

impl Scalar<'_> {
    fn what(&self) -> &'static str {
        match self {
            Scalar::Int(_) | Scalar::Float(_) => "a number",
            Scalar::Bool(_) => "a bool",
            Scalar::Str(_) | Scalar::BorrowedStr(_) => "a string",
            Scalar::Null => "null",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Int(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.scalar(Scalar::BorrowedStr(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.scalar(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let w = self.w;
        match self.role {
            Role::Root | Role::Ancestor => {}
            Role::MetricsRoot => w.metrics_seen = true,
            Role::Metric(depth) if w.map.flatten => {
                if depth >= w.map.max_depth {
                    let max = w.map.max_depth;
                    return Err(w.abort(
                        RejectReason::Malformed,
                        format!("metrics nested deeper than {max} levels (json.max_depth)"),
                    ));
                }
            }
            Role::Ignore | Role::Ts | Role::Seq | Role::Metric(_) => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Node { w, role: self.role }.scalar(Scalar::Object);
            }
        }
        while let Some(BorrowedStr(key)) = map.next_key()? {
            w.path.push(key);
            let role = w.role();
            let result = map.next_value_seed(Node { w: &mut *w, role });
            let key = w.path.pop().unwrap_or_default();
            match result {
                Err(e) if matches!(role, Role::Metric(_)) => {
                    return Err(mark_out_of_range::<A::Error>(e, &key))
                }
                // An overflow in a ts or seq below a metric-role object stays
                // malformed: quote it so the outer levels do not re-tag it.
                Err(e) if e.to_string().starts_with("number out of range") => {
                    return Err(de::Error::custom(format_args!(
                        "{:?}: {e}",
                        truncate(&key, 64)
                    )))
                }
                other => other?,
            }
        }
        Ok(())
    }
}

/// A string that borrows from the payload unless it had escapes.
pub(crate) struct BorrowedStr<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        de.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

/// A JSON value in a number slot: the number, or what it was instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NumOr {
    Number(f64),
    /// Not a number: "a string", "a bool", "null", "an object", "an array".
    Other(&'static str),
}

impl NumOr {
    /// The number, or the rejection for `name`'s value.
    pub(crate) fn finite(self, name: &str) -> Result<f64, Rejection> {
        match self {
            NumOr::Number(v) if v.is_finite() => Ok(v),
            NumOr::Number(v) => Err(Rejection::new(
                RejectReason::NonFinite,
                format!("metric {:?} value {v} is not finite", truncate(name, 64)),
            )),
            NumOr::Other(what) => Err(Rejection::new(
                RejectReason::NonNumeric,
                format!(
                    "metric {:?} value is {what}, not a number",
                    truncate(name, 64)
                ),
            )),
        }
    }
}

impl<'de> Deserialize<'de> for NumOr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct NumVisitor;
        impl<'de> Visitor<'de> for NumVisitor {
            type Value = NumOr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumOr, E> {
                Ok(NumOr::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumOr, E> {
                Ok(NumOr::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumOr, E> {
                Ok(NumOr::Number(v))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<NumOr, E> {
                Ok(NumOr::Other("a string"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NumOr, E> {
                Ok(NumOr::Other("a bool"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NumOr, E> {
                Ok(NumOr::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<NumOr, E> {
                Ok(NumOr::Other("null"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NumOr, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NumOr::Other("an object"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NumOr, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NumOr::Other("an array"))
            }
        }
        de.deserialize_any(NumVisitor)
    }
}

/// Prefix of a serde error raised for a value number that overflows f64.
///
/// serde_json fails the whole parse with "number out of range" on `1e999`
/// before any visitor sees it, so the value slots that care re-tag that error
/// with this marker, and [`from_serde`] turns it into `non_finite` (an overflow
/// elsewhere, such as in `ts`, stays `malformed`).
const NON_FINITE_MARKER: &str = "non-finite value: ";

/// Re-tags serde_json's "number out of range" error for value slot `name`.
pub(crate) fn mark_out_of_range<E: de::Error>(err: E, name: &str) -> E {
    let text = err.to_string();
    if text.starts_with("number out of range") {
        E::custom(format_args!(
            "{NON_FINITE_MARKER}{:?} overflows f64",
            truncate(name, 64)
        ))
    } else {
        err
    }
}

/// Maps a serde_json error to a rejection: `non_finite` when tagged by
/// [`mark_out_of_range`], else `malformed`.
pub(crate) fn from_serde(err: serde_json::Error) -> Rejection {
    let text = err.to_string();
    match text.strip_prefix(NON_FINITE_MARKER) {
        Some(rest) => Rejection::new(RejectReason::NonFinite, rest),
        None => Rejection::new(RejectReason::Malformed, text),
    }
}

#[cfg(test)]
mod tests;
