//! The payload decoders.
//!
//! [`check_decoder`] is the one check every decoder goes through: it decodes
//! the payload at three "now"s (a real one and both extremes of `i64`), twice
//! each, and requires the same answer both times (the cold path decodes a
//! spooled message again on replay and must get what ingest got) and a
//! well-formed one ([`check_outcome`]). A new decoder is one function here
//! that calls [`check_decoder`] with a closure, one entry in
//! [`crate::TARGETS`], one file in `fuzz/fuzz_targets/` and a seed directory.

use devices::{
    config::{NonNumericPolicy, PayloadFormat, RawDevicesConfig},
    json::JsonMapping,
    source::ValueMapping,
    DeviceId, Message, MetricName, Rejection,
};

use crate::{MAX_DETAIL_BYTES, NOW_MS};

/// The device every payload-only target decodes for.
pub fn device() -> DeviceId {
    DeviceId::parse("dev-1").expect("a valid device id")
}

/// The "now"s every decoder runs at.
pub const NOWS: [i64; 3] = [NOW_MS, i64::MIN, i64::MAX];

/// Decodes `payload` for [`device`] at every one of [`NOWS`], twice, and checks
/// each outcome.
pub fn check_decoder(
    payload: &[u8],
    decode: impl Fn(&[u8], &DeviceId, i64) -> Result<Message, Rejection>,
) {
    let device = device();
    for now in NOWS {
        let first = decode(payload, &device, now);
        check_outcome(&device, &first);
        let again = decode(payload, &device, now);
        assert_eq!(first, again, "decoding the same payload twice differed");
    }
}

/// What every decoder's answer must satisfy: an accepted message is the
/// device's, with valid metric names and finite values; a rejection has a
/// reason and a bounded detail.
pub fn check_outcome(device: &DeviceId, outcome: &Result<Message, Rejection>) {
    match outcome {
        Ok(m) => {
            assert_eq!(&m.device_id, device, "message of another device");
            for r in &m.readings {
                assert_eq!(&r.device_id, device, "reading of another device");
                assert!(r.value.is_finite(), "non-finite value {}", r.value);
                assert!(
                    MetricName::parse(r.metric.as_str()).is_ok(),
                    "metric {:?} does not parse again",
                    r.metric.as_str()
                );
            }
        }
        Err(e) => {
            assert!(
                !e.detail.is_empty(),
                "rejection {:?} without a detail",
                e.reason
            );
            assert!(
                e.detail.len() <= MAX_DETAIL_BYTES,
                "rejection detail of {} bytes: {:.200}",
                e.detail.len(),
                e.detail
            );
        }
    }
}

/// At most this many readings per message, as `devices.max_metrics_per_message`
/// defaults.
const MAX_METRICS: usize = 1000;

/// `devices::json::decode` under the gateway's own `thermocline` preset and
/// the generic flattening mapping (Zigbee2MQTT / Tasmota style objects).
/// An accepted message never has more than the metric limit.
pub fn json(data: &[u8]) {
    for mapping in [JsonMapping::thermocline(), JsonMapping::generic()] {
        check_decoder(data, |p, d, now| {
            let out = devices::json::decode(p, d, now, &mapping, MAX_METRICS);
            if let Ok(m) = &out {
                assert!(m.readings.len() <= MAX_METRICS, "over the metric limit");
            }
            out
        });
    }
}

/// `devices::value::decode`, a bare value (Shelly style), with and without
/// booleans and words; an accepted message is one reading of the metric.
pub fn value(data: &[u8]) {
    let metric = MetricName::parse("power").expect("a valid metric");
    let words = ValueMapping {
        metric: None,
        booleans: true,
        words: vec![("ON".into(), 1.0), ("off".into(), 0.0)].into(),
    };
    for mapping in [ValueMapping::default(), words] {
        check_decoder(data, |p, d, now| {
            let out = devices::value::decode(p, d, metric.clone(), now, &mapping);
            if let Ok(m) = &out {
                assert_eq!(m.readings.len(), 1, "a bare value is one reading");
                assert_eq!(m.readings[0].metric, metric);
            }
            out
        });
    }
}

/// `devices::senml::decode` (RFC 8428) under both non-numeric policies.
pub fn senml(data: &[u8]) {
    for policy in [NonNumericPolicy::Ignore, NonNumericPolicy::Reject] {
        check_decoder(data, |p, d, now| devices::senml::decode(p, d, now, policy));
    }
}

/// `devices::decode::decode` as ingest calls it: input `TOPIC\nPAYLOAD` (no
/// newline: all payload, on `devices/dev-1/telemetry`), every payload format.
/// An accepted message has readings, none past the future-skew limit.
pub fn decode(data: &[u8]) {
    let (topic, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("devices/dev-1/telemetry".to_owned(), data),
    };
    for format in [
        PayloadFormat::Auto,
        PayloadFormat::Json,
        PayloadFormat::Senml,
    ] {
        let cfg = RawDevicesConfig {
            payload_format: format,
            ..RawDevicesConfig::default()
        }
        .validate()
        .expect("a valid [devices] section");
        for now in NOWS {
            let outcome = devices::decode::decode(&cfg, &topic, payload, now);
            match &outcome {
                Ok(m) => {
                    assert!(!m.readings.is_empty(), "accepted without readings");
                    let latest = now.saturating_add(cfg.max_future_skew_ms);
                    assert!(
                        m.readings.iter().all(|r| r.ts_ms <= latest),
                        "future reading"
                    );
                    assert_eq!(
                        cfg.sources[0].template.topic_for(&m.device_id, None),
                        Some(topic.clone())
                    );
                    check_outcome(&m.device_id.clone(), &outcome);
                }
                Err(_) => check_outcome(&device(), &outcome),
            }
            assert_eq!(
                outcome,
                devices::decode::decode(&cfg, &topic, payload, now),
                "decoding the same publish twice differed"
            );
        }
    }
}
