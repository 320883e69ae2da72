use super::*;

/// A "now" well after every RFC example, so none of them is in the future.
const NOW: i64 = 1_732_530_000_000;

fn dev() -> DeviceId {
    DeviceId::parse("dev-1").unwrap()
}

fn decode_with(payload: &str, policy: NonNumericPolicy) -> Result<Message, Rejection> {
    decode(payload.as_bytes(), &dev(), NOW, policy)
}

/// (metric, ts_ms, value) of each reading.
fn ok(payload: &str) -> Vec<(String, i64, f64)> {
    let m =
        decode_with(payload, NonNumericPolicy::Ignore).unwrap_or_else(|e| panic!("{payload}: {e}"));
    assert_eq!(m.seq, None);
    assert_eq!(m.device_id, dev());
    m.readings
        .iter()
        .map(|r| {
            assert_eq!(r.seq, None);
            assert_eq!(r.device_id, dev());
            (r.metric.as_str().to_owned(), r.ts_ms, r.value)
        })
        .collect()
}

fn err(payload: &str) -> RejectReason {
    decode_with(payload, NonNumericPolicy::Ignore)
        .expect_err(payload)
        .reason
}

fn r(name: &str, ts_ms: i64, value: f64) -> (String, i64, f64) {
    (name.to_owned(), ts_ms, value)
}

// RFC 8428 §5.1.1
const SINGLE_DATAPOINT: &str = r#"
   [
 {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
   ]"#;

// RFC 8428 §5.1.2, first example
const MULTIPLE_DATAPOINTS: &str = r#"
[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]"#;

// RFC 8428 §5.1.2, second example (relative times under an absolute base time)
const MULTIPLE_DATAPOINTS_TIMED: &str = r#"
   [
 {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
  "bu":"A","bver":5,
  "n":"voltage","u":"V","v":120.1},
 {"n":"current","t":-5,"v":1.2},
 {"n":"current","t":-4,"v":1.3},
 {"n":"current","t":-3,"v":1.4},
 {"n":"current","t":-2,"v":1.5},
 {"n":"current","t":-1,"v":1.6},
 {"n":"current","v":1.7}
   ]"#;

// RFC 8428 §5.1.2, the SensML stream example (its "..." cut off, array closed)
const SENSML_STREAM_PREFIX: &str = r#"
   [
 {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
  "bu":"%RH","v":21.2},
 {"t":10,"v":21.3},
 {"t":20,"v":21.4}
   ]"#;

// RFC 8428 §5.1.3
const MULTIPLE_MEASUREMENTS: &str = r#"
   [
 {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
  "bu":"%RH","v":20},
 {"u":"lon","v":24.30621},
 {"u":"lat","v":60.07965},
 {"t":60,"v":20.3},
 {"u":"lon","t":60,"v":24.30622},
 {"u":"lat","t":60,"v":60.07965},
 {"t":120,"v":20.7},
 {"u":"lon","t":120,"v":24.30623},
 {"u":"lat","t":120,"v":60.07966},
 {"u":"%EL","t":150,"v":98},
 {"t":180,"v":21.2},
 {"u":"lon","t":180,"v":24.30628},
 {"u":"lat","t":180,"v":60.07967}
   ]"#;

// RFC 8428 §5.1.4: §5.1.3 resolved
const RESOLVED_DATA: &str = r#"
   [
 {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
  "v":20},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
  "v":24.30621},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
  "v":60.07965},
 {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
  "v":20.3},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
  "v":24.30622},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
  "v":60.07965},
 {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
  "v":20.7},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
  "v":24.30623},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
  "v":60.07966},
 {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
  "v":98},
 {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
  "v":21.2},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
  "v":24.30628},
 {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
  "v":60.07967}
   ]"#;

// RFC 8428 §5.1.5
const MULTIPLE_DATA_TYPES: &str = r#"
  [
{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
{"n":"label","vs":"Machine Room"},
{"n":"open","vb":false},
{"n":"nfv-reader","vd":"aGkgCg"}
  ]"#;

// RFC 8428 §5.1.6
const COLLECTION_OF_RESOURCES: &str = r#"
   [
 {"bn":"2001:db8::2/","bt":1.320078429e+09,
  "n":"temperature","u":"Cel","v":25.2},
 {"n":"humidity","u":"%RH","v":30},
 {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
 {"n":"humidity","u":"%RH","v":67}
   ]"#;

// RFC 8428 §5.1.7, the three examples
const ACTUATOR_THERMOSTAT: &str = r#"
   [
 {"bn":"urn:dev:ow:10e2073a01080063:"},
 {"n":"temp","u":"Cel","v":23.1},
 {"n":"heat","u":"/","v":1},
 {"n":"fan","u":"/","v":0}
   ]"#;
const ACTUATOR_LIGHTS_ON: &str = r#"
   [
 {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
 {"n":"2001:db8::4","v":1}
   ]"#;
const ACTUATOR_LIGHTS_OFF: &str = r#"
   [
 {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
 {"n":"2001:db8::4","v":0.5},
 {"n":"2001:db8::3","t":0.1,"v":0},
 {"n":"2001:db8::4","t":0.1,"v":0}
   ]"#;

#[test]
fn rfc_5_1_1_single_datapoint() {
    assert_eq!(
        ok(SINGLE_DATAPOINT),
        [r("urn:dev:ow:10e2073a01080063", NOW, 23.1)]
    );
}

#[test]
fn rfc_5_1_2_multiple_datapoints_now() {
    assert_eq!(
        ok(MULTIPLE_DATAPOINTS),
        [r("voltage", NOW, 120.1), r("current", NOW, 1.2)]
    );
}

#[test]
fn rfc_5_1_2_relative_times_under_base_time() {
    assert_eq!(
        ok(MULTIPLE_DATAPOINTS_TIMED),
        [
            r("voltage", 1_276_020_076_001, 120.1),
            r("current", 1_276_020_071_001, 1.2),
            r("current", 1_276_020_072_001, 1.3),
            r("current", 1_276_020_073_001, 1.4),
            r("current", 1_276_020_074_001, 1.5),
            r("current", 1_276_020_075_001, 1.6),
            r("current", 1_276_020_076_001, 1.7),
        ]
    );
}

#[test]
fn rfc_5_1_2_sensml_stream_prefix() {
    let name = "urn:dev:ow:10e2073a01080063";
    assert_eq!(
        ok(SENSML_STREAM_PREFIX),
        [
            r(name, 1_320_067_464_000, 21.2),
            r(name, 1_320_067_474_000, 21.3),
            r(name, 1_320_067_484_000, 21.4),
        ]
    );
}

#[test]
fn rfc_5_1_3_multiple_measurements_equal_5_1_4_resolved() {
    let got = ok(MULTIPLE_MEASUREMENTS);
    let name = "urn:dev:ow:10e2073a01080063";
    // (time offset s, value) in the order of the pack; units are dropped.
    let expected: Vec<_> = [
        (0, 20.0),
        (0, 24.30621),
        (0, 60.07965),
        (60, 20.3),
        (60, 24.30622),
        (60, 60.07965),
        (120, 20.7),
        (120, 24.30623),
        (120, 60.07966),
        (150, 98.0),
        (180, 21.2),
        (180, 24.30628),
        (180, 60.07967),
    ]
    .into_iter()
    .map(|(dt, v)| r(name, 1_320_067_464_000 + dt * 1000, v))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(ok(RESOLVED_DATA), expected);
}

#[test]
fn rfc_5_1_5_multiple_data_types() {
    assert_eq!(ok(MULTIPLE_DATA_TYPES), [r("temp", NOW, 23.1)]);
    let e = decode_with(MULTIPLE_DATA_TYPES, NonNumericPolicy::Reject).unwrap_err();
    assert_eq!(e.reason, RejectReason::NonNumeric);
    assert!(e.detail.contains("record 1"), "{}", e.detail);
}

#[test]
fn rfc_5_1_6_collection_of_resources() {
    // Base name is device identity; `n` is the metric. The last record keeps
    // the base time of the first.
    let t = 1_320_078_429_000;
    assert_eq!(
        ok(COLLECTION_OF_RESOURCES),
        [
            r("temperature", t, 25.2),
            r("humidity", t, 30.0),
            r("temperature", t, 12.3),
            r("humidity", t, 67.0),
        ]
    );
}

#[test]
fn rfc_5_1_7_setting_an_actuator() {
    assert_eq!(
        ok(ACTUATOR_THERMOSTAT),
        [
            r("temp", NOW, 23.1),
            r("heat", NOW, 1.0),
            r("fan", NOW, 0.0)
        ]
    );
    let t = 1_320_078_429_000;
    assert_eq!(
        ok(ACTUATOR_LIGHTS_ON),
        [r("2001:db8::3", t, 1.0), r("2001:db8::4", t, 1.0)]
    );
    assert_eq!(
        ok(ACTUATOR_LIGHTS_OFF),
        [
            r("2001:db8::3", t, 0.5),
            r("2001:db8::4", t, 0.5),
            r("2001:db8::3", t + 100, 0.0),
            r("2001:db8::4", t + 100, 0.0),
        ]
    );
}

#[test]
fn name_falls_back_to_base_name() {
    assert_eq!(
        ok(r#"[{"bn":"boiler.temp","v":1},{"n":"","v":2},{"n":"x","v":3}]"#),
        [
            r("boiler.temp", NOW, 1.0),
            r("boiler.temp", NOW, 2.0),
            r("x", NOW, 3.0)
        ]
    );
}

#[test]
fn invalid_names() {
    for p in [
        r#"[{"v":1}]"#,
        r#"[{"n":"","v":1}]"#,
        r#"[{"bn":"","n":"","v":1}]"#,
        r#"[{"n":"温度","v":1}]"#,
        r#"[{"n":"a b","v":1}]"#,
        r#"[{"bn":"dev 1","v":1}]"#,
    ] {
        assert_eq!(err(p), RejectReason::InvalidMetric, "{p}");
    }
}

#[test]
fn base_value_and_relative_time() {
    assert_eq!(
        ok(
            r#"[{"n":"a","bv":100,"v":1.5,"t":-2.5},{"n":"b","v":-1},{"n":"c","bt":10,"t":-0.0004,"v":0}]"#
        ),
        [
            r("a", NOW - 2500, 101.5),
            r("b", NOW, 99.0),
            r("c", NOW + 10_000, 100.0),
        ]
    );
    // bt + t crossing 2^28 makes the time absolute.
    assert_eq!(
        ok(r#"[{"n":"a","bt":268435455,"t":1,"v":1}]"#),
        [r("a", 268_435_456_000, 1.0)]
    );
}

#[test]
fn sums_and_non_numeric_records_follow_the_policy() {
    let pack = r#"[{"n":"energy","s":12.5},{"n":"p","v":3,"s":1},{"n":"x","vb":true}]"#;
    assert_eq!(ok(pack), [r("p", NOW, 3.0)]);
    let e = decode_with(pack, NonNumericPolicy::Reject).unwrap_err();
    assert_eq!(e.reason, RejectReason::NonNumeric);
    assert!(e.detail.contains("sum"), "{}", e.detail);
}

#[test]
fn only_non_numeric_records_is_malformed() {
    assert_eq!(err(r#"[{"n":"label","vs":"x"}]"#), RejectReason::Malformed);
    assert_eq!(err(r#"[{"bn":"x"}]"#), RejectReason::Malformed);
    assert_eq!(err("[]"), RejectReason::Malformed);
}

#[test]
fn non_numeric_v_is_always_rejected() {
    for v in [r#""hot""#, "true", "null", "{}", "[1]"] {
        let p = format!(r#"[{{"n":"t","v":{v}}}]"#);
        assert_eq!(err(&p), RejectReason::NonNumeric, "{p}");
    }
}

#[test]
fn non_finite() {
    for p in [
        r#"[{"n":"t","v":1e999}]"#,
        r#"[{"n":"t","bv":-1e999,"v":1}]"#,
        r#"[{"n":"t","bv":1e308,"v":1e308}]"#,
    ] {
        assert_eq!(err(p), RejectReason::NonFinite, "{p}");
    }
}

#[test]
fn malformed_packs() {
    for p in [
        "",
        "[",
        "{}",
        r#"{"n":"t","v":1}"#,
        "[1]",
        "[[]]",
        r#"[{"n":"t"}]"#,
        r#"[{"n":"t","t":5}]"#,
        r#"[{"n":"t","v":1,"vs":"x"}]"#,
        r#"[{"n":"t","vb":true,"vd":"aGk"}]"#,
        r#"[{"n":"t","v":1,"v":2}]"#,
        r#"[{"n":"t","v":NaN}]"#,
        r#"[{"bver":11,"n":"t","v":1}]"#,
        r#"[{"bver":-1,"n":"t","v":1}]"#,
        r#"[{"bver":"10","n":"t","v":1}]"#,
        r#"[{"n":"t","v":1,"crit_":1}]"#,
        r#"[{"n":5,"v":1}]"#,
        r#"[{"n":"t","u":1,"v":1}]"#,
        r#"[{"n":"t","vb":"true"}]"#,
        r#"[{"n":"t","vs":1}]"#,
        r#"[{"n":"t","t":"now","v":1}]"#,
        r#"[{"n":"t","bt":1e999,"v":1}]"#,
        r#"[{"n":"t","bt":1e308,"t":1e308,"v":1}]"#,
        r#"[{"n":"t","t":-1e12,"v":1}]"#,
        r#"[{"n":"t","bv":"x","v":1}]"#,
        r#"[{"n":"t","v":1}] x"#,
    ] {
        assert_eq!(err(p), RejectReason::Malformed, "{p}");
    }
}

#[test]
fn unknown_fields_are_ignored_and_version_10_is_fine() {
    assert_eq!(
        ok(r#"[{"bver":10,"n":"t","v":1,"ut":60,"bs":0,"x":{"y":[1]},"lat":60.1}]"#),
        [r("t", NOW, 1.0)]
    );
}

#[test]
fn far_future_time_saturates() {
    let m = decode_with(r#"[{"n":"t","t":1e300,"v":1}]"#, NonNumericPolicy::Ignore).unwrap();
    assert_eq!(m.readings[0].ts_ms, i64::MAX);
}
