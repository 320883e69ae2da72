use super::*;
use crate::source::Format;

fn key_of(err: Error) -> String {
    match err {
        Error::Config { key, .. } => key,
        other => panic!("expected a config error, got {other}"),
    }
}

fn from_toml(text: &str) -> crate::Result<DevicesConfig> {
    let raw: RawDevicesConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    raw.validate()
}

fn err_of(text: &str) -> (String, String) {
    let err = from_toml(text).unwrap_err();
    let shown = err.to_string();
    (key_of(err), shown)
}

#[test]
fn defaults() {
    let cfg = DevicesConfig::default();
    assert_eq!(cfg.sources.len(), 1);
    assert_eq!(
        cfg.sources[0].template.as_str(),
        "devices/{device_id}/telemetry"
    );
    assert_eq!(cfg.subscription_filters(), ["devices/#"]);
    assert_eq!(
        cfg.sources[0].format,
        Format::Auto {
            json: Box::new(crate::json::JsonMapping::thermocline()),
            senml: Default::default()
        }
    );
    assert_eq!(cfg.max_payload_bytes, 64 * 1024);
    assert_eq!(cfg.max_future_skew_ms, 5 * 60 * 1000);
}

#[test]
fn empty_section_is_the_defaults() {
    let raw: RawDevicesConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(raw.validate().unwrap(), DevicesConfig::default());
}

#[test]
fn parses_units_and_enums() {
    let raw: RawDevicesConfig = serde_json::from_str(
        r#"{"topic_pattern":"t/{device_id}","payload_format":"senml",
            "max_payload_size":"1MiB","max_future_skew":"90s",
            "senml_non_numeric":"reject"}"#,
    )
    .unwrap();
    let cfg = raw.validate().unwrap();
    assert_eq!(cfg.sources[0].template.as_str(), "t/{device_id}");
    assert_eq!(
        cfg.sources[0].format,
        Format::Senml(crate::source::SenmlMapping {
            non_numeric: NonNumericPolicy::Reject
        })
    );
    assert_eq!(cfg.max_payload_bytes, 1024 * 1024);
    assert_eq!(cfg.max_future_skew_ms, 90_000);
}

#[test]
fn sources_follow_the_default_source_in_order() {
    let cfg = from_toml(
        r#"
        [[sources]]
        topic = "tele/{device_id}/SENSOR"
        format = "json"

        [[sources]]
        topic = "factory/{site}/{device_id}"
        format = "senml"
        senml = { non_numeric = "reject" }
        "#,
    )
    .unwrap();
    let templates: Vec<_> = cfg.sources.iter().map(|s| s.template.as_str()).collect();
    assert_eq!(
        templates,
        [
            "devices/{device_id}/telemetry",
            "tele/{device_id}/SENSOR",
            "factory/{site}/{device_id}"
        ]
    );
    assert_eq!(cfg.sources[1].format, Format::thermocline_json());
    assert_eq!(
        cfg.subscription_filters(),
        ["devices/#", "factory/#", "tele/#"]
    );
}

#[test]
fn an_empty_topic_pattern_leaves_only_the_sources() {
    let cfg = from_toml(
        r#"
        topic_pattern = ""
        [[sources]]
        topic = "zigbee2mqtt/{device_id}"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.sources.len(), 1);
    assert_eq!(cfg.subscription_filters(), ["zigbee2mqtt/#"]);

    let (key, shown) = err_of(r#"topic_pattern = """#);
    assert_eq!(key, "devices.sources");
    assert!(shown.contains("no source"), "{shown}");
}

#[test]
fn a_bad_source_names_its_key_and_says_why() {
    let (key, shown) = err_of(
        r#"
        [[sources]]
        topic = "a/{device_id}"
        [[sources]]
        topic = "b/{device_id}"
        [[sources]]
        topic = "c/{id}"
        "#,
    );
    assert_eq!(key, "devices.sources[2].topic");
    assert!(shown.contains("no {device_id}"), "{shown}");

    let (key, shown) = err_of(
        r#"
        [[sources]]
        topic = "devices/{device_id}/telemetry"
        "#,
    );
    assert_eq!(key, "devices.sources[0].topic");
    assert!(shown.contains("devices.topic_pattern"), "{shown}");

    let (key, shown) = err_of(
        r#"
        [[sources]]
        topic = "x/{device_id}"
        format = "json"
        senml = { non_numeric = "reject" }
        "#,
    );
    assert_eq!(key, "devices.sources[0].senml");
    assert!(shown.contains("format is \"json\""), "{shown}");
}

#[test]
fn unknown_keys_in_a_source_are_rejected() {
    for text in [
        "[[sources]]\ntopic = \"x/{device_id}\"\nformt = \"json\"\n",
        "[[sources]]\ntopic = \"x/{device_id}\"\nformat = \"xml\"\n",
        "[[sources]]\ntopic = \"x/{device_id}\"\nsenml = { policy = \"x\" }\n",
        "[[sources]]\nformat = \"json\"\n",
    ] {
        let err = toml::from_str::<RawDevicesConfig>(text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("unknown field")
                || shown.contains("unknown variant")
                || shown.contains("missing field"),
            "{text}: {shown}"
        );
    }
}

#[test]
fn serializes_and_reparses() {
    let raw = RawDevicesConfig::default();
    let text = serde_json::to_string(&raw).unwrap();
    assert!(text.contains(r#""payload_format":"auto""#), "{text}");
    assert!(text.contains(r#""max_future_skew":"5m""#), "{text}");
    let back: RawDevicesConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back.validate().unwrap(), DevicesConfig::default());

    let with_sources: RawDevicesConfig = toml::from_str(
        "[[sources]]\ntopic = \"x/{device_id}\"\nformat = \"senml\"\nsenml = { non_numeric = \"reject\" }\n",
    )
    .unwrap();
    let text = toml::to_string(&with_sources).unwrap();
    let back: RawDevicesConfig = toml::from_str(&text).unwrap();
    assert_eq!(back.sources, with_sources.sources);
}

#[test]
fn unknown_keys_and_bad_enums_are_rejected() {
    let err = serde_json::from_str::<RawDevicesConfig>(r#"{"topic":"x"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = serde_json::from_str::<RawDevicesConfig>(r#"{"payload_format":"xml"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
}

#[test]
fn validation_errors_name_the_key() {
    let raw = RawDevicesConfig {
        topic_pattern: "devices/#/telemetry/{device_id}".into(),
        ..Default::default()
    };
    let err = raw.validate().unwrap_err();
    assert!(err.to_string().contains("`devices.topic_pattern`"), "{err}");
    assert_eq!(key_of(err), "devices.topic_pattern");

    let raw = RawDevicesConfig {
        max_payload_size: ByteSize::b(0),
        ..Default::default()
    };
    assert_eq!(
        key_of(raw.validate().unwrap_err()),
        "devices.max_payload_size"
    );

    let raw = RawDevicesConfig {
        max_payload_size: ByteSize::gib(1),
        ..Default::default()
    };
    assert_eq!(
        key_of(raw.validate().unwrap_err()),
        "devices.max_payload_size"
    );

    let raw = RawDevicesConfig {
        max_future_skew: Duration::MAX,
        ..Default::default()
    };
    assert_eq!(
        key_of(raw.validate().unwrap_err()),
        "devices.max_future_skew"
    );
}

#[test]
fn value_and_json_sources_check_their_metric_and_mappings() {
    for (text, key, needle) in [
        (
            "[[sources]]\ntopic = \"s/{device_id}\"\nformat = \"value\"\n",
            "devices.sources[0].value.metric",
            "no {metric} level",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}/{metric}\"\nformat = \"value\"\nvalue = { metric = \"x\" }\n",
            "devices.sources[0].value.metric",
            "already",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}\"\nformat = \"value\"\nvalue = { metric = \"bad name\" }\n",
            "devices.sources[0].value.metric",
            "contains",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}/{metric}\"\nformat = \"json\"\n",
            "devices.sources[0].topic",
            "only for format = \"value\"",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}/{metric}\"\nformat = \"value\"\nvalue = { words = { on = 1, On = 2 } }\n",
            "devices.sources[0].value.words",
            "twice",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}\"\nformat = \"senml\"\njson = { flatten = false }\n",
            "devices.sources[0].json",
            "format is \"senml\"",
        ),
        (
            "[[sources]]\ntopic = \"s/{device_id}\"\nformat = \"json\"\njson = { time_zone = \"Nowhere/Land\", ts_format = \"iso8601\" }\n",
            "devices.sources[0].json.time_zone",
            "IANA",
        ),
        (
            "max_metrics_per_message = 0\n",
            "devices.max_metrics_per_message",
            "out of range",
        ),
    ] {
        let (got, shown) = err_of(text);
        assert_eq!(got, key, "{text}: {shown}");
        assert!(shown.contains(needle), "{text}: {shown}");
    }
}

#[test]
fn legacy_payload_format_json_or_senml_validates_with_the_default_senml_policy() {
    // `senml_non_numeric` has a default, so it must not count as a SenML
    // mapping given to a JSON-only default source (found by the fuzz harness).
    for format in [
        PayloadFormat::Auto,
        PayloadFormat::Json,
        PayloadFormat::Senml,
    ] {
        let cfg = RawDevicesConfig {
            payload_format: format,
            ..RawDevicesConfig::default()
        }
        .validate();
        assert!(cfg.is_ok(), "{format:?}: {:?}", cfg.err());
    }
}
