//! The decoder's behaviour over message sequences, its bounds and hostile input.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use prost::Message as _;

use super::{
    proto::{
        payload::{metric::Value, Metric},
        DataType, Payload,
    },
    *,
};
use crate::{config::NonNumericPolicy, reject::RejectReason};

const NOW: i64 = 1_764_000_000_000;
const SKEW: i64 = 300_000;

fn decoder() -> Decoder {
    Decoder::new(SparkplugConfig::default(), SKEW)
}

fn metric(name: Option<&str>, alias: Option<u64>, dt: DataType, value: Value) -> Metric {
    Metric {
        name: name.map(Into::into),
        alias,
        datatype: Some(dt as u32),
        value: Some(value),
        ..Default::default()
    }
}

/// A DATA metric: alias and value only, as edge nodes send them.
fn by_alias(alias: u64, value: Value) -> Metric {
    Metric {
        alias: Some(alias),
        value: Some(value),
        ..Default::default()
    }
}

fn bd_seq(v: u64) -> Metric {
    metric(Some("bdSeq"), None, DataType::Int64, Value::LongValue(v))
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(NOW as u64),
        seq,
        metrics,
        ..Default::default()
    }
    .encode_to_vec()
}

fn node_birth(bd: u64, seq: u64) -> Vec<u8> {
    payload(
        Some(seq),
        vec![
            bd_seq(bd),
            metric(
                Some("Node Control/Rebirth"),
                None,
                DataType::Boolean,
                Value::BooleanValue(false),
            ),
            metric(
                Some("temp"),
                Some(1),
                DataType::Float,
                Value::FloatValue(20.5),
            ),
            metric(
                Some("Inputs/Temp (°C)"),
                Some(2),
                DataType::Int32,
                Value::IntValue(-5i32 as u32),
            ),
        ],
    )
}

fn device_birth(seq: u64) -> Vec<u8> {
    payload(
        Some(seq),
        vec![
            metric(
                Some("rpm"),
                Some(10),
                DataType::UInt16,
                Value::IntValue(1500),
            ),
            metric(
                Some("on"),
                Some(11),
                DataType::Boolean,
                Value::BooleanValue(true),
            ),
            metric(
                Some("label"),
                Some(12),
                DataType::String,
                Value::StringValue("pump".into()),
            ),
        ],
    )
}

fn readings(d: &Decoded) -> Vec<(String, String, f64)> {
    match &d.result {
        Ok(Outcome::Readings(m)) => m
            .live
            .readings
            .iter()
            .map(|r| (r.device_id.to_string(), r.metric.to_string(), r.value))
            .collect(),
        other => panic!("expected readings, got {other:?}"),
    }
}

fn reason(d: &Decoded) -> RejectReason {
    match &d.result {
        Err(r) => {
            assert!(!r.detail.is_empty());
            r.reason
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn s(v: &[(&str, &str, f64)]) -> Vec<(String, String, f64)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect()
}

#[test]
fn births_declare_aliases_that_data_resolves() {
    let mut dec = decoder();
    let nb = dec.decode("spBv1.0/plant/NBIRTH/edge1", &node_birth(0, 0), NOW);
    // bdSeq and Node Control/* are protocol metrics, not readings; the name
    // with a space, parentheses and a degree sign is sanitised.
    assert_eq!(
        readings(&nb),
        s(&[
            ("plant.edge1", "temp", 20.5),
            ("plant.edge1", "Inputs/Temp___C_", -5.0)
        ])
    );
    let db = dec.decode("spBv1.0/plant/DBIRTH/edge1/pump-3", &device_birth(1), NOW);
    // The String metric is declared but, by default, not a reading.
    assert_eq!(
        readings(&db),
        s(&[
            ("plant.edge1.pump-3", "rpm", 1500.0),
            ("plant.edge1.pump-3", "on", 1.0)
        ])
    );
    let nd = dec.decode(
        "spBv1.0/plant/NDATA/edge1",
        &payload(
            Some(2),
            vec![
                by_alias(2, Value::IntValue(7)),
                by_alias(1, Value::FloatValue(21.0)),
            ],
        ),
        NOW,
    );
    assert_eq!(
        readings(&nd),
        s(&[
            ("plant.edge1", "Inputs/Temp___C_", 7.0),
            ("plant.edge1", "temp", 21.0)
        ])
    );
    // By name works too, when a node sends names instead of aliases.
    let mut named = by_alias(0, Value::BooleanValue(false));
    named.alias = None;
    named.name = Some("on".into());
    let dd = dec.decode(
        "spBv1.0/plant/DDATA/edge1/pump-3",
        &payload(
            Some(3),
            vec![
                by_alias(10, Value::IntValue(1490)),
                named,
                by_alias(12, Value::StringValue("x".into())),
            ],
        ),
        NOW,
    );
    assert_eq!(
        readings(&dd),
        s(&[
            ("plant.edge1.pump-3", "rpm", 1490.0),
            ("plant.edge1.pump-3", "on", 0.0)
        ])
    );
    for d in [&nb, &db, &nd, &dd] {
        assert_eq!((d.seq_gap, &d.rebirth), (0, &None));
        let Ok(Outcome::Readings(m)) = &d.result else {
            unreachable!()
        };
        assert_eq!(m.live.seq, None);
        assert!(m
            .live
            .readings
            .iter()
            .all(|r| r.seq.is_none() && r.ts_ms == NOW));
    }
}

#[test]
fn seq_wraps_at_256_and_gaps_are_counted() {
    let mut dec = decoder();
    assert_eq!(
        dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 254), NOW)
            .seq_gap,
        0
    );
    let data = |seq| payload(Some(seq), vec![by_alias(1, Value::FloatValue(1.0))]);
    let gaps: Vec<u64> = [255, 0, 1, 4, 3, 3]
        .into_iter()
        .map(|seq| dec.decode("spBv1.0/g/NDATA/e", &data(seq), NOW).seq_gap)
        .collect();
    // 255 and 0 follow on (wrap); 4 after 1 misses 2; 3 after 4 is a wrap of
    // 254 missed; 3 twice misses 255.
    assert_eq!(gaps, [0, 0, 0, 2, 254, 255]);
    let bad = dec.decode("spBv1.0/g/NDATA/e", &data(256), NOW);
    assert_eq!(reason(&bad), RejectReason::Malformed);
}

#[test]
fn data_before_birth_is_rejected_with_a_rate_limited_rebirth() {
    let mut dec = decoder();
    let data = payload(Some(5), vec![by_alias(1, Value::FloatValue(1.0))]);
    let first = dec.decode("spBv1.0/g/DDATA/e/d", &data, NOW);
    assert_eq!(reason(&first), RejectReason::NoBirth);
    let req = first.rebirth.expect("a rebirth request");
    assert_eq!(req.topic, "spBv1.0/g/NCMD/e");
    let cmd = Payload::decode(req.payload.as_slice()).unwrap();
    assert_eq!(
        cmd.metrics[0].name.as_deref(),
        Some(rebirth::REBIRTH_METRIC)
    );
    // Within rebirth_min_interval (10 s): rejected again, no second request.
    let again = dec.decode("spBv1.0/g/NDATA/e", &data, NOW + 9_999);
    assert_eq!(
        (reason(&again), again.rebirth.is_none()),
        (RejectReason::NoBirth, true)
    );
    // Another node is limited on its own.
    assert!(dec
        .decode("spBv1.0/g/NDATA/f", &data, NOW + 1)
        .rebirth
        .is_some());
    assert!(dec
        .decode("spBv1.0/g/NDATA/e", &data, NOW + 10_000)
        .rebirth
        .is_some());

    // Born node, unborn device: the node is asked to rebirth (it re-sends every DBIRTH).
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let dd = dec.decode(
        "spBv1.0/g/DDATA/e/d",
        &payload(Some(1), vec![by_alias(10, Value::IntValue(1))]),
        NOW,
    );
    assert_eq!(
        (reason(&dd), dd.rebirth.is_some()),
        (RejectReason::NoBirth, true)
    );

    let off = RawSparkplugConfig {
        rebirth: false,
        ..Default::default()
    }
    .validate("x")
    .unwrap();
    let mut dec = Decoder::new(off, SKEW);
    let d = dec.decode("spBv1.0/g/NDATA/e", &data, NOW);
    assert_eq!((reason(&d), d.rebirth), (RejectReason::NoBirth, None));
}

#[test]
fn unknown_alias_or_name_is_rejected_whole_and_asks_for_rebirth() {
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let d = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(
            Some(1),
            vec![
                by_alias(1, Value::FloatValue(1.0)),
                by_alias(99, Value::FloatValue(2.0)),
            ],
        ),
        NOW,
    );
    assert_eq!(reason(&d), RejectReason::UnknownAlias);
    assert!(d.rebirth.is_some());
    let mut named = by_alias(0, Value::FloatValue(1.0));
    named.alias = None;
    named.name = Some("nope".into());
    let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(2), vec![named]), NOW);
    assert_eq!(
        (reason(&d), d.rebirth.is_none()),
        (RejectReason::UnknownAlias, true)
    );
    let anonymous = Metric {
        value: Some(Value::FloatValue(1.0)),
        ..Default::default()
    };
    let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(3), vec![anonymous]), NOW);
    assert_eq!(reason(&d), RejectReason::Malformed);
    // The node answers with a new NBIRTH: its aliases work again.
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(1, 0), NOW);
    let ok = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(1), vec![by_alias(1, Value::FloatValue(3.0))]),
        NOW,
    );
    assert_eq!(readings(&ok), s(&[("g.e", "temp", 3.0)]));
}

#[test]
fn ndeath_is_matched_by_bdseq_and_marks_node_and_devices_stale() {
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(1, 0), NOW);
    dec.decode("spBv1.0/g/DBIRTH/e/d1", &device_birth(1), NOW);
    // Reconnect with a new bdSeq; the broker then delivers the old session's will.
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(2, 0), NOW);
    dec.decode("spBv1.0/g/DBIRTH/e/d1", &device_birth(1), NOW);
    dec.decode("spBv1.0/g/DBIRTH/e/d2", &device_birth(2), NOW);
    let old = dec.decode("spBv1.0/g/NDEATH/e", &payload(None, vec![bd_seq(1)]), NOW);
    assert!(matches!(old.result, Ok(Outcome::Ignored(_))), "{old:?}");
    let ok = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(3), vec![by_alias(1, Value::FloatValue(1.0))]),
        NOW,
    );
    assert_eq!(
        readings(&ok).len(),
        1,
        "the old will must not end the new session"
    );

    let death = dec.decode("spBv1.0/g/NDEATH/e", &payload(None, vec![bd_seq(2)]), NOW);
    let Ok(Outcome::Stale(mut ids)) = death.result else {
        panic!("{death:?}")
    };
    ids.sort();
    let ids: Vec<_> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(ids, ["g.e", "g.e.d1", "g.e.d2"]);
    let after = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(4), vec![by_alias(1, Value::FloatValue(1.0))]),
        NOW,
    );
    assert_eq!(reason(&after), RejectReason::NoBirth);
    let twice = dec.decode("spBv1.0/g/NDEATH/e", &payload(None, vec![bd_seq(2)]), NOW);
    assert!(matches!(twice.result, Ok(Outcome::Ignored(_))));
}

#[test]
fn ddeath_marks_one_device_stale() {
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    dec.decode("spBv1.0/g/DBIRTH/e/d", &device_birth(1), NOW);
    let death = dec.decode("spBv1.0/g/DDEATH/e/d", &payload(Some(2), vec![]), NOW);
    let Ok(Outcome::Stale(ids)) = &death.result else {
        panic!("{death:?}")
    };
    assert_eq!(
        ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        ["g.e.d"]
    );
    let dd = dec.decode(
        "spBv1.0/g/DDATA/e/d",
        &payload(Some(3), vec![by_alias(10, Value::IntValue(1))]),
        NOW,
    );
    assert_eq!(reason(&dd), RejectReason::NoBirth);
    // The node itself is still alive.
    let nd = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(4), vec![by_alias(1, Value::FloatValue(2.0))]),
        NOW,
    );
    assert_eq!((readings(&nd).len(), nd.seq_gap), (1, 0));
}

#[test]
fn historical_metrics_are_kept_apart() {
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let mut old = by_alias(1, Value::FloatValue(9.0));
    old.is_historical = Some(true);
    old.timestamp = Some((NOW - 3_600_000) as u64);
    let d = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(1), vec![old, by_alias(2, Value::IntValue(3))]),
        NOW,
    );
    let Ok(Outcome::Readings(m)) = d.result else {
        panic!()
    };
    assert_eq!(m.live.readings.len(), 1);
    assert_eq!(m.live.readings[0].metric.as_str(), "Inputs/Temp___C_");
    assert_eq!(m.historical.len(), 1);
    assert_eq!(
        (
            m.historical[0].metric.as_str(),
            m.historical[0].value,
            m.historical[0].ts_ms
        ),
        ("temp", 9.0, NOW - 3_600_000)
    );
}

#[test]
fn collisions_are_rejected_and_leave_no_session() {
    let mut dec = decoder();
    let clash = payload(
        Some(0),
        vec![
            metric(
                Some("a b"),
                Some(1),
                DataType::Double,
                Value::DoubleValue(1.0),
            ),
            metric(
                Some("a_b"),
                Some(2),
                DataType::Double,
                Value::DoubleValue(2.0),
            ),
        ],
    );
    let d = dec.decode("spBv1.0/g/NBIRTH/e", &clash, NOW);
    assert_eq!(reason(&d), RejectReason::MetricCollision);
    let nd = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(1), vec![by_alias(1, Value::DoubleValue(1.0))]),
        NOW,
    );
    assert_eq!(reason(&nd), RejectReason::NoBirth);

    for metrics in [
        vec![
            metric(
                Some("x"),
                Some(1),
                DataType::Double,
                Value::DoubleValue(1.0),
            ),
            metric(
                Some("y"),
                Some(1),
                DataType::Double,
                Value::DoubleValue(2.0),
            ),
        ],
        vec![
            metric(
                Some("x"),
                Some(1),
                DataType::Double,
                Value::DoubleValue(1.0),
            ),
            metric(
                Some("x"),
                Some(2),
                DataType::Double,
                Value::DoubleValue(2.0),
            ),
        ],
    ] {
        let d = dec.decode("spBv1.0/g/NBIRTH/e", &payload(Some(0), metrics), NOW);
        assert_eq!(reason(&d), RejectReason::MetricCollision);
    }
    let unnamed = payload(Some(0), vec![by_alias(1, Value::DoubleValue(1.0))]);
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH/e", &unnamed, NOW)),
        RejectReason::Malformed
    );
    let invalid = payload(
        Some(0),
        vec![metric(
            Some(" x"),
            Some(1),
            DataType::Double,
            Value::DoubleValue(1.0),
        )],
    );
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH/e", &invalid, NOW)),
        RejectReason::InvalidMetric
    );
}

#[test]
fn non_numeric_policy_and_bad_values() {
    let strict = RawSparkplugConfig {
        non_numeric: NonNumericPolicy::Reject,
        ..Default::default()
    }
    .validate("x")
    .unwrap();
    let mut dec = Decoder::new(strict, SKEW);
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let d = dec.decode("spBv1.0/g/DBIRTH/e/d", &device_birth(1), NOW);
    assert_eq!(reason(&d), RejectReason::NonNumeric);

    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let bad = |v| payload(Some(1), vec![by_alias(1, v)]);
    assert_eq!(
        reason(&dec.decode(
            "spBv1.0/g/NDATA/e",
            &bad(Value::FloatValue(f32::INFINITY)),
            NOW
        )),
        RejectReason::NonFinite
    );
    assert_eq!(
        reason(&dec.decode(
            "spBv1.0/g/NDATA/e",
            &bad(Value::StringValue("1".into())),
            NOW
        )),
        RejectReason::Malformed
    );
    let mut null = by_alias(1, Value::FloatValue(0.0));
    null.is_null = Some(true);
    let d = dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(3), vec![null, by_alias(2, Value::IntValue(1))]),
        NOW,
    );
    assert_eq!(readings(&d), s(&[("g.e", "Inputs/Temp___C_", 1.0)]));
}

#[test]
fn timestamps_come_from_metric_then_payload_and_are_bounded() {
    let mut dec = decoder();
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let mut m = by_alias(1, Value::FloatValue(1.0));
    m.timestamp = Some((NOW - 5) as u64);
    let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(1), vec![m.clone()]), NOW);
    let Ok(Outcome::Readings(msg)) = d.result else {
        panic!()
    };
    assert_eq!(msg.live.readings[0].ts_ms, NOW - 5);
    for ts in [(NOW + SKEW + 1) as u64, u64::MAX] {
        m.timestamp = Some(ts);
        let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(2), vec![m.clone()]), NOW);
        assert_eq!(reason(&d), RejectReason::FutureTimestamp);
    }
    // No timestamp anywhere: the receive time.
    let bare = Payload {
        seq: Some(4),
        metrics: vec![by_alias(1, Value::FloatValue(1.0))],
        ..Default::default()
    };
    let d = dec.decode("spBv1.0/g/NDATA/e", &bare.encode_to_vec(), NOW + 7);
    let Ok(Outcome::Readings(msg)) = d.result else {
        panic!()
    };
    assert_eq!(msg.live.readings[0].ts_ms, NOW + 7);
}

#[test]
fn ids_separator_commands_and_state() {
    let cfg = RawSparkplugConfig {
        id_separator: "_".into(),
        ..Default::default()
    }
    .validate("x")
    .unwrap();
    let mut dec = Decoder::new(cfg, SKEW);
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    let d = dec.decode("spBv1.0/g/DBIRTH/e/d", &device_birth(1), NOW);
    assert_eq!(readings(&d)[0].0, "g_e_d");

    let mut dec = decoder();
    for t in [
        "spBv1.0/g/NCMD/e",
        "spBv1.0/g/DCMD/e/d",
        "spBv1.0/STATE/host",
    ] {
        assert!(
            matches!(
                dec.decode(t, b"\xff\xff", NOW).result,
                Ok(Outcome::Ignored(_))
            ),
            "{t}"
        );
    }
    assert_eq!(
        reason(&dec.decode("spBv1.0/g:1/NBIRTH/e", &node_birth(0, 0), NOW)),
        RejectReason::InvalidDeviceId
    );
    let long = "x".repeat(40);
    assert_eq!(
        reason(&dec.decode(
            &format!("spBv1.0/{long}/NBIRTH/{long}"),
            &node_birth(0, 0),
            NOW
        )),
        RejectReason::InvalidDeviceId
    );
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH", &node_birth(0, 0), NOW)),
        RejectReason::InvalidTopic
    );
}

#[test]
fn state_is_bounded() {
    let cfg = RawSparkplugConfig {
        max_nodes: 2,
        max_devices_per_node: 1,
        max_metrics_per_node: 6,
        ..Default::default()
    }
    .validate("x")
    .unwrap();
    let mut dec = Decoder::new(cfg, SKEW);
    // node_birth declares 4 metrics, device_birth 3: 7 > 6.
    assert!(readings(&dec.decode("spBv1.0/g/NBIRTH/a", &node_birth(0, 0), NOW)).len() == 2);
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/DBIRTH/a/d", &device_birth(1), NOW)),
        RejectReason::OverLimit
    );
    let small = payload(
        Some(2),
        vec![metric(
            Some("t"),
            Some(10),
            DataType::Double,
            Value::DoubleValue(1.0),
        )],
    );
    assert_eq!(
        readings(&dec.decode("spBv1.0/g/DBIRTH/a/d", &small, NOW)).len(),
        1
    );
    // A re-born device's old declarations do not count twice.
    assert_eq!(
        readings(&dec.decode("spBv1.0/g/DBIRTH/a/d", &small, NOW)).len(),
        1
    );
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/DBIRTH/a/d2", &small, NOW)),
        RejectReason::OverLimit
    );

    dec.decode("spBv1.0/g/NBIRTH/b", &node_birth(0, 0), NOW);
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH/c", &node_birth(0, 0), NOW)),
        RejectReason::OverLimit
    );
    // Data from unknown nodes cannot grow the state past the bound either.
    dec.decode("spBv1.0/g/NDATA/z", &payload(Some(1), vec![]), NOW);
    assert_eq!(dec.nodes(), 2);
    // A node without a session makes room.
    dec.decode("spBv1.0/g/NDEATH/b", &payload(None, vec![bd_seq(0)]), NOW);
    assert_eq!(
        readings(&dec.decode("spBv1.0/g/NBIRTH/c", &node_birth(0, 0), NOW)).len(),
        2
    );
    assert_eq!(dec.nodes(), 2);
}

#[test]
fn hostile_payloads_are_rejected_without_panics() {
    let mut dec = decoder();
    // Every truncation of a valid NBIRTH: rejected as malformed, or (cut at a
    // field boundary) a valid shorter message; never a panic.
    let full = node_birth(0, 0);
    for cut in 0..full.len() {
        let d = dec.decode("spBv1.0/g/NBIRTH/t", &full[..cut], NOW);
        if let Err(r) = &d.result {
            assert!(
                matches!(
                    r.reason,
                    RejectReason::Malformed | RejectReason::InvalidMetric
                ),
                "{cut}: {r}"
            );
        }
    }
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH/t", &full[..full.len() - 3], NOW)),
        RejectReason::Malformed
    );
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NDATA/t", b"\x12\xff\xff\xff\xff\x0f", NOW)),
        RejectReason::Malformed
    );

    // 10,000 metrics in one BIRTH: over the per-node bound, one rejection.
    let bomb: Vec<Metric> = (0..10_000)
        .map(|i| {
            metric(
                Some(&format!("m{i}")),
                Some(i),
                DataType::Double,
                Value::DoubleValue(1.0),
            )
        })
        .collect();
    let bytes = payload(Some(0), bomb);
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NBIRTH/bomb", &bytes, NOW)),
        RejectReason::OverLimit
    );
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NDATA/bomb", &payload(Some(1), vec![]), NOW)),
        RejectReason::NoBirth
    );

    // An alias bomb: a DATA of 10,000 undeclared aliases, one rejection.
    dec.decode("spBv1.0/g/NBIRTH/ok", &node_birth(0, 0), NOW);
    let aliases: Vec<Metric> = (1_000..11_000)
        .map(|a| by_alias(a, Value::DoubleValue(1.0)))
        .collect();
    let d = dec.decode("spBv1.0/g/NDATA/ok", &payload(Some(1), aliases), NOW);
    assert_eq!(reason(&d), RejectReason::UnknownAlias);
    // Deeply nested templates are cut off by prost's recursion limit.
    let mut nested = Vec::new();
    for _ in 0..200 {
        let mut wrapped = vec![0x92, 0x01]; // field 18 (template_value), length-delimited
        let mut inner = vec![0x12]; // Template.metrics
        prost::encoding::encode_varint(nested.len() as u64, &mut inner);
        inner.extend_from_slice(&nested);
        prost::encoding::encode_varint(inner.len() as u64, &mut wrapped);
        wrapped.extend(inner);
        nested = wrapped;
    }
    let mut deep = vec![0x12];
    prost::encoding::encode_varint(nested.len() as u64, &mut deep);
    deep.extend(nested);
    assert_eq!(
        reason(&dec.decode("spBv1.0/g/NDATA/ok", &deep, NOW)),
        RejectReason::Malformed
    );
    // The session is unharmed by all of it.
    let ok = dec.decode(
        "spBv1.0/g/NDATA/ok",
        &payload(Some(2), vec![by_alias(1, Value::FloatValue(5.0))]),
        NOW,
    );
    assert_eq!(readings(&ok), s(&[("g.ok", "temp", 5.0)]));
}

#[test]
fn every_sparkplug_only_reason_is_reachable() {
    let mut seen = HashSet::new();
    let mut dec = decoder();
    seen.insert(reason(&dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(0), vec![]),
        NOW,
    )));
    dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
    seen.insert(reason(&dec.decode(
        "spBv1.0/g/NDATA/e",
        &payload(Some(1), vec![by_alias(9, Value::IntValue(1))]),
        NOW,
    )));
    let dup = payload(Some(0), vec![bd_seq(1), bd_seq(1)]);
    seen.insert(reason(&dec.decode("spBv1.0/g/NBIRTH/f", &dup, NOW)));
    let many: Vec<Metric> = (0..2_001)
        .map(|i| {
            metric(
                Some(&format!("m{i}")),
                None,
                DataType::Int8,
                Value::IntValue(1),
            )
        })
        .collect();
    seen.insert(reason(&dec.decode(
        "spBv1.0/g/NBIRTH/f",
        &payload(Some(0), many),
        NOW,
    )));
    assert_eq!(seen, RejectReason::SPARKPLUG_ONLY.into_iter().collect());
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_input(
        kind in prop_oneof![Just("NBIRTH/e"), Just("NDATA/e"), Just("NDEATH/e"), Just("DBIRTH/e/d"), Just("DDATA/e/d"), Just("DDEATH/e/d")],
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..128), 1..8),
        junk_topic in ".{0,40}",
    ) {
        let mut dec = decoder();
        dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, 0), NOW);
        for p in &payloads {
            let d = dec.decode(&format!("spBv1.0/g/{kind}"), p, NOW);
            if let Ok(Outcome::Readings(m)) = &d.result {
                prop_assert!(m.live.readings.iter().chain(&m.historical).all(|r| r.value.is_finite()));
            }
            let _ = dec.decode(&junk_topic, p, NOW);
        }
    }

    #[test]
    fn seq_gaps_sum_to_the_missed_messages(start in 0u64..256, steps in proptest::collection::vec(1u64..256, 1..40)) {
        let mut dec = decoder();
        dec.decode("spBv1.0/g/NBIRTH/e", &node_birth(0, start), NOW);
        let mut seq = start;
        let mut total = 0;
        for step in &steps {
            seq = (seq + step) % 256;
            let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(seq), vec![by_alias(1, Value::FloatValue(1.0))]), NOW);
            prop_assert_eq!(d.seq_gap, step - 1);
            total += d.seq_gap;
        }
        prop_assert_eq!(total, steps.iter().map(|s| s - 1).sum::<u64>());
    }

    #[test]
    fn data_resolves_exactly_what_the_birth_declared(
        declared in proptest::collection::btree_map("[a-z]{1,6}( [a-z]{1,3})?", any::<u16>(), 1..20),
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), -1e6f64..1e6), 0..30),
    ) {
        // Names with spaces sanitise to `_`; drop inputs where that collides.
        let sanitised: BTreeMap<String, &str> = declared.keys().map(|k| (k.replace(' ', "_"), k.as_str())).collect();
        prop_assume!(sanitised.len() == declared.len());
        let aliases: Vec<(&String, u64)> = declared.keys().zip(100u64..).collect();
        let birth: Vec<Metric> = aliases.iter().map(|(name, alias)| {
            metric(Some(name.as_str()), Some(*alias), DataType::Double, Value::DoubleValue(f64::from(declared[*name])))
        }).collect();
        let mut dec = decoder();
        let b = dec.decode("spBv1.0/g/NBIRTH/e", &payload(Some(0), birth), NOW);
        let want_birth: Vec<_> = aliases.iter().map(|(n, _)| ("g.e".to_string(), n.replace(' ', "_"), f64::from(declared[*n]))).collect();
        prop_assert_eq!(readings(&b), want_birth);
        let data: Vec<Metric> = picks.iter().map(|(i, v)| by_alias(aliases[i.index(aliases.len())].1, Value::DoubleValue(*v))).collect();
        let want: Vec<_> = picks.iter().map(|(i, v)| ("g.e".to_string(), aliases[i.index(aliases.len())].0.replace(' ', "_"), *v)).collect();
        let d = dec.decode("spBv1.0/g/NDATA/e", &payload(Some(1), data), NOW);
        prop_assert_eq!(readings(&d), want);
    }
}
