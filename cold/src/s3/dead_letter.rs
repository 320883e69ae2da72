//! Dead letters: rejected messages kept as NDJSON, one object per group.
//!
//! Each line is one message:
//! `{"topic":"…","payload":"<base64>","reason":"malformed","detail":"…","received_at_ms":…}`.
//! The payload is kept byte for byte (standard base64 with padding), since a
//! rejected payload is often not valid UTF-8 or not valid JSON.

use std::borrow::Cow;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use devices::{DeviceId, RejectReason};
use serde::{Deserialize, Serialize};

use crate::{row::utc_date_hour, Error, Result};

/// One rejected message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    /// The raw payload as received.
    pub payload: Bytes,
    pub reason: RejectReason,
    pub detail: String,
    pub received_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    payload: String,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    detail: Cow<'a, str>,
    received_at_ms: i64,
}

/// Longest caller-given id in a dead-letter key.
const MAX_ID_LEN: usize = 128;

/// `{prefix}dead-letter/date=YYYY-MM-DD/hour=HH/{gateway}-{id}.ndjson`, where `id`
/// (1-128 of `[A-Za-z0-9._-]`) is chosen by the caller and deterministic, so a
/// retried write overwrites rather than duplicates.
pub fn dead_letter_key(
    prefix: &str,
    gateway_id: &DeviceId,
    hour_start_ms: i64,
    id: &str,
) -> Result<String> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::InvalidData {
            what: "dead-letter id".into(),
            reason: format!("{id:?} is not 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"),
        });
    }
    let (date, hour) = utc_date_hour(hour_start_ms);
    Ok(format!(
        "{prefix}dead-letter/date={date}/hour={hour:02}/{gateway_id}-{id}.ndjson"
    ))
}

/// Encodes dead letters as NDJSON (one object per line, each line ending in `\n`).
pub fn encode(items: &[DeadLetter]) -> Bytes {
    let mut out = Vec::new();
    for d in items {
        let line = Line {
            topic: Cow::Borrowed(&d.topic),
            payload: STANDARD.encode(&d.payload),
            reason: Cow::Borrowed(d.reason.as_str()),
            detail: Cow::Borrowed(&d.detail),
            received_at_ms: d.received_at_ms,
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_writer(&mut out, &line).expect("dead letter serializes");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// Decodes an NDJSON object written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<DeadLetter>> {
    let invalid = |n: usize, reason: String| Error::InvalidData {
        what: "dead-letter ndjson".into(),
        reason: format!("line {n}: {reason}"),
    };
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let l: Line<'_> =
            serde_json::from_slice(line).map_err(|e| invalid(i + 1, e.to_string()))?;
        let reason = RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == l.reason)
            .ok_or_else(|| invalid(i + 1, format!("unknown reason {:?}", l.reason)))?;
        let payload = STANDARD
            .decode(&l.payload)
            .map_err(|e| invalid(i + 1, format!("payload is not base64: {e}")))?;
        out.push(DeadLetter {
            topic: l.topic.into_owned(),
            payload: Bytes::from(payload),
            reason,
            detail: l.detail.into_owned(),
            received_at_ms: l.received_at_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters() -> Vec<DeadLetter> {
        vec![
            DeadLetter {
                topic: "devices/d1/telemetry".into(),
                payload: Bytes::from_static(b"{\"t\": 21.5"),
                reason: RejectReason::Malformed,
                detail: "EOF while parsing \"an object\"\nline 2".into(),
                received_at_ms: 1_732_530_000_123,
            },
            DeadLetter {
                topic: "devices/bad id/telemetry".into(),
                payload: Bytes::from_static(&[0, 159, 146, 150, 255, b'\n']),
                reason: RejectReason::InvalidDeviceId,
                detail: String::new(),
                received_at_ms: -5,
            },
        ]
    }

    #[test]
    fn ndjson_round_trips_binary_payloads() {
        let bytes = encode(&letters());
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["reason"], "malformed");
        assert_eq!(first["payload"], "eyJ0IjogMjEuNQ==");
        assert_eq!(first["received_at_ms"], 1_732_530_000_123_i64);
        assert_eq!(decode(&bytes).unwrap(), letters());
    }

    #[test]
    fn every_reason_round_trips() {
        let items: Vec<DeadLetter> = RejectReason::ALL
            .into_iter()
            .map(|reason| DeadLetter {
                reason,
                ..letters()[0].clone()
            })
            .collect();
        assert_eq!(decode(&encode(&items)).unwrap(), items);
    }

    #[test]
    fn bad_lines_are_invalid_data() {
        for (text, needle) in [
            ("{\"topic\":1}\n", "line 1"),
            (
                "{\"topic\":\"t\",\"payload\":\"!!\",\"reason\":\"malformed\",\"detail\":\"\",\"received_at_ms\":0}",
                "not base64",
            ),
            (
                "\n{\"topic\":\"t\",\"payload\":\"\",\"reason\":\"nope\",\"detail\":\"\",\"received_at_ms\":0}",
                "line 2: unknown reason",
            ),
        ] {
            let err = decode(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn keys_are_deterministic_and_ids_validated() {
        let gw = DeviceId::parse("gw-1").unwrap();
        assert_eq!(
            dead_letter_key("tc/", &gw, 1_732_528_800_000, "00000003-0000001000").unwrap(),
            "tc/dead-letter/date=2024-11-25/hour=10/gw-1-00000003-0000001000.ndjson"
        );
        for bad in ["", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(dead_letter_key("", &gw, 0, bad).is_err(), "{bad:?}");
        }
    }
}
