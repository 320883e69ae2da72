//! MQTT topic → device id.
//!
//! A [`TopicPattern`] such as `devices/{device_id}/telemetry` is a list of topic
//! levels: literals, and exactly one `{device_id}` placeholder that fills a whole
//! level. Matching a published topic splits it on `/` and compares level by level,
//! with no allocation until the device id itself is built; it runs once per message.
//!
//! The gateway subscribes with [`TopicPattern::subscription_filter`], which is
//! deliberately wider than the pattern (`devices/#`): a topic with a hostile id or
//! an extra level still reaches the gateway, where it is rejected and counted
//! instead of being silently dropped by the broker.

use std::fmt;

use crate::{
    id::DeviceId,
    reject::{RejectReason, Rejection},
};

/// The placeholder that marks the device id level in a pattern.
pub const DEVICE_ID_PLACEHOLDER: &str = "{device_id}";

/// At most this many bytes of a hostile topic are quoted in a rejection detail.
const DETAIL_TOPIC_MAX: usize = 96;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    DeviceId,
}

/// A validated topic pattern with exactly one `{device_id}` level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    pattern: Box<str>,
    levels: Box<[Level]>,
    /// Index of the `{device_id}` level in `levels`.
    id_level: usize,
}

impl TopicPattern {
    /// Parses and validates a pattern such as `devices/{device_id}/telemetry`.
    ///
    /// Rules: exactly one `{device_id}`, which must be a whole level; every other
    /// level is a non-empty literal without MQTT wildcards (`+`, `#`), braces or
    /// NUL; the first level must not start with `$` (broker-reserved topics such
    /// as `$SYS`, and `$share/...` subscription syntax).
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("topic pattern is empty".into());
        }
        let mut levels = Vec::new();
        let mut id_level = None;
        for (i, level) in pattern.split('/').enumerate() {
            if level == DEVICE_ID_PLACEHOLDER {
                if id_level.is_some() {
                    return Err(format!(
                        "topic pattern {pattern:?} has more than one {DEVICE_ID_PLACEHOLDER} level"
                    ));
                }
                id_level = Some(i);
                levels.push(Level::DeviceId);
                continue;
            }
            if level.contains(DEVICE_ID_PLACEHOLDER) {
                return Err(format!(
                    "in topic pattern {pattern:?}, {DEVICE_ID_PLACEHOLDER} must be a whole topic level, not part of {level:?}"
                ));
            }
            if level.contains(['{', '}']) {
                return Err(format!(
                    "topic pattern {pattern:?} level {level:?} has braces; the only placeholder is {DEVICE_ID_PLACEHOLDER}"
                ));
            }
            if level.contains(['+', '#']) {
                return Err(format!(
                    "topic pattern {pattern:?} level {level:?} contains an MQTT wildcard (+ or #)"
                ));
            }
            if level.contains('\0') {
                return Err(format!(
                    "topic pattern {pattern:?} contains a NUL character"
                ));
            }
            if level.is_empty() {
                return Err(format!(
                    "topic pattern {pattern:?} has an empty level (leading, trailing or doubled '/')"
                ));
            }
            if i == 0 && level.starts_with('$') {
                return Err(format!(
                    "topic pattern {pattern:?} starts with '$', which brokers reserve ($SYS, $share)"
                ));
            }
            levels.push(Level::Literal(level.into()));
        }
        let Some(id_level) = id_level else {
            return Err(format!(
                "topic pattern {pattern:?} has no {DEVICE_ID_PLACEHOLDER} level"
            ));
        };
        Ok(Self {
            pattern: pattern.into(),
            levels: levels.into(),
            id_level,
        })
    }

    /// Extracts and validates the device id from a published topic.
    ///
    /// A wrong number of levels or a literal mismatch is
    /// [`RejectReason::InvalidTopic`]; a device id level that is not a valid
    /// [`DeviceId`] is [`RejectReason::InvalidDeviceId`].
    pub fn device_id(&self, topic: &str) -> Result<DeviceId, Rejection> {
        let mut id = None;
        let mut count = 0;
        for (i, part) in topic.split('/').enumerate() {
            match self.levels.get(i) {
                None => return Err(self.mismatch(topic, "too many levels")),
                Some(Level::DeviceId) => id = Some(part),
                Some(Level::Literal(lit)) => {
                    if **lit != *part {
                        return Err(self.mismatch(topic, "literal level differs"));
                    }
                }
            }
            count = i + 1;
        }
        match id {
            Some(id) if count == self.levels.len() => DeviceId::parse(id),
            _ => Err(self.mismatch(topic, "too few levels")),
        }
    }

    /// The MQTT subscription filter: the literal levels before `{device_id}`
    /// followed by `/#` (`devices/#`), or `#` when the id is the first level.
    pub fn subscription_filter(&self) -> String {
        let mut filter = String::new();
        for level in &self.levels[..self.id_level] {
            if let Level::Literal(lit) = level {
                filter.push_str(lit);
                filter.push('/');
            }
        }
        filter.push('#');
        filter
    }

    /// The topic a device publishes to: the pattern with its id filled in.
    pub fn topic_for(&self, device: &DeviceId) -> String {
        let mut topic = String::with_capacity(self.pattern.len() + device.as_str().len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                topic.push('/');
            }
            match level {
                Level::Literal(lit) => topic.push_str(lit),
                Level::DeviceId => topic.push_str(device.as_str()),
            }
        }
        topic
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    fn mismatch(&self, topic: &str, why: &str) -> Rejection {
        Rejection::new(
            RejectReason::InvalidTopic,
            format!(
                "topic {:?} does not match {:?}: {why}",
                truncate(topic, DETAIL_TOPIC_MAX),
                self.pattern
            ),
        )
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// `s` cut to at most `max` bytes on a char boundary (hostile input in details).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_pattern() -> TopicPattern {
        TopicPattern::parse("devices/{device_id}/telemetry").unwrap()
    }

    fn reason(p: &TopicPattern, topic: &str) -> RejectReason {
        p.device_id(topic).unwrap_err().reason
    }

    #[test]
    fn matches_valid_topics() {
        let p = default_pattern();
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
        let p = default_pattern();
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
        let p = default_pattern();
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
        let p = default_pattern();
        let topic = format!("devices/{}", "温".repeat(10_000));
        let err = p.device_id(&topic).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidTopic);
        assert!(err.detail.len() < 300, "{}", err.detail.len());
    }

    #[test]
    fn id_in_first_or_last_level() {
        let first = TopicPattern::parse("{device_id}/up").unwrap();
        assert_eq!(first.device_id("d1/up").unwrap().as_str(), "d1");
        assert_eq!(first.subscription_filter(), "#");
        let only = TopicPattern::parse("{device_id}").unwrap();
        assert_eq!(only.device_id("d1").unwrap().as_str(), "d1");
        assert_eq!(reason(&only, "d1/x"), RejectReason::InvalidTopic);
        let last = TopicPattern::parse("site/a/{device_id}").unwrap();
        assert_eq!(last.device_id("site/a/d2").unwrap().as_str(), "d2");
        assert_eq!(last.subscription_filter(), "site/a/#");
    }

    #[test]
    fn subscription_filter_and_topic_for() {
        let p = default_pattern();
        assert_eq!(p.subscription_filter(), "devices/#");
        let id = DeviceId::parse("dev-7").unwrap();
        let topic = p.topic_for(&id);
        assert_eq!(topic, "devices/dev-7/telemetry");
        assert_eq!(p.device_id(&topic).unwrap(), id);
        assert_eq!(p.as_str(), "devices/{device_id}/telemetry");
        assert_eq!(p.to_string(), p.as_str());
    }

    #[test]
    fn pattern_errors() {
        for (bad, needle) in [
            ("", "empty"),
            ("devices/telemetry", "no {device_id}"),
            ("devices/{device_id}/{device_id}", "more than one"),
            ("devices/dev-{device_id}/telemetry", "whole topic level"),
            ("devices/{id}/telemetry", "braces"),
            ("devices/{device_id}/+", "wildcard"),
            ("devices/#/{device_id}", "wildcard"),
            ("devices//{device_id}", "empty level"),
            ("/devices/{device_id}", "empty level"),
            ("devices/{device_id}/", "empty level"),
            ("$share/g/{device_id}", "reserve"),
            ("devices/\0/{device_id}", "NUL"),
        ] {
            let err = TopicPattern::parse(bad).unwrap_err();
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
}
