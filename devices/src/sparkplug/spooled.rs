//! The self-contained form of a decoded Sparkplug message, for the spool.
//!
//! Sparkplug is decoded once, at ingest, by the stateful [`super::Decoder`].
//! What ingest spools is not the raw DATA (meaningless without the BIRTH that
//! may sit in a spool segment long released, or before a restart) but its
//! decoded result, re-encoded as a Sparkplug B payload that needs no state:
//!
//! - accepted: `uuid = "thermocline/resolved/v1"`, `body` = the device id,
//!   one Double metric per reading with its sanitised name, timestamp and
//!   `is_historical`; a DEATH or ignored message has no metrics;
//! - rejected: `uuid = "thermocline/rejected/v1"`, `body` = the payload as
//!   received, metrics `reason` and `detail` (strings).
//!
//! [`decode`] turns that back into exactly the readings (or the rejection)
//! ingest gave the hot path, so the cold path lands what the hot path saw,
//! across restarts and replays. A spooled Sparkplug record without either
//! marker (not written by ingest) is `malformed`.

use prost::Message as _;

use super::{
    decoder::{Decoded, Outcome},
    proto::{
        payload::{metric::Value, Metric},
        DataType, Payload,
    },
};
use crate::{
    id::{DeviceId, MetricName},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
};

pub const RESOLVED: &str = "thermocline/resolved/v1";
pub const REJECTED: &str = "thermocline/rejected/v1";

/// The spool payload for `decoded`, the result of decoding `raw`.
pub fn encode(decoded: &Decoded, raw: &[u8]) -> Vec<u8> {
    let string = |name: &str, v: &str| Metric {
        name: Some(name.into()),
        datatype: Some(DataType::String as u32),
        value: Some(Value::StringValue(v.into())),
        ..Default::default()
    };
    let payload = match &decoded.result {
        Err(r) => Payload {
            uuid: Some(REJECTED.into()),
            body: Some(raw.to_vec()),
            metrics: vec![
                string("reason", r.reason.as_str()),
                string("detail", &r.detail),
            ],
            ..Default::default()
        },
        Ok(Outcome::Readings(m)) => {
            let metric = |r: &Reading, historical: bool| Metric {
                name: Some(r.metric.as_str().into()),
                timestamp: u64::try_from(r.ts_ms).ok(),
                datatype: Some(DataType::Double as u32),
                is_historical: historical.then_some(true),
                value: Some(Value::DoubleValue(r.value)),
                ..Default::default()
            };
            Payload {
                uuid: Some(RESOLVED.into()),
                body: Some(m.live.device_id.as_str().as_bytes().to_vec()),
                metrics: m
                    .live
                    .readings
                    .iter()
                    .map(|r| metric(r, false))
                    .chain(m.historical.iter().map(|r| metric(r, true)))
                    .collect(),
                ..Default::default()
            }
        }
        Ok(Outcome::Stale(_) | Outcome::Ignored(_)) => Payload {
            uuid: Some(RESOLVED.into()),
            ..Default::default()
        },
    };
    payload.encode_to_vec()
}

/// Decodes a spooled record written by [`encode`]: the readings (live and
/// historical together; maybe none) or the rejection ingest gave it.
pub fn decode(payload: &[u8]) -> Result<Option<Message>, Rejection> {
    let malformed = |why: &str| {
        Rejection::new(
            RejectReason::Malformed,
            format!("spooled Sparkplug record: {why}"),
        )
    };
    let p = Payload::decode(payload).map_err(|_| malformed("not a Sparkplug B payload"))?;
    match p.uuid.as_deref() {
        Some(RESOLVED) => {}
        Some(REJECTED) => {
            let text = |name: &str| {
                p.metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some(name))
                    .and_then(|m| match &m.value {
                        Some(Value::StringValue(s)) => Some(s.as_str()),
                        _ => None,
                    })
            };
            let reason = text("reason")
                .and_then(|r| RejectReason::ALL.into_iter().find(|x| x.as_str() == r))
                .ok_or_else(|| malformed("rejection without a known reason"))?;
            return Err(Rejection::new(reason, text("detail").unwrap_or("")));
        }
        _ => return Err(malformed("not written by the gateway's ingest")),
    }
    let Some(body) = p.body.as_deref() else {
        return Ok(None);
    };
    let device_id = std::str::from_utf8(body)
        .map_err(|_| malformed("device id is not UTF-8"))
        .and_then(DeviceId::parse)?;
    let mut readings = Vec::with_capacity(p.metrics.len());
    for m in &p.metrics {
        let (Some(name), Some(Value::DoubleValue(value)), Some(ts)) =
            (&m.name, &m.value, m.timestamp)
        else {
            return Err(malformed("reading without name, double value or timestamp"));
        };
        readings.push(Reading {
            device_id: device_id.clone(),
            metric: MetricName::parse(name)?,
            ts_ms: i64::try_from(ts).map_err(|_| malformed("timestamp out of range"))?,
            value: *value,
            seq: None,
        });
    }
    Ok(Some(Message {
        device_id,
        seq: None,
        readings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::{proto::payload::Metric as M, Decoder, SparkplugConfig};

    const NOW: i64 = 1_764_000_000_000;

    fn encode_p(seq: u64, metrics: Vec<M>) -> Vec<u8> {
        Payload {
            timestamp: Some(NOW as u64),
            seq: Some(seq),
            metrics,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn round_trips_what_the_stateful_decoder_gave() {
        let mut dec = Decoder::new(SparkplugConfig::default(), 0);
        let birth = encode_p(
            0,
            vec![
                M {
                    name: Some("t x".into()),
                    alias: Some(1),
                    datatype: Some(DataType::Float as u32),
                    value: Some(Value::FloatValue(1.5)),
                    ..Default::default()
                },
                M {
                    name: Some("n".into()),
                    alias: Some(2),
                    datatype: Some(DataType::Int16 as u32),
                    value: Some(Value::IntValue(u32::MAX)),
                    ..Default::default()
                },
            ],
        );
        let mut hist = M {
            alias: Some(2),
            value: Some(Value::IntValue(4)),
            timestamp: Some(NOW as u64 - 10),
            ..Default::default()
        };
        hist.is_historical = Some(true);
        let data = encode_p(
            1,
            vec![
                M {
                    alias: Some(1),
                    value: Some(Value::FloatValue(2.5)),
                    ..Default::default()
                },
                hist,
            ],
        );
        for (topic, raw) in [("spBv1.0/g/NBIRTH/e", &birth), ("spBv1.0/g/NDATA/e", &data)] {
            let d = dec.decode(topic, raw, NOW);
            let Ok(Outcome::Readings(m)) = &d.result else {
                panic!("{d:?}")
            };
            let mut want = m.live.readings.clone();
            want.extend(m.historical.iter().cloned());
            let got = decode(&encode(&d, raw)).unwrap().unwrap();
            assert_eq!(got.device_id, m.live.device_id);
            assert_eq!(got.readings, want);
            assert!(!want.is_empty());
        }
        // A rejection comes back with its reason and detail.
        let d = dec.decode(
            "spBv1.0/g/NDATA/e",
            &encode_p(
                2,
                vec![M {
                    alias: Some(9),
                    ..Default::default()
                }],
            ),
            NOW,
        );
        let spooled = encode(&d, b"raw");
        assert_eq!(Err(d.result.unwrap_err()), decode(&spooled));
        // A death: no readings, no rejection.
        let death = dec.decode("spBv1.0/g/NDEATH/e", &encode_p(0, vec![]), NOW);
        assert!(matches!(death.result, Ok(Outcome::Stale(_))));
        assert_eq!(decode(&encode(&death, b"")), Ok(None));
    }

    #[test]
    fn raw_or_forged_records_are_malformed() {
        let raw = encode_p(0, vec![]);
        assert_eq!(decode(&raw).unwrap_err().reason, RejectReason::Malformed);
        assert_eq!(
            decode(b"\xff\xff").unwrap_err().reason,
            RejectReason::Malformed
        );
        let forged = Payload {
            uuid: Some(REJECTED.into()),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(decode(&forged).unwrap_err().reason, RejectReason::Malformed);
        let bad_id = Payload {
            uuid: Some(RESOLVED.into()),
            body: Some(b"a/b".to_vec()),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            decode(&bad_id).unwrap_err().reason,
            RejectReason::InvalidDeviceId
        );
    }
}
