//! The `value` format: a bare value as text, one reading per message.
//!
//! ```text
//! shellies/shelly1pm-A1B2C3/relay/0/power   →   "21.5"
//! ```
//!
//! - A number as text (`21.5`, `-3e2`, ` 7 `; ASCII whitespace around it is
//!   trimmed): only `0-9 + - . e E`, so `inf` or `NaN` never parse; a number
//!   that overflows f64 (`1e999`) is `non_finite`.
//! - With `booleans = true`: `true` → 1, `false` → 0 (any ASCII case).
//! - `words`: configured words and their values (`ON = 1`, `OFF = 0`),
//!   matched in any ASCII case.
//! - Anything else is `non_numeric`; an empty or non-UTF-8 payload is `malformed`.
//!
//! The metric is the topic's `{metric}` level, or the source's `value.metric`
//! when the template has none; the time is the arrival time; no seq.

use crate::{
    id::{DeviceId, MetricName},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
    source::ValueMapping,
    topic::truncate,
};

/// Numbers as text longer than this are `malformed` (no real device sends them).
const MAX_NUMBER_TEXT: usize = 512;

/// Decodes a bare value for `device_id`'s `metric` at `now_ms`.
pub fn decode(
    payload: &[u8],
    device_id: &DeviceId,
    metric: MetricName,
    now_ms: i64,
    mapping: &ValueMapping,
) -> Result<Message, Rejection> {
    let value = parse(payload, mapping)?;
    Ok(Message {
        device_id: device_id.clone(),
        seq: None,
        readings: vec![Reading {
            device_id: device_id.clone(),
            metric,
            ts_ms: now_ms,
            value,
            seq: None,
        }],
    })
}

/// The value of a bare-value payload under `mapping`.
pub fn parse(payload: &[u8], mapping: &ValueMapping) -> Result<f64, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::new(RejectReason::Malformed, "value is not UTF-8 text"))?
        .trim_ascii();
    if text.is_empty() {
        return Err(Rejection::new(RejectReason::Malformed, "empty value"));
    }
    if let Some(v) = word(text, mapping) {
        return Ok(v);
    }
    let numeric_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !numeric_chars {
        return Err(Rejection::new(
            RejectReason::NonNumeric,
            format!(
                "value {:?} is not a number{}",
                truncate(text, 32),
                if mapping.booleans || !mapping.words.is_empty() {
                    ", a boolean or a configured word"
                } else {
                    ""
                }
            ),
        ));
    }
    if text.len() > MAX_NUMBER_TEXT {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!(
                "number text is {} bytes, more than {MAX_NUMBER_TEXT}",
                text.len()
            ),
        ));
    }
    let v: f64 = text.parse().map_err(|_| {
        Rejection::new(
            RejectReason::Malformed,
            format!("{:?} is not a number", truncate(text, 32)),
        )
    })?;
    if !v.is_finite() {
        return Err(Rejection::new(
            RejectReason::NonFinite,
            format!("{:?} overflows f64", truncate(text, 32)),
        ));
    }
    Ok(v)
}

/// A boolean or configured word's value, if `text` is one.
pub(crate) fn word(text: &str, mapping: &ValueMapping) -> Option<f64> {
    if mapping.booleans {
        if text.eq_ignore_ascii_case("true") {
            return Some(1.0);
        }
        if text.eq_ignore_ascii_case("false") {
            return Some(0.0);
        }
    }
    mapping
        .words
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(text))
        .map(|&(_, v)| v)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mapping() -> ValueMapping {
        ValueMapping {
            metric: None,
            booleans: true,
            words: vec![
                ("ON".into(), 1.0),
                ("off".into(), 0.0),
                ("open".into(), 100.0),
            ]
            .into(),
        }
    }

    fn value(text: &str) -> Result<f64, Rejection> {
        parse(text.as_bytes(), &mapping())
    }

    #[test]
    fn numbers_booleans_and_words() {
        for (text, want) in [
            ("21.5", 21.5),
            ("-3e2", -300.0),
            (" 7\n", 7.0),
            ("0.00", 0.0),
            ("+1", 1.0),
            (".5", 0.5),
            ("true", 1.0),
            ("FALSE", 0.0),
            ("on", 1.0),
            ("OFF", 0.0),
            ("Open", 100.0),
        ] {
            assert_eq!(value(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn what_is_not_a_value_is_rejected_with_a_reason() {
        for (text, reason) in [
            ("", RejectReason::Malformed),
            ("  ", RejectReason::Malformed),
            ("1.2.3", RejectReason::Malformed),
            ("--1", RejectReason::Malformed),
            ("e", RejectReason::Malformed),
            ("inf", RejectReason::NonNumeric),
            ("NaN", RejectReason::NonNumeric),
            ("infinity", RejectReason::NonNumeric),
            ("hot", RejectReason::NonNumeric),
            ("1 2", RejectReason::NonNumeric),
            ("0x10", RejectReason::NonNumeric),
            ("1e999", RejectReason::NonFinite),
            ("-1e999", RejectReason::NonFinite),
        ] {
            assert_eq!(value(text).unwrap_err().reason, reason, "{text:?}");
        }
        let long = "1".repeat(513);
        assert_eq!(value(&long).unwrap_err().reason, RejectReason::Malformed);
        assert_eq!(
            parse(b"\xff1", &mapping()).unwrap_err().reason,
            RejectReason::Malformed
        );
        let plain = ValueMapping::default();
        let err = parse(b"true", &plain).unwrap_err();
        assert_eq!(err.reason, RejectReason::NonNumeric);
        assert_eq!(err.detail, "value \"true\" is not a number");
    }

    #[test]
    fn decode_gives_one_reading_at_arrival_time() {
        let dev = DeviceId::parse("shelly-1").unwrap();
        let metric = MetricName::parse("power").unwrap();
        let m = decode(b"12.25", &dev, metric.clone(), 1_000, &mapping()).unwrap();
        assert_eq!(m.seq, None);
        assert_eq!(
            m.readings,
            [Reading {
                device_id: dev,
                metric,
                ts_ms: 1_000,
                value: 12.25,
                seq: None
            }]
        );
    }

    proptest! {
        #[test]
        fn finite_numbers_round_trip(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            prop_assert_eq!(value(&v.to_string()).unwrap(), v);
            prop_assert_eq!(value(&format!("{v:e}")).unwrap(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(v) = parse(&bytes, &mapping()) {
                prop_assert!(v.is_finite());
            }
        }
    }
}
