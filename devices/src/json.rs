//! The gateway's JSON object format.
//!
//! ```json
//! {"ts":1732530000123,"seq":17,"metrics":{"temp":21.5,"hum":40.2}}
//! ```
//!
//! - `ts`: event time in milliseconds since the Unix epoch, a non-negative
//!   integer. Optional: absent (or `null`) means the gateway's receive time.
//! - `seq`: the device's message sequence number, an unsigned integer. Optional.
//! - `metrics`: required, a non-empty object of metric name → number. Every
//!   reading of the message gets the message's `ts` and `seq`.
//! - Other top-level keys are ignored.
//!
//! Rejections: a metric value that is a string, bool, null, object or array is
//! `non_numeric`; a number that does not fit a finite f64 (`1e999`) is
//! `non_finite`; a metric name that is not a valid [`MetricName`] is
//! `invalid_metric`; anything else (bad JSON, `NaN`, a negative or fractional
//! `ts`, a missing or empty `metrics`, a metric name given twice) is `malformed`.
//!
//! Parsing is a single pass of serde over the payload into a borrowed struct;
//! no `serde_json::Value` tree is built.
//!
//! This module also holds the JSON helpers [`crate::senml`] shares: borrowed
//! strings and the number-or-what-else value visitor.

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::{
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

use crate::{
    id::{DeviceId, MetricName},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
    topic::truncate,
};

/// Up to this many metrics, duplicate names are found by a linear scan.
const DUPLICATE_SCAN_MAX: usize = 16;

/// Decodes a JSON object payload for `device_id`; `now_ms` stands in for an absent `ts`.
pub fn decode(payload: &[u8], device_id: &DeviceId, now_ms: i64) -> Result<Message, Rejection> {
    let parsed: Payload<'_> = serde_json::from_slice(payload).map_err(from_serde)?;
    let ts_ms = match parsed.ts {
        None => now_ms,
        Some(ts) if ts < 0 => {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("ts {ts} is negative"),
            ))
        }
        Some(ts) => ts,
    };
    let metrics = parsed.metrics.0;
    if metrics.is_empty() {
        return Err(Rejection::new(
            RejectReason::Malformed,
            "`metrics` is empty",
        ));
    }
    let mut readings = Vec::with_capacity(metrics.len());
    // Duplicate names: a linear scan for typical small messages, a set for big
    // ones (a 64 KiB payload can carry thousands of metrics; O(n²) would be a DoS).
    let mut seen =
        (metrics.len() > DUPLICATE_SCAN_MAX).then(|| HashSet::with_capacity(metrics.len()));
    for (i, (name, value)) in metrics.iter().enumerate() {
        let metric = MetricName::parse(name)?;
        let value = value.finite(name)?;
        let duplicate = match &mut seen {
            Some(seen) => !seen.insert(&**name),
            None => metrics[..i].iter().any(|(earlier, _)| earlier == name),
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
            seq: parsed.seq,
        });
    }
    Ok(Message {
        device_id: device_id.clone(),
        seq: parsed.seq,
        readings,
    })
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(default)]
    ts: Option<i64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow)]
    metrics: Metrics<'a>,
}

/// The `metrics` object, in payload order.
struct Metrics<'a>(Vec<(Cow<'a, str>, NumOr)>);

impl<'de: 'a, 'a> Deserialize<'de> for Metrics<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct MetricsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MetricsVisitor<'a> {
            type Value = Metrics<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of metric name to number")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
                while let Some(BorrowedStr(name)) = map.next_key()? {
                    let value = map
                        .next_value::<NumOr>()
                        .map_err(|e| mark_out_of_range::<A::Error>(e, &name))?;
                    out.push((name, value));
                }
                Ok(Metrics(out))
            }
        }
        de.deserialize_map(MetricsVisitor(std::marker::PhantomData))
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
mod tests {
    use super::*;

    const NOW: i64 = 1_732_530_000_000;

    fn dev() -> DeviceId {
        DeviceId::parse("dev-1").unwrap()
    }

    fn ok(payload: &str) -> Message {
        decode(payload.as_bytes(), &dev(), NOW).unwrap_or_else(|e| panic!("{payload}: {e}"))
    }

    fn err(payload: &str) -> Rejection {
        decode(payload.as_bytes(), &dev(), NOW).expect_err(payload)
    }

    #[test]
    fn full_message() {
        let m = ok(r#"{"ts":1732530000123,"seq":17,"metrics":{"temp":21.5,"hum":40.2}}"#);
        assert_eq!(m.device_id, dev());
        assert_eq!(m.seq, Some(17));
        let got: Vec<_> = m
            .readings
            .iter()
            .map(|r| {
                (
                    r.metric.as_str(),
                    r.ts_ms,
                    r.value,
                    r.seq,
                    r.device_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("temp", 1_732_530_000_123, 21.5, Some(17), "dev-1"),
                ("hum", 1_732_530_000_123, 40.2, Some(17), "dev-1"),
            ]
        );
    }

    #[test]
    fn optional_fields_and_unknown_keys() {
        let m = ok(r#"{"metrics":{"t":1},"fw":"1.2","extra":{"a":[1,2,{"b":null}]}}"#);
        assert_eq!(m.seq, None);
        assert_eq!(m.readings[0].ts_ms, NOW);
        assert_eq!(m.readings[0].value, 1.0);
        let m = ok(r#"{"ts":null,"seq":null,"metrics":{"t":-3}}"#);
        assert_eq!((m.readings[0].ts_ms, m.seq), (NOW, None));
        let m = ok(" \n{\"ts\":0,\"metrics\":{\"t\":0}} \t");
        assert_eq!(m.readings[0].ts_ms, 0);
    }

    #[test]
    fn numbers_of_every_json_shape() {
        let m = ok(
            r#"{"metrics":{"i":-7,"u":18446744073709551615,"f":1.5e3,"big":1e300,"tiny":5e-324,"z":-0.0}}"#,
        );
        let values: Vec<f64> = m.readings.iter().map(|r| r.value).collect();
        assert_eq!(
            values,
            [-7.0, 18446744073709551615.0, 1500.0, 1e300, 5e-324, -0.0]
        );
    }

    #[test]
    fn escaped_metric_names_are_decoded() {
        let m = ok(r#"{"metrics":{"a\/b":1,"\u0074emp":2}}"#);
        let names: Vec<_> = m.readings.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names, ["a/b", "temp"]);
    }

    #[test]
    fn non_numeric_values() {
        for v in [r#""hot""#, "true", "null", "{}", r#"{"v":1}"#, "[1]", "[]"] {
            let e = err(&format!(r#"{{"metrics":{{"ok":1,"temp":{v}}}}}"#));
            assert_eq!(e.reason, RejectReason::NonNumeric, "{v}: {e}");
            assert!(e.detail.contains("temp"), "{}", e.detail);
        }
    }

    #[test]
    fn overflowing_numbers_are_non_finite() {
        for v in ["1e999", "-1e999", &format!("1{}", "0".repeat(400))] {
            let e = err(&format!(r#"{{"metrics":{{"temp":{v}}}}}"#));
            assert_eq!(e.reason, RejectReason::NonFinite, "{v}: {e}");
            assert!(e.detail.contains("temp"), "{}", e.detail);
        }
        // An overflowing `ts` is a malformed timestamp, not a value problem.
        assert_eq!(
            err(r#"{"ts":1e999,"metrics":{"temp":1}}"#).reason,
            RejectReason::Malformed
        );
    }

    #[test]
    fn malformed_payloads() {
        for p in [
            "",
            "{",
            "[]",
            "42",
            r#"{"metrics":{"t":NaN}}"#,
            r#"{"metrics":{"t":Infinity}}"#,
            r#"{"metrics":{}}"#,
            r#"{"ts":1}"#,
            r#"{"metrics":[1,2]}"#,
            r#"{"metrics":null}"#,
            r#"{"ts":-1,"metrics":{"t":1}}"#,
            r#"{"ts":1.5,"metrics":{"t":1}}"#,
            r#"{"ts":"2024-01-01","metrics":{"t":1}}"#,
            r#"{"ts":9223372036854775808,"metrics":{"t":1}}"#,
            r#"{"seq":-1,"metrics":{"t":1}}"#,
            r#"{"metrics":{"t":1,"t":2}}"#,
            r#"{"ts":1,"ts":2,"metrics":{"t":1}}"#,
            r#"{"metrics":{"t":1}} trailing"#,
            r#"{"metrics":{"t":01}}"#,
        ] {
            assert_eq!(err(p).reason, RejectReason::Malformed, "{p:?}");
        }
        let invalid_utf8 = b"{\"metrics\":{\"t\xff\":1}}";
        assert_eq!(
            decode(invalid_utf8, &dev(), NOW).unwrap_err().reason,
            RejectReason::Malformed
        );
    }

    #[test]
    fn invalid_metric_names() {
        for name in ["", " temp", "温度", "a b", "_x", &"m".repeat(129)] {
            let p = serde_json::json!({ "metrics": { name: 1.0 } }).to_string();
            assert_eq!(err(&p).reason, RejectReason::InvalidMetric, "{name:?}");
        }
    }

    #[test]
    fn duplicates_found_in_large_messages_too() {
        let mut metrics: Vec<String> = (0..5000).map(|i| format!(r#""m{i}":{i}"#)).collect();
        let body = format!(r#"{{"metrics":{{{}}}}}"#, metrics.join(","));
        assert_eq!(ok(&body).readings.len(), 5000);
        metrics.push(r#""m17":1"#.into());
        let body = format!(r#"{{"metrics":{{{}}}}}"#, metrics.join(","));
        let e = err(&body);
        assert_eq!(e.reason, RejectReason::Malformed);
        assert!(e.detail.contains("m17"), "{}", e.detail);
    }

    #[test]
    fn first_bad_metric_rejects_the_whole_message() {
        let e = err(r#"{"metrics":{"good":1,"bad name":2,"worse":"x"}}"#);
        assert_eq!(e.reason, RejectReason::InvalidMetric);
    }
}
