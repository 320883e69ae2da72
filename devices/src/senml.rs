//! SenML JSON (RFC 8428): a JSON array of records.
//!
//! # Resolution (RFC 8428 §4)
//!
//! Base fields (`bn`, `bt`, `bv`, `bu`, `bs`, `bver`) apply to their record and
//! every later record until a record sets them again. For each record:
//!
//! - **time** = `bt` + `t` in seconds (either missing counts as 0). A resolved
//!   time below 2^28 is relative to "now" (the gateway's receive time `now_ms`),
//!   otherwise it is seconds since the Unix epoch. It becomes milliseconds as
//!   `(secs * 1000.0).round()`. A time before the epoch is `malformed`.
//! - **value** = `bv` + `v`. Overflow to infinity is `non_finite`.
//! - **metric name**: the record's own `n` when it is non-empty, else the
//!   resolved name `bn` + `n` (that is, `bn`). The device is already identified
//!   by the topic, so a base name such as `urn:dev:ow:10e2073a01080063:` is
//!   device identity, and `n` (`voltage`) is the metric. The resolved name must
//!   be non-empty (`invalid_metric` otherwise), and the chosen name goes through
//!   [`MetricName::parse`], whose character set is RFC 8428 §4.5.1's.
//! - **units** (`u`, `bu`) are type-checked and otherwise ignored: a
//!   [`Reading`] has no unit. Records that differ only in unit (RFC 8428 §5.1.3's
//!   humidity, longitude and latitude under one base name) therefore resolve to
//!   the same metric name.
//! - `seq`: SenML has none, so readings carry `None`.
//!
//! # Records without a numeric value
//!
//! - `vs`, `vb`, `vd` records, and a record with a sum `s` but no value, are
//!   non-numeric: skipped under [`NonNumericPolicy::Ignore`], the whole message
//!   rejected as `non_numeric` under [`NonNumericPolicy::Reject`]. A `v` that is
//!   a string, bool, null, object or array is always `non_numeric`.
//! - A record with only base fields (RFC 8428 §5.1.7's `{"bn": "…"}`) sets bases
//!   and yields nothing.
//! - Any other record with no value (e.g. a name and a time only) is
//!   `malformed`, as is a record with more than one of `v`, `vs`, `vb`, `vd`.
//!
//! # Other checks
//!
//! `bver` above 10 (a version this decoder does not know) is `malformed`, as is
//! any field whose label ends in `_` (RFC 8428 §4.4 "must understand"),
//! a field given twice in a record, a field of the wrong JSON type, or a pack
//! that yields no numeric readings. Unknown fields are ignored.

use std::{borrow::Cow, fmt};

use serde::{
    de::{self, IgnoredAny, MapAccess, Visitor},
    Deserialize, Deserializer,
};

use crate::{
    config::NonNumericPolicy,
    id::{DeviceId, MetricName},
    json::{from_serde, mark_out_of_range, BorrowedStr, NumOr},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
    topic::truncate,
};

/// The SenML version this decoder understands (and the default of `bver`).
pub const SENML_VERSION: u64 = 10;

/// Resolved times below this many seconds are relative to "now" (RFC 8428 §4.5.3).
pub const RELATIVE_TIME_LIMIT_SECS: f64 = 268_435_456.0; // 2^28

/// Decodes a SenML JSON pack for `device_id`; `now_ms` resolves relative times.
pub fn decode(
    payload: &[u8],
    device_id: &DeviceId,
    now_ms: i64,
    non_numeric: NonNumericPolicy,
) -> Result<Message, Rejection> {
    let records: Vec<Record<'_>> = serde_json::from_slice(payload).map_err(from_serde)?;

    let mut base_name: &str = "";
    let mut base_time = 0.0_f64;
    let mut base_value = 0.0_f64;
    let mut readings = Vec::with_capacity(records.len());
    let mut resolved = String::new();

    for (i, rec) in records.iter().enumerate() {
        if let Some(version) = rec.bver {
            if version > SENML_VERSION {
                return Err(malformed(format!(
                    "record {i}: bver {version} is newer than SenML version {SENML_VERSION}"
                )));
            }
        }
        if let Some(bn) = &rec.bn {
            base_name = bn;
        }
        if let Some(bt) = rec.bt {
            base_time = bt;
        }
        if let Some(bv) = rec.bv {
            base_value = match bv {
                NumOr::Number(v) => v,
                NumOr::Other(what) => {
                    return Err(malformed(format!("record {i}: bv is {what}, not a number")))
                }
            };
        }

        let v = match rec.value {
            Value::V(v) => v,
            Value::None if rec.s.is_some() => {
                reject_or_skip(non_numeric, i, "has a sum (s) but no value")?;
                continue;
            }
            Value::None if !rec.has_regular_field => continue, // base fields only
            Value::None => return Err(malformed(format!("record {i} has no value"))),
            Value::NonNumeric(label) => {
                reject_or_skip(non_numeric, i, label)?;
                continue;
            }
            Value::Several => {
                return Err(malformed(format!(
                    "record {i} has more than one of v, vs, vb, vd"
                )))
            }
        };

        let n = rec.n.as_deref().unwrap_or("");
        resolved.clear();
        resolved.push_str(base_name);
        resolved.push_str(n);
        if resolved.is_empty() {
            return Err(Rejection::new(
                RejectReason::InvalidMetric,
                format!("record {i} has no name (bn + n is empty)"),
            ));
        }
        let metric = MetricName::parse(if n.is_empty() { &resolved } else { n })?;

        let value = v.finite(&resolved)? + base_value;
        if !value.is_finite() {
            return Err(Rejection::new(
                RejectReason::NonFinite,
                format!(
                    "record {i} ({:?}): bv + v overflows f64",
                    truncate(&resolved, 64)
                ),
            ));
        }

        let ts_ms = resolve_time(base_time + rec.t.unwrap_or(0.0), now_ms)
            .map_err(|why| malformed(format!("record {i}: {why}")))?;

        readings.push(Reading {
            device_id: device_id.clone(),
            metric,
            ts_ms,
            value,
            seq: None,
        });
    }

    if readings.is_empty() {
        return Err(malformed("SenML pack has no numeric records"));
    }
    Ok(Message {
        device_id: device_id.clone(),
        seq: None,
        readings,
    })
}

/// Seconds (absolute, or relative to `now_ms` below 2^28) → epoch milliseconds.
/// Times too far in the future saturate to `i64::MAX` (then rejected as
/// `future_timestamp` by [`crate::decode::decode`]).
fn resolve_time(secs: f64, now_ms: i64) -> Result<i64, String> {
    if !secs.is_finite() {
        return Err("bt + t overflows f64".into());
    }
    let ms = if secs < RELATIVE_TIME_LIMIT_SECS {
        now_ms as f64 + secs * 1000.0
    } else {
        secs * 1000.0
    }
    .round();
    if ms < 0.0 {
        return Err(format!("time {secs} s resolves to before the Unix epoch"));
    }
    Ok(ms as i64) // saturating cast
}

fn reject_or_skip(policy: NonNumericPolicy, i: usize, what: &str) -> Result<(), Rejection> {
    match policy {
        NonNumericPolicy::Ignore => Ok(()),
        NonNumericPolicy::Reject => Err(Rejection::new(
            RejectReason::NonNumeric,
            format!("record {i} {what}; non-numeric SenML records are configured to be rejected"),
        )),
    }
}

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Malformed, detail)
}

/// The value fields of one record.
#[derive(Debug, Clone, Copy, Default)]
enum Value {
    #[default]
    None,
    V(NumOr),
    /// Which non-numeric field the record has.
    NonNumeric(&'static str),
    /// More than one value field (invalid per RFC 8428 §4.2).
    Several,
}

impl Value {
    fn set(&mut self, new: Value) {
        *self = match self {
            Value::None => new,
            _ => Value::Several,
        };
    }
}

/// One SenML record as written (before resolution).
#[derive(Debug, Default)]
struct Record<'a> {
    bn: Option<Cow<'a, str>>,
    bt: Option<f64>,
    bv: Option<NumOr>,
    bver: Option<u64>,
    n: Option<Cow<'a, str>>,
    t: Option<f64>,
    s: Option<f64>,
    value: Value,
    /// Whether any regular field (n, u, v*, s, t, ut) is present.
    has_regular_field: bool,
}

/// Known labels, for duplicate detection.
const LABELS: [&str; 15] = [
    "bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut",
];

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct RecordVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RecordVisitor<'a> {
            type Value = Record<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SenML record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'a>, A::Error> {
                let mut rec = Record::default();
                let mut seen = 0u16;
                while let Some(BorrowedStr(key)) = map.next_key()? {
                    let Some(bit) = LABELS.iter().position(|l| *l == key) else {
                        if key.ends_with('_') {
                            return Err(de::Error::custom(format_args!(
                                "unsupported must-understand SenML field {:?}",
                                truncate(&key, 64)
                            )));
                        }
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    if seen & (1 << bit) != 0 {
                        return Err(de::Error::custom(format_args!(
                            "SenML field {key:?} appears twice in a record"
                        )));
                    }
                    seen |= 1 << bit;
                    if !key.starts_with('b') {
                        rec.has_regular_field = true;
                    }
                    match &*key {
                        "bn" => rec.bn = Some(map.next_value::<BorrowedStr>()?.0),
                        "bt" => rec.bt = Some(map.next_value()?),
                        "bu" | "u" => {
                            map.next_value::<BorrowedStr>()?;
                        }
                        "bv" => {
                            let bv = map
                                .next_value::<NumOr>()
                                .map_err(|e| mark_out_of_range::<A::Error>(e, "bv"))?;
                            rec.bv = Some(bv);
                        }
                        "bs" => {
                            map.next_value::<f64>()?;
                        }
                        "bver" => rec.bver = Some(map.next_value()?),
                        "n" => rec.n = Some(map.next_value::<BorrowedStr>()?.0),
                        "v" => {
                            let v = map
                                .next_value::<NumOr>()
                                .map_err(|e| mark_out_of_range::<A::Error>(e, "v"))?;
                            rec.value.set(Value::V(v));
                        }
                        "vs" => {
                            map.next_value::<BorrowedStr>()?;
                            rec.value.set(Value::NonNumeric("has a string value (vs)"));
                        }
                        "vb" => {
                            map.next_value::<bool>()?;
                            rec.value.set(Value::NonNumeric("has a boolean value (vb)"));
                        }
                        "vd" => {
                            map.next_value::<BorrowedStr>()?;
                            rec.value.set(Value::NonNumeric("has a data value (vd)"));
                        }
                        "s" => rec.s = Some(map.next_value()?),
                        "t" => rec.t = Some(map.next_value()?),
                        "ut" => {
                            map.next_value::<f64>()?;
                        }
                        _ => unreachable!("every label in LABELS is matched"),
                    }
                }
                Ok(rec)
            }
        }
        de.deserialize_map(RecordVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
