use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::{
    config::{NonNumericPolicy, RawDevicesConfig},
    source::SenmlMapping,
};

const NOW: i64 = 1_732_530_000_000;
const TOPIC: &str = "devices/dev-1/telemetry";

fn cfg() -> DevicesConfig {
    DevicesConfig::default()
}

fn with_format(format: Format) -> DevicesConfig {
    let mut cfg = cfg();
    cfg.sources[0].format = format;
    cfg
}

fn senml_policy(non_numeric: NonNumericPolicy) -> Format {
    Format::Auto {
        json: Box::new(crate::json::JsonMapping::thermocline()),
        senml: SenmlMapping { non_numeric },
    }
}

fn reason(topic: &str, payload: &[u8]) -> RejectReason {
    decode(&cfg(), topic, payload, NOW).unwrap_err().reason
}

#[test]
fn accepts_both_formats_in_auto_mode() {
    let m = decode(&cfg(), TOPIC, br#"{"seq":3,"metrics":{"temp":21.5}}"#, NOW).unwrap();
    assert_eq!(m.device_id.as_str(), "dev-1");
    assert_eq!(m.seq, Some(3));
    assert_eq!(m.readings.len(), 1);
    assert_eq!(
        (
            m.readings[0].metric.as_str(),
            m.readings[0].ts_ms,
            m.readings[0].value
        ),
        ("temp", NOW, 21.5)
    );

    let m = decode(&cfg(), TOPIC, b" \r\n\t[{\"n\":\"hum\",\"v\":40}]", NOW).unwrap();
    assert_eq!(m.seq, None);
    assert_eq!(m.readings[0].metric.as_str(), "hum");
    assert_eq!(m.readings[0].value, 40.0);
}

#[test]
fn explicit_format_does_not_sniff() {
    let json_only = with_format(Format::thermocline_json());
    let senml = br#"[{"n":"t","v":1}]"#;
    assert_eq!(
        decode(&json_only, TOPIC, senml, NOW).unwrap_err().reason,
        RejectReason::Malformed
    );
    let senml_only = with_format(Format::Senml(SenmlMapping::default()));
    assert_eq!(
        decode(&senml_only, TOPIC, senml, NOW)
            .unwrap()
            .readings
            .len(),
        1
    );
    assert_eq!(
        decode(&senml_only, TOPIC, br#"{"metrics":{"t":1}}"#, NOW)
            .unwrap_err()
            .reason,
        RejectReason::Malformed
    );
}

#[test]
fn size_cap_comes_first_and_is_inclusive() {
    let big = vec![b'{'; 1024 * 1024];
    // Also a bad topic: the size check wins, without parsing anything.
    assert_eq!(reason("bad", &big), RejectReason::TooLarge);

    let cfg = cfg();
    let mut exact = br#"{"metrics":{"t":1}}"#.to_vec();
    exact.resize(cfg.max_payload_bytes, b' ');
    assert!(decode(&cfg, TOPIC, &exact, NOW).is_ok());
    exact.push(b' ');
    assert_eq!(
        decode(&cfg, TOPIC, &exact, NOW).unwrap_err().reason,
        RejectReason::TooLarge
    );
}

#[test]
fn topic_is_checked_before_the_payload() {
    assert_eq!(
        reason("devices/a:b/telemetry", b"garbage"),
        RejectReason::InvalidDeviceId
    );
    assert_eq!(
        reason("devices/../x/telemetry", b"garbage"),
        RejectReason::InvalidTopic
    );
}

#[test]
fn future_timestamps() {
    let skew = cfg().max_future_skew_ms;
    let at = |ts: i64| format!(r#"{{"ts":{ts},"metrics":{{"t":1}}}}"#);
    assert!(decode(&cfg(), TOPIC, at(NOW + skew).as_bytes(), NOW).is_ok());
    assert_eq!(
        reason(TOPIC, at(NOW + skew + 1).as_bytes()),
        RejectReason::FutureTimestamp
    );
    assert_eq!(
        reason(TOPIC, at(i64::MAX).as_bytes()),
        RejectReason::FutureTimestamp
    );
    // SenML: relative +1 h, and a far-future absolute time.
    assert_eq!(
        reason(TOPIC, br#"[{"n":"t","v":1},{"n":"u","t":3600,"v":2}]"#),
        RejectReason::FutureTimestamp
    );
    assert_eq!(
        reason(TOPIC, br#"[{"n":"t","t":4e9,"v":1}]"#),
        RejectReason::FutureTimestamp
    );
    // Past timestamps are fine.
    assert!(decode(&cfg(), TOPIC, at(0).as_bytes(), NOW).is_ok());
}

#[test]
fn non_numeric_policy_comes_from_config() {
    let pack = br#"[{"n":"t","v":1},{"n":"door","vb":true}]"#;
    assert_eq!(decode(&cfg(), TOPIC, pack, NOW).unwrap().readings.len(), 1);
    let strict = with_format(senml_policy(NonNumericPolicy::Reject));
    assert_eq!(
        decode(&strict, TOPIC, pack, NOW).unwrap_err().reason,
        RejectReason::NonNumeric
    );
}

#[test]
fn every_reject_reason_is_reachable() {
    let big = vec![b' '; 1024 * 1024];
    let cases: &[(&str, &[u8], RejectReason)] = &[
        ("devices/a/b/telemetry", b"{}", RejectReason::InvalidTopic),
        ("devices//telemetry", b"{}", RejectReason::InvalidDeviceId),
        ("devices/*/telemetry", b"{}", RejectReason::InvalidDeviceId),
        (
            TOPIC,
            br#"{"metrics":{"t emp":1}}"#,
            RejectReason::InvalidMetric,
        ),
        (TOPIC, &big, RejectReason::TooLarge),
        (TOPIC, br#"{"metrics":{"t":NaN}}"#, RejectReason::Malformed),
        (TOPIC, b"", RejectReason::Malformed),
        (TOPIC, b"hello", RejectReason::Malformed),
        (
            TOPIC,
            br#"{"metrics":{"t":"hot"}}"#,
            RejectReason::NonNumeric,
        ),
        (
            TOPIC,
            br#"{"metrics":{"t":1e999}}"#,
            RejectReason::NonFinite,
        ),
        (TOPIC, br#"[{"n":"t","v":-1e999}]"#, RejectReason::NonFinite),
        (
            TOPIC,
            br#"{"ts":99999999999999,"metrics":{"t":1}}"#,
            RejectReason::FutureTimestamp,
        ),
    ];
    let mut seen = HashSet::new();
    for (topic, payload, expected) in cases {
        let got = decode(&cfg(), topic, payload, NOW).unwrap_err();
        assert_eq!(
            got.reason,
            *expected,
            "{topic:?} {:?}: {got}",
            String::from_utf8_lossy(&payload[..payload.len().min(60)])
        );
        assert!(!got.detail.is_empty());
        seen.insert(got.reason);
    }
    // The Sparkplug-only reasons are reached in `sparkplug::tests`.
    let all: HashSet<_> = RejectReason::ALL
        .into_iter()
        .filter(|r| !RejectReason::SPARKPLUG_ONLY.contains(r))
        .collect();
    assert_eq!(seen, all);
}

#[test]
fn custom_topic_pattern() {
    let cfg = RawDevicesConfig {
        topic_pattern: "{device_id}/up".into(),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let m = decode(&cfg, "sensor.9/up", br#"{"metrics":{"t":1}}"#, NOW).unwrap();
    assert_eq!(m.device_id.as_str(), "sensor.9");
}

#[test]
fn value_sources_take_the_metric_from_the_topic_or_the_mapping() {
    let cfg: RawDevicesConfig = toml::from_str(
        r#"
        topic_pattern = ""
        [[sources]]
        topic = "shellies/{device_id}/relay/0/{metric}"
        format = "value"
        [[sources]]
        topic = "shellies/{device_id}/relay/0"
        format = "value"
        value = { metric = "relay0", words = { on = 1, off = 0 } }
        "#,
    )
    .unwrap();
    let cfg = cfg.validate().unwrap();
    let m = decode(&cfg, "shellies/sh-1/relay/0/power", b"12.5", NOW).unwrap();
    let r = &m.readings[0];
    assert_eq!(
        (r.device_id.as_str(), r.metric.as_str(), r.value, r.ts_ms),
        ("sh-1", "power", 12.5, NOW)
    );
    let m = decode(&cfg, "shellies/sh-1/relay/0", b"on", NOW).unwrap();
    assert_eq!(
        (m.readings[0].metric.as_str(), m.readings[0].value),
        ("relay0", 1.0)
    );
    for (topic, payload, reason) in [
        (
            "shellies/sh-1/relay/0/po wer",
            &b"1"[..],
            RejectReason::InvalidMetric,
        ),
        (
            "shellies/sh-1/relay/0/power",
            b"on",
            RejectReason::NonNumeric,
        ),
        (
            "shellies/sh-1/relay/0/power",
            b"1e999",
            RejectReason::NonFinite,
        ),
        ("shellies/sh-1/relay/0/power", b"", RejectReason::Malformed),
        (
            "shellies/sh:1/relay/0/power",
            b"1",
            RejectReason::InvalidDeviceId,
        ),
        (
            "shellies/sh-1/relay/1/power",
            b"1",
            RejectReason::InvalidTopic,
        ),
    ] {
        assert_eq!(
            decode(&cfg, topic, payload, NOW).unwrap_err().reason,
            reason,
            "{topic}"
        );
    }
}

#[test]
fn the_metric_count_is_bounded_for_every_format() {
    let mut cfg = cfg();
    cfg.max_metrics_per_message = 3;
    let senml: String = format!(
        "[{}]",
        (0..4)
            .map(|i| format!(r#"{{"n":"m{i}","v":1}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let json = br#"{"metrics":{"a":1,"b":2,"c":3,"d":4}}"#;
    for payload in [senml.as_bytes(), &json[..]] {
        let err = decode(&cfg, TOPIC, payload, NOW).unwrap_err();
        assert_eq!(err.reason, RejectReason::TooLarge, "{err}");
    }
    assert!(decode(&cfg, TOPIC, br#"{"metrics":{"a":1,"b":2,"c":3}}"#, NOW).is_ok());
}

#[test]
fn each_topic_goes_to_the_first_source_it_fits() {
    let cfg: RawDevicesConfig = toml::from_str(
        r#"
        [[sources]]
        topic = "factory/{site}/{device_id}"
        format = "senml"
        [[sources]]
        topic = "factory/{device_id}/+/#"
        format = "json"
        [[sources]]
        topic = "tele/{device_id}/SENSOR"
        format = "json"
        "#,
    )
    .unwrap();
    let cfg = cfg.validate().unwrap();
    let json = br#"{"metrics":{"t":1}}"#;
    let senml = br#"[{"n":"t","v":1}]"#;
    // The default source first, auto format.
    assert_eq!(
        decode(&cfg, "devices/d1/telemetry", senml, NOW)
            .unwrap()
            .device_id
            .as_str(),
        "d1"
    );
    // Composed id, SenML only: the JSON payload is malformed there.
    assert_eq!(
        decode(&cfg, "factory/berlin/p7", senml, NOW)
            .unwrap()
            .device_id
            .as_str(),
        "berlin.p7"
    );
    assert_eq!(
        decode(&cfg, "factory/berlin/p7", json, NOW)
            .unwrap_err()
            .reason,
        RejectReason::Malformed
    );
    // A bad id in the first fitting source is not retried on later ones.
    assert_eq!(
        decode(&cfg, "factory/ber.lin/p7", senml, NOW)
            .unwrap_err()
            .reason,
        RejectReason::InvalidDeviceId
    );
    assert_eq!(
        decode(&cfg, "tele/t-1/SENSOR", json, NOW)
            .unwrap()
            .device_id
            .as_str(),
        "t-1"
    );
    let err = decode(&cfg, "tele/t-1/STATE", json, NOW).unwrap_err();
    assert_eq!(err.reason, RejectReason::InvalidTopic);
    assert!(
        err.detail.contains("none of the 4 source templates"),
        "{err}"
    );
}

#[test]
fn sparkplug_topics_are_spooled_records_only_when_enabled() {
    use crate::sparkplug::{spooled, Decoder, SparkplugConfig};
    use prost::Message as _;

    let birth = crate::sparkplug::proto::Payload {
        seq: Some(0),
        metrics: vec![crate::sparkplug::proto::payload::Metric {
            name: Some("t".into()),
            datatype: Some(10),
            value: Some(crate::sparkplug::proto::payload::metric::Value::DoubleValue(2.0)),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let topic = "spBv1.0/g/NBIRTH/e";
    let decoded = Decoder::new(SparkplugConfig::default(), 0).decode(topic, &birth, NOW);
    let record = spooled::encode(&decoded, &birth);
    // Off (the default): the topic pattern decides, and rejects it.
    assert_eq!(reason(topic, &record), RejectReason::InvalidTopic);
    let on = DevicesConfig {
        sparkplug: Some(SparkplugConfig::default()),
        ..cfg()
    };
    let m = decode(&on, topic, &record, NOW).unwrap();
    assert_eq!(
        (
            m.device_id.as_str(),
            m.readings[0].metric.as_str(),
            m.readings[0].value
        ),
        ("g.e", "t", 2.0)
    );
    // A raw Sparkplug payload in the spool was not written by ingest.
    assert_eq!(
        decode(&on, topic, &birth, NOW).unwrap_err().reason,
        RejectReason::Malformed
    );
    assert!(is_sparkplug(topic) && !is_sparkplug("spBv1.0x/g") && !is_sparkplug("devices/x"));
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_input(
        topic in ".{0,80}",
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let cfg = cfg();
        if let Ok(m) = decode(&cfg, &topic, &payload, now) {
            prop_assert!(!m.readings.is_empty());
            prop_assert!(m.readings.iter().all(|r| r.value.is_finite()));
        }
    }

    #[test]
    fn never_panics_on_json_like_input(
        id in "[a-z0-9:*./]{0,6}",
        payload in r#"[ \[\]{}":,]{0,3}([ \[\]{}":,.eE+\-0-9]|"(ts|seq|metrics|n|bn|v|bv|t|bt|vs|vb|s|bver|x_)"|true|null|1e999|-1e400){0,40}"#,
        now in prop_oneof![Just(NOW), any::<i64>()],
        strict in any::<bool>(),
    ) {
        let cfg = with_format(senml_policy(if strict { NonNumericPolicy::Reject } else { NonNumericPolicy::Ignore }));
        let topic = format!("devices/{id}/telemetry");
        match decode(&cfg, &topic, payload.as_bytes(), now) {
            Ok(m) => {
                prop_assert!(!m.readings.is_empty());
                for r in &m.readings {
                    prop_assert!(r.value.is_finite());
                    prop_assert!(r.ts_ms <= now.saturating_add(cfg.max_future_skew_ms));
                    prop_assert_eq!(&r.device_id, &m.device_id);
                }
            }
            Err(e) => prop_assert!(!e.detail.is_empty()),
        }
    }

    #[test]
    fn json_round_trips(
        ts in proptest::option::of(0i64..4_000_000_000_000),
        seq in proptest::option::of(any::<u64>()),
        metrics in proptest::collection::btree_map("[a-z][a-z0-9_.]{0,10}", (-4_000_000i64..4_000_000).prop_map(|q| q as f64 / 4.0), 1..8),
    ) {
        let mut obj = serde_json::Map::new();
        if let Some(ts) = ts { obj.insert("ts".into(), ts.into()); }
        if let Some(seq) = seq { obj.insert("seq".into(), seq.into()); }
        obj.insert("metrics".into(), serde_json::to_value(&metrics).unwrap());
        let payload = serde_json::Value::Object(obj).to_string();
        let now = 4_000_000_000_000;
        let m = decode(&cfg(), TOPIC, payload.as_bytes(), now).unwrap();
        prop_assert_eq!(m.seq, seq);
        let got: Vec<_> = m.readings.iter().map(|r| (r.metric.as_str().to_owned(), r.value, r.ts_ms, r.seq)).collect();
        let want: Vec<_> = metrics.iter().map(|(k, v)| (k.clone(), *v, ts.unwrap_or(now), seq)).collect();
        prop_assert_eq!(got, want);
    }
}
