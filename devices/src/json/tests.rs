use proptest::prelude::*;

use super::*;
use crate::error::Error;

/// The gateway's own format: the `thermocline` preset.
fn decode(payload: &[u8], dev: &DeviceId, now: i64) -> Result<Message, Rejection> {
    super::decode(payload, dev, now, &JsonMapping::thermocline(), 100_000)
}

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

fn mapping(toml_text: &str) -> JsonMapping {
    let raw: RawJsonMapping = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
    raw.validate("devices.sources[0].json")
        .unwrap_or_else(|e| panic!("{toml_text}: {e}"))
}

/// (metric, value, ts_ms, seq) of a reading.
type Got = (String, f64, i64, Option<u64>);

fn mapped(map: &JsonMapping, payload: &str) -> Result<Vec<Got>, Rejection> {
    let m = super::decode(payload.as_bytes(), &dev(), NOW, map, 1000)?;
    Ok(m.readings
        .iter()
        .map(|r| (r.metric.as_str().to_owned(), r.value, r.ts_ms, r.seq))
        .collect())
}

fn names(map: &JsonMapping, payload: &str) -> Vec<String> {
    mapped(map, payload)
        .unwrap_or_else(|e| panic!("{payload}: {e}"))
        .into_iter()
        .map(|(n, ..)| n)
        .collect()
}

#[test]
fn flat_objects_zigbee2mqtt() {
    let map = mapping("");
    let got = mapped(
        &map,
        r#"{"battery":100,"humidity":40.5,"temperature":21.5,"linkquality":120,"voltage":3005,"update":{"state":"idle"},"contact":true,"device":{"friendlyName":"x"}}"#,
    )
    .unwrap();
    assert_eq!(
        got,
        [
            ("battery".to_owned(), 100.0, NOW, None),
            ("humidity".to_owned(), 40.5, NOW, None),
            ("temperature".to_owned(), 21.5, NOW, None),
            ("linkquality".to_owned(), 120.0, NOW, None),
            ("voltage".to_owned(), 3005.0, NOW, None),
        ]
    );
    // With booleans and words: contact and state become numbers.
    let map = mapping("booleans = true\nwords = { ON = 1, OFF = 0 }\n");
    assert_eq!(
        names(&map, r#"{"state":"ON","contact":false,"x":"other"}"#),
        ["state", "contact"]
    );
    assert_eq!(mapped(&map, r#"{"state":"off"}"#).unwrap()[0].1, 0.0);
}

#[test]
fn nested_objects_are_flattened_with_the_separator_tasmota() {
    let map =
        mapping("ts_field = \"Time\"\nts_format = \"iso8601\"\ntime_zone = \"Europe/Berlin\"\n");
    let payload = r#"{"Time":"2024-11-25T11:20:00","AM2301":{"Temperature":21.5,"Humidity":40.1,"DewPoint":7.6},"ENERGY":{"Power":[12,0]},"TempUnit":"C"}"#;
    let got = mapped(&map, payload).unwrap();
    // 11:20 in Berlin (CET, +01:00) is 10:20 UTC.
    let ts = 1_732_530_000_000;
    assert_eq!(
        got,
        [
            ("AM2301.Temperature".to_owned(), 21.5, ts, None),
            ("AM2301.Humidity".to_owned(), 40.1, ts, None),
            ("AM2301.DewPoint".to_owned(), 7.6, ts, None),
        ]
    );
    let map = mapping("separator = \"_\"\nmax_depth = 2\n");
    assert_eq!(
        names(&map, r#"{"a":{"b":1,"c":2},"d":3}"#),
        ["a_b", "a_c", "d"]
    );
    let e = mapped(&map, r#"{"a":{"b":{"c":1}}}"#).unwrap_err();
    assert_eq!(e.reason, RejectReason::Malformed);
    assert!(e.detail.contains("deeper than 2"), "{e}");
    let unflattened = mapping("flatten = false\nnon_numeric = \"reject\"\n");
    assert_eq!(
        mapped(&unflattened, r#"{"a":{"b":1}}"#).unwrap_err().reason,
        RejectReason::NonNumeric
    );
}

#[test]
fn timestamps_in_every_format() {
    let at = |fmt: &str, extra: &str, ts: &str| {
        let map = mapping(&format!(
            "ts_field = \"meta.t\"\nts_format = \"{fmt}\"\n{extra}"
        ));
        mapped(&map, &format!(r#"{{"meta":{{"t":{ts}}},"v":1}}"#)).map(|r| r[0].2)
    };
    let ms = 1_732_530_000_123;
    assert_eq!(at("epoch_ms", "", "1732530000123").unwrap(), ms);
    assert_eq!(at("epoch_s", "", "1732530000.123").unwrap(), ms);
    assert_eq!(at("epoch_s", "", "1732530000").unwrap(), ms - 123);
    assert_eq!(
        at("iso8601", "", r#""2024-11-25T10:20:00.123Z""#).unwrap(),
        ms
    );
    assert_eq!(
        at("iso8601", "", r#""2024-11-25T12:20:00.123+02:00""#).unwrap(),
        ms
    );
    assert_eq!(
        at("iso8601", "", r#""2024-11-25T10:20:00.123""#).unwrap(),
        ms
    );
    assert_eq!(
        at(
            "iso8601",
            "time_zone = \"America/New_York\"",
            r#""2024-11-25T05:20:00.123""#
        )
        .unwrap(),
        ms
    );
    // Absent or null: arrival time.
    assert_eq!(at("epoch_ms", "", "null").unwrap(), NOW);
    for (fmt, ts) in [
        ("epoch_ms", "1.5"),
        ("epoch_ms", "-1"),
        ("epoch_ms", r#""1732530000123""#),
        ("epoch_s", "-1"),
        ("epoch_s", "1e300"),
        ("epoch_s", "true"),
        ("iso8601", "1732530000"),
        ("iso8601", r#""yesterday""#),
        ("iso8601", r#""2024-13-45T99:00:00""#),
        ("iso8601", r#""1900-01-01T00:00:00Z""#),
        ("epoch_ms", "1e999"),
    ] {
        let e = at(fmt, "", ts).unwrap_err();
        assert_eq!(e.reason, RejectReason::Malformed, "{fmt} {ts}: {e}");
    }
}

#[test]
fn seq_from_a_configured_field() {
    let map = mapping("seq_field = \"n\"\n");
    let got = mapped(&map, r#"{"n":7,"v":1}"#).unwrap();
    assert_eq!(got, [("v".to_owned(), 1.0, NOW, Some(7))]);
    for bad in [
        r#"{"n":-1,"v":1}"#,
        r#"{"n":1.5,"v":1}"#,
        r#"{"n":"7","v":1}"#,
        r#"{"n":1,"n":2,"v":1}"#,
    ] {
        assert_eq!(
            mapped(&map, bad).unwrap_err().reason,
            RejectReason::Malformed,
            "{bad}"
        );
    }
}

#[test]
fn include_and_exclude_globs() {
    let map = mapping("include = [\"AM2301.*\", \"ENERGY.Power\"]\nexclude = [\"*.DewPoint\"]\n");
    assert_eq!(
        names(
            &map,
            r#"{"AM2301":{"Temperature":1,"DewPoint":2},"ENERGY":{"Power":3,"Total":4},"Other":5}"#
        ),
        ["AM2301.Temperature", "ENERGY.Power"]
    );
    // An excluded non-numeric field does not reject under `reject`.
    let strict = mapping("non_numeric = \"reject\"\nexclude = [\"TempUnit\"]\n");
    assert_eq!(names(&strict, r#"{"t":1,"TempUnit":"C"}"#), ["t"]);
    assert_eq!(
        mapped(&strict, r#"{"t":1,"Unit":"C"}"#).unwrap_err().reason,
        RejectReason::NonNumeric
    );
}

#[test]
fn hostile_json_is_rejected_with_a_reason() {
    let map = mapping("");
    let deep = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    let e = mapped(&map, &deep).unwrap_err();
    assert_eq!(e.reason, RejectReason::Malformed, "{e}");
    // Deep but outside the metrics object: skipped without recursion.
    let thermo = JsonMapping::thermocline();
    let deep_ignored = format!(
        r#"{{"x":{}1{},"metrics":{{"t":1}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(mapped(&thermo, &deep_ignored).unwrap().len(), 1);
    assert_eq!(
        mapped(&map, r#"{"t":1e999}"#).unwrap_err().reason,
        RejectReason::NonFinite
    );
    assert_eq!(
        mapped(&map, r#"{"a":{"b":-1e400}}"#).unwrap_err().reason,
        RejectReason::NonFinite
    );
    let many: Vec<String> = (0..1001).map(|i| format!(r#""m{i}":{i}"#)).collect();
    let e = mapped(&map, &format!("{{{}}}", many.join(","))).unwrap_err();
    assert_eq!(e.reason, RejectReason::TooLarge, "{e}");
    assert!(e.detail.contains("max_metrics_per_message"), "{e}");
    assert_eq!(
        mapped(&map, &format!("{{{}}}", many[..1000].join(",")))
            .unwrap()
            .len(),
        1000
    );
    // Flattened names that collide are one name given twice.
    assert_eq!(
        mapped(&map, r#"{"a.b":1,"a":{"b":2}}"#).unwrap_err().reason,
        RejectReason::Malformed
    );
    for p in ["[]", "42", "\"x\"", "null", "{", ""] {
        assert_eq!(
            mapped(&map, p).unwrap_err().reason,
            RejectReason::Malformed,
            "{p:?}"
        );
    }
}

#[test]
fn mapping_config_errors_name_the_key() {
    for (text, key) in [
        ("separator = \" \"", "separator"),
        ("separator = \"\"", "separator"),
        ("max_depth = 0", "max_depth"),
        ("max_depth = 33", "max_depth"),
        (
            "time_zone = \"Mars/Olympus\"\nts_format = \"iso8601\"",
            "time_zone",
        ),
        ("time_zone = \"UTC\"", "time_zone"),
        ("include = [\"a[\"]", "include"),
        ("ts_field = \"a..b\"", "ts_field"),
        ("ts_field = \"n\"\nseq_field = \"n\"", "seq_field"),
        ("words = { on = 1, ON = 2 }", "words"),
    ] {
        let raw: RawJsonMapping = toml::from_str(text).unwrap();
        match raw.validate("devices.sources[3].json").unwrap_err() {
            Error::Config { key: got, .. } => {
                assert_eq!(got, format!("devices.sources[3].json.{key}"), "{text}")
            }
            other => panic!("{other}"),
        }
    }
    assert!(toml::from_str::<RawJsonMapping>("ts_fild = \"x\"").is_err());
    assert!(toml::from_str::<RawJsonMapping>("ts_format = \"epoch_us\"").is_err());
}

#[test]
fn the_thermocline_preset_is_the_default_of_a_json_source_and_overridable() {
    assert_eq!(
        mapping("preset = \"thermocline\""),
        JsonMapping::thermocline()
    );
    assert_eq!(mapping(""), JsonMapping::generic());
    let custom = mapping("preset = \"thermocline\"\nmetrics = \"data.values\"\n");
    let got = mapped(&custom, r#"{"ts":5,"seq":2,"data":{"values":{"t":1}}}"#).unwrap();
    assert_eq!(got, [("t".to_owned(), 1.0, 5, Some(2))]);
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics_under_any_mapping(
        payload in r#"[ \[\]{}":,]{0,3}([ \[\]{}":,.eE+\-0-9]|"(ts|seq|metrics|a|b|Time|ON)"|true|null|1e999){0,40}"#,
        flatten in any::<bool>(),
        strict in any::<bool>(),
    ) {
        let map = mapping(&format!(
            "flatten = {flatten}\nnon_numeric = \"{}\"\nts_field = \"ts\"\nseq_field = \"seq\"\nwords = {{ ON = 1 }}\nmax_depth = 3\n",
            if strict { "reject" } else { "ignore" }
        ));
        match super::decode(payload.as_bytes(), &dev(), NOW, &map, 10) {
            Ok(m) => {
                prop_assert!(m.readings.len() <= 10);
                prop_assert!(m.readings.iter().all(|r| r.value.is_finite()));
            }
            Err(e) => prop_assert!(!e.detail.is_empty()),
        }
    }

    #[test]
    fn nested_objects_flatten_to_their_dotted_paths(
        tree in proptest::collection::btree_map(
            "[a-z]{1,4}",
            proptest::collection::btree_map(
                "[a-z]{1,4}",
                (-4_000_000i64..4_000_000).prop_map(|q| q as f64 / 4.0),
                1..4,
            ),
            1..5,
        ),
    ) {
        let payload = serde_json::to_string(&tree).unwrap();
        let got = mapped(&mapping(""), &payload).unwrap();
        let want: Vec<_> = tree
            .iter()
            .flat_map(|(a, inner)| inner.iter().map(move |(b, v)| (format!("{a}.{b}"), *v, NOW, None)))
            .collect();
        prop_assert_eq!(got, want);
    }
}
