use proptest::prelude::*;

use super::*;

fn default_template() -> TopicTemplate {
    TopicTemplate::parse("devices/{device_id}/telemetry").unwrap()
}

fn t(s: &str) -> TopicTemplate {
    TopicTemplate::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn reason(p: &TopicTemplate, topic: &str) -> RejectReason {
    p.device_id(topic).unwrap_err().reason
}

#[test]
fn matches_valid_topics() {
    let p = default_template();
    assert_eq!(
        p.device_id("devices/dev-1/telemetry").unwrap().as_str(),
        "dev-1"
    );
    let long = "x".repeat(64);
    assert_eq!(
        p.device_id(&format!("devices/{long}/telemetry"))
            .unwrap()
            .as_str(),
        long
    );
}

#[test]
fn hostile_device_ids_are_invalid_device_id() {
    let p = default_template();
    let long = "a".repeat(200);
    for id in ["a:b", "*", "温度", "", "..", ".hidden", "a b", "+", &long] {
        let topic = format!("devices/{id}/telemetry");
        assert_eq!(
            reason(&p, &topic),
            RejectReason::InvalidDeviceId,
            "{topic:?}"
        );
    }
    assert_eq!(
        reason(&p, "devices//telemetry"),
        RejectReason::InvalidDeviceId
    );
}

#[test]
fn structural_mismatches_are_invalid_topic() {
    let p = default_template();
    for topic in [
        "devices/../x/telemetry",
        "devices/a/b/telemetry",
        "devices/a",
        "devices/a/telemetry/",
        "/devices/a/telemetry",
        "Devices/a/telemetry",
        "devices/a/status",
        "other/a/telemetry",
        "",
        "devices",
        "$SYS/a/telemetry",
    ] {
        assert_eq!(reason(&p, topic), RejectReason::InvalidTopic, "{topic:?}");
    }
}

#[test]
fn rejection_detail_quotes_bounded_topic() {
    let p = default_template();
    let topic = format!("devices/{}", "温".repeat(10_000));
    let err = p.device_id(&topic).unwrap_err();
    assert_eq!(err.reason, RejectReason::InvalidTopic);
    assert!(err.detail.len() < 300, "{}", err.detail.len());
}

#[test]
fn id_in_first_or_last_level() {
    let first = t("{device_id}/up");
    assert_eq!(first.device_id("d1/up").unwrap().as_str(), "d1");
    assert_eq!(first.subscription_filter(), "#");
    let only = t("{device_id}");
    assert_eq!(only.device_id("d1").unwrap().as_str(), "d1");
    assert_eq!(reason(&only, "d1/x"), RejectReason::InvalidTopic);
    let last = t("site/a/{device_id}");
    assert_eq!(last.device_id("site/a/d2").unwrap().as_str(), "d2");
    assert_eq!(last.subscription_filter(), "site/a/#");
}

#[test]
fn the_field_templates_match_their_device_families() {
    // Shelly Gen1: the metric is the last level.
    let shelly = t("shellies/{device_id}/relay/0/{metric}");
    let m = shelly
        .matches("shellies/shelly1pm-A1B2C3/relay/0/power")
        .unwrap();
    assert_eq!(m.device_id().unwrap().as_str(), "shelly1pm-A1B2C3");
    assert_eq!(m.metric().unwrap().unwrap().as_str(), "power");
    assert_eq!(shelly.subscription_filter(), "shellies/#");
    assert!(shelly.has_metric());
    // The relay's state topic has one level less: not this template.
    assert!(shelly.matches("shellies/shelly1pm-A1B2C3/relay/0").is_err());

    let tasmota = t("tele/{device_id}/SENSOR");
    let m = tasmota.matches("tele/tasmota_8E4F21/SENSOR").unwrap();
    assert_eq!(m.device_id().unwrap().as_str(), "tasmota_8E4F21");
    assert_eq!(m.metric().unwrap(), None);
    assert!(tasmota.matches("tele/tasmota_8E4F21/STATE").is_err());
    assert!(!tasmota.has_metric());

    let z2m = t("zigbee2mqtt/{device_id}");
    let m = z2m.matches("zigbee2mqtt/0x00158d0001a2b3c4").unwrap();
    assert_eq!(m.device_id().unwrap().as_str(), "0x00158d0001a2b3c4");
    assert!(z2m.matches("zigbee2mqtt/bridge/state").is_err());

    let factory = t("factory/{site}/{line}/{device_id}/{metric}");
    let m = factory.matches("factory/berlin/l2/press-7/temp").unwrap();
    assert_eq!(m.device_id().unwrap().as_str(), "berlin.l2.press-7");
    assert_eq!(m.metric_str(), Some("temp"));
    assert_eq!(factory.subscription_filter(), "factory/#");
}

#[test]
fn composed_ids_are_validated_part_by_part() {
    let p = t("factory/{site}/{device_id}");
    for topic in [
        "factory/ber.lin/d1", // a dot would make the composition ambiguous
        "factory/-x/d1",
        "factory//d1",
        "factory/berlin/d:1",
        "factory/berlin/..",
    ] {
        let err = p.device_id(topic).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidDeviceId, "{topic}: {err}");
        assert!(err.detail.contains("part"), "{topic}: {err}");
    }
    let long = "x".repeat(40);
    let err = p.device_id(&format!("factory/{long}/{long}")).unwrap_err();
    assert_eq!(err.reason, RejectReason::InvalidDeviceId);
    assert!(err.detail.contains("more than 64"), "{err}");
}

#[test]
fn wildcards_plus_and_trailing_hash() {
    let p = t("site/+/{device_id}/#");
    for (topic, id) in [
        ("site/x/d1", "d1"),
        ("site/x/d1/a", "d1"),
        ("site/x/d1/a/b/c", "d1"),
    ] {
        assert_eq!(p.device_id(topic).unwrap().as_str(), id, "{topic}");
    }
    for topic in ["site/x", "site", "other/x/d1", "site/x/"] {
        let r = p.device_id(topic).map(|_| ()).unwrap_err().reason;
        let want = if topic == "site/x/" {
            RejectReason::InvalidDeviceId
        } else {
            RejectReason::InvalidTopic
        };
        assert_eq!(r, want, "{topic}");
    }
    assert_eq!(p.subscription_filter(), "site/#");
    assert_eq!(t("+/{device_id}").subscription_filter(), "#");
}

#[test]
fn metric_level_is_validated() {
    let p = t("s/{device_id}/{metric}");
    let m = p.matches("s/d/temp").unwrap();
    assert_eq!(m.metric().unwrap().unwrap().as_str(), "temp");
    for bad in ["", "a b", "_x", "温度"] {
        let m = p.matches(&format!("s/d/{bad}")).map(|m| m.metric());
        let err = m.unwrap().unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidMetric, "{bad:?}");
    }
}

#[test]
fn subscription_filter_and_topic_for() {
    let p = default_template();
    assert_eq!(p.subscription_filter(), "devices/#");
    let id = DeviceId::parse("dev-7").unwrap();
    let topic = p.topic_for(&id, None).unwrap();
    assert_eq!(topic, "devices/dev-7/telemetry");
    assert_eq!(p.device_id(&topic).unwrap(), id);
    assert_eq!(p.as_str(), "devices/{device_id}/telemetry");
    assert_eq!(p.to_string(), p.as_str());

    let factory = t("factory/{site}/{device_id}/{metric}");
    let id = DeviceId::parse("berlin.press-7").unwrap();
    let metric = MetricName::parse("temp").unwrap();
    assert_eq!(
        factory.topic_for(&id, Some(&metric)).as_deref(),
        Some("factory/berlin/press-7/temp")
    );
    assert_eq!(factory.topic_for(&id, None), None);
    let wrong_parts = DeviceId::parse("a.b.c").unwrap();
    assert_eq!(factory.topic_for(&wrong_parts, Some(&metric)), None);
    assert_eq!(
        factory.topic_for(&DeviceId::parse("a").unwrap(), Some(&metric)),
        None
    );
    assert_eq!(t("x/+/{device_id}").topic_for(&id, None), None);
    assert!(p.is_simple());
    assert!(!factory.is_simple());
    assert!(!t("x/{device_id}/#").is_simple());
}

#[test]
fn subscription_filters_are_deduplicated_and_covered_ones_dropped() {
    let ts: Vec<TopicTemplate> = [
        "devices/{device_id}/telemetry",
        "devices/{device_id}/status",
        "shellies/{device_id}/relay/0/{metric}",
        "shellies/x/{device_id}",
        "tele/{device_id}/SENSOR",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    assert_eq!(
        subscription_filters(&ts),
        ["devices/#", "shellies/#", "tele/#"]
    );
    let with_all = [t("a/{device_id}"), t("{device_id}/up")];
    assert_eq!(subscription_filters(&with_all), ["#"]);
}

#[test]
fn template_errors() {
    for (bad, needle) in [
        ("", "empty"),
        ("devices/telemetry", "no {device_id}"),
        ("devices/{device_id}/{device_id}", "more than one"),
        (
            "devices/{device_id}/{metric}/{metric}",
            "more than one {metric}",
        ),
        ("devices/dev-{device_id}/telemetry", "whole topic level"),
        ("devices/{Site}/{device_id}", "placeholder name"),
        ("devices/{}/{device_id}", "placeholder name"),
        ("devices/{device_id}/a+", "wildcard"),
        ("devices/#/{device_id}", "last level"),
        ("devices//{device_id}", "empty level"),
        ("/devices/{device_id}", "empty level"),
        ("devices/{device_id}/", "empty level"),
        ("$share/g/{device_id}", "reserve"),
        ("devices/\0/{device_id}", "NUL"),
        ("{a}/{b}/{c}/{d}/{device_id}", "at most 4"),
    ] {
        let err = TopicTemplate::parse(bad).unwrap_err();
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
}

#[test]
fn truncate_respects_char_boundaries() {
    assert_eq!(truncate("abc", 10), "abc");
    assert_eq!(truncate("温度", 4), "温");
    assert_eq!(truncate("温度", 3), "温");
    assert_eq!(truncate("温度", 2), "");
}

proptest! {
    /// Whatever is published, matching never panics, and a topic built from a
    /// template by filling its levels matches it with exactly those parts.
    #[test]
    fn filled_templates_match_and_give_back_their_parts(
        site in "[a-z0-9][a-z0-9_-]{0,8}",
        dev in "[A-Za-z0-9][A-Za-z0-9_-]{0,12}",
        metric in "[a-z][a-z0-9_]{0,8}",
        any in "[^/+#\u{0}]{1,6}",
        rest in proptest::collection::vec("[a-z]{1,3}", 0..3),
    ) {
        let p = t("f/{site}/+/{device_id}/{metric}/#");
        let mut topic = format!("f/{site}/{any}/{dev}/{metric}");
        for r in &rest {
            topic.push('/');
            topic.push_str(r);
        }
        let m = p.matches(&topic).unwrap();
        let id = m.device_id().unwrap();
        prop_assert_eq!(id.as_str(), format!("{site}.{dev}"));
        prop_assert_eq!(m.metric_str(), Some(metric.as_str()));
    }

    #[test]
    fn matching_arbitrary_topics_never_panics(topic in ".{0,80}") {
        for p in [default_template(), t("factory/{site}/{line}/{device_id}/{metric}"), t("+/{device_id}/#")] {
            if let Ok(m) = p.matches(&topic) {
                if let Ok(id) = m.device_id() {
                    prop_assert!(id.as_str().len() <= crate::id::DEVICE_ID_MAX_LEN);
                }
                let _ = m.metric();
            }
        }
    }
}
